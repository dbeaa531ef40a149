"""Aggregate every model x fold evaluation into one comparison: collect -> summarise -> select -> write.

* :func:`collect` reads each candidate's files (:mod:`segbench.records`; a missing one names itself
  and the step that writes it);
* :func:`summarise` is pure: the summary rows, per-class IoU, learning curves, the bootstrap
  intervals and what selection needs;
* :func:`segbench.select.selection_record` selects on validation and writes the verdicts;
* :func:`aggregate` writes the files below.

Outputs in ``results/<experiment>/``:

* ``summary.csv`` / ``summary.json``: one row per candidate (models and ensembles), the selectable
  ones first in validation order: ``rank, model, library, architecture, start, parameters, folds, val_mIoU,
  mIoU, mIoU_std, mDice, mAcc, aAcc, fwIoU, mBoundaryIoU, mIoU_ci_low, mIoU_ci_high, mIoU_image_avg,
  time_ms_median, time_ms_p95, peak_gpu_memory_mib, peak_memory_mb, epoch_time_s, train_time_s,
  val_score, selectable, violations, pareto``. ``val_mIoU``/``val_score`` come from the validation
  images pooled over folds; the other metric columns are dataset-level on the test split, averaged
  over folds (``*_std``: standard deviation over folds, 0 with one fold). ``summary.json`` adds the
  per-class IoU, the majority-class baseline and the selection.
* ``selection.json``: :func:`segbench.select.selection_record` (criterion, constraints, ranking on
  validation, never the test split; the paired comparisons on the test images).
* ``learning_curves.csv``: ``model, fold, epoch, train_loss, val_loss, val_mIoU`` (for ``dvc plots``).

``mIoU_ci_low``/``mIoU_ci_high``: 95 % percentile bootstrap interval of the test mIoU over test
images (:func:`segbench.metrics.bootstrap_scores`, ``n_bootstrap`` seeded resamples; with k folds the
same resamples are applied to every fold and the fold mean taken). ``best/`` is written by
:mod:`segbench.best`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .layout import DatasetLayout, ExperimentLayout
from .metrics import bootstrap_scores, mean_iou
from .records import (
    merge_timing,
    read_array,
    read_dataset,
    read_ensemble_spec,
    read_history,
    read_metrics,
    read_splits,
    read_timing,
    read_train_meta,
    read_validation,
    write_selection,
    write_summary,
    write_table,
)

#: bootstrap resamples for the confidence interval of test mIoU (seeded: the same CI every run)
N_BOOTSTRAP = 2000

__all__ = [
    "aggregate",
    "collect",
    "summarise",
    "majority_baseline",
    "describe_start",
    "Candidate",
    "N_BOOTSTRAP",
]


@dataclass
class Candidate:
    """One candidate's results over its folds, as read from disk by :func:`collect`.

    Attributes:
        name, config: the candidate and its model config (``library: ensemble`` for an ensemble).
        metrics: per fold, ``metrics.json`` merged with ``timing.json``.
        train: per fold, ``train_meta.json`` (an ensemble: ``ensemble.json`` with zero training time).
        history: per fold, ``history.csv`` with ``model`` and ``fold`` columns (none for an ensemble).
        test_stacks: per fold, ``int[N, C, C]`` per-image test confusion matrices; None when missing.
        val_confusion: ``int[C, C]`` validation confusion pooled over folds; None without validation.
        test_confusion: ``int[C, C]`` test confusion pooled over folds, read only without validation.
    """

    name: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    train: list[dict[str, Any]] = field(default_factory=list)
    history: list[pd.DataFrame] = field(default_factory=list)
    test_stacks: list[np.ndarray] | None = None
    val_confusion: np.ndarray | None = None
    test_confusion: np.ndarray | None = None

    @property
    def is_ensemble(self) -> bool:
        return self.config.get("library") == "ensemble"

    def fold_values(self, key: str) -> np.ndarray:
        """``float64[folds]`` of one metric (None -> NaN)."""
        return np.array([np.nan if m.get(key) is None else m[key] for m in self.metrics], dtype=float)


def describe_start(mcfg: dict[str, Any]) -> str:
    """How a model starts training, in words (the report compares fine-tuning modes as models):
    ``scratch``, ``imagenet``, ``imagenet, encoder frozen 2 ep, encoder LR x0.1``, ``from <checkpoint>``."""
    if mcfg.get("library") == "ensemble":
        return ""
    init = mcfg.get("init_checkpoint")
    parts = [f"from {init}" if init else str(mcfg.get("encoder_weights") or "scratch")]
    train = mcfg.get("train") or {}
    if train.get("freeze_epochs"):
        parts.append(f"encoder frozen {train['freeze_epochs']} ep")
    if train.get("encoder_lr_mult", 1.0) != 1.0:
        parts.append(f"encoder LR x{train['encoder_lr_mult']:g}")
    return ", ".join(parts)


def majority_baseline(
    validation: dict[str, Any], splits: dict[str, Any], classes: list[str]
) -> dict[str, Any]:
    """Metrics of predicting the most frequent training class on every test pixel.

    Uses the per-image class pixel counts of the validation report (no image is read). With class
    ``k`` predicted everywhere, ``IoU_k = G_k / sum(G)`` and every other class present in the test
    ground truth has IoU 0 (absent ones are NaN and left out, as in :mod:`segbench.metrics`).
    """
    per_image = validation["per_image"]
    train_counts = np.sum([per_image[i] for i in splits["folds"][0]["train"]], axis=0)
    test_counts = np.sum([per_image[i] for i in splits["test"]], axis=0).astype(np.float64)
    k = int(np.argmax(train_counts))
    total = test_counts.sum()
    iou = np.where(test_counts > 0, 0.0, np.nan)
    iou[k] = test_counts[k] / total if total else np.nan
    return {
        "class": classes[k],
        "class_id": k,
        "mIoU": float(np.nanmean(iou)),
        "aAcc": float(test_counts[k] / total),
    }


def _collect_one(
    exp: ExperimentLayout, name: str, mcfg: dict[str, Any], n_folds: int, has_val: bool
) -> Candidate:
    c = Candidate(name, dict(mcfg))
    for k in range(n_folds):
        ev, tr = exp.eval_dir(name, k), exp.model_dir(name, k)
        c.metrics.append(merge_timing(read_metrics(ev), read_timing(ev, required=False)))
        if c.is_ensemble:  # no training of its own
            spec = read_ensemble_spec(tr)
            c.train.append(dict(spec, epoch_time_s_median=0.0, wall_time_s=0.0))
            c.config["arch"] = "softmax average of " + " + ".join(spec["members"])
        else:
            c.train.append(read_train_meta(tr))
            history = read_history(tr)
            history.insert(0, "fold", k)
            history.insert(0, "model", name)
            c.history.append(history)
    stacks = [
        read_array(exp.eval_file(name, k, "confusion_per_image.npy"), required=False) for k in range(n_folds)
    ]
    c.test_stacks = stacks if all(s is not None for s in stacks) else None
    # validation: pooled over folds (out-of-fold with k-fold); the test files are not read for this
    if has_val:
        vals = [
            read_array(exp.eval_file(name, k, "val_confusion.npy"), required=False) for k in range(n_folds)
        ]
        c.val_confusion = np.sum(vals, axis=0) if all(v is not None for v in vals) else None
    if c.val_confusion is None:  # no validation split: selection has only the test split (and says so)
        c.test_confusion = np.sum(
            [read_array(exp.eval_file(name, k, "confusion.npy")) for k in range(n_folds)], axis=0
        )
    return c


def collect(
    experiment_dir: str | Path, models: dict[str, dict[str, Any]], n_folds: int, has_val: bool
) -> list[Candidate]:
    """Read every candidate's evaluation and training records.

    Raises:
        FileNotFoundError: a record is missing (names the file and the step that writes it).
    """
    exp = ExperimentLayout(experiment_dir)
    return [_collect_one(exp, name, mcfg, n_folds, has_val) for name, mcfg in models.items()]


def _architecture(mcfg: dict[str, Any]) -> str:
    arch = mcfg.get("arch") or Path(str(mcfg.get("config", ""))).stem
    return f"{arch}({mcfg['encoder']})" if mcfg.get("encoder") else arch


def _bootstrap_ci(c: Candidate, n_boot: int) -> tuple[float, float]:
    """95 % percentile interval of the fold-mean test mIoU (the same seeded resamples for every fold)."""
    if c.test_stacks is None:
        return float("nan"), float("nan")
    scores = np.mean([bootstrap_scores(st, n_boot, seed=0) for st in c.test_stacks], axis=0)
    low, high = np.nanquantile(scores, [0.025, 0.975])
    return float(low), float(high)


def _nanmax(values: np.ndarray) -> float:
    return float(np.nanmax(values)) if np.isfinite(values).any() else float("nan")


def _summary_row(c: Candidate, n_folds: int, n_boot: int) -> dict[str, Any]:
    f = c.fold_values
    ci_low, ci_high = _bootstrap_ci(c, n_boot)
    return {
        "model": c.name,
        "library": c.config["library"],
        "architecture": _architecture(c.config),
        "start": describe_start(c.config),
        "parameters": c.train[0]["parameters"],
        "folds": n_folds,
        "val_mIoU": float(mean_iou(c.val_confusion)) if c.val_confusion is not None else float("nan"),
        "mIoU": float(np.mean(f("mIoU"))),
        "mIoU_std": float(np.std(f("mIoU"))),
        "mDice": float(np.mean(f("mDice"))),
        "mAcc": float(np.mean(f("mAcc"))),
        "aAcc": float(np.mean(f("aAcc"))),
        "fwIoU": float(np.mean(f("fwIoU"))),
        "mBoundaryIoU": float(np.mean(f("mBoundaryIoU"))),
        "mIoU_ci_low": ci_low,
        "mIoU_ci_high": ci_high,
        "mIoU_image_avg": float(np.mean([m["image_averaged"]["mIoU"] for m in c.metrics])),
        "time_ms_median": float(np.mean(f("time_ms_median"))),
        "time_ms_p95": float(np.mean(f("time_ms_p95"))),
        "peak_gpu_memory_mib": _nanmax(f("peak_gpu_memory_mib")),
        "peak_memory_mb": _nanmax(f("peak_memory_mb")),
        "epoch_time_s": float(np.mean([t["epoch_time_s_median"] for t in c.train])),
        "train_time_s": float(np.sum([t["wall_time_s"] for t in c.train])),
    }


def _selection_input(c: Candidate) -> dict[str, Any]:
    """What :func:`segbench.select.select_model` ranks: validation confusion (test pooled only when
    there is no validation split), median validation latency, peak memory, parameters."""
    val_time = np.nanmean(
        [
            np.nan if (m.get("val") or {}).get("time_ms_median") is None else m["val"]["time_ms_median"]
            for m in c.metrics
        ]
    )
    memory = _nanmax(c.fold_values("peak_memory_mb"))
    return {
        "name": c.name,
        "parameters": c.train[0]["parameters"],
        "val_time_ms": float(val_time),
        "memory_mb": None if np.isnan(memory) else float(memory),
        "val_confusion": c.val_confusion if c.val_confusion is not None else c.test_confusion,
    }


def _best_fold(c: Candidate, has_val: bool) -> int:
    """The fold whose weights go to best/: the best on its own validation images (test is never looked at)."""
    if not has_val:
        return 0
    val = [(m.get("val") or {}).get("mIoU") for m in c.metrics]
    return max(range(len(val)), key=lambda k: -np.inf if val[k] is None else val[k])


def summarise(
    candidates: list[Candidate], n_folds: int, has_val: bool, n_boot: int = N_BOOTSTRAP
) -> dict[str, Any]:
    """The comparison's numbers (pure: no file is read or written).

    Returns:
        ``{"rows": [summary rows], "per_class": {name: [IoU per class]}, "curves": DataFrame,
        "selection_inputs": [...], "best_fold": {name: k}, "test_stacks": {name: [int[N, C, C] per fold]}}``.
    """
    per_class = {
        c.name: np.nanmean(
            np.array([[np.nan if v is None else v for v in m["IoU"]] for m in c.metrics], dtype=float), axis=0
        ).tolist()
        for c in candidates
    }
    curves = [h for c in candidates for h in c.history]
    return {
        "rows": [_summary_row(c, n_folds, n_boot) for c in candidates],
        "per_class": per_class,
        "curves": pd.concat(curves, ignore_index=True) if curves else None,
        "selection_inputs": [_selection_input(c) for c in candidates],
        "best_fold": {c.name: _best_fold(c, has_val) for c in candidates},
        "test_stacks": {c.name: c.test_stacks for c in candidates if c.test_stacks is not None},
    }


def aggregate(
    experiment_dir: str | Path,
    models: dict[str, dict[str, Any]],
    n_folds: int,
    dataset_dir: str | Path,
    select_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the summary of an experiment from its ``eval/`` and ``models/`` folders and select the best
    model.

    Args:
        experiment_dir: ``results/<experiment>``.
        models: ``{name: model config}`` (for library and architecture); ensembles as
            ``{"library": "ensemble"}``.
        n_folds: number of folds.
        dataset_dir: the canonical dataset folder (``dataset.json``, ``validation.json``).
        select_cfg: the ``select`` config (criterion, constraints, compare_top, n_bootstrap); see
            :mod:`segbench.select`.

    Returns:
        The ``summary.json`` content.

    Raises:
        FileNotFoundError: an evaluation or training output is missing (names the file).
    """
    from .select import selection_record

    exp, ds = ExperimentLayout(experiment_dir), DatasetLayout(dataset_dir)
    sel_cfg = dict(select_cfg or {})
    meta, splits = read_dataset(ds.dataset_json), read_splits(exp.splits)
    has_val = all(len(f.get("val") or []) > 0 for f in splits["folds"])
    numbers = summarise(
        collect(exp.root, models, n_folds, has_val),
        n_folds,
        has_val,
        int(sel_cfg.get("n_bootstrap", N_BOOTSTRAP)),
    )
    baseline = majority_baseline(
        read_validation(ds.validation_json), splits, [c["name"] for c in meta["classes"]]
    )
    table, selection = selection_record(numbers, sel_cfg, meta, n_folds, has_val, baseline)
    summary = {
        "experiment": exp.name,
        "dataset": meta["name"],
        "classes": [c["name"] for c in meta["classes"]],
        "test_images": len(splits["test"]),
        "models": table.to_dict(orient="records"),
        "per_class_IoU": numbers["per_class"],
        "baseline": baseline,
        "best": selection,
    }
    write_table(exp.summary_csv, table)
    if numbers["curves"] is not None:
        write_table(exp.learning_curves, numbers["curves"])
    write_selection(exp.selection, selection)
    write_summary(exp.summary_json, summary)
    return summary
