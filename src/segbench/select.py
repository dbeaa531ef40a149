"""Model selection on validation results, under constraints, and paired comparisons with verdicts.

Selection (:func:`select_model`) reads validation results only, never the test split:

* score: one criterion on the pooled validation confusion matrix (summed over validation images and,
  with k folds, over the folds' out-of-fold validation sets, as nnU-Net selects on out-of-fold
  predictions): ``mIoU`` (default, dataset-level) or ``mDice_fg`` (mean Dice over foreground
  classes, the background class left out);
* constraints (optional): ``max_ms_per_image`` (median inference time on validation images),
  ``max_memory_mb`` (peak GPU memory on a GPU, else the evaluation process's peak RSS) and
  ``max_params``. A model that breaks one is shown but not selectable;
* ties (scores within ``1e-9``) go to the cheaper model: fewer parameters, then lower latency.

Comparisons (:func:`paired_comparison`) are made on the same test images: a paired bootstrap of the
dataset-level mIoU difference (the same resampled images for both models, Efron & Tibshirani 1993,
ch. 13 and 16) and a Wilcoxon signed-rank test on per-image mIoU (``scipy.stats.wilcoxon``,
Wilcoxon 1945). The verdict says "better" only when the 95 % interval of the difference excludes 0
and there are at least ``MIN_IMAGES`` (10) test images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .metrics import bootstrap_scores, mean_iou, metrics_from_confusion

__all__ = [
    "CRITERIA",
    "criterion_score",
    "select_model",
    "paired_comparison",
    "per_image_miou",
    "pareto_front",
    "selection_rule",
    "selection_record",
]

CRITERIA = ("mIoU", "mDice_fg")
TIE = 1e-9
#: below this many test images no verdict says "better": a bootstrap of so few images is not trustworthy
MIN_IMAGES = 10


def criterion_score(confusion: np.ndarray, criterion: str = "mIoU", background: int | None = None) -> float:
    """The selection score of a pooled confusion matrix (int[C, C], rows = ground truth).

    Raises:
        ValueError: unknown criterion, or ``mDice_fg`` without a background class.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"select.criterion '{criterion}' is unknown; allowed values: {', '.join(CRITERIA)}")
    if criterion == "mDice_fg":
        if background is None:
            raise ValueError(
                "select.criterion mDice_fg needs dataset.background (the class left out of the mean)"
            )
        return float(metrics_from_confusion(confusion, background=background)["mDice_fg"])
    return float(metrics_from_confusion(confusion)["mIoU"])


def select_model(
    candidates: list[dict[str, Any]],
    criterion: str = "mIoU",
    constraints: dict[str, Any] | None = None,
    background: int | None = None,
) -> dict[str, Any]:
    """Rank candidates on validation and pick the best one that meets every constraint.

    Args:
        candidates: ``[{"name", "parameters", "val_confusion": int[C, C] (pooled over folds),
            "val_time_ms": float, "memory_mb": float or None, ...}]``.
        criterion: ``mIoU`` or ``mDice_fg`` (see the module docstring).
        constraints: ``{"max_ms_per_image", "max_memory_mb", "max_params"}``, each optional (None = no limit).
        background: the background class id (for ``mDice_fg``).

    Returns:
        ``{"selected": name or None, "criterion", "constraints", "ranking": [{"name", "score",
        "parameters", "val_time_ms", "memory_mb", "violations": [...], "selectable": bool}, ...]}``,
        the ranking ordered best first (selectable ones before the others).

    Raises:
        ValueError: an unknown criterion or constraint key.
    """
    constraints = {k: v for k, v in (constraints or {}).items() if v is not None}
    unknown = set(constraints) - {"max_ms_per_image", "max_memory_mb", "max_params"}
    if unknown:
        raise ValueError(
            f"select: unknown constraint(s) {sorted(unknown)}; allowed: max_ms_per_image, max_memory_mb, "
            "max_params"
        )
    rows = []
    for c in candidates:
        score = criterion_score(np.asarray(c["val_confusion"]), criterion, background)
        violations = []
        if (
            "max_ms_per_image" in constraints
            and not c.get("val_time_ms", math.inf) <= constraints["max_ms_per_image"]
        ):
            violations.append(
                f"{c.get('val_time_ms', float('nan')):.0f} ms/image > {constraints['max_ms_per_image']}"
            )
        mem = c.get("memory_mb")
        if "max_memory_mb" in constraints and not (mem is not None and mem <= constraints["max_memory_mb"]):
            violations.append(
                f"{'unknown' if mem is None else f'{mem:.0f}'} MB > {constraints['max_memory_mb']}"
            )
        if "max_params" in constraints and not c["parameters"] <= constraints["max_params"]:
            violations.append(f"{c['parameters']:,} parameters > {constraints['max_params']:,}")
        rows.append(
            {
                "name": c["name"],
                "score": score,
                "parameters": int(c["parameters"]),
                "val_time_ms": c.get("val_time_ms"),
                "memory_mb": mem,
                "violations": violations,
                "selectable": not violations and not math.isnan(score),
            }
        )

    def key(r: dict[str, Any]) -> tuple:
        s = -math.inf if math.isnan(r["score"]) else r["score"]
        return (
            not r["selectable"],
            -round(s / TIE) * TIE,
            r["parameters"],
            r["val_time_ms"] or 0.0,
            r["name"],
        )

    rows.sort(key=key)
    selected = rows[0]["name"] if rows and rows[0]["selectable"] else None
    return {"selected": selected, "criterion": criterion, "constraints": constraints, "ranking": rows}


def per_image_miou(per_image: np.ndarray) -> np.ndarray:
    """float64[N]: the mIoU of each image's own confusion matrix (:func:`segbench.metrics.mean_iou`:
    classes absent from both the image's ground truth and prediction left out; an image with no valid
    pixel gives NaN)."""
    m = np.asarray(per_image, dtype=np.float64)
    return mean_iou(m) if m.shape[0] else np.zeros(0)


def _wilcoxon(per_image_a: list[np.ndarray], per_image_b: list[np.ndarray]) -> tuple[float, int]:
    """``(p, images tested)``: Wilcoxon signed-rank test (scipy) of the fold-mean per-image mIoU of
    the images both models score; p = 1 when they are equal on every image, NaN when none is scored."""
    ia = np.nanmean([per_image_miou(x) for x in per_image_a], axis=0)
    ib = np.nanmean([per_image_miou(y) for y in per_image_b], axis=0)
    ok = np.isfinite(ia) & np.isfinite(ib)
    p = float("nan")
    if ok.sum() >= 1 and np.any(ia[ok] != ib[ok]):
        from scipy.stats import wilcoxon

        p = float(wilcoxon(ia[ok], ib[ok]).pvalue)
    elif ok.sum() >= 1:
        p = 1.0
    return p, int(ok.sum())


def _verdict(a, b, diff, low, high, level, p, n_tested, n_img) -> tuple[str | None, str]:
    """``(better model or None, the plain-language verdict)`` of a paired comparison."""
    pct = f"{level * 100:.0f} % CI"
    ptxt = (
        f"; Wilcoxon signed-rank p = {p:.2g} on per-image IoU of {n_tested} images"
        if not math.isnan(p)
        else ""
    )
    if n_img < MIN_IMAGES:
        return None, (
            f"{a} and {b} cannot be told apart reliably on only {n_img} test images (difference "
            f"{diff:.3f}, {pct} {low:.3f} to {high:.3f}{ptxt}); a bootstrap over fewer than "
            f"{MIN_IMAGES} images is not trustworthy: the comparison needs more test images (k-fold "
            f"cross-validation does not enlarge the test split)"
        )
    if low > 0:
        return a, f"{a} is better than {b} (difference {diff:.3f}, {pct} {low:.3f} to {high:.3f}{ptxt})"
    if high < 0:
        return b, f"{b} is better than {a} (difference {-diff:.3f}, {pct} {-high:.3f} to {-low:.3f}{ptxt})"
    return None, (
        f"{a} and {b} are indistinguishable on this data (difference {diff:.3f}, {pct} "
        f"{low:.3f} to {high:.3f} includes 0{ptxt})"
    )


def paired_comparison(
    a: str,
    b: str,
    per_image_a: list[np.ndarray],
    per_image_b: list[np.ndarray],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Is model ``a`` better than model ``b`` on the same test images?

    Args:
        a, b: model names (for the verdict).
        per_image_a, per_image_b: per fold, ``int[N, C, C]`` per-image confusion matrices of the same
            N test images in the same order (``confusion_per_image.npy``).
        n_resamples: bootstrap resamples (seeded; the same draws for both models and every fold).
        level: confidence level of the interval of the difference.

    Returns:
        ``{"a", "b", "difference" (mIoU_a - mIoU_b, fold mean), "ci_low", "ci_high", "level",
        "wilcoxon_p", "n_images", "better": a | b | None, "verdict": plain-language sentence}``.

    Raises:
        ValueError: the stacks do not cover the same number of images or folds.
    """
    if len(per_image_a) != len(per_image_b) or any(
        x.shape != y.shape for x, y in zip(per_image_a, per_image_b)
    ):
        raise ValueError(f"paired comparison of {a} and {b} needs the same test images and folds")
    diff = float(
        np.mean(
            [
                metrics_from_confusion(x.sum(0))["mIoU"] - metrics_from_confusion(y.sum(0))["mIoU"]
                for x, y in zip(per_image_a, per_image_b)
            ]
        )
    )
    boot = np.mean(
        [
            bootstrap_scores(x, n_resamples, seed) - bootstrap_scores(y, n_resamples, seed)
            for x, y in zip(per_image_a, per_image_b)
        ],
        axis=0,
    )
    alpha = (1 - level) / 2
    low, high = (float(v) for v in np.nanquantile(boot, [alpha, 1 - alpha]))
    p, n_tested = _wilcoxon(per_image_a, per_image_b)
    n_img = int(per_image_a[0].shape[0])
    better, verdict = _verdict(a, b, diff, low, high, level, p, n_tested, n_img)
    return {
        "a": a,
        "b": b,
        "difference": diff,
        "ci_low": low,
        "ci_high": high,
        "level": level,
        "wilcoxon_p": p,
        "n_images": n_img,
        "better": better,
        "verdict": verdict,
    }


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names on the accuracy/latency Pareto front: no other point is at least as fast and at least as
    accurate and strictly better in one. ``points``: ``(name, latency, accuracy)``."""
    front = []
    for n, t, acc in points:
        dominated = any((t2 <= t and a2 >= acc) and (t2 < t or a2 > acc) for n2, t2, a2 in points if n2 != n)
        if not dominated:
            front.append(n)
    return front


CRITERION_TEXT = {"mIoU": "dataset-level mIoU", "mDice_fg": "mean foreground Dice"}


def selection_rule(criterion: str, n_folds: int, has_val: bool) -> str:
    """The selection rule in plain words, as the report and the model card state it."""
    crit = CRITERION_TEXT[criterion]
    if not has_val:
        return (
            f"highest test {crit}: there is no validation split, so this choice is biased towards the test "
            "set; set split.val_fraction > 0"
        )
    pooled = f"pooled out-of-fold over {n_folds} folds" if n_folds > 1 else "validation split"
    return (
        f"highest validation {crit} ({pooled}); ties go to fewer parameters, then lower latency; models "
        "breaking a constraint are not selectable; the test split is not used"
    )


def _ranked_table(rows: list[dict[str, Any]], choice: dict[str, Any]):
    """The summary table ordered as the selection ranks it, with ``rank``, ``val_score``,
    ``selectable``, ``violations`` and ``pareto`` (accuracy/latency front on the selection data)."""
    import pandas as pd

    order = {r["name"]: i for i, r in enumerate(choice["ranking"])}
    by_name = {r["name"]: r for r in choice["ranking"]}
    df = pd.DataFrame(rows)
    df["val_score"] = [by_name[n]["score"] for n in df["model"]]
    df["selectable"] = [by_name[n]["selectable"] for n in df["model"]]
    df["violations"] = ["; ".join(by_name[n]["violations"]) for n in df["model"]]
    front = pareto_front(
        [(r["model"], r["time_ms_median"], r["val_score"]) for r in df.to_dict(orient="records")]
    )
    df["pareto"] = df["model"].isin(front)
    df = df.iloc[np.argsort([order[n] for n in df["model"]], kind="stable")].reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def selection_record(
    numbers: dict[str, Any],
    select_cfg: dict[str, Any],
    meta: dict[str, Any],
    n_folds: int,
    has_val: bool,
    baseline: dict[str, Any],
):
    """Select on validation and state how (``selection.json``), with the paired verdicts on the test images.

    Args:
        numbers: :func:`segbench.aggregate.summarise`'s result.
        select_cfg: ``select`` config: ``criterion``, ``max_ms_per_image``, ``max_memory_mb``,
            ``max_params``, ``compare_top`` (the selected model against the next ``compare_top - 1``),
            ``n_bootstrap``.
        meta: ``dataset.json`` (its background class, for ``mDice_fg``).
        n_folds, has_val: of the split.
        baseline: :func:`segbench.aggregate.majority_baseline`.

    Returns:
        ``(summary table: DataFrame in ranking order, selection: dict)``. Without a validation split
        there is nothing honest to select on: the test split is used and the selection says so
        (``selected_on: "test"``).
    """
    n_boot = int(select_cfg.get("n_bootstrap", 2000))
    criterion = select_cfg.get("criterion", "mIoU")
    constraints = {k: select_cfg.get(k) for k in ("max_ms_per_image", "max_memory_mb", "max_params")}
    choice = select_model(
        numbers["selection_inputs"], criterion, constraints, background=meta.get("background")
    )
    df = _ranked_table(numbers["rows"], choice)
    selected, ranked, stacks = (
        choice["selected"],
        [r["name"] for r in choice["ranking"]],
        numbers["test_stacks"],
    )
    comparisons = []
    if selected is not None and selected in stacks:
        others = [n for n in ranked if n != selected and n in stacks][
            : max(0, int(select_cfg.get("compare_top", 3)) - 1)
        ]
        comparisons = [
            paired_comparison(selected, o, stacks[selected], stacks[o], n_boot, seed=0) for o in others
        ]
    best = df[df["model"] == selected].iloc[0] if selected is not None else None
    runner_up = next((n for n in ranked if n != selected), None)
    score_of = {r["name"]: r["score"] for r in choice["ranking"]}
    selection = {
        "model": selected,
        "library": None if best is None else best["library"],
        "fold": None if selected is None else numbers["best_fold"][selected],
        "selected_on": "validation" if has_val else "test",
        "criterion": criterion,
        "constraints": choice["constraints"],
        "rule": selection_rule(criterion, n_folds, has_val),
        "val_score": None if best is None else float(best["val_score"]),
        "mIoU": None if best is None else float(best["mIoU"]),
        "mIoU_ci_low": None if best is None else float(best["mIoU_ci_low"]),
        "mIoU_ci_high": None if best is None else float(best["mIoU_ci_high"]),
        "runner_up": runner_up,
        "margin_val_score": float(best["val_score"] - score_of[runner_up])
        if best is not None and runner_up
        else None,
        "verdict": comparisons[0]["verdict"] if comparisons else None,
        "comparisons": comparisons,
        "ranking": [dict(r) for r in choice["ranking"]],
        "baseline_mIoU": baseline["mIoU"],
        "no_selectable_model": selected is None,
    }
    return df, selection
