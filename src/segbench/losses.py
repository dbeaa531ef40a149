"""Training losses: a weighted sum of cross-entropy and segmentation_models_pytorch.losses.

Every loss honours ``ignore_index``. Names: ``ce`` (torch CrossEntropyLoss), ``dice``
(smp DiceLoss, multiclass, from logits), ``focal`` (smp FocalLoss), ``lovasz`` (smp LovaszLoss),
``tversky`` (smp TverskyLoss, alpha=beta=0.5).
"""

from __future__ import annotations

import torch
from torch import nn

from ._compat import import_torchvision

__all__ = ["build_loss", "CombinedLoss"]

LOSS_NAMES = ("ce", "dice", "focal", "lovasz", "tversky")


class CombinedLoss(nn.Module):
    """``sum_i w_i * loss_i(logits float32[N, C, H, W], target int64[N, H, W])``."""

    def __init__(self, terms: dict[str, tuple[float, nn.Module]]):
        super().__init__()
        self.weights = {k: w for k, (w, _) in terms.items()}
        self.terms = nn.ModuleDict({k: m for k, (_, m) in terms.items()})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[k] * m(logits, target) for k, m in self.terms.items())


def build_loss(spec: dict[str, float], ignore_index: int = 255) -> CombinedLoss:
    """Build the weighted loss from ``{"ce": 1.0, "dice": 1.0}``.

    Raises:
        ValueError: an unknown loss name (lists the valid ones) or no positive weight.
    """
    import_torchvision()
    from segmentation_models_pytorch import losses as L

    makers = {
        "ce": lambda: nn.CrossEntropyLoss(ignore_index=ignore_index),
        "dice": lambda: L.DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index),
        "focal": lambda: L.FocalLoss("multiclass", ignore_index=ignore_index),
        "lovasz": lambda: L.LovaszLoss("multiclass", ignore_index=ignore_index),
        "tversky": lambda: L.TverskyLoss("multiclass", from_logits=True, ignore_index=ignore_index),
    }
    terms = {}
    for name, weight in spec.items():
        if name not in makers:
            raise ValueError(f"train.loss: unknown loss '{name}'; valid: {', '.join(LOSS_NAMES)}")
        if weight > 0:
            terms[name] = (float(weight), makers[name]())
    if not terms:
        raise ValueError("train.loss: give at least one loss a positive weight, e.g. {ce: 1.0}")
    return CombinedLoss(terms)
