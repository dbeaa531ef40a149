"""The common model interface and local pretrained-weights loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "SegmentationModel",
    "load_encoder_weights",
    "load_state_dict_file",
    "load_model_checkpoint",
    "read_safetensors",
]


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
        PermissionError: a torch file holding more than tensors and plain values (a pickle that could
            run code); nothing of it ran.
        segbench.records.RecordError: a ``.safetensors`` file that is not valid safetensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file {path} not found; put the file there or set encoder_weights=null to "
            "train from scratch"
        )
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's refusal of anything but tensors and plain values
        why = str(err).strip().splitlines()[0]
        raise PermissionError(
            f"weights file {path} holds Python objects besides tensors, which could run code when loaded, "
            f"so it was refused and nothing in it ran (torch.load(weights_only=True): {why}); save the "
            "state dict alone (torch.save(model.state_dict(), path), or safetensors) and use that file"
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` (tensors only: reading runs no code) with an error that names the file.

    Raises:
        segbench.records.RecordError: not a safetensors file (e.g. a pickle saved under that name, or
            a truncated download); the message names the file and how to get a good one.
    """
    from safetensors.torch import load_file

    from ..records import RecordError

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors_rust.SafetensorsError, or OSError on an unreadable file
        raise RecordError(
            f"{path} is not a valid safetensors file ({type(err).__name__}: {err}); it may be a pickle "
            "saved under that name or a truncated copy, and it was not loaded: replace it with a good "
            "copy (a model folder's weights: retrain or dvc pull them again; start weights: download "
            "the file again)"
        ) from None


def load_encoder_weights(
    encoder: nn.Module,
    path: str | Path,
    prefixes=("encoder.", "backbone.", "module.", "model."),
    mapping=None,
    unused=None,
) -> dict[str, int]:
    """Load a local weights file into ``encoder``: every tensor of the encoder must be filled.

    Keys are matched after stripping common prefixes (``encoder.``, ``backbone.``, ``module.``,
    ``model.``), and also against ``encoder.model`` (SMP's ``tu-`` timm encoders wrap the timm
    network there), so a file saved from the encoder, from a whole model or from the timm/torchvision
    classification network all load. ``mapping`` renames keys first (another implementation's layout,
    see :mod:`segbench.models.weights`); then the load is strict: with ``unused`` (a regex of the
    classification head) nothing else may be left over; without it, left-over tensors (a classifier)
    are counted and named in the returned ``unused_examples``.

    Returns:
        ``{"loaded": n, "unused": n}``.

    Raises:
        FileNotFoundError: no such file (the message says where to put it).
        ValueError: a tensor of the encoder is not in the file, or has another shape (wrong file for
            this encoder); the message names the first ones.
    """
    from .weights import load_state_dict_strict

    state = load_state_dict_file(path)
    if mapping is not None:
        state = mapping(state)
    targets = [encoder]
    if isinstance(getattr(encoder, "model", None), nn.Module):
        targets.append(encoder.model)
    best = None
    for target in targets:
        own = target.state_dict()
        renamed = {}
        for k, v in state.items():
            key = k
            changed = True
            while changed:  # strip nested prefixes (module.encoder.model.x)
                changed = False
                for p in prefixes:
                    if key.startswith(p) and key not in own:
                        key, changed = key[len(p) :], True
            renamed[key] = v
        hits = sum(1 for k in own if k in renamed and renamed[k].shape == own[k].shape)
        if best is None or hits > best[0]:
            best = (hits, target, renamed)
    hits, target, renamed = best
    if hits == 0:
        raise ValueError(
            f"no tensor in {path} matches this encoder's parameters (e.g. "
            f"{next(iter(target.state_dict()))}); "
            "is it the right file for this encoder?"
        )
    if unused is None:
        own = target.state_dict()
        extra = [k for k in renamed if k not in own]
        renamed = {k: v for k, v in renamed.items() if k in own}
        info = load_state_dict_strict(target, renamed, str(path))
        return dict(info, unused=len(extra), unused_examples=extra[:5])
    return load_state_dict_strict(target, renamed, str(path), unused=unused)


def load_model_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Start a model from another segbench run's trained weights (``init_checkpoint``).

    ``path``: a ``model.safetensors`` file, or a folder holding one (``results/<exp>/best``,
    ``results/<exp>/models/<model>/fold<k>/seed<s>``). Every tensor whose name and shape match is copied; the
    ones that differ, typically the classifier when the class count changed (CamVid's 11 classes,
    the grape photos' 2), keep their fresh initialisation and are listed in the result.

    Returns:
        ``{"loaded": n, "reinitialised": [names], "source": path}``.

    Raises:
        FileNotFoundError: neither the file nor a ``model.safetensors`` in the folder exists.
        ValueError: fewer than half of the model's tensors match (another architecture).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(
            f"init_checkpoint {p} not found: run the experiment that trains it first "
            "(its models/<model>/fold<k>/seed<s>/model.safetensors or best/model.safetensors), or fix "
            "the path"
        )
    state = load_state_dict_file(p)
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(take) < len(own) / 2:
        raise ValueError(
            f"init_checkpoint {p} matches only {len(take)} of {len(own)} tensors of this model: "
            "it was trained with another architecture or encoder; use the same model config"
        )
    model.load_state_dict(take, strict=False)
    return {"loaded": len(take), "reinitialised": sorted(k for k in own if k not in take), "source": str(p)}
