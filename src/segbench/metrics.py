"""One metric implementation for every backend: everything is derived from a confusion matrix.

Conventions (the same as MMSegmentation's ``IoUMetric``; docs/metrics.md):

* ``M[C, C]`` is an int64 confusion matrix, rows = ground truth, columns = prediction, accumulated
  over the non-ignored pixels of the *whole* evaluation set ("dataset-level" metrics).
* Per class ``c``: ``TP = M[c, c]``, ``FP = M[:, c].sum() - TP``, ``FN = M[c, :].sum() - TP``.

  - ``IoU_c = TP / (TP + FP + FN)`` (Jaccard index)
  - ``Dice_c = 2 TP / (2 TP + FP + FN)`` (F1 score)
  - ``Acc_c = TP / (TP + FN)`` (recall; MMSegmentation calls it "Acc")
  - ``Precision_c = TP / (TP + FP)``

* A class with ``TP + FP + FN = 0`` (absent from both ground truth and prediction) gets NaN and is
  left out of every mean, as MMSegmentation, fastai and nnU-Net do. One kernel,
  :func:`iou_per_class`, computes IoU for one matrix or a stack of them (per image, per bootstrap
  resample), and :func:`mean_iou` applies the one rule for means: NaN-mean over classes, and NaN
  when no class is valid (an image whose pixels are all ignored has no mIoU; means over images
  and quantiles over resamples leave it out). segmentation-models-pytorch's
  ``iou_score`` (default ``zero_division=1.0``) counts it as 1 and PaddleSeg as 0; they inflate or
  deflate the mean (:func:`miou_as` reproduces both).
* ``mIoU``, ``mDice``, ``mAcc`` = NaN-mean over classes; ``aAcc = trace(M) / sum(M)`` (pixel
  accuracy); ``fwIoU = sum_c (G_c / sum(G)) IoU_c`` with ``G_c`` the ground-truth pixels of class c
  (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, section 5).
* Foreground means (``mIoU_fg`` ...) leave out the declared background class.
* Image-averaged metrics are the same formulas applied to each image's own matrix, then averaged
  over images; they are always labelled "image-averaged" where shown.
* Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
  Evaluation", CVPR 2021): per class, the boundary band of a binary mask is the mask minus its
  erosion by ``d = round(0.02 * image diagonal)`` pixels (at least 1), the image border counting as
  background (so masks cut by the border have a boundary there), as in the authors' boundary-iou-api.
  ``BoundaryIoU_c = sum |G_d ∩ P_d| / sum |G_d ∪ P_d|`` over the evaluation set (dataset-level),
  counting only non-ignored pixels; NaN when both bands are empty everywhere.

See docs/metrics.md for how other libraries differ and how to reproduce their numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "confusion_matrix",
    "iou_per_class",
    "mean_iou",
    "metrics_from_confusion",
    "per_class_table",
    "MEAN_METRICS",
    "boundary_band",
    "boundary_iou_counts",
    "boundary_iou",
    "miou_as",
    "bootstrap_miou",
    "bootstrap_scores",
]

#: Names of the scalar metrics returned by :func:`metrics_from_confusion`, in display order.
MEAN_METRICS = ("mIoU", "mDice", "mAcc", "aAcc", "fwIoU")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` (NumPy array, torch tensor, or nested sequence) as a NumPy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "iub":
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {arr.dtype}; "
            f"take argmax over the class axis of logits before computing the confusion matrix"
        )
    return arr


def confusion_matrix(target: Any, pred: Any, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """Confusion matrix of integer label maps: ``int64[num_classes, num_classes]``, rows = ground truth.

    Args:
        target: ground-truth class indices, any shape (``[H, W]``, ``[N, H, W]`` ...), any integer dtype;
            a NumPy array or a torch tensor (CPU or GPU). Values must be in ``[0, num_classes)`` or
            equal ``ignore_index``.
        pred: predicted class indices, same shape as ``target``, values in ``[0, num_classes)``.
        num_classes: number of classes ``C`` (ignore label excluded).
        ignore_index: ground-truth value whose pixels are left out entirely (default 255, as in
            MMSegmentation); ``None`` to ignore nothing.

    Returns:
        ``np.ndarray`` of dtype int64 and shape ``[C, C]``; ``M[t, p]`` counts pixels of true class
        ``t`` predicted as ``p``. ``M.sum()`` equals the number of non-ignored pixels.

    Raises:
        ValueError: shapes differ, ``num_classes < 1``, or a value lies outside ``[0, C)`` (and is not
            the ignore label, for the target).
        TypeError: a non-integer array (for example logits) is passed.

    Example:
        >>> confusion_matrix([[0, 1], [1, 255]], [[0, 1], [0, 1]], num_classes=2).tolist()
        [[1, 0], [1, 1]]
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    num_classes = int(num_classes)
    t = _to_numpy(target, "target")
    p = _to_numpy(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"target and pred must have the same shape, got {t.shape} and {p.shape}")
    t = t.reshape(-1)
    p = p.reshape(-1)
    if ignore_index is not None:
        keep = t != ignore_index
        if not keep.all():
            t = t[keep]
            p = p[keep]
    if t.size:
        # range checks by min/max: one pass each, no boolean temporaries
        if int(t.min()) < 0 or int(t.max()) >= num_classes:
            bad = t[(t < 0) | (t >= num_classes)]
            vals = np.unique(bad)[:10].tolist()
            raise ValueError(
                f"target holds values {vals} outside [0, {num_classes}) that are not "
                f"ignore_index={ignore_index}; "
                f"check the dataset's class list or its ignore_index"
            )
        if int(p.min()) < 0 or int(p.max()) >= num_classes:
            vals = np.unique(p[(p < 0) | (p >= num_classes)])[:10].tolist()
            raise ValueError(f"pred holds values {vals} outside [0, {num_classes})")
    idx = t.astype(np.int64)  # always a fresh array: safe to modify in place
    idx *= num_classes
    idx += p
    counts = np.bincount(idx, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def iou_per_class(confusion: Any) -> np.ndarray:
    """IoU of every class, ``TP / (TP + FP + FN)``, for one confusion matrix or a stack of them.

    The one IoU kernel of segbench: dataset-level metrics, per-image metrics and every bootstrap
    resample use it.

    Args:
        confusion: ``int or float[..., C, C]`` (rows = ground truth), e.g. ``[C, C]`` for a dataset,
            ``[N, C, C]`` per image, ``[B, C, C]`` per resample.

    Returns:
        ``float64[..., C]``; NaN where ``TP + FP + FN = 0`` (the class is absent from both ground
        truth and prediction).

    Example:
        >>> iou_per_class([[3, 1], [0, 4]]).tolist()
        [0.75, 0.8]
        >>> iou_per_class([[[1, 0], [0, 0]]]).tolist()    # class 1 absent: NaN, not 0 or 1
        [[1.0, nan]]
    """
    m = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    return _safe_div(tp, m.sum(-1) + m.sum(-2) - tp)


def mean_iou(confusion: Any) -> np.ndarray | float:
    """mIoU: the NaN-mean over classes of :func:`iou_per_class`; NaN when no class is valid.

    Args:
        confusion: ``[..., C, C]`` as in :func:`iou_per_class`.

    Returns:
        a float for one matrix, ``float64[...]`` for a stack.

    Example:
        >>> round(mean_iou([[3, 1], [0, 4]]), 4)
        0.775
        >>> mean_iou(np.zeros((2, 2, 2))).tolist()        # no valid pixel: no mIoU
        [nan, nan]
    """
    iou = iou_per_class(confusion)
    valid = ~np.isnan(iou)
    count = valid.sum(-1)
    total = np.where(valid, iou, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if out.ndim == 0 else out


def metrics_from_confusion(matrix: Any, background: int | None = None) -> dict[str, Any]:
    """All segbench metrics from one confusion matrix.

    Args:
        matrix: ``int[C, C]`` confusion matrix, rows = ground truth (see :func:`confusion_matrix`).
        background: index of the background class; when given, ``mIoU_fg``, ``mDice_fg`` and
            ``mAcc_fg`` (means without it) are added.

    Returns:
        A dict with floats ``mIoU``, ``mDice``, ``mAcc``, ``aAcc``, ``fwIoU`` (and the ``*_fg`` means),
        lists of per-class floats ``IoU``, ``Dice``, ``Acc`` (recall), ``Precision`` (NaN where the class
        has ``TP + FP + FN = 0``; for ``Acc``/``Precision`` where the denominator is 0), and integer lists
        ``TP``, ``FP``, ``FN``, ``gt_pixels``. All fractions are in [0, 1] (not percent). With an empty
        matrix every value is NaN.

    Raises:
        ValueError: the matrix is not square or holds negative counts.

    Example:
        >>> m = metrics_from_confusion([[3, 1], [0, 4]])
        >>> [round(v, 4) for v in m["IoU"]], round(m["mIoU"], 4), m["aAcc"]
        ([0.75, 0.8], 0.775, 0.875)
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {m.shape}")
    if (m < 0).any():
        raise ValueError("confusion matrix holds negative counts")
    m = m.astype(np.float64)
    tp = np.diag(m)
    gt = m.sum(axis=1)
    pr = m.sum(axis=0)
    fp = pr - tp
    fn = gt - tp
    iou = iou_per_class(m)
    dice = _safe_div(2 * tp, 2 * tp + fp + fn)
    acc = _safe_div(tp, tp + fn)
    prec = _safe_div(tp, tp + fp)
    total = m.sum()
    out: dict[str, Any] = {
        "mIoU": float(mean_iou(m)),
        "mDice": _nanmean(dice),
        "mAcc": _nanmean(acc),
        "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
        "fwIoU": float(np.nansum(gt / total * iou)) if total > 0 else float("nan"),
        "IoU": iou.tolist(),
        "Dice": dice.tolist(),
        "Acc": acc.tolist(),
        "Precision": prec.tolist(),
        "TP": tp.astype(np.int64).tolist(),
        "FP": fp.astype(np.int64).tolist(),
        "FN": fn.astype(np.int64).tolist(),
        "gt_pixels": gt.astype(np.int64).tolist(),
    }
    if background is not None:
        if not 0 <= background < m.shape[0]:
            raise ValueError(f"background class {background} outside [0, {m.shape[0]})")
        fg = np.arange(m.shape[0]) != background
        out["mIoU_fg"] = _nanmean(iou[fg])
        out["mDice_fg"] = _nanmean(dice[fg])
        out["mAcc_fg"] = _nanmean(acc[fg])
    return out


def per_class_table(metrics: dict[str, Any], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows ``{class, IoU, Dice, Acc, Precision, gt_pixels}`` for a per-class table (one per class)."""
    n = len(metrics["IoU"])
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} classes")
    return [
        {
            "class": class_names[c],
            "IoU": metrics["IoU"][c],
            "Dice": metrics["Dice"][c],
            "Acc": metrics["Acc"][c],
            "Precision": metrics["Precision"][c],
            "gt_pixels": metrics["gt_pixels"][c],
        }
        for c in range(n)
    ]


def boundary_band(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The inner boundary band of a binary mask: ``mask`` minus its erosion (Boundary IoU's ``G_d ∩ G``).

    Args:
        mask: ``bool`` or ``uint8[H, W]`` binary mask.
        dilation_ratio: band width as a fraction of the image diagonal; ``d = max(1, round(ratio * diag))``.

    Returns:
        ``bool[H, W]``: pixels of the mask within ``d`` pixels (chessboard distance, i.e. ``d`` erosions
        by a 3x3 square) of a non-mask pixel or of the image border.

    Example:
        >>> m = np.zeros((6, 6), bool); m[1:5, 1:5] = True
        >>> int(boundary_band(m, dilation_ratio=0.1).sum())   # d = 1: the 12-pixel ring of the 4x4 square
        12
    """
    import cv2

    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * float(np.sqrt(h * h + w * w)))))
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    # d erosions by a 3x3 square == one erosion by a (2d+1)x(2d+1) square (chessboard distance)
    kernel = np.ones((2 * d + 1, 2 * d + 1), dtype=np.uint8)
    eroded = cv2.erode(padded, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)[1 : h + 1, 1 : w + 1]
    return (m > 0) & (eroded == 0)


def boundary_iou_counts(
    target: Any, pred: Any, num_classes: int, ignore_index: int | None = 255, dilation_ratio: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class boundary intersection and union pixel counts of one ``[H, W]`` image.

    Returns:
        ``(intersection int64[C], union int64[C])``; sum them over images and divide for the
        dataset-level Boundary IoU (:func:`boundary_iou`). Ignored pixels are not counted; classes
        are computed on the masks with ignored pixels left as they are in ``target`` (not class c).

    Raises:
        ValueError: inputs are not 2-D or differ in shape.
    """
    t = _to_numpy(target, "target")
    p = _to_numpy(pred, "pred")
    if t.ndim != 2 or t.shape != p.shape:
        raise ValueError(
            f"boundary IoU needs two [H, W] label maps of one shape, got {t.shape} and {p.shape}"
        )
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    inter = np.zeros(num_classes, np.int64)
    union = np.zeros(num_classes, np.int64)
    present = set(np.unique(t[valid]).tolist()) | set(np.unique(p[valid]).tolist())
    for c in present:
        if not 0 <= c < num_classes:
            continue
        g = boundary_band(t == c, dilation_ratio) & valid
        q = boundary_band(p == c, dilation_ratio) & valid
        inter[c] = int(np.count_nonzero(g & q))
        union[c] = int(np.count_nonzero(g | q))
    return inter, union


def boundary_iou(intersection: Any, union: Any) -> dict[str, Any]:
    """``{"BoundaryIoU": [C] (NaN where the union is 0), "mBoundaryIoU": NaN-mean}`` from summed counts."""
    inter = np.asarray(intersection, dtype=np.float64)
    uni = np.asarray(union, dtype=np.float64)
    biou = _safe_div(inter, uni)
    return {"BoundaryIoU": biou.tolist(), "mBoundaryIoU": _nanmean(biou)}


#: dataset-level conventions :func:`miou_as` reproduces (see docs/metrics.md)
CONVENTIONS = {
    "segbench": "NaN-mean over classes present in ground truth or prediction",
    "mmseg": "IoUMetric: np.nanmean, absent classes NaN (same as segbench)",
    "torchmetrics": "MulticlassJaccardIndex(average='macro'): absent classes weight 0 (same as segbench)",
    "fastai": "JaccardCoeffMulti: mean over classes with a non-zero union (same as segbench)",
    "paddleseg": "metrics.mean_iou: absent classes count as 0 in a plain mean",
    "smp": "smp.metrics.iou_score(reduction='macro'), whose default zero_division=1.0 counts absent classes "
    "as 1",
    "smp_zero_division_0": "smp.metrics.iou_score(reduction='macro', zero_division=0): absent -> 0",
}


def miou_as(matrix: Any, convention: str) -> float:
    """The dataset-level mIoU another library would report for the same confusion matrix.

    Args:
        matrix: ``int[C, C]`` confusion matrix (rows = ground truth).
        convention: one of :data:`CONVENTIONS` (``segbench``, ``mmseg``, ``torchmetrics``, ``fastai``,
            ``paddleseg``, ``smp``, ``smp_zero_division_0``). Image-wise conventions (nnU-Net,
            SMP's ``*-imagewise``) need per-image matrices: apply this to each and average.

    Raises:
        ValueError: unknown convention (lists the valid ones).

    Example:
        >>> M = [[5, 1, 0], [0, 4, 0], [0, 0, 0]]          # class 2 absent everywhere
        >>> round(miou_as(M, "mmseg"), 4), round(miou_as(M, "paddleseg"), 4), round(miou_as(M, "smp"), 4)
        (0.8167, 0.5444, 0.8778)
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention '{convention}'; valid: {', '.join(CONVENTIONS)}")
    iou = np.array(metrics_from_confusion(matrix)["IoU"], dtype=np.float64)
    if convention in ("paddleseg", "smp_zero_division_0"):
        return float(np.nan_to_num(iou, nan=0.0).mean())
    if convention == "smp":
        return float(np.nan_to_num(iou, nan=1.0).mean())
    return _nanmean(iou)


def bootstrap_miou(
    per_image: Any, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Percentile bootstrap confidence interval of the dataset-level mIoU, resampling images.

    Each resample draws N images with replacement, sums their confusion matrices and recomputes the
    dataset-level mIoU (NaN-mean over classes present), so the interval covers the metric actually
    reported, not a mean of per-image scores (Efron & Tibshirani, "An Introduction to the
    Bootstrap", 1993, ch. 13). Vectorised: the resampled matrices are ``counts @ M`` with ``counts``
    the multinomial draw counts, so 2,000 resamples of a few hundred images take well under a second.

    Args:
        per_image: ``int[N, C, C]`` per-image confusion matrices (``confusion_per_image.npy``).
        n_resamples: number of bootstrap resamples.
        seed: seed of the resampling (results are reproducible).
        level: confidence level of the interval.

    Returns:
        ``{"mIoU": point estimate, "low": ..., "high": ..., "level": level, "n_images": N,
        "n_resamples": n_resamples}``.

    Raises:
        ValueError: not a stack of square matrices, or no image.
    """
    m = np.asarray(per_image)
    scores = bootstrap_scores(m, n_resamples, seed)
    alpha = (1 - level) / 2
    return {
        "mIoU": metrics_from_confusion(m.sum(0))["mIoU"],
        "low": float(np.nanquantile(scores, alpha)),
        "high": float(np.nanquantile(scores, 1 - alpha)),
        "level": level,
        "n_images": int(m.shape[0]),
        "n_resamples": int(n_resamples),
    }


def bootstrap_scores(per_image: Any, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """The ``n_resamples`` bootstrap mIoU values behind :func:`bootstrap_miou` (``float64[n_resamples]``).

    The draws depend only on ``seed`` and N, so two stacks of the same N images (two folds, or two
    models on one test set) get the same resamples: averaging or differencing their scores gives
    the bootstrap of a fold mean or a paired bootstrap of a difference.

    Raises:
        ValueError: not a stack of square matrices, or no image.
    """
    m = np.asarray(per_image)
    if m.ndim != 3 or m.shape[1] != m.shape[2] or m.shape[0] == 0:
        raise ValueError(f"per_image must be int[N, C, C] with N >= 1, got shape {m.shape}")
    n, c, _ = m.shape
    flat = m.reshape(n, c * c).astype(np.float64)
    rng = np.random.default_rng(seed)
    scores = np.empty(n_resamples)
    for start in range(0, n_resamples, 500):  # chunks bound memory at 500 x N counts
        b = min(500, n_resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)  # [b, N]
        scores[start : start + b] = mean_iou((counts @ flat).reshape(b, c, c))
    return scores
