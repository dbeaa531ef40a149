"""torchvision.models.segmentation backend: FCN, DeepLabV3, LRASPP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._compat import import_torchvision
from .base import SegmentationModel, load_encoder_weights

__all__ = ["build", "architectures"]

_ARCHS = (
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)


def architectures() -> list[str]:
    """The torchvision segmentation builders segbench exposes."""
    return list(_ARCHS)


def _out(net, x):
    return net(x)["out"]  # the auxiliary head (when enabled) is not part of segbench's protocol


def build(
    num_classes: int, arch: str, encoder_weights: str | None = None, **kwargs: Any
) -> SegmentationModel:
    """Build ``torchvision.models.segmentation.<arch>(num_classes=..., weights=None)``.

    Args:
        arch: one of :func:`architectures`.
        encoder_weights: None, or a local file with the backbone's state dict (e.g. torchvision's
            ImageNet classification weights for the backbone). Nothing is downloaded.
        **kwargs: passed to the torchvision builder.

    Note: ``deeplabv3_*`` needs a training batch size >= 2 (BatchNorm after global pooling).

    Raises:
        ValueError: unknown architecture (lists the valid ones).
        FileNotFoundError: the weights file does not exist.
    """
    tv = import_torchvision()
    if arch not in _ARCHS:
        raise ValueError(
            f"unknown torchvision segmentation architecture '{arch}'; valid: {', '.join(_ARCHS)}"
        )
    net = getattr(tv.models.segmentation, arch)(
        weights=None, weights_backbone=None, num_classes=num_classes, **kwargs
    )
    if encoder_weights is not None:
        load_encoder_weights(
            net.backbone, Path(encoder_weights), prefixes=("backbone.", "features.", "module.")
        )
    return SegmentationModel(net, net.backbone, "torchvision", forward_fn=_out)
