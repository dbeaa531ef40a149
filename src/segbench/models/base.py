"""The common model interface and local pretrained-weights loading."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["SegmentationModel", "load_encoder_weights", "load_state_dict_file"]


class SegmentationModel(nn.Module):
    """A backend's network behind one interface.

    Args:
        net: the library's module.
        encoder: the part of ``net`` that pretrained weights cover (frozen first when fine-tuning).
        library: ``smp`` | ``torchvision`` | ``mmseg``.
        forward_fn: maps ``(net, x)`` to raw logits (any spatial size); they are resized to the
            input's ``H, W`` with bilinear interpolation when they differ.

    ``forward(x: float32[N, 3, H, W]) -> float32[N, C, H, W]``.
    """

    def __init__(self, net: nn.Module, encoder: nn.Module, library: str, forward_fn=None):
        super().__init__()
        self.net = net
        self.library = library
        self._encoder_ref = [encoder]  # not a registered submodule: it lives inside net already
        self._forward_fn = forward_fn

    @property
    def encoder(self) -> nn.Module:
        return self._encoder_ref[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._forward_fn(self.net, x) if self._forward_fn is not None else self.net(x)
        if out.shape[-2:] != x.shape[-2:]:
            out = nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (loaded with ``weights_only=True``).

    Nested checkpoints (``{"state_dict": ...}`` or ``{"model": ...}``) are unwrapped.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} not found; put the file there or set encoder_weights=null to train from scratch")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_encoder_weights(encoder: nn.Module, path: str | Path, prefixes=("encoder.", "backbone.", "module.")) -> dict[str, int]:
    """Load a local weights file into ``encoder``, matching keys after stripping common prefixes.

    Returns:
        ``{"loaded": n, "missing": n, "unexpected": n}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no key of the file matches the encoder (wrong file for this encoder).
    """
    state = load_state_dict_file(path)
    own = encoder.state_dict()
    matched = {}
    for k, v in state.items():
        key = k
        for p in prefixes:
            if key.startswith(p) and key[len(p):] in own:
                key = key[len(p):]
        if key in own and own[key].shape == v.shape:
            matched[key] = v
    if not matched:
        raise ValueError(f"no tensor in {path} matches this encoder's parameters (e.g. {next(iter(own))}); is it the right file?")
    encoder.load_state_dict(matched, strict=False)
    return {"loaded": len(matched), "missing": len(own) - len(matched), "unexpected": len(state) - len(matched)}
