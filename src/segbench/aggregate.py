"""Aggregate every model x fold evaluation into one comparison; select the best model.

Outputs in ``results/<experiment>/``:

* ``summary.csv`` / ``summary.json``: one row per model, ranked by validation mIoU: ``rank, model,
  library, architecture, parameters, folds, val_mIoU, mIoU, mIoU_std, mDice, mAcc, aAcc, fwIoU,
  mBoundaryIoU, mIoU_ci_low, mIoU_ci_high, mIoU_image_avg, time_ms_median, time_ms_p95, peak_gpu_memory_mib (empty on CPU),
  epoch_time_s, train_time_s``. ``val_mIoU`` is the
  best validation mIoU of training (mean over folds); the other metric columns are dataset-level on
  the test split, averaged over folds (``*_std``: standard deviation over folds, 0 with one fold).
  ``summary.json`` adds the per-class IoU, the majority-class baseline and the selection.

``mIoU_ci_low``/``mIoU_ci_high``: 95 % percentile bootstrap interval of the test mIoU over test
images (:func:`segbench.metrics.bootstrap_scores`, 2,000 seeded resamples; with k folds the same
resamples are applied to every fold and the fold mean taken).

Selection never reads the test split: the best model has the highest validation mIoU, ties going to
the model with fewer parameters. Without a validation set there is nothing honest to select on, so
models are ranked by test mIoU and the selection says so (``selected_on: "test"``).
* ``learning_curves.csv``: ``model, fold, epoch, train_loss, val_loss, val_mIoU`` (for ``dvc plots``).
* ``best/``: the selected model's ``model.safetensors`` and ``model.json`` (its best fold),
  ``selection.json`` (how it was chosen) and a README.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text
from .metrics import bootstrap_scores

#: bootstrap resamples for the confidence interval of test mIoU (seeded: the same CI every run)
N_BOOTSTRAP = 2000

__all__ = ["aggregate", "majority_baseline"]


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


def aggregate(experiment_dir: str | Path, models: dict[str, dict[str, Any]], n_folds: int, dataset_dir: str | Path) -> dict[str, Any]:
    """Build the summary of an experiment from its ``eval/`` and ``models/`` folders.

    Args:
        experiment_dir: ``results/<experiment>``.
        models: ``{name: model config}`` (for library and architecture).
        n_folds: number of folds.
        dataset_dir: the canonical dataset folder (``dataset.json``, ``validation.json``).

    Returns:
        The ``summary.json`` content.

    Raises:
        FileNotFoundError: an evaluation or training output is missing (names the file).
    """
    exp = Path(experiment_dir)
    dataset_dir = Path(dataset_dir)
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    validation = json.loads((dataset_dir / "validation.json").read_text())
    splits = json.loads((exp / "splits.json").read_text())
    classes = [c["name"] for c in meta["classes"]]
    rows, per_class, curves, best_fold = [], {}, [], {}
    for name, mcfg in models.items():
        folds = []
        for k in range(n_folds):
            ev, tr = exp / "eval" / name / f"fold{k}", exp / "models" / name / f"fold{k}"
            for p in (ev / "metrics.json", tr / "train_meta.json", tr / "history.csv"):
                if not p.is_file():
                    raise FileNotFoundError(f"{p} not found; run the workflow's train and evaluate steps first")
            m = json.loads((ev / "metrics.json").read_text())
            t = json.loads((tr / "train_meta.json").read_text())
            folds.append((k, m, t))
            h = pd.read_csv(tr / "history.csv")
            h.insert(0, "fold", k)
            h.insert(0, "model", name)
            curves.append(h)
        ci_low = ci_high = float("nan")
        stacks = [exp / "eval" / name / f"fold{k}" / "confusion_per_image.npy" for k in range(n_folds)]
        if all(p.is_file() for p in stacks):
            scores = np.mean([bootstrap_scores(np.load(p), N_BOOTSTRAP, seed=0) for p in stacks], axis=0)
            ci_low, ci_high = (float(v) for v in np.quantile(scores, [0.025, 0.975]))

        def f(key: str, folds=folds) -> np.ndarray:
            return np.array([np.nan if m.get(key) is None else m[key] for _, m, _ in folds], dtype=float)

        arch = mcfg.get("arch") or Path(str(mcfg.get("config", ""))).stem
        if mcfg.get("encoder"):
            arch = f"{arch}({mcfg['encoder']})"
        rows.append({
            "model": name,
            "library": mcfg["library"],
            "architecture": arch,
            "parameters": folds[0][2]["parameters"],
            "folds": n_folds,
            "val_mIoU": float(np.mean([np.nan if t.get("best_val_mIoU") is None else t["best_val_mIoU"] for _, _, t in folds])),
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
            "epoch_time_s": float(np.mean([t["epoch_time_s_median"] for _, _, t in folds])),
            "train_time_s": float(np.sum([t["wall_time_s"] for _, _, t in folds])),
        })
        per_class[name] = np.nanmean(np.array([[np.nan if v is None else v for v in m["IoU"]] for _, m, _ in folds], dtype=float), axis=0).tolist()
        # the fold whose weights go to best/: the best on validation (test is never looked at)
        best_fold[name] = max(folds, key=lambda x: -np.inf if x[2].get("best_val_mIoU") is None else x[2]["best_val_mIoU"])[0]
    df = pd.DataFrame(rows)
    on_val = bool(df["val_mIoU"].notna().all())
    key = "val_mIoU" if on_val else "mIoU"
    df = df.sort_values([key, "parameters"], ascending=[False, True], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    baseline = majority_baseline(validation, splits, classes)
    best = df.iloc[0]
    selection = {
        "model": best["model"],
        "library": best["library"],
        "fold": best_fold[best["model"]],
        "selected_on": "validation" if on_val else "test",
        "criterion": ("highest validation mIoU (mean over folds; ties: fewer parameters); the test split is not used"
                      if on_val else "highest test mIoU: there is no validation split, so this choice is biased "
                      "towards the test set; set split.val_fraction > 0"),
        "val_mIoU": best["val_mIoU"] if on_val else None,
        "mIoU": best["mIoU"],
        "runner_up": df.iloc[1]["model"] if len(df) > 1 else None,
        "margin_val_mIoU": float(best["val_mIoU"] - df.iloc[1]["val_mIoU"]) if len(df) > 1 and on_val else None,
        "margin_mIoU": float(best["mIoU"] - df.iloc[1]["mIoU"]) if len(df) > 1 else None,
        "baseline_mIoU": baseline["mIoU"],
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
    src = exp / "models" / selection["model"] / f"fold{selection['fold']}"
    with atomic_dir(exp / "best") as tmp:
        for name in ("model.safetensors", "model.json"):
            shutil.copyfile(src / name, tmp / name)
        atomic_write_json(tmp / "selection.json", selection)
        atomic_write_text(tmp / "README.md", (
            f"# Best model of {exp.name}: {selection['model']} ({selection['library']})\n\n"
            f"Selected by {selection['criterion']}. Test mIoU {selection['mIoU']:.4f}"
            + (f" ({selection['margin_mIoU']:+.4f} against {selection['runner_up']})" if selection["runner_up"] else "")
            + f"; majority-class baseline {baseline['mIoU']:.4f}.\n\n"
            "Files: `model.safetensors` (weights), `model.json` (architecture, classes, input size, normalisation).\n\n"
            "Load it in Python:\n\n```python\nfrom segbench.evaluate import load_trained_model\n"
            f"model, info = load_trained_model('{exp.as_posix()}/best')\n```\n"
        ))
    atomic_write_json(exp / "summary.json", summary)
    return summary
