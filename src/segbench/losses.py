"""Training losses: a weighted sum of cross-entropy and segmentation_models_pytorch.losses.

``train.loss`` maps a loss name to its weight, or to ``{weight: w, <option>: value}``:

====================  =====================================================================================
``ce``                ``torch.nn.CrossEntropyLoss`` (``class_weights`` apply here; ``label_smoothing``)
``dice``              ``smp.losses.DiceLoss`` (from logits; ``smooth``, ``log_loss``)
``jaccard``           ``smp.losses.JaccardLoss`` (soft IoU)
``focal``             ``smp.losses.FocalLoss`` (``alpha``, ``gamma``; Lin et al. 2017)
``tversky``           ``smp.losses.TverskyLoss`` (``alpha`` weighs FP, ``beta`` FN; Salehi et al. 2017)
``lovasz``            ``smp.losses.LovaszLoss`` (Berman et al. 2018)
====================  =====================================================================================

Every loss honours ``ignore_index``. No "mode" to choose: SMP's losses take ``binary`` or
``multiclass``, and segbench picks it from the logits: one output channel is binary (sigmoid, target
0/1), ``C >= 2`` channels are multiclass (softmax; a two-class dataset is multiclass with C=2, which
is what every backend here outputs).

Class weights (``train.class_weights``): a list of ``C`` numbers, or ``median_frequency``: the
median-frequency balancing of Eigen & Fergus (ICCV 2015), used by SegNet on CamVid:
``w_c = median_k(f_k) / f_c`` with ``f_c`` = class-c pixels / pixels of the training images in which c
appears, counted on the training split's masks (never validation or test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._compat import import_torchvision

__all__ = [
    "build_loss",
    "CombinedLoss",
    "LOSS_NAMES",
    "class_pixel_counts",
    "median_frequency_weights",
    "resolve_class_weights",
]

LOSS_NAMES = ("ce", "dice", "jaccard", "focal", "tversky", "lovasz")


class _AutoMode(nn.Module):
    """An SMP loss built for the mode the logits imply: ``binary`` for 1 channel, else ``multiclass``."""

    def __init__(self, make):
        super().__init__()
        self.by_mode = nn.ModuleDict({mode: make(mode) for mode in ("binary", "multiclass")})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.by_mode["binary" if logits.shape[1] == 1 else "multiclass"](logits, target)


class _CrossEntropy(nn.Module):
    """Cross-entropy with ``ignore_index``: softmax CE for ``C >= 2`` channels, BCE-with-logits for one."""

    def __init__(self, ignore_index: int, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            keep = target != self.ignore_index
            if not keep.any():
                return logits.sum() * 0.0
            return nn.functional.binary_cross_entropy_with_logits(logits[:, 0][keep], target[keep].float())
        return nn.functional.cross_entropy(
            logits,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class CombinedLoss(nn.Module):
    """``sum_i w_i * loss_i(logits float32[N, C, H, W], target int64[N, H, W])``; ``C = 1`` is binary."""

    def __init__(self, terms: dict[str, tuple[float, nn.Module]]):
        super().__init__()
        self.weights = {k: w for k, (w, _) in terms.items()}
        self.terms = nn.ModuleDict({k: m for k, (_, m) in terms.items()})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[k] * m(logits, target) for k, m in self.terms.items())


def build_loss(spec: dict[str, Any], ignore_index: int = 255, class_weights=None) -> CombinedLoss:
    """Build the weighted loss from ``{"ce": 1.0, "dice": 1.0}`` or
    ``{"tversky": {"weight": 1, "beta": 0.7}}``.

    Args:
        spec: loss name -> weight, or -> ``{"weight": w, **options of that loss}``.
        ignore_index: target value that no loss counts.
        class_weights: None or ``C`` numbers for the cross-entropy term.

    Raises:
        ValueError: an unknown loss name (lists the valid ones), an unknown option, or no positive weight.
    """
    import_torchvision()
    from segmentation_models_pytorch import losses as L

    def smp_loss(cls, **fixed):
        def factory(**opts):
            return _AutoMode(lambda mode: cls(mode, ignore_index=ignore_index, **fixed, **opts))

        return factory

    makers = {
        "ce": lambda **o: _CrossEntropy(
            ignore_index, None if class_weights is None else torch.as_tensor(class_weights), **o
        ),
        "dice": smp_loss(L.DiceLoss, from_logits=True),
        "jaccard": smp_loss(L.JaccardLoss, from_logits=True),
        "focal": smp_loss(L.FocalLoss),
        "tversky": smp_loss(L.TverskyLoss, from_logits=True),
        "lovasz": smp_loss(L.LovaszLoss),
    }
    terms = {}
    for name, value in spec.items():
        if name not in makers:
            raise ValueError(f"train.loss: unknown loss '{name}'; valid: {', '.join(LOSS_NAMES)}")
        opts = dict(value) if isinstance(value, dict) else {"weight": value}
        weight = float(opts.pop("weight", 1.0))
        if weight > 0:
            try:
                module = makers[name](**opts)
            except TypeError as err:
                raise ValueError(f"train.loss.{name}: unknown option in {sorted(opts)} ({err})") from err
            terms[name] = (weight, module)
    if not terms:
        raise ValueError("train.loss: give at least one loss a positive weight, e.g. {ce: 1.0}")
    return CombinedLoss(terms)


def class_pixel_counts(
    dataset_root: str | Path, manifest: dict[str, Any], ids: list[str], num_classes: int, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixels (``int64[C]``) and pixels of the images that contain the class (``int64[C]``).

    Reads the canonical masks of ``ids`` (``dataset_root/<manifest[id]['mask']>``); ``ignore_index``
    pixels are not counted.
    """
    from .data.dataset import read_mask

    pixels = np.zeros(num_classes, dtype=np.int64)
    present_in = np.zeros(num_classes, dtype=np.int64)
    for i in ids:
        mask = read_mask(Path(dataset_root) / manifest[i]["mask"])
        valid = mask[mask != ignore_index].astype(np.int64)
        counts = np.bincount(valid[valid < num_classes], minlength=num_classes)[:num_classes]
        pixels += counts
        present_in[counts > 0] += valid.size
    return pixels, present_in


def median_frequency_weights(pixels: np.ndarray, present_in: np.ndarray) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus, ICCV 2015): ``w_c = median(f) / f_c``.

    ``f_c = pixels_c / present_in_c``. A class absent from the training images gets weight 0 (no
    target pixel carries it, so the weight does not matter; 0 keeps the loss finite).

    Returns:
        ``float32[C]``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(present_in > 0, pixels / np.maximum(present_in, 1), 0.0)
    seen = f > 0
    if not seen.any():
        return np.zeros_like(f, dtype=np.float32)
    med = np.median(f[seen])
    return np.where(seen, med / np.where(seen, f, 1.0), 0.0).astype(np.float32)


def resolve_class_weights(setting, dataset_root: str | Path, meta: dict[str, Any], train_ids: list[str]):
    """``train.class_weights`` -> ``float32[C]`` or None.

    Args:
        setting: None, ``median_frequency`` (computed from the training split), or a list of ``C`` numbers.
        meta: the ``dataset.json`` content (classes, ignore_index, manifest).

    Raises:
        ValueError: a list of the wrong length, or an unknown name (lists the allowed ones).
    """
    if setting is None:
        return None
    num_classes = len(meta["classes"])
    if isinstance(setting, str):
        if setting != "median_frequency":
            raise ValueError(
                f"train.class_weights: '{setting}' unknown; allowed: null, median_frequency, or a list of "
                f"{num_classes} numbers"
            )
        pixels, present = class_pixel_counts(
            dataset_root, meta["manifest"], train_ids, num_classes, int(meta["ignore_index"])
        )
        return median_frequency_weights(pixels, present)
    weights = np.asarray(setting, dtype=np.float32)
    if weights.shape != (num_classes,):
        raise ValueError(
            f"train.class_weights has {weights.size} numbers; the dataset has {num_classes} classes "
            f"({', '.join(c['name'] for c in meta['classes'])})"
        )
    return weights
