"""The ensemble step: softmax-averaging ensembles of the top-k models, scored like single models.

The members are the ``k`` best models on the validation criterion pooled over every fold and training
seed (:mod:`segbench.select`; validation only, never test), leaving out the models that learned
nothing (:func:`segbench.baseline.learned_nothing`). For each fold x seed, that run's member
checkpoints are combined into one
:class:`~segbench.models.ensemble.EnsembleModel` (``log(mean_m softmax(logits_m))``), which is then
evaluated by :func:`segbench.evaluate.evaluate_loaded` on the same validation and test images as
every model, so selection treats it as one more candidate: it wins only if it wins under the same
criterion and constraints.

Files: ``models/ensemble_top<k>/fold<f>/seed<s>/model.json`` (``{"ensemble": [{"name", "path"}], ...}``,
members copied beside it so the folder is self-contained) and ``ensemble.json`` (members, parameters), and
the usual ``eval/ensemble_top<k>/fold<f>/seed<s>/`` outputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .baseline import DEFAULT_MARGIN, learned_nothing, majority_class
from .io import atomic_dir
from .layout import ExperimentLayout, ensemble_name
from .models.ensemble import EnsembleModel
from .records import read_array, read_model_info, read_train_meta, write_ensemble_spec, write_model_info

__all__ = [
    "EnsembleModel",
    "rank_members",
    "pooled_val_confusions",
    "eligible_members",
    "build_ensemble",
    "run_ensemble",
]


def rank_members(
    experiment_dir: str | Path,
    models: list[str],
    n_folds: int,
    seeds: list[int],
    criterion: str = "mIoU",
    background: int | None = None,
) -> list[tuple[str, float]]:
    """``[(model, pooled validation score)]`` best first, from ``eval/<model>/fold*/seed*/val_confusion.npy``
    summed over every fold and seed.

    Raises:
        FileNotFoundError: a validation confusion matrix is missing (names it).
    """
    from .select import criterion_score

    scores = []
    for name, cm in pooled_val_confusions(experiment_dir, models, n_folds, seeds).items():
        s = criterion_score(cm, criterion, background) if cm.sum() else float("nan")
        scores.append((name, -np.inf if np.isnan(s) else s))
    return sorted(scores, key=lambda t: (-t[1], t[0]))


def pooled_val_confusions(
    experiment_dir: str | Path, models: list[str], n_folds: int, seeds: list[int]
) -> dict[str, np.ndarray]:
    """``{model: int[C, C]}``: each model's validation confusion summed over folds and seeds."""
    exp = ExperimentLayout(experiment_dir)
    return {
        name: np.sum(
            [
                read_array(exp.eval_file(name, k, s, "val_confusion.npy"))
                for k in range(n_folds)
                for s in seeds
            ],
            axis=0,
        )
        for name in models
    }


def eligible_members(
    experiment_dir: str | Path,
    models: list[str],
    n_folds: int,
    seeds: list[int],
    majority: int | None,
    classes: list[str],
    margin: float,
) -> tuple[list[str], dict[str, str]]:
    """``(models that learned something, {left-out model: why})`` (:func:`segbench.baseline.learned_nothing`
    on the validation confusion pooled over folds and seeds). Without a baseline (``majority`` None)
    every model is eligible."""
    if majority is None:
        return list(models), {}
    pooled = pooled_val_confusions(experiment_dir, models, n_folds, seeds)
    why = {n: learned_nothing(cm, majority, classes, margin) for n, cm in pooled.items()}
    return [n for n in models if why[n] is None], {n: w for n, w in why.items() if w is not None}


def build_ensemble(
    experiment_dir: str | Path,
    models: list[str],
    fold: int,
    n_folds: int,
    top_k: int,
    criterion: str = "mIoU",
    background: int | None = None,
    seed: int = 0,
    seeds: list[int] | None = None,
    excluded: dict[str, str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write ``models/ensemble_top<k>/fold<fold>/seed<seed>/`` (members copied in) and return
    ``(folder, model.json)``.

    Args:
        models: the candidate members (the eligible ones: models that learned something).
        seed: the training seed whose member runs are combined; ``seeds``: every seed (for the ranking,
            default ``[seed]``).
        excluded: ``{model: why}`` left out before ranking (recorded in ``ensemble.json``).

    Raises:
        ValueError: fewer than 2 models, or members with different input size or classes.
    """
    exp = ExperimentLayout(experiment_dir)
    if len(models) < 2 or top_k < 2:
        raise ValueError(f"an ensemble needs at least 2 models (top_k={top_k}, models={models})")
    ranked = rank_members(exp.root, models, n_folds, list(seeds or [seed]), criterion, background)[:top_k]
    names = [n for n, _ in ranked]
    infos = [read_model_info(exp.model_dir(n, fold, seed)) for n in names]
    first = infos[0]
    for n, inf in zip(names[1:], infos[1:]):
        for key in ("image_size", "num_classes", "normalize", "inference"):
            if inf.get(key) != first.get(key):
                raise ValueError(
                    f"cannot ensemble {names[0]} and {n}: different {key} ({first.get(key)} vs "
                    f"{inf.get(key)}); train them with the same recipe"
                )
    params = sum(read_train_meta(exp.model_dir(n, fold, seed))["parameters"] for n in names)
    name = ensemble_name(top_k)
    info = {
        k: first[k]
        for k in ("num_classes", "classes", "ignore_index", "image_size", "normalize", "dataset", "inference")
        if k in first
    }
    info.update(
        {
            "model": {"name": name, "library": "ensemble", "members": names},
            "fold": fold,
            "seed": seed,
            "ensemble": [{"name": n, "path": f"members/{n}"} for n in names],
        }
    )
    spec = {
        "model": name,
        "library": "ensemble",
        "fold": fold,
        "seed": seed,
        "parameters": params,
        "members": names,
        "member_val_scores": dict(ranked),
        "criterion": criterion,
        "left_out": dict(excluded or {}),
    }
    out = exp.model_dir(name, fold, seed)
    with atomic_dir(out) as tmp:
        for n in names:
            (tmp / "members" / n).mkdir(parents=True)
            for f in ("model.json", "model.safetensors"):
                shutil.copyfile(exp.model_file(n, fold, seed, f), tmp / "members" / n / f)
        write_model_info(tmp, info)
        write_ensemble_spec(tmp, spec)
    return out, info


def run_ensemble(
    experiment_dir: str | Path,
    models: list[str],
    fold: int,
    n_folds: int,
    select_cfg: dict[str, Any],
    evaluate_cfg: dict[str, Any],
    dataset_json: str | Path,
    splits_json: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    seeds: list[int] | None = None,
    validation_json: str | Path | None = None,
) -> dict[str, Any]:
    """The workflow's ensemble step for one fold x seed: build the top-``select.ensemble_top_k``
    ensemble of the models that learned something and evaluate it like a model
    (:func:`segbench.evaluate.evaluate_loaded`).

    Args:
        validation_json: ``validation.json`` (the majority-class baseline); None: no model is left out.

    Returns:
        The ensemble's evaluation (``metrics.json`` content with timing), plus ``members``.
    """
    from .device import device_of
    from .evaluate import evaluate_loaded
    from .models.checkpoint import load_trained_model
    from .records import read_dataset, read_splits, read_validation

    meta = read_dataset(dataset_json)
    seeds = list(seeds or [seed])
    majority = (
        majority_class(read_validation(validation_json), read_splits(splits_json))
        if validation_json
        else None
    )
    members, excluded = eligible_members(
        experiment_dir,
        models,
        n_folds,
        seeds,
        majority,
        [c["name"] for c in meta["classes"]],
        float(select_cfg.get("baseline_margin", DEFAULT_MARGIN)),
    )
    if len(members) < 2:  # not enough models learned something: built from all (the summary flags it)
        members, excluded = list(models), {}
    folder, _ = build_ensemble(
        experiment_dir,
        members,
        fold,
        n_folds,
        int(select_cfg.get("ensemble_top_k", 2)),
        select_cfg.get("criterion", "mIoU"),
        meta.get("background"),
        seed=seed,
        seeds=seeds,
        excluded=excluded,
    )
    device = device_of(evaluate_cfg.get("device", "auto"))
    model, info = load_trained_model(folder, device)
    result = evaluate_loaded(model, info, device, dataset_json, splits_json, evaluate_cfg, out_dir)
    return dict(result, members=info["model"]["members"])
