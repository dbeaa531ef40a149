"""What the aggregate step, the report and the model card say about tuning: :func:`tuning_summary`."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..layout import ExperimentLayout
from ..records import read_json
from .budget import ESTIMATOR, curves_cross
from .space import describe_params

__all__ = ["tuning_summary"]


def _untuned_text(recipes: dict[str, dict[str, Any]]) -> str:
    lrs = sorted({float(r["lr"]) for r in recipes.values() if r.get("lr") is not None})
    recipe = f" (learning rate {', '.join(f'{v:g}' for v in lrs)})" if lrs else ""
    return (
        "Not tuned: every model trained with the one shared recipe"
        f"{recipe}, which may suit some models better than others, so part of the ranking may measure "
        "that fit; tune.trials gives every candidate the same search budget."
    )


def _crossing_text(cross: dict[str, Any], n_trials: dict[str, int]) -> str:
    if not cross["leaders"]:
        return ""
    n = cross["n_max"]
    if cross["stable"]:
        return (
            f"The ranking does not depend on the tuning budget: {cross['leaders'][0]} has the highest "
            f"expected best validation score at every budget from 1 to {n} trials."
        )
    parts, start = [], 1
    for change in [*cross["changes"], n + 1]:
        leader = cross["leaders"][start - 1]
        parts.append(
            f"{leader} leads with {start}" + (f" to {change - 1}" if change - 1 > start else "") + " trial(s)"
        )
        start = change
    return (
        "The budget curves cross, so the winner depends on the tuning budget: "
        + "; ".join(parts)
        + ". With a different budget the answer could change."
    )


def tuning_summary(
    experiment_dir: str,
    models: list[str],
    tuned: bool,
    recipes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``tuning`` section of ``summary.json``.

    Args:
        experiment_dir: ``results/<experiment>``.
        models: the tuned candidates (ensembles are not tuned).
        tuned: whether the experiment tuned (``tune.trials > 0`` or ``tune.budget_hours``).
        recipes: per model, its ``train_meta.json`` (the learning rate an untuned model used).

    Returns:
        ``{"tuned": False, "text"}``, or ``{"tuned": True, "text", "estimator", "crossing",
        "candidates": {model: best.json + "trials": [trials.csv rows]}}``.

    Raises:
        FileNotFoundError: a candidate's ``best.json`` or ``trials.csv`` is missing (the tune_best step).
    """
    if not tuned:
        return {"tuned": False, "text": _untuned_text(recipes or {})}
    exp = ExperimentLayout(experiment_dir)
    cands: dict[str, Any] = {}
    for name in models:
        best = read_json(exp.tune_best(name), required=("params", "budget_curve"))
        trials = pd.read_csv(exp.tune_trials_csv(name))
        best["trials_table"] = trials.where(pd.notna(trials), None).to_dict(orient="records")
        cands[name] = best
    cross = curves_cross({n: c["budget_curve"] for n, c in cands.items()})
    counts = {n: int(c["trials"]) for n, c in cands.items()}
    same = len(set(counts.values())) == 1
    first = next(iter(cands.values()))
    how = (
        f"{first['trials']} trials each" if same else "; ".join(f"{n}: {k} trials" for n, k in counts.items())
    )
    if first.get("budget_hours"):
        how += f" (a compute budget of {float(first['budget_hours']):g} h each)"
    text = (
        f"Every candidate was tuned on fold {first['fold']}'s validation images with the same budget: {how}, "
        f"sampler {first['sampler']}, pruner {first['pruner']}, at most {first['max_epochs']} epochs per "
        "trial; "
        "then its best configuration was retrained with the experiment's folds and seeds. "
        + " ".join(
            f"{n}: {describe_params(c['params'])} (validation {c['metric']} {c['value']:.3f})."
            for n, c in cands.items()
        )
    )
    crossing = _crossing_text(cross, counts)
    return {
        "tuned": True,
        "text": text,
        "crossing_text": crossing,
        "crossing": cross,
        "estimator": ESTIMATOR,
        "candidates": cands,
    }
