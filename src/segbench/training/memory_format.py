"""Which memory format a model trains in: ``train.channels_last`` (``auto`` | ``true`` | ``false``).

Channels-last (NHWC strides) holds the same values as PyTorch's default NCHW layout; oneDNN's (CPU)
and cuDNN's (GPU) convolutions are faster on it for most convolutional networks, while some models
are slower on it or break (a ``view`` of a permuted tensor). So ``auto`` turns it on only for the
models measured faster in it, :data:`CHANNELS_LAST_FASTER` (``bench/bench_memory_format.py``: one
training step, batch 8 at 160x224, 2 cores of an Intel Xeon with AMX), and keeps NCHW for every other
model and for those where channels-last broke training (:data:`CHANNELS_LAST_BROKEN`, on every device:
not measured on GPUs), which the report and ``train_meta.json`` say. A model is recognised by its
architecture (:data:`ARCHITECTURES`: library, architecture, encoder or MMSegmentation config), not by its
config's name, so a user's copy of a zoo model under another name (e.g. the same U-Net trained with
another recipe) trains in the same memory format as the zoo model. ``true`` forces it on for every
model, ``false`` off; a model's own ``train: {channels_last: true}`` turns it on for that model only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ARCHITECTURES", "CHANNELS_LAST_BROKEN", "CHANNELS_LAST_FASTER", "channels_last_for", "zoo_name"]

#: zoo model (``config/model/<name>.yaml``) -> images/s of a training step, NCHW -> channels-last,
#: at bf16-mixed and at 32-true (bench/bench_memory_format.py)
CHANNELS_LAST_FASTER: dict[str, str] = {
    "smp_unet_r18": "bf16 17.2 -> 20.7, fp32 8.7 -> 10.0 images/s",
    "mmseg_segformer_b0": "bf16 13.2 -> 16.5, fp32 10.2 -> 10.2 images/s",
}


#: zoo model -> why ``auto`` keeps it in NCHW although it measured faster in channels-last
CHANNELS_LAST_BROKEN: dict[str, str] = {
    "tv_lraspp_mbv3": (
        "bf16 18.2 -> 18.9 images/s in channels-last, but bf16-mixed channels-last training on the CPU "
        "(PyTorch 2.13, oneDNN) gave it non-finite weight gradients in a dilated depthwise convolution "
        "of its last stage at 384x480 (the loss NaN from the first epoch; fp32 channels-last and bf16 NCHW "
        "trained normally)"
    ),
}


#: zoo model -> the config keys that make its architecture (config/model/<name>.yaml): a model config with
#: the same values is the same network, whatever its name
ARCHITECTURES: dict[str, dict[str, str]] = {
    "smp_unet_r18": {"library": "smp", "arch": "Unet", "encoder": "resnet18"},
    "mmseg_segformer_b0": {
        "library": "mmseg",
        "config": "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
    },
    "tv_lraspp_mbv3": {"library": "torchvision", "arch": "lraspp_mobilenet_v3_large"},
}


def zoo_name(model_cfg: dict[str, Any]) -> str | None:
    """The zoo model of :data:`ARCHITECTURES` that ``model_cfg`` builds: its own name when listed, else
    the one whose architecture keys all equal the config's (case-insensitive); None when none does."""
    name = model_cfg.get("name")
    if name in ARCHITECTURES:
        return name
    for zoo, keys in ARCHITECTURES.items():
        if all(str(model_cfg.get(k, "")).lower() == v.lower() for k, v in keys.items()):
            return zoo
    return None


def channels_last_for(setting: Any, model_cfg: dict[str, Any]) -> tuple[bool, str]:
    """Resolve ``train.channels_last`` for one model.

    Args:
        setting: ``"auto"``, True or False (the effective recipe's value, the model's own ``train:``
            block included).
        model_cfg: the model's config; its architecture (:func:`zoo_name`) is looked up in
            :data:`CHANNELS_LAST_BROKEN` and :data:`CHANNELS_LAST_FASTER`.

    Returns:
        ``(channels_last, reason)``; the reason is recorded in ``train_meta.json``.

    Raises:
        ValueError: any other setting (names the allowed values).
    """
    if setting is True or setting is False:
        return bool(setting), f"train.channels_last={str(setting).lower()}"
    if setting != "auto":
        raise ValueError(f"train.channels_last={setting!r}; allowed: auto, true, false")
    name = model_cfg.get("name")
    zoo = zoo_name(model_cfg) or name
    as_zoo = f"{name} (the architecture of {zoo})" if zoo != name else name
    if zoo in CHANNELS_LAST_BROKEN:
        return False, f"auto: {as_zoo} keeps NCHW ({CHANNELS_LAST_BROKEN[zoo]})"
    if zoo in CHANNELS_LAST_FASTER:
        return True, f"auto: {as_zoo} trains faster in channels-last ({CHANNELS_LAST_FASTER[zoo]})"
    return False, (
        f"auto: {name} keeps NCHW (not measured in channels-last: bench/bench_memory_format.py {name}; "
        "train.channels_last=true forces it)"
    )
