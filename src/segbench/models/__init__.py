"""Model registry: one plain dict of backends and a ``create_model`` factory, like SMP's.

Every backend turns a model config into a :class:`SegmentationModel`: an ``nn.Module`` mapping
``float32[N, 3, H, W]`` (normalised RGB) to logits ``float32[N, C, H, W]`` at input resolution, with
``.encoder`` naming the pretrained-able part (for freezing and a lower encoder learning rate).

Example:
    >>> model = create_model("smp", num_classes=11, arch="Unet", encoder="resnet18")  # doctest: +SKIP
    >>> model(torch.zeros(1, 3, 64, 64)).shape                                        # doctest: +SKIP
    torch.Size([1, 11, 64, 64])
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Nothing is downloaded at run time: named pretrained weights must already be in the local
# Hugging Face cache. Set before any backend imports huggingface_hub (which reads it at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .base import SegmentationModel, load_encoder_weights, load_model_checkpoint
from .checkpoint import load_trained_model, save_weights

__all__ = [
    "BACKENDS",
    "create_model",
    "SegmentationModel",
    "load_encoder_weights",
    "count_parameters",
    "model_configs",
    "architecture_config",
    "TRAINING_KEYS",
    "load_trained_model",
    "save_weights",
]

#: model-config keys that say how a model starts or trains, not what it is: inference rebuilds the
#: architecture without them and then loads the trained weights.
TRAINING_KEYS = ("encoder_weights", "init_checkpoint", "train", "name", "tuned")

#: library name -> module (under segbench.models) with a ``build(num_classes, **cfg)`` function.
BACKENDS: dict[str, str] = {
    "smp": "segbench.models.smp_backend",
    "torchvision": "segbench.models.torchvision_backend",
    "mmseg": "segbench.models.mmseg_backend",
}


def model_configs() -> dict[str, dict[str, Any]]:
    """The model zoo: ``{name: config}`` of every ``config/model/<name>.yaml`` (one file per model)."""
    import yaml

    from .. import paths

    return {
        p.stem: yaml.safe_load(p.read_text()) for p in sorted((paths.config_dir() / "model").glob("*.yaml"))
    }


def architecture_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A model config without :data:`TRAINING_KEYS`: what rebuilds the same network for inference."""
    return {k: v for k, v in cfg.items() if k not in TRAINING_KEYS}


def create_model(library: str, num_classes: int, **cfg: Any) -> SegmentationModel:
    """Build a model with ``num_classes`` outputs, from a library and its keys or from a zoo name.

    Args:
        library: one of :data:`BACKENDS` (``smp``, ``torchvision``, ``mmseg``) followed by that
            backend's keys in ``cfg``; or the name of a model config (``config/model/<name>.yaml``,
            e.g. ``smp_unet_r18``), whose keys ``cfg`` then overrides.
        num_classes: number of output channels ``C``.
        **cfg: the model config without ``library``: backend keys (``arch``, ``encoder``, ``config``
            ...), ``encoder_weights`` (None, a local file, or a weights name found offline),
            ``init_checkpoint`` (trained weights of another segbench run, see
            :func:`segbench.models.base.load_model_checkpoint`); ``name``, ``train`` and ``tuned`` (how a
            tuning study chose its recipe, :mod:`segbench.tuning`) are ignored.

    Returns:
        A :class:`SegmentationModel`: ``float32[N, 3, H, W] -> float32[N, C, H, W]``.

    Raises:
        KeyError: neither a library nor a model name (the message lists both).
        ValueError: unknown architecture/encoder/config for that library (lists valid names).
        FileNotFoundError: ``encoder_weights``/``init_checkpoint`` are not there (says where to put them).
    """
    if library not in BACKENDS:
        zoo = model_configs()
        if library not in zoo:
            raise KeyError(
                f"unknown model library or model name '{library}'; libraries: {', '.join(BACKENDS)}; "
                f"models: {', '.join(zoo)}"
            )
        cfg = {**zoo[library], **cfg}
        library = cfg.pop("library")
    init = cfg.get("init_checkpoint")
    cfg = {k: v for k, v in cfg.items() if k not in ("name", "library", "train", "tuned", "init_checkpoint")}
    backend = importlib.import_module(BACKENDS[library])
    model = backend.build(num_classes=num_classes, **cfg)
    if init:
        model.init_report = load_model_checkpoint(model, init)
    return model


def count_parameters(model: Any) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in model.parameters())
