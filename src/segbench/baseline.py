"""The majority-class baseline, and the check that a model learned more than it.

A model that scores like "predict the most frequent class everywhere" has learned nothing, however
its mIoU compares with the other candidates; on a 2-class dataset it can still look only "worse".
:func:`learned_nothing` flags it from its validation confusion matrix (never the test split), so the
report can say so and the ensemble step can leave it out.

Conventions as in :mod:`segbench.metrics`: rows = ground truth, columns = prediction; a class absent
from both is NaN and left out of the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import mean_iou

__all__ = [
    "majority_class",
    "constant_miou",
    "majority_baseline",
    "learned_nothing",
    "never_predicted",
    "DEFAULT_MARGIN",
]

#: validation mIoU at most this far above the baseline's counts as "no better than the baseline"
DEFAULT_MARGIN = 0.01


def majority_class(validation: dict[str, Any], splits: dict[str, Any]) -> int:
    """The most frequent class (by pixels) of fold 0's training images, from ``validation.json``'s
    per-image class pixel counts (no image is read)."""
    per_image = validation["per_image"]
    return int(np.argmax(np.sum([per_image[i] for i in splits["folds"][0]["train"]], axis=0)))


def constant_miou(class_pixels: np.ndarray, k: int) -> float:
    """mIoU of predicting class ``k`` on every pixel, given the ground truth's pixels per class
    (``float[C]``): ``IoU_k = G_k / sum(G)``, 0 for every other present class, absent ones left out."""
    g = np.asarray(class_pixels, dtype=np.float64)
    total = g.sum()
    if total == 0:
        return float("nan")
    iou = np.where(g > 0, 0.0, np.nan)
    iou[k] = g[k] / total
    return float(np.nanmean(iou))


def majority_baseline(
    validation: dict[str, Any], splits: dict[str, Any], classes: list[str]
) -> dict[str, Any]:
    """Metrics of predicting the most frequent training class on every test pixel.

    Returns:
        ``{"class", "class_id", "mIoU", "aAcc"}`` on the test split (``mIoU`` by :func:`constant_miou`).
    """
    k = majority_class(validation, splits)
    test_counts = np.sum([validation["per_image"][i] for i in splits["test"]], axis=0).astype(np.float64)
    total = test_counts.sum()
    return {
        "class": classes[k],
        "class_id": k,
        "mIoU": constant_miou(test_counts, k),
        "aAcc": float(test_counts[k] / total) if total else float("nan"),
    }


def never_predicted(val_confusion: np.ndarray) -> list[int]:
    """Class ids present in the validation ground truth (a non-zero row) that the model never predicts
    (a zero column)."""
    m = np.asarray(val_confusion)
    return [c for c in range(m.shape[0]) if m[c].sum() > 0 and m[:, c].sum() == 0]


def learned_nothing(
    val_confusion: np.ndarray, majority: int, classes: list[str], margin: float = DEFAULT_MARGIN
) -> str | None:
    """Why a model learned nothing, or None when it learned something.

    Flagged (validation only, ``int[C, C]`` pooled over folds and seeds):

    * its validation mIoU is at most ``margin`` above the majority-class baseline's on the same
      images (:func:`constant_miou` of the confusion's row sums, class ``majority``), or
    * it predicts one class only on every validation pixel while the masks hold more.

    A model that never predicts *some* present class (common for rare classes after a short training)
    is not flagged here: :func:`never_predicted` lists those classes for the report.
    """
    m = np.asarray(val_confusion, dtype=np.float64)
    if m.sum() == 0:
        return None
    score, base = float(mean_iou(m)), constant_miou(m.sum(axis=1), majority)
    predicted = int((m.sum(axis=0) > 0).sum())
    if predicted <= 1 < int((m.sum(axis=1) > 0).sum()):
        only = int(np.argmax(m.sum(axis=0)))
        return f"predicts only '{classes[only]}' on every validation pixel"
    if not score > base + margin:
        return (
            f"validation mIoU {score:.3f} is no better than always predicting '{classes[majority]}' "
            f"({base:.3f}; margin {margin:g})"
        )
    return None
