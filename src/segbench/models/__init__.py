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

from .base import SegmentationModel, load_encoder_weights

__all__ = ["BACKENDS", "create_model", "SegmentationModel", "load_encoder_weights", "count_parameters"]

#: library name -> module (under segbench.models) with a ``build(num_classes, **cfg)`` function.
BACKENDS: dict[str, str] = {
    "smp": "segbench.models.smp_backend",
    "torchvision": "segbench.models.torchvision_backend",
    "mmseg": "segbench.models.mmseg_backend",
}


def create_model(library: str, num_classes: int, **cfg: Any) -> SegmentationModel:
    """Build a model of ``library`` with ``num_classes`` outputs from its config keys.

    Args:
        library: one of :data:`BACKENDS` (``smp``, ``torchvision``, ``mmseg``).
        num_classes: number of output channels ``C``.
        **cfg: the model config (``config/model/<name>.yaml`` without ``library``); ``name`` is ignored.

    Raises:
        KeyError: unknown library (the message lists the valid ones).
        ValueError: unknown architecture/encoder/config for that library (lists valid names).
        FileNotFoundError: ``encoder_weights`` names a file or cached weights that are not there.
    """
    if library not in BACKENDS:
        raise KeyError(f"unknown model library '{library}'; valid: {', '.join(BACKENDS)}")
    cfg = {k: v for k, v in cfg.items() if k not in ("name", "library")}
    backend = importlib.import_module(BACKENDS[library])
    return backend.build(num_classes=num_classes, **cfg)


def count_parameters(model: Any) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in model.parameters())
