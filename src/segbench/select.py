"""Model selection on validation results, under constraints, and paired comparisons with verdicts.

Selection (:func:`select_model`) reads validation results only, never the test split:

* score: one criterion on the pooled validation confusion matrix (summed over validation images,
  training seeds and, with k folds, the folds' out-of-fold validation sets, as nnU-Net selects on
  out-of-fold predictions): ``mIoU`` (default, dataset-level) or ``mDice_fg`` (mean Dice over
  foreground classes, the background class left out);
* constraints (optional): ``max_ms_per_image`` (median inference time on validation images),
  ``max_memory_mb`` (peak GPU memory on a GPU, else the evaluation process's peak RSS) and
  ``max_params``. A model that breaks one is shown but not selectable;
* ties go to the cheaper model (fewer parameters, then lower latency): scores within ``1e-9``, and,
  with two or more training seeds, candidates within the seed noise of the best on validation
  (:func:`seed_noise_ties`: mean per-seed scores less than two standard errors apart), where the
  data cannot separate them.

Comparisons (:func:`paired_comparison`) are made on the same test images with the hierarchical
bootstrap of :mod:`segbench.uncertainty` (training seeds and test units resampled; images, whole
groups or blocks of consecutive images), its percentile interval of the mIoU difference and the
interval-inversion p-value. The Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, Wilcoxon 1945)
is added only where its assumption holds: independent test images (no groups) and one training seed.
The verdict says "better" only when the 95 % interval excludes 0, the test split has at least
``MIN_UNITS`` (10) independent units and training noise was measured (two or more seeds);
otherwise it says the data cannot tell, and why.
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
#: below this many independent test units (images, groups or blocks) no verdict says "better": a
#: bootstrap of so few units is not trustworthy
MIN_UNITS = 10


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


def _verdict(a, b, diff, low, high, level, n_seeds, units, ptxt) -> tuple[str | None, str]:
    """``(better model or None, the plain-language verdict)`` of a paired comparison."""
    pct = f"{level * 100:.0f} % CI"
    counted = "training seeds and test units" if n_seeds > 1 else "test units only"
    numbers = f"difference {diff:.3f}, {pct} {low:.3f} to {high:.3f} over {counted}{ptxt}"
    n_units = units["n_units"] if units else 0
    if n_units < MIN_UNITS:
        return None, (
            f"{a} and {b} cannot be told apart reliably: the test split has only {n_units} independent "
            f"unit(s) ({numbers}); a bootstrap over fewer than {MIN_UNITS} is not trustworthy: the "
            "comparison needs more test images (or more independent groups); k-fold cross-validation does "
            "not enlarge the test split"
        )
    if low <= 0 <= high or not np.isfinite([low, high]).all():
        tail = "" if n_seeds > 1 else "; training noise was not measured either (one training seed)"
        return (
            None,
            f"{a} and {b} are indistinguishable on this data ({numbers}; the interval includes 0{tail})",
        )
    winner, loser, d, lo, hi = (a, b, diff, low, high) if low > 0 else (b, a, -diff, -high, -low)
    if n_seeds < 2:
        return None, (
            f"{winner} scores higher than {loser} on these test images (difference {d:.3f}, {pct} {lo:.3f} "
            f"to {hi:.3f} over {counted}{ptxt}), but training noise was not measured: each model was trained "
            "with one seed, and retraining with another seed can move a model by more than this interval. "
            "The data cannot tell which is better; train.repeats=3 (two more training runs per model) "
            "measures it"
        )
    return (
        winner,
        f"{winner} is better than {loser} (difference {d:.3f}, {pct} {lo:.3f} to {hi:.3f} over "
        f"{counted}{ptxt})",
    )


def paired_comparison(
    a: str,
    b: str,
    per_image_a: list[np.ndarray],
    per_image_b: list[np.ndarray],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    replicates: tuple[np.ndarray, np.ndarray] | None = None,
    n_seeds: int = 1,
    units: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Is model ``a`` better than model ``b`` on the same test images?

    Args:
        a, b: model names (for the verdict).
        per_image_a, per_image_b: per run (fold x seed), ``int[N, C, C]`` per-image confusion matrices
            of the same N test images in the same order (``confusion_per_image.npy``).
        n_resamples, seed: without ``replicates``, a paired bootstrap over independent images
            (:func:`segbench.metrics.bootstrap_scores`, the same draws for both models).
        level: confidence level of the interval of the difference.
        replicates: ``(float[B], float[B])``: the two candidates' hierarchical bootstrap scores drawn
            with the same test units (:func:`segbench.uncertainty.hierarchical_scores`).
        n_seeds: training seeds per model (fewer than 2: training noise not measured, no "better").
        units: :meth:`segbench.uncertainty.ResamplingUnits.as_dict` (default: independent images).

    Returns:
        ``{"a", "b", "difference" (mIoU_a - mIoU_b, mean over runs), "ci_low", "ci_high", "level",
        "p_value" (bootstrap), "wilcoxon_p" (NaN where images are not independent), "n_images",
        "n_units", "n_seeds", "better": a | b | None, "verdict": plain-language sentence}``.

    Raises:
        ValueError: the stacks do not cover the same number of images or runs.
    """
    from .uncertainty import bootstrap_p_value, percentile_interval

    if len(per_image_a) != len(per_image_b) or any(
        x.shape != y.shape for x, y in zip(per_image_a, per_image_b)
    ):
        raise ValueError(f"paired comparison of {a} and {b} needs the same test images, folds and seeds")
    n_img = int(per_image_a[0].shape[0])
    units = units or {"method": "images", "n_units": n_img}
    diff = float(
        np.mean(
            [
                metrics_from_confusion(x.sum(0))["mIoU"] - metrics_from_confusion(y.sum(0))["mIoU"]
                for x, y in zip(per_image_a, per_image_b)
            ]
        )
    )
    if replicates is not None:
        boot = np.asarray(replicates[0]) - np.asarray(replicates[1])
    else:
        boot = np.mean(
            [
                bootstrap_scores(x, n_resamples, seed) - bootstrap_scores(y, n_resamples, seed)
                for x, y in zip(per_image_a, per_image_b)
            ],
            axis=0,
        )
    low, high = percentile_interval(boot, level)
    p_boot = bootstrap_p_value(boot)
    independent = units.get("method") == "images" and n_seeds < 2
    p, n_tested = _wilcoxon(per_image_a, per_image_b) if independent else (float("nan"), 0)
    ptxt = f"; bootstrap p = {p_boot:.2g}" if np.isfinite(p_boot) else ""
    if not math.isnan(p):
        ptxt += f"; Wilcoxon signed-rank p = {p:.2g} on per-image IoU of {n_tested} images"
    better, verdict = _verdict(a, b, diff, low, high, level, n_seeds, units, ptxt)
    return {
        "a": a,
        "b": b,
        "difference": diff,
        "ci_low": low,
        "ci_high": high,
        "level": level,
        "p_value": p_boot,
        "wilcoxon_p": p,
        "n_images": n_img,
        "n_units": int(units["n_units"]),
        "n_seeds": int(n_seeds),
        "better": better,
        "verdict": verdict,
    }


def seed_noise_ties(choice: dict[str, Any], seed_scores: dict[str, list[float]], z: float = 2.0) -> list[str]:
    """The selectable candidates the data cannot separate from the best on validation: the best's mean
    per-seed score and theirs differ by less than ``z`` standard errors
    (``sqrt(sd_a^2 / S_a + sd_b^2 / S_b)``, sd over seeds, ddof 1; ``z = 2``: about a 95 % two-sided
    normal interval). Empty when the best has fewer than two seeds (the noise was not measured).

    Returns:
        Names, the best first, in ranking order.
    """
    ranking = [r for r in choice["ranking"] if r["selectable"]]
    if not ranking:
        return []
    best = ranking[0]["name"]
    a = np.asarray(seed_scores.get(best) or [], dtype=np.float64)
    if len(a) < 2 or not np.isfinite(a).all():
        return []
    tied = [best]
    for r in ranking[1:]:
        b = np.asarray(seed_scores.get(r["name"]) or [], dtype=np.float64)
        if len(b) < 2 or not np.isfinite(b).all():
            continue
        se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        if abs(a.mean() - b.mean()) < z * se:
            tied.append(r["name"])
    return tied if len(tied) > 1 else []


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


def selection_rule(criterion: str, n_folds: int, has_val: bool, n_seeds: int = 1) -> str:
    """The selection rule in plain words, as the report and the model card state it."""
    crit = CRITERION_TEXT[criterion]
    if not has_val:
        return (
            f"highest test {crit}: there is no validation split, so this choice is biased towards the test "
            "set; set split.val_fraction > 0"
        )
    pooled = f"pooled out-of-fold over {n_folds} folds" if n_folds > 1 else "validation split"
    if n_seeds > 1:
        pooled += f" and {n_seeds} training seeds"
        ties = "ties, and candidates within the seed noise of the best on validation, go to"
    else:
        ties = "ties go to"
    return (
        f"highest validation {crit} ({pooled}); {ties} fewer parameters, then lower latency; models "
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


def _seed_scores(numbers: dict[str, Any], criterion: str, background: int | None) -> dict[str, list[float]]:
    """Each candidate's validation score per training seed (folds pooled)."""
    return {
        c["name"]: [criterion_score(m, criterion, background) for m in c["seed_val_confusions"]]
        for c in numbers["selection_inputs"]
        if c.get("seed_val_confusions")
    }


def _apply_seed_ties(choice: dict[str, Any], seed_scores: dict[str, list[float]]) -> dict[str, Any] | None:
    """Within the seed noise of the best on validation, select the cheapest; returns the tie record."""
    tied = seed_noise_ties(choice, seed_scores)
    if not tied:
        return None
    rows = {r["name"]: r for r in choice["ranking"]}
    cheapest = min(tied, key=lambda n: (rows[n]["parameters"], rows[n]["val_time_ms"] or 0.0, n))
    top = tied[0]
    choice["selected"] = cheapest
    moved = "" if cheapest == top else f"; {cheapest} is selected over {top}, the highest on validation"
    return {
        "candidates": tied,
        "chosen": cheapest,
        "text": (
            f"The data cannot separate {', '.join(tied)} on validation: their mean scores over training "
            "seeds differ by less than two standard errors of the seed noise. The cheapest (fewest "
            f"parameters, then lowest latency) is selected{moved}."
        ),
    }


def _uncertainty_text(u: dict[str, Any], n_seeds: int) -> str:
    """The sources of uncertainty the intervals count, in words."""
    units = u.get("units") or {}
    text = f"Intervals count the test units ({units.get('description', 'test images')})"
    if n_seeds > 1:
        text += f" and {n_seeds} training seeds per model (hierarchical bootstrap)"
    else:
        text += (
            "; training noise was not measured (one training seed per model): train.repeats=3 trains two "
            "more seeds per model and widens the intervals by what retraining changes"
        )
    if units.get("method") == "images" and units.get("n_groups") is None:
        text += "; images are treated as independent (set dataset.group_regex if some are related)"
    return text + "."


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
        baseline: :func:`segbench.baseline.majority_baseline`.

    Returns:
        ``(summary table: DataFrame in ranking order, selection: dict)``. Without a validation split
        there is nothing honest to select on: the test split is used and the selection says so
        (``selected_on: "test"``).
    """
    criterion = select_cfg.get("criterion", "mIoU")
    constraints = {k: select_cfg.get(k) for k in ("max_ms_per_image", "max_memory_mb", "max_params")}
    background = meta.get("background")
    choice = select_model(numbers["selection_inputs"], criterion, constraints, background=background)
    tie = _apply_seed_ties(choice, _seed_scores(numbers, criterion, background)) if has_val else None
    df = _ranked_table(numbers["rows"], choice)
    selected, ranked = choice["selected"], [r["name"] for r in choice["ranking"]]
    u = numbers.get("uncertainty") or {}
    n_seeds = len(u.get("seeds") or [1])
    comparisons = _comparisons(numbers, selected, ranked, select_cfg, n_seeds, u.get("units"))
    best = df[df["model"] == selected].iloc[0] if selected is not None else None
    runner_up = next((n for n in ranked if n != selected), None)
    score_of = {r["name"]: r["score"] for r in choice["ranking"]}
    run = numbers["best_run"][selected] if selected is not None else {}
    selection = {
        "model": selected,
        "library": None if best is None else best["library"],
        "fold": run.get("fold"),
        "seed": run.get("seed"),
        "seed_rule": run.get("rule"),
        "selected_on": "validation" if has_val else "test",
        "criterion": criterion,
        "constraints": choice["constraints"],
        "rule": selection_rule(criterion, n_folds, has_val, n_seeds),
        "val_score": None if best is None else float(best["val_score"]),
        "mIoU": None if best is None else float(best["mIoU"]),
        "mIoU_ci_low": None if best is None else float(best["mIoU_ci_low"]),
        "mIoU_ci_high": None if best is None else float(best["mIoU_ci_high"]),
        "runner_up": runner_up,
        "margin_val_score": float(best["val_score"] - score_of[runner_up])
        if best is not None and runner_up
        else None,
        "tie": tie,
        "verdict": comparisons[0]["verdict"] if comparisons else None,
        "comparisons": comparisons,
        "n_seeds": n_seeds,
        "units": u.get("units"),
        "uncertainty_text": _uncertainty_text(u, n_seeds),
        "ranking": [dict(r) for r in choice["ranking"]],
        "baseline_mIoU": baseline["mIoU"],
        "no_selectable_model": selected is None,
    }
    return df, selection


def _comparisons(numbers, selected, ranked, select_cfg, n_seeds, units) -> list[dict[str, Any]]:
    """The selected candidate against the next ``compare_top - 1`` in the validation ranking."""
    stacks, reps = numbers["test_stacks"], numbers.get("replicates") or {}
    if selected is None or selected not in stacks:
        return []
    others = [n for n in ranked if n != selected and n in stacks][
        : max(0, int(select_cfg.get("compare_top", 3)) - 1)
    ]
    return [
        paired_comparison(
            selected,
            o,
            stacks[selected],
            stacks[o],
            int(select_cfg.get("n_bootstrap", 2000)),
            seed=0,
            replicates=(reps[selected], reps[o]) if selected in reps and o in reps else None,
            n_seeds=n_seeds,
            units=units,
        )
        for o in others
    ]
