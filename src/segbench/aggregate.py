"""Aggregate every model x fold x seed evaluation into one comparison: collect, summarise, select, write.

* :func:`collect` reads each candidate's files (:mod:`segbench.records`; a missing one names itself
  and the step that writes it);
* :func:`summarise` is pure: the summary rows, per-class IoU, learning curves, the uncertainty of
  every number (:mod:`segbench.uncertainty`: training seeds and test units) and what selection needs;
* :func:`segbench.select.selection_record` selects on validation and writes the verdicts;
* :func:`aggregate` writes the files below.

Outputs in ``results/<experiment>/``:

* ``summary.csv`` / ``summary.json``: one row per candidate (models and ensembles), the selectable
  ones first in validation order: ``rank, model, library, architecture, start, parameters, folds,
  n_seeds, val_mIoU, val_mIoU_sd_seed, mIoU, test_mIoU_mean, test_mIoU_sd_seed, mIoU_std, mDice, mAcc,
  aAcc, fwIoU, mBoundaryIoU, mIoU_ci_low, mIoU_ci_high, mIoU_mean_ci_low, mIoU_mean_ci_high,
  mIoU_ci_images_low, mIoU_ci_images_high,
  sd_seed, sd_fold, sd_image, p_rank1, learned_nothing, never_predicted, mIoU_image_avg,
  time_ms_median, time_ms_p95, peak_gpu_memory_mib, peak_memory_mb, epoch_time_s, train_time_s,
  precision, memory_format (of training; empty for an ensemble), val_score, selectable, violations, pareto``.

  ``val_mIoU``/``val_score`` come from the validation images pooled over folds and seeds; the other
  metric columns are dataset-level on the test split, averaged over folds and seeds
  (``mIoU`` = ``test_mIoU_mean``; ``*_sd_seed``: standard deviation over training seeds;
  ``mIoU_std``: over folds). ``summary.json`` adds the per-class IoU, the majority-class baseline,
  the selection and ``uncertainty``: the test units, the seeds, each candidate's per-seed scores,
  variance components and rank distribution.
* ``selection.json``: :func:`segbench.select.selection_record` (criterion, constraints, ranking on
  validation, never the test split; the paired comparisons on the test images).
* ``learning_curves.csv``: ``model, fold, seed, epoch, train_loss, val_loss, val_mIoU`` (for ``dvc plots``).

Intervals (95 %, the hierarchical bootstrap of :mod:`segbench.uncertainty`: training seeds and test
units, i.e. images, groups or blocks of consecutive images; ``n_bootstrap`` seeded resamples):

* ``mIoU_ci_low``/``mIoU_ci_high``: the test mIoU of **one training run** of the candidate (one seed
  drawn per resample): the range a user retraining it can expect, so it covers the spread the seeds
  show;
* ``mIoU_mean_ci_*``: the mean over the seeds (all ``S`` seeds redrawn per resample): what the paired
  comparisons and ``p_rank1`` (the probability of ranking first on the test split) resample;
* ``mIoU_ci_images_*``: the seeds held fixed, test units only (what a single-seed experiment's
  interval measured). With one seed all three are the same.

``best/`` is written by :mod:`segbench.best`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import uncertainty as unc
from .baseline import DEFAULT_MARGIN, learned_nothing, majority_baseline, never_predicted
from .layout import DatasetLayout, ExperimentLayout
from .metrics import mean_iou
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
from .tuning.summary import tuning_summary

#: bootstrap resamples for the confidence interval of test mIoU (seeded: the same CI every run)
N_BOOTSTRAP = 2000

__all__ = [
    "aggregate",
    "collect",
    "summarise",
    "majority_baseline",
    "describe_start",
    "format_summary",
    "Candidate",
    "N_BOOTSTRAP",
]


@dataclass
class Candidate:
    """One candidate's results over its folds and training seeds, as read from disk by :func:`collect`.

    Runs are the fold x seed pairs in fold-major order (``runs[i] = (fold, seed)``); the lists below
    follow that order.

    Attributes:
        name, config: the candidate and its model config (``library: ensemble`` for an ensemble).
        runs: ``[(fold, seed)]``.
        metrics: per run, ``metrics.json`` merged with ``timing.json``.
        train: per run, ``train_meta.json`` (an ensemble: ``ensemble.json`` with zero training time).
        history: per run, ``history.csv`` with ``model``, ``fold`` and ``seed`` columns (none for an
            ensemble).
        test_stacks: per run, ``int[N, C, C]`` per-image test confusion matrices; None when missing.
        val_runs: per run, ``int[C, C]`` validation confusion; None without validation.
        val_confusion: ``int[C, C]`` validation confusion pooled over runs; None without validation.
        test_confusion: ``int[C, C]`` test confusion pooled over runs, read only without validation.
    """

    name: str
    config: dict[str, Any]
    runs: list[tuple[int, int]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    train: list[dict[str, Any]] = field(default_factory=list)
    history: list[pd.DataFrame] = field(default_factory=list)
    test_stacks: list[np.ndarray] | None = None
    val_runs: list[np.ndarray] | None = None
    val_confusion: np.ndarray | None = None
    test_confusion: np.ndarray | None = None

    @property
    def is_ensemble(self) -> bool:
        return self.config.get("library") == "ensemble"

    @property
    def seeds(self) -> list[int]:
        """The training seeds, in run order (the seed axis of :meth:`grid`)."""
        return list(dict.fromkeys(s for _, s in self.runs))

    @property
    def folds(self) -> list[int]:
        return list(dict.fromkeys(k for k, _ in self.runs))

    def fold_values(self, key: str) -> np.ndarray:
        """``float64[runs]`` of one metric (None -> NaN)."""
        return np.array([np.nan if m.get(key) is None else m[key] for m in self.metrics], dtype=float)

    def grid(self, values: list[Any] | np.ndarray) -> np.ndarray:
        """Per-run values as ``[F, S, ...]`` (folds x seeds)."""
        arr = np.asarray(values, dtype=np.float64)
        return arr.reshape(len(self.folds), len(self.seeds), *arr.shape[1:])


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


def _collect_one(
    exp: ExperimentLayout, name: str, mcfg: dict[str, Any], n_folds: int, seeds: list[int], has_val: bool
) -> Candidate:
    c = Candidate(name, dict(mcfg), runs=[(k, s) for k in range(n_folds) for s in seeds])
    for k, s in c.runs:
        ev, tr = exp.eval_dir(name, k, s), exp.model_dir(name, k, s)
        c.metrics.append(merge_timing(read_metrics(ev), read_timing(ev, required=False)))
        if c.is_ensemble:  # no training of its own
            spec = read_ensemble_spec(tr)
            c.train.append(dict(spec, epoch_time_s_median=0.0, wall_time_s=0.0))
            c.config["arch"] = "softmax average of " + " + ".join(spec["members"])
        else:
            c.train.append(read_train_meta(tr))
            history = read_history(tr)
            history.insert(0, "seed", s)
            history.insert(0, "fold", k)
            history.insert(0, "model", name)
            c.history.append(history)
    stacks = [
        read_array(exp.eval_file(name, k, s, "confusion_per_image.npy"), required=False) for k, s in c.runs
    ]
    c.test_stacks = stacks if all(x is not None for x in stacks) else None
    # validation: pooled over folds (out-of-fold with k-fold) and seeds; the test files are not read for this
    if has_val:
        vals = [read_array(exp.eval_file(name, k, s, "val_confusion.npy"), required=False) for k, s in c.runs]
        if all(v is not None for v in vals):
            c.val_runs, c.val_confusion = vals, np.sum(vals, axis=0)
    if c.val_confusion is None:  # no validation split: selection has only the test split (and says so)
        c.test_confusion = np.sum(
            [read_array(exp.eval_file(name, k, s, "confusion.npy")) for k, s in c.runs], axis=0
        )
    return c


def collect(
    experiment_dir: str | Path,
    models: dict[str, dict[str, Any]],
    n_folds: int,
    has_val: bool,
    seeds: list[int] | None = None,
) -> list[Candidate]:
    """Read every candidate's evaluation and training records (every fold x training seed).

    Raises:
        FileNotFoundError: a record is missing (names the file and the step that writes it).
    """
    exp = ExperimentLayout(experiment_dir)
    seeds = list(seeds or [0])
    return [_collect_one(exp, name, mcfg, n_folds, seeds, has_val) for name, mcfg in models.items()]


def _architecture(mcfg: dict[str, Any]) -> str:
    arch = mcfg.get("arch") or Path(str(mcfg.get("config", ""))).stem
    return f"{arch}({mcfg['encoder']})" if mcfg.get("encoder") else arch


def _nanmax(values: np.ndarray) -> float:
    return float(np.nanmax(values)) if np.isfinite(values).any() else float("nan")


def _sd(values: np.ndarray) -> float:
    """Standard deviation (ddof 1) of finite values; NaN with fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def _val_by_seed(c: Candidate) -> list[float]:
    """The validation mIoU of each training seed (its folds pooled); NaN without validation."""
    if c.val_runs is None:
        return [float("nan")] * len(c.seeds)
    grid = c.grid(np.stack(c.val_runs))  # [F, S, C, C]
    return [float(mean_iou(grid[:, j].sum(axis=0))) for j in range(len(c.seeds))]


def _summary_row(c: Candidate, n_folds: int) -> dict[str, Any]:
    f = c.fold_values
    by_seed = c.grid(f("mIoU")).mean(axis=0)  # [S]: each seed's fold mean
    return {
        "model": c.name,
        "library": c.config["library"],
        "architecture": _architecture(c.config),
        "start": describe_start(c.config),
        "parameters": c.train[0]["parameters"],
        "folds": n_folds,
        "n_seeds": len(c.seeds),
        "val_mIoU": float(mean_iou(c.val_confusion)) if c.val_confusion is not None else float("nan"),
        "val_mIoU_sd_seed": _sd(np.array(_val_by_seed(c))),
        "mIoU": float(np.mean(f("mIoU"))),
        "test_mIoU_mean": float(np.mean(f("mIoU"))),
        "test_mIoU_sd_seed": _sd(by_seed),
        "mIoU_std": float(np.std(c.grid(f("mIoU")).mean(axis=1))),
        "mDice": float(np.mean(f("mDice"))),
        "mAcc": float(np.mean(f("mAcc"))),
        "aAcc": float(np.mean(f("aAcc"))),
        "fwIoU": float(np.mean(f("fwIoU"))),
        "mBoundaryIoU": float(np.mean(f("mBoundaryIoU"))),
        "mIoU_image_avg": float(np.mean([m["image_averaged"]["mIoU"] for m in c.metrics])),
        "time_ms_median": float(np.mean(f("time_ms_median"))),
        "time_ms_p95": float(np.mean(f("time_ms_p95"))),
        "peak_gpu_memory_mib": _nanmax(f("peak_gpu_memory_mib")),
        "peak_memory_mb": _nanmax(f("peak_memory_mb")),
        "epoch_time_s": float(np.mean([t["epoch_time_s_median"] for t in c.train])),
        "train_time_s": float(np.sum([t["wall_time_s"] for t in c.train])),
        # how it trained (the same precision for every candidate unless a model's own train: block
        # changed it); an ensemble has no training of its own
        "precision": ",".join(sorted({str(t["precision"]) for t in c.train if t.get("precision")})),
        "memory_format": ",".join(
            sorted({_MEMORY_FORMAT[bool(t["channels_last"])] for t in c.train if "channels_last" in t})
        ),
    }


_MEMORY_FORMAT = {True: "channels-last", False: "NCHW"}


def _selection_input(c: Candidate) -> dict[str, Any]:
    """What :func:`segbench.select.select_model` ranks: validation confusion (test pooled only when
    there is no validation split), median validation latency, peak memory, parameters, and the
    per-seed validation confusions (for the seed-noise tie rule)."""
    val_time = np.nanmean(
        [
            np.nan if (m.get("val") or {}).get("time_ms_median") is None else m["val"]["time_ms_median"]
            for m in c.metrics
        ]
    )
    memory = _nanmax(c.fold_values("peak_memory_mb"))
    seed_confusions = None
    if c.val_runs is not None:
        grid = np.stack(c.val_runs).reshape(len(c.folds), len(c.seeds), *c.val_runs[0].shape)
        seed_confusions = [grid[:, j].sum(axis=0) for j in range(len(c.seeds))]
    return {
        "name": c.name,
        "parameters": c.train[0]["parameters"],
        "val_time_ms": float(val_time),
        "memory_mb": None if np.isnan(memory) else float(memory),
        "val_confusion": c.val_confusion if c.val_confusion is not None else c.test_confusion,
        "seed_val_confusions": seed_confusions,
    }


def _best_run(c: Candidate, has_val: bool) -> dict[str, Any]:
    """The run that goes to best/: the training seed whose validation mIoU (folds pooled) is the median
    of the seeds (the lower middle one for an even count: not the luckiest), then that seed's best fold
    on its own validation images. The test split is never looked at."""
    seeds = c.seeds
    if not has_val:
        return {"fold": 0, "seed": seeds[0], "rule": "no validation split: the first training seed, fold 0"}
    val_seed = _val_by_seed(c)
    order = sorted(
        range(len(seeds)), key=lambda j: (-np.inf if np.isnan(val_seed[j]) else val_seed[j], seeds[j])
    )
    j = order[(len(order) - 1) // 2]
    fold_scores = [(m.get("val") or {}).get("mIoU") for (k, s), m in zip(c.runs, c.metrics) if s == seeds[j]]
    fold = max(range(len(fold_scores)), key=lambda k: -np.inf if fold_scores[k] is None else fold_scores[k])
    rule = (
        f"training seed {seeds[j]}: validation mIoU {val_seed[j]:.4f}, the median of its {len(seeds)} seeds "
        f"({', '.join(f'{seeds[i]}: {val_seed[i]:.4f}' for i in range(len(seeds)))})"
        if len(seeds) > 1
        else f"the one training seed ({seeds[j]})"
    )
    if len(c.folds) > 1:
        rule += f"; fold {fold}, its best on its own validation images"
    return {"fold": int(fold), "seed": int(seeds[j]), "rule": rule}


def _test_series(candidates: list[Candidate]) -> np.ndarray | None:
    """``float[N]``: the per-image mIoU of every single model's runs, averaged (what the automatic block
    length reads); None without per-image stacks."""
    from .select import per_image_miou

    series = [
        per_image_miou(st) for c in candidates if c.test_stacks and not c.is_ensemble for st in c.test_stacks
    ]
    return np.nanmean(series, axis=0) if series else None


def _uncertainty(
    candidates: list[Candidate], ids: list[str], groups: list[str | None], sel_cfg: dict[str, Any]
) -> dict[str, Any]:
    """Resample test units and seeds once for every candidate (:mod:`segbench.uncertainty`).

    Returns:
        ``{"units": ResamplingUnits, "replicates": {name: float[B]} (the seed mean: seeds and units),
        "one_run": {name: float[B]} (one training run: one seed and the units), "image_only": {name:
        float[B]} (seeds fixed), "components": {name: {...}}, "ranks": {name: [...]}}``.
    """
    n_boot = int(sel_cfg.get("n_bootstrap", N_BOOTSTRAP))
    units = unc.resampling_units(
        ids,
        groups,
        sel_cfg.get("block_length", "auto"),
        int(sel_cfg.get("min_clusters", 5)),
        _test_series(candidates),
    )
    weights = unc.resample_weights(units, n_boot, np.random.default_rng(0))
    out: dict[str, Any] = {
        "units": units,
        "replicates": {},
        "one_run": {},
        "image_only": {},
        "components": {},
    }
    for c in candidates:
        if c.test_stacks is None:
            continue
        runs = c.grid([unc.run_scores(st, weights) for st in c.test_stacks])  # [F, S, B]
        out["replicates"][c.name] = unc.hierarchical_scores(runs, unc.seed_rng(c.name))
        out["one_run"][c.name] = unc.hierarchical_scores(runs, unc.seed_rng(c.name, 1), draws=1)
        out["image_only"][c.name] = runs.mean(axis=(0, 1))
        out["components"][c.name] = unc.variance_components(c.grid(c.fold_values("mIoU")), runs)
    out["ranks"] = unc.rank_probabilities(out["replicates"]) if out["replicates"] else {}
    return out


def _add_uncertainty(row: dict[str, Any], c: Candidate, u: dict[str, Any]) -> dict[str, Any]:
    def ci_of(kind: str) -> tuple[float, float]:
        return unc.percentile_interval(u[kind][c.name]) if c.name in u[kind] else (np.nan, np.nan)

    ci, ci_mean, ci_img = ci_of("one_run"), ci_of("replicates"), ci_of("image_only")
    comp = u["components"].get(c.name, {})
    ranks = u["ranks"].get(c.name)
    return dict(
        row,
        mIoU_ci_low=ci[0],
        mIoU_ci_high=ci[1],
        mIoU_mean_ci_low=ci_mean[0],
        mIoU_mean_ci_high=ci_mean[1],
        mIoU_ci_images_low=ci_img[0],
        mIoU_ci_images_high=ci_img[1],
        sd_seed=comp.get("sd_seed", np.nan),
        sd_fold=comp.get("sd_fold", np.nan),
        sd_image=comp.get("sd_image", np.nan),
        p_rank1=ranks[0] if ranks else np.nan,
    )


def _learning_flags(c: Candidate, baseline: dict[str, Any] | None, classes: list[str], margin: float):
    """``(learned_nothing reason or "", never-predicted class names joined)`` on validation only."""
    if c.val_confusion is None or baseline is None:
        return "", ""
    why = learned_nothing(c.val_confusion, baseline["class_id"], classes, margin) or ""
    return why, ", ".join(classes[k] for k in never_predicted(c.val_confusion))


def _per_seed(c: Candidate) -> dict[str, Any]:
    return {
        "seeds": c.seeds,
        "test_mIoU": [float(v) for v in c.grid(c.fold_values("mIoU")).mean(axis=0)],
        "val_mIoU": _val_by_seed(c),
    }


def summarise(
    candidates: list[Candidate],
    n_folds: int,
    has_val: bool,
    sel_cfg: dict[str, Any] | None = None,
    test_ids: list[str] | None = None,
    test_groups: list[str | None] | None = None,
    baseline: dict[str, Any] | None = None,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """The comparison's numbers (pure: no file is read or written).

    Args:
        test_ids, test_groups: the test images in stack order and their groups (the resampling units);
            default: independent images.
        baseline: :func:`segbench.baseline.majority_baseline` (for the "learned nothing" flag).

    Returns:
        ``{"rows": [summary rows], "per_class": {name: [IoU per class]}, "curves": DataFrame,
        "selection_inputs": [...], "best_run": {name: {fold, seed, rule}}, "replicates": {name: float[B]},
        "test_stacks": {name: [int[N, C, C] per run]}, "uncertainty": {...}}``.
    """
    sel_cfg = dict(sel_cfg or {})
    n_test = next((c.test_stacks[0].shape[0] for c in candidates if c.test_stacks), 0)
    ids = list(test_ids) if test_ids is not None else [str(i) for i in range(n_test)]
    groups = list(test_groups) if test_groups is not None else [None] * len(ids)
    u = _uncertainty(candidates, ids, groups, sel_cfg) if n_test else None
    classes = classes or []
    rows, margin = [], float(sel_cfg.get("baseline_margin", DEFAULT_MARGIN))
    flags = {c.name: _learning_flags(c, baseline, classes, margin) for c in candidates}
    for c in candidates:
        row = _add_uncertainty(_summary_row(c, n_folds), c, u) if u else _summary_row(c, n_folds)
        why, never = flags[c.name]
        if c.is_ensemble and not why:  # an ensemble that had to keep a member that learned nothing
            bad = [m for m in c.train[0].get("members", []) if flags.get(m, ("", ""))[0]]
            why = f"includes {', '.join(bad)}, which learned nothing" if bad else ""
        rows.append(dict(row, learned_nothing=why, never_predicted=never))
    per_class = {
        c.name: np.nanmean(
            np.array([[np.nan if v is None else v for v in m["IoU"]] for m in c.metrics], dtype=float), axis=0
        ).tolist()
        for c in candidates
    }
    curves = [h for c in candidates for h in c.history]
    return {
        "rows": rows,
        "per_class": per_class,
        "curves": pd.concat(curves, ignore_index=True) if curves else None,
        "selection_inputs": [_selection_input(c) for c in candidates],
        "best_run": {c.name: _best_run(c, has_val) for c in candidates},
        "test_stacks": {c.name: c.test_stacks for c in candidates if c.test_stacks is not None},
        "replicates": u["replicates"] if u else {},
        "uncertainty": {
            "units": u["units"].as_dict() if u else None,
            "n_bootstrap": int(sel_cfg.get("n_bootstrap", N_BOOTSTRAP)),
            "seeds": list(dict.fromkeys(s for c in candidates for s in c.seeds)),
            "n_folds": n_folds,
            "candidates": {
                c.name: dict(
                    _per_seed(c),
                    components=(u["components"].get(c.name) if u else None),
                    rank_probabilities=(u["ranks"].get(c.name) if u else None),
                )
                for c in candidates
            },
        },
    }


def aggregate(
    experiment_dir: str | Path,
    models: dict[str, dict[str, Any]],
    n_folds: int,
    dataset_dir: str | Path,
    select_cfg: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    tuned: bool = False,
) -> dict[str, Any]:
    """Build the summary of an experiment from its ``eval/`` and ``models/`` folders and select the best
    model.

    Args:
        experiment_dir: ``results/<experiment>``.
        models: ``{name: model config}`` (for library and architecture); ensembles as
            ``{"library": "ensemble"}``.
        n_folds: number of folds.
        dataset_dir: the canonical dataset folder (``dataset.json``, ``validation.json``).
        select_cfg: the ``select`` config (criterion, constraints, compare_top, n_bootstrap,
            block_length, min_clusters, baseline_margin); see :mod:`segbench.select`.
        seeds: the training seeds (``train.seeds``); default ``[0]``.
        tuned: the candidates were tuned (``tune/<model>/best.json``; the ``tuning`` section of
            :func:`segbench.tuning.summary.tuning_summary`); else the summary says they were not.

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
    classes = [c["name"] for c in meta["classes"]]
    baseline = majority_baseline(read_validation(ds.validation_json), splits, classes)
    candidates = collect(exp.root, models, n_folds, has_val, seeds)
    groups = [(meta["manifest"].get(i) or {}).get("group") for i in splits["test"]]
    numbers = summarise(candidates, n_folds, has_val, sel_cfg, splits["test"], groups, baseline, classes)
    table, selection = selection_record(numbers, sel_cfg, meta, n_folds, has_val, baseline)
    summary = {
        "experiment": exp.name,
        "dataset": meta["name"],
        "classes": classes,
        "test_images": len(splits["test"]),
        "models": table.to_dict(orient="records"),
        "per_class_IoU": numbers["per_class"],
        "baseline": baseline,
        "best": selection,
        "uncertainty": numbers["uncertainty"],
        "tuning": tuning_summary(
            exp.root,
            [c.name for c in candidates if not c.is_ensemble],
            tuned,
            {c.name: c.train[0] for c in candidates if not c.is_ensemble},
        ),
    }
    write_table(exp.summary_csv, table)
    if numbers["curves"] is not None:
        write_table(exp.learning_curves, numbers["curves"])
    write_selection(exp.selection, selection)
    write_summary(exp.summary_json, summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The aggregate step's console summary: one line per candidate, the baseline, the selection and
    the verdicts."""
    crit = summary["best"]["criterion"]
    lines = []
    for r in summary["models"]:
        flags = "" if r["selectable"] else f"  (not selectable: {r['violations']})"
        if r.get("learned_nothing"):
            flags += f"  LEARNED NOTHING: {r['learned_nothing']}"
        lines.append(
            f"{r['rank']}. {r['model']:<24} {r['library']:<12} val {crit:<5} {r['val_score']:.4f}  "
            f"test mIoU {r['mIoU']:.4f} [{r['mIoU_ci_low']:.4f}, {r['mIoU_ci_high']:.4f}] "
            f"({r.get('n_seeds', 1)} seed(s), P(rank 1) {r.get('p_rank1', float('nan')):.2f}){flags}"
        )
    lines.append(
        f"   majority-class baseline                          test mIoU {summary['baseline']['mIoU']:.4f}"
    )
    best = summary["best"]
    lines.append(f"selected: {best['model']} ({best['rule']})")
    if best.get("tie"):
        lines.append(f"  {best['tie']['text']}")
    lines.extend(f"  {c['verdict']}" for c in best["comparisons"])
    if best.get("uncertainty_text"):
        lines.append(f"  {best['uncertainty_text']}")
    tuning = summary.get("tuning") or {}
    for key in ("text", "crossing_text"):
        if tuning.get(key):
            lines.append(f"  {tuning[key]}")
    return "\n".join(lines)
