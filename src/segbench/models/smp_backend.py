"""segmentation-models-pytorch backend: every architecture SMP ships, with any of its encoders."""

from __future__ import annotations

import os
from typing import Any

from .._compat import import_torchvision
from .base import SegmentationModel, load_encoder_weights
from .weights import is_weights_path, resolve_named_weights, weights_cache_dir

__all__ = ["build", "architectures"]


def _smp():
    import_torchvision()  # SMP and timm import torchvision; see segbench/_compat.py
    import segmentation_models_pytorch as smp

    return smp


def architectures() -> list[str]:
    """SMP's architecture names (``smp.create_model(arch=...)``)."""
    return sorted(_smp().MODEL_ARCHITECTURES_MAPPING)


def build(
    num_classes: int, arch: str, encoder: str = "resnet34", encoder_weights: str | None = None, **kwargs: Any
) -> SegmentationModel:
    """Build ``smp.create_model(arch, encoder, classes=num_classes)``.

    Args:
        arch: an SMP architecture (``Unet``, ``FPN``, ``Segformer`` ...; case-insensitive).
        encoder: an SMP encoder name (``resnet18``, ``mit_b0``, ``tu-<timm name>`` ...).
        encoder_weights: None (random init), a local file (``.safetensors``/``.pth``) with the
            encoder's state dict, or a weights name (``imagenet`` ...) found offline: packaged
            weights (``tu-tf_efficientnet_lite0`` + ``imagenet``), segbench's weights cache, or
            SMP's local Hugging Face cache; see :mod:`segbench.models.weights`. Loading is strict:
            every encoder tensor must be filled.
        **kwargs: passed to the SMP model (``decoder_channels`` ...).

    Raises:
        ValueError: unknown architecture or encoder (lists the valid names).
        FileNotFoundError: the weights are neither a local file nor in the cache.
    """
    smp = _smp()
    archs = {a.lower(): a for a in smp.MODEL_ARCHITECTURES_MAPPING}
    if arch.lower() not in archs:
        raise ValueError(f"unknown SMP architecture '{arch}'; valid: {', '.join(sorted(archs.values()))}")
    if not encoder.startswith("tu-") and encoder not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"unknown SMP encoder '{encoder}'; valid: {', '.join(smp.encoders.get_encoder_names())} "
            f"or 'tu-<timm model>'"
        )
    local_file = is_weights_path(encoder_weights)
    packaged = (
        None
        if (encoder_weights is None or local_file)
        else resolve_named_weights(encoder, str(encoder_weights))
    )
    named = None if (encoder_weights is None or local_file or packaged) else encoder_weights
    try:
        net = smp.create_model(
            archs[arch.lower()], encoder_name=encoder, encoder_weights=named, classes=num_classes, **kwargs
        )
    except Exception as err:
        if named:
            raise FileNotFoundError(
                f"weights '{named}' for encoder '{encoder}' are not available offline. Put the encoder's "
                "state dict at "
                f"{weights_cache_dir() / encoder / (str(named) + '.safetensors')} (or .pth), or set "
                "encoder_weights=<path>; "
                f"SMP's own weights are read from the local Hugging Face cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}): fill it once on a machine with "
                "internet "
                f"(python -c \"import segmentation_models_pytorch as smp; smp.create_model('{arch}', "
                f"'{encoder}', encoder_weights='{named}')\") "
                f"and copy it here ({type(err).__name__}: {err})"
            ) from err
        raise
    if local_file:
        load_encoder_weights(net.encoder, encoder_weights)
    elif packaged:
        path, mapping, unused = packaged
        load_encoder_weights(net.encoder, path, mapping=mapping, unused=unused)
    return SegmentationModel(net, net.encoder, "smp")
