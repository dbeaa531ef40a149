"""Aggregate every model x fold evaluation into one comparison; select the best model on validation.

Outputs in ``results/<experiment>/``:

* ``summary.csv`` / ``summary.json``: one row per candidate (models and ensembles), the selectable
  ones first in validation order: ``rank, model, library, architecture, start, parameters, folds, val_mIoU,
  mIoU, mIoU_std, mDice, mAcc, aAcc, fwIoU, mBoundaryIoU, mIoU_ci_low, mIoU_ci_high, mIoU_image_avg,
  time_ms_median, time_ms_p95, peak_gpu_memory_mib, peak_memory_mb, epoch_time_s, train_time_s,
  val_score, selectable, violations, pareto``. ``val_mIoU``/``val_score`` come from the validation
  images pooled over folds; the other metric columns are dataset-level on the test split, averaged
  over folds (``*_std``: standard deviation over folds, 0 with one fold). ``summary.json`` adds the
  per-class IoU, the majority-class baseline and the selection.
* ``selection.json``: :func:`segbench.select.select_model` on validation results (criterion,
  constraints, ranking; never the test split), and the paired comparisons of the selected model with
  the next ``compare_top - 1`` candidates on the test images (:func:`segbench.select.paired_comparison`).
  Without a validation split there is nothing honest to select on: the test split is used and the
  selection says so (``selected_on: "test"``).
* ``learning_curves.csv``: ``model, fold, epoch, train_loss, val_loss, val_mIoU`` (for ``dvc plots``).

``mIoU_ci_low``/``mIoU_ci_high``: 95 % percentile bootstrap interval of the test mIoU over test
images (:func:`segbench.metrics.bootstrap_scores`, ``n_bootstrap`` seeded resamples; with k folds the
same resamples are applied to every fold and the fold mean taken). ``best/`` is written by
:mod:`segbench.best`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import atomic_path, atomic_write_json
from .metrics import bootstrap_scores, metrics_from_confusion

#: bootstrap resamples for the confidence interval of test mIoU (seeded: the same CI every run)
N_BOOTSTRAP = 2000

__all__ = ["aggregate", "majority_baseline", "merge_timing"]



def describe_start(mcfg: dict[str, Any]) -> str:
    """How a model starts training, in words (the report compares fine-tuning modes as models):
    ``scratch``, ``imagenet``, ``imagenet, encoder frozen 2 ep, encoder LR x0.1``, ``from <checkpoint>``."""
    if mcfg.get("library") == "ensemble":
        return ""
    parts = [f"from {mcfg['init_checkpoint']}" if mcfg.get("init_checkpoint") else str(mcfg.get("encoder_weights") or "scratch")]
    train = mcfg.get("train") or {}
    if train.get("freeze_epochs"):
        parts.append(f"encoder frozen {train['freeze_epochs']} ep")
    if train.get("encoder_lr_mult", 1.0) != 1.0:
        parts.append(f"encoder LR x{train['encoder_lr_mult']:g}")
    return ", ".join(parts)

def majority_baseline(validation: dict[str, Any], splits: dict[str, Any], classes: list[str]) -> dict[str, Any]:
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
    return {"class": classes[k], "class_id": k, "mIoU": float(np.nanmean(iou)), "aAcc": float(test_counts[k] / total)}


def _load_stack(path: Path) -> np.ndarray | None:
    return np.load(path) if path.is_file() else None


def aggregate(experiment_dir: str | Path, models: dict[str, dict[str, Any]], n_folds: int, dataset_dir: str | Path,
              select_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the summary of an experiment from its ``eval/`` and ``models/`` folders and select the best model.

    Args:
        experiment_dir: ``results/<experiment>``.
        models: ``{name: model config}`` (for library and architecture).
        n_folds: number of folds.
        dataset_dir: the canonical dataset folder (``dataset.json``, ``validation.json``).
        select_cfg: the ``select`` config (criterion, constraints, compare_top, n_bootstrap); see
            :mod:`segbench.select`.

    Returns:
        The ``summary.json`` content.

    Raises:
        FileNotFoundError: an evaluation or training output is missing (names the file).
    """
    from .select import paired_comparison, pareto_front, select_model

    sel_cfg = dict(select_cfg or {})
    n_boot = int(sel_cfg.get("n_bootstrap", N_BOOTSTRAP))
    criterion = sel_cfg.get("criterion", "mIoU")
    constraints = {k: sel_cfg.get(k) for k in ("max_ms_per_image", "max_memory_mb", "max_params")}
    exp = Path(experiment_dir)
    dataset_dir = Path(dataset_dir)
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    validation = json.loads((dataset_dir / "validation.json").read_text())
    splits = json.loads((exp / "splits.json").read_text())
    classes = [c["name"] for c in meta["classes"]]
    has_val = all(len(f.get("val") or []) > 0 for f in splits["folds"])
    rows, per_class, curves, best_fold, candidates, test_stacks = [], {}, [], {}, [], {}
    for name, mcfg in models.items():
        folds = []
        is_ensemble = mcfg.get("library") == "ensemble"
        for k in range(n_folds):
            ev, tr = exp / "eval" / name / f"fold{k}", exp / "models" / name / f"fold{k}"
            needed = (ev / "metrics.json", tr / "ensemble.json") if is_ensemble else \
                (ev / "metrics.json", tr / "train_meta.json", tr / "history.csv")
            for p in needed:
                if not p.is_file():
                    raise FileNotFoundError(f"{p} not found; run the workflow's train and evaluate steps first")
            timing = json.loads((ev / "timing.json").read_text()) if (ev / "timing.json").is_file() else None
            m = merge_timing(json.loads((ev / "metrics.json").read_text()), timing)
            if is_ensemble:  # no training of its own
                t = dict(json.loads((tr / "ensemble.json").read_text()), epoch_time_s_median=0.0, wall_time_s=0.0)
                mcfg = dict(mcfg, arch="softmax average of " + " + ".join(t["members"]))
            else:
                t = json.loads((tr / "train_meta.json").read_text())
                h = pd.read_csv(tr / "history.csv")
                h.insert(0, "fold", k)
                h.insert(0, "model", name)
                curves.append(h)
            folds.append((k, m, t))
        ci_low = ci_high = float("nan")
        stacks = [_load_stack(exp / "eval" / name / f"fold{k}" / "confusion_per_image.npy") for k in range(n_folds)]
        if all(st is not None for st in stacks):
            test_stacks[name] = stacks
            scores = np.mean([bootstrap_scores(st, n_boot, seed=0) for st in stacks], axis=0)
            ci_low, ci_high = (float(v) for v in np.quantile(scores, [0.025, 0.975]))

        def f(key: str, folds=folds) -> np.ndarray:
            return np.array([np.nan if m.get(key) is None else m[key] for _, m, _ in folds], dtype=float)

        # validation: pooled over folds (out-of-fold with k-fold); test files are not read for this
        val_cms = [exp / "eval" / name / f"fold{k}" / "val_confusion.npy" for k in range(n_folds)]
        val_cm = np.sum([np.load(p) for p in val_cms], axis=0) if has_val and all(p.is_file() for p in val_cms) else None
        val_time = np.nanmean([np.nan if (m.get("val") or {}).get("time_ms_median") is None else m["val"]["time_ms_median"]
                               for _, m, _ in folds])
        memory = np.nanmax(f("peak_memory_mb")) if np.isfinite(f("peak_memory_mb")).any() else float("nan")
        arch = mcfg.get("arch") or Path(str(mcfg.get("config", ""))).stem
        if mcfg.get("encoder"):
            arch = f"{arch}({mcfg['encoder']})"
        params = folds[0][2]["parameters"]
        candidates.append({"name": name, "parameters": params, "val_time_ms": float(val_time),
                           "memory_mb": None if np.isnan(memory) else float(memory),
                           "val_confusion": val_cm if val_cm is not None else np.sum(
                               [np.load(exp / "eval" / name / f"fold{k}" / "confusion.npy") for k in range(n_folds)], axis=0)})
        rows.append({
            "model": name,
            "library": mcfg["library"],
            "architecture": arch,
            "start": describe_start(mcfg),
            "parameters": params,
            "folds": n_folds,
            "val_mIoU": float(metrics_from_confusion(val_cm)["mIoU"]) if val_cm is not None else float("nan"),
            "mIoU": float(np.mean(f("mIoU"))),
            "mIoU_std": float(np.std(f("mIoU"))),
            "mDice": float(np.mean(f("mDice"))),
            "mAcc": float(np.mean(f("mAcc"))),
            "aAcc": float(np.mean(f("aAcc"))),
            "fwIoU": float(np.mean(f("fwIoU"))),
            "mBoundaryIoU": float(np.mean(f("mBoundaryIoU"))),
            "mIoU_ci_low": ci_low,
            "mIoU_ci_high": ci_high,
            "mIoU_image_avg": float(np.mean([m["image_averaged"]["mIoU"] for _, m, _ in folds])),
            "time_ms_median": float(np.mean(f("time_ms_median"))),
            "time_ms_p95": float(np.mean(f("time_ms_p95"))),
            "peak_gpu_memory_mib": float(np.nanmax(f("peak_gpu_memory_mib"))) if np.isfinite(f("peak_gpu_memory_mib")).any() else float("nan"),
            "peak_memory_mb": float(memory),
            "epoch_time_s": float(np.mean([t["epoch_time_s_median"] for _, _, t in folds])),
            "train_time_s": float(np.sum([t["wall_time_s"] for _, _, t in folds])),
        })
        per_class[name] = np.nanmean(np.array([[np.nan if v is None else v for v in m["IoU"]] for _, m, _ in folds], dtype=float), axis=0).tolist()
        # the fold whose weights go to best/: the best on its own validation images (test is never looked at)
        best_fold[name] = max(folds, key=lambda x: -np.inf if (x[1].get("val") or {}).get("mIoU") is None
                              else x[1]["val"]["mIoU"])[0] if has_val else 0
    choice = select_model(candidates, criterion, constraints, background=meta.get("background"))
    order = {r["name"]: i for i, r in enumerate(choice["ranking"])}
    by_name = {r["name"]: r for r in choice["ranking"]}
    df = pd.DataFrame(rows)
    df["val_score"] = [by_name[n]["score"] for n in df["model"]]
    df["selectable"] = [by_name[n]["selectable"] for n in df["model"]]
    df["violations"] = ["; ".join(by_name[n]["violations"]) for n in df["model"]]
    front = pareto_front([(r["model"], r["time_ms_median"], r["val_score"]) for r in df.to_dict(orient="records")])
    df["pareto"] = df["model"].isin(front)
    df = df.iloc[np.argsort([order[n] for n in df["model"]], kind="stable")].reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    baseline = majority_baseline(validation, splits, classes)
    basis = "validation" if has_val else "test"
    selected = choice["selected"]
    comparisons = []
    ranked = [r["name"] for r in choice["ranking"]]
    if selected is not None and selected in test_stacks:
        others = [n for n in ranked if n != selected and n in test_stacks][: max(0, int(sel_cfg.get("compare_top", 3)) - 1)]
        comparisons = [paired_comparison(selected, o, test_stacks[selected], test_stacks[o], n_boot, seed=0)
                       for o in others]
    best_row = df[df["model"] == selected].iloc[0] if selected is not None else None
    runner_up = next((n for n in ranked if n != selected), None)
    crit_text = {"mIoU": "dataset-level mIoU", "mDice_fg": "mean foreground Dice"}[criterion]
    selection = {
        "model": selected,
        "library": None if best_row is None else best_row["library"],
        "fold": None if selected is None else best_fold[selected],
        "selected_on": basis,
        "criterion": criterion,
        "constraints": choice["constraints"],
        "rule": (f"highest validation {crit_text} ({'pooled out-of-fold over ' + str(n_folds) + ' folds' if n_folds > 1 else 'validation split'}); "
                 "ties go to fewer parameters, then lower latency; models breaking a constraint are not selectable; "
                 "the test split is not used" if has_val else
                 f"highest test {crit_text}: there is no validation split, so this choice is biased towards the test "
                 "set; set split.val_fraction > 0"),
        "val_score": None if best_row is None else float(best_row["val_score"]),
        "mIoU": None if best_row is None else float(best_row["mIoU"]),
        "mIoU_ci_low": None if best_row is None else float(best_row["mIoU_ci_low"]),
        "mIoU_ci_high": None if best_row is None else float(best_row["mIoU_ci_high"]),
        "runner_up": runner_up,
        "margin_val_score": (float(best_row["val_score"] - by_name[runner_up]["score"])
                             if best_row is not None and runner_up else None),
        "verdict": comparisons[0]["verdict"] if comparisons else None,
        "comparisons": comparisons,
        "ranking": [{k: v for k, v in r.items()} for r in choice["ranking"]],
        "baseline_mIoU": baseline["mIoU"],
        "no_selectable_model": selected is None,
    }
    summary = {
        "experiment": exp.name,
        "dataset": meta["name"],
        "classes": classes,
        "test_images": len(splits["test"]),
        "models": df.to_dict(orient="records"),
        "per_class_IoU": per_class,
        "baseline": baseline,
        "best": selection,
    }
    with atomic_path(exp / "summary.csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(exp / "learning_curves.csv") as tmp:
        pd.concat(curves, ignore_index=True).to_csv(tmp, index=False, float_format="%.6g")
    atomic_write_json(exp / "selection.json", selection)
    atomic_write_json(exp / "summary.json", summary)
    return summary


def merge_timing(metrics: dict[str, Any], timing: dict[str, Any] | None) -> dict[str, Any]:
    """``metrics.json`` content with ``timing.json``'s summary added: ``time_ms_median``,
    ``time_ms_p95``, ``peak_memory_mb``, ``peak_gpu_memory_mib`` at the top level and the validation
    ``time_ms_median`` under ``"val"``. Results written before ``timing.json`` existed (``timing`` None)
    carry these keys in ``metrics.json`` itself and are returned as they are. Returns a new dict."""
    out = dict(metrics)
    if timing is None:
        return out
    t = timing
    for k in ("time_ms_median", "time_ms_p95", "peak_memory_mb", "peak_gpu_memory_mib"):
        out[k] = t.get(k)
    if isinstance(out.get("val"), dict):
        out["val"] = dict(out["val"], time_ms_median=(t.get("val") or {}).get("time_ms_median"))
    return out
