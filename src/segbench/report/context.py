"""Everything the report page shows, read and computed in one place: :func:`build_context`.

It reads only the files the report rule declares: ``summary.json``, ``learning_curves.csv``,
``eval/<candidate>/fold<k>/seed<s>/{per_image.csv, confusion.npy, metrics.json}``, the first fold's
and first seed's ``predictions/``, ``best/onnx_parity.json`` (when ONNX export is on), the canonical
dataset (images and masks for the overlays) and the ``select`` config (the number of bootstrap
resamples). The template (``templates/page.html.j2``) only lays the context out.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ..images import read_image, read_mask
from ..layout import DatasetLayout, ExperimentLayout
from ..palette import class_palette
from ..records import read_array, read_dataset, read_metrics, read_parity, read_summary, read_table
from . import plots

__all__ = ["build_context", "CRITERION_LABELS", "SUMMARY_COLUMNS"]

#: how the selection criterion is named on the page
CRITERION_LABELS = {"mIoU": "mIoU", "mDice_fg": "foreground mean Dice"}

#: summary.csv column -> its heading in the report's table, in display order
SUMMARY_COLUMNS = {
    "rank": "rank",
    "model": "model",
    "library": "library",
    "architecture": "architecture",
    "start": "start",
    "parameters": "parameters",
    "val_score": "validation {crit} (selection)",
    "n_seeds": "seeds",
    "mIoU": "test mIoU (mean)",
    "mIoU 95% CI": "95% interval (one training run)",
    "test_mIoU_sd_seed": "sd over seeds",
    "mIoU_std": "mIoU std (folds)",
    "p_rank1": "P(rank 1)",
    "learned_nothing": "learned nothing",
    "never_predicted": "never predicted (validation)",
    "mDice": "mDice",
    "mAcc": "mAcc",
    "aAcc": "aAcc",
    "fwIoU": "fwIoU",
    "mBoundaryIoU": "Boundary IoU",
    "mIoU_image_avg": "mIoU (image-averaged)",
    "time_ms_median": "ms / image (median)",
    "time_ms_p95": "ms / image (p95)",
    "peak_memory_mb": "peak memory MB",
    "epoch_time_s": "s / epoch",
    "precision": "training precision",
    "memory_format": "memory format",
    "violations": "not selectable",
}


def _table_html(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table (pandas escapes the cells), floats with 4 decimals."""
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)


def _short_error(parity: dict[str, Any]) -> str:
    """One line for the report: the exception type, or the parity figures (the full text stays in the
    JSON)."""
    err = parity.get("error")
    if err:
        return err.split(":", 1)[0] + " during export"
    return (
        f"argmax agreement {100 * parity.get('argmax_agreement', 0):.4f}%, max |logit difference| "
        f"{parity.get('max_abs_logit_diff', float('nan')):.1e}"
    )


def _answer(
    exp: ExperimentLayout, summary: dict[str, Any], df: pd.DataFrame, parity: dict[str, Any]
) -> dict[str, Any]:
    """The answer block: the selected model, its test mIoU with CI, the verdict, how it was chosen."""
    best = summary["best"]
    crit = CRITERION_LABELS.get(best.get("criterion", "mIoU"), best.get("criterion"))
    if best.get("model") is None:
        return {"selected": None, "constraints": json.dumps(best.get("constraints"))}
    row = df[df["model"] == best["model"]].iloc[0]
    has_ci = best.get("mIoU_ci_low") is not None and np.isfinite(best["mIoU_ci_low"])
    out = {
        "selected": best["model"],
        "library": str(row["library"]),
        "architecture": str(row["architecture"]),
        "mIoU": best["mIoU"],
        "ci": (best["mIoU_ci_low"], best["mIoU_ci_high"]) if has_ci else None,
        "verdict": best.get("verdict"),
        "rule": best.get("rule") or "",
        "criterion": crit,
        "val_score": best["val_score"],
        "runner_up": best.get("runner_up"),
        "margin": best.get("margin_val_score"),
        "constraints": ", ".join(f"{k} = {v}" for k, v in (best.get("constraints") or {}).items()),
        "baseline": summary["baseline"],
        "test_images": summary["test_images"],
        "uncertainty": best.get("uncertainty_text"),
        "n_seeds": int(best.get("n_seeds") or 1),
        "units": best.get("units") or {},
        "mean_ci": _pair(row, "mIoU_mean_ci_low", "mIoU_mean_ci_high"),
        "sd_seed": _num(row, "test_mIoU_sd_seed"),
        "p_rank1": _num(row, "p_rank1"),
        "tie": (best.get("tie") or {}).get("text"),
        "seed_rule": best.get("seed_rule"),
        "flagged": [
            {"model": r["model"], "why": r["learned_nothing"]}
            for r in summary["models"]
            if r.get("learned_nothing")
        ],
        "predict_command": f"segbench predict --model {exp.root}/best IMAGE -o MASK.png",
        "parity": None,
    }
    if parity:
        dynamic_ok = (parity.get("dynamic_hw") or {}).get("ok")
        out["parity"] = {
            "passed": bool(parity.get("passed")),
            "images": parity.get("images"),
            "max_abs_logit_diff": parity.get("max_abs_logit_diff"),
            "argmax_agreement": parity.get("argmax_agreement"),
            "dynamic_ok": dynamic_ok,
            "input_size": parity.get("input_size"),
            "short_error": _short_error(parity),
        }
    return out


def _num(row, key: str) -> float | None:
    v = row.get(key) if hasattr(row, "get") else None
    return float(v) if v is not None and np.isfinite(v) else None


def _pair(row, low: str, high: str) -> tuple[float, float] | None:
    lo, hi = _num(row, low), _num(row, high)
    return (lo, hi) if lo is not None and hi is not None else None


def _comparisons(best: dict[str, Any]) -> str | None:
    if not best.get("comparisons"):
        return None
    comp = pd.DataFrame(best["comparisons"])
    for key, default in (("p_value", np.nan), ("n_units", None), ("n_seeds", 1)):
        if key not in comp.columns:
            comp[key] = comp["n_images"] if key == "n_units" else default
    cols = [
        "a",
        "b",
        "difference",
        "ci_low",
        "ci_high",
        "p_value",
        "wilcoxon_p",
        "n_units",
        "n_seeds",
        "verdict",
    ]
    comp = comp[cols].rename(
        columns={
            "a": "model",
            "b": "against",
            "difference": "mIoU difference",
            "ci_low": "95% CI low",
            "ci_high": "95% CI high",
            "p_value": "bootstrap p",
            "wilcoxon_p": "Wilcoxon p",
            "n_units": "independent test units",
            "n_seeds": "seeds",
        }
    )
    for c in ("bootstrap p", "Wilcoxon p"):
        comp[c] = [f"{p:.2g}" if p is not None and np.isfinite(p) else "n/a" for p in comp[c]]
    return _table_html(comp)


def _summary_table(df: pd.DataFrame, crit: str) -> str:
    df = df.copy()
    if "mIoU_ci_low" in df.columns:
        df["mIoU 95% CI"] = [
            f"{lo:.3f} to {hi:.3f}" if np.isfinite(lo) else ""
            for lo, hi in zip(df["mIoU_ci_low"], df["mIoU_ci_high"])
        ]
    cols = [c for c in SUMMARY_COLUMNS if c in df.columns]
    return _table_html(df[cols].rename(columns={c: SUMMARY_COLUMNS[c].format(crit=crit) for c in cols}))


def _figures(
    exp: ExperimentLayout,
    summary: dict[str, Any],
    df: pd.DataFrame,
    order: list[str],
    crit: str,
    n_folds: int,
    seeds: list[int],
) -> dict[str, str]:
    """The data-driven figures (one data URI each)."""
    best = summary["best"]
    runs = [(k, s) for k in range(n_folds) for s in seeds]
    per_image = pd.concat(
        [read_table(exp.eval_file(n, k, s, "per_image.csv")).assign(model=n) for n in order for k, s in runs],
        ignore_index=True,
    )
    matrices = {n: sum(read_array(exp.eval_file(n, k, s, "confusion.npy")) for k, s in runs) for n in order}
    per_class = pd.DataFrame(summary["per_class_IoU"], index=summary["classes"]).T.loc[order]
    per_cand = (summary.get("uncertainty") or {}).get("candidates") or {}
    seed_values = {n: v.get("test_mIoU") or [] for n, v in per_cand.items()}
    figs = {
        "miou": plots.miou_with_ci(df, order, summary["baseline"]["mIoU"], seed_values),
        "per_class": plots.per_class_iou(per_class, summary["classes"]),
        "per_image": plots.per_image_boxplot(per_image, order),
        "curves": plots.learning_curves(read_table(exp.learning_curves)),
        "confusion": plots.confusion_matrices(matrices, summary["classes"]),
    }
    ranks = {n: v["rank_probabilities"] for n, v in per_cand.items() if v.get("rank_probabilities")}
    if len(ranks) > 1:
        figs["ranks"] = plots.rank_probabilities(ranks, order)
    tuning = summary.get("tuning") or {}
    tuned = tuning.get("candidates") or {}
    if "time_ms_median" in df.columns and "val_score" in df.columns:
        figs["pareto"] = plots.accuracy_latency(
            df,
            best.get("model"),
            crit,
            (best.get("constraints") or {}).get("max_ms_per_image"),
            {n: c.get("trials_table") or [] for n, c in tuned.items()},
        )
    if tuned:
        figs["budget"] = plots.budget_curves(tuned, crit)
    return figs


def _plan(plan_json) -> dict[str, Any] | None:
    """The training plan (``plan.json``) when the recipe left keys to it: each decision and its reason."""
    from ..records import read_json

    if plan_json is None:
        return None
    plan = read_json(plan_json, required=("scale", "patch", "models"))
    rows = [
        {
            "model": name,
            # a model whose own train: keys set a size (e.g. a whole-image resize candidate) is probed there
            "probed at (px)": "x".join(str(v) for v in (m.get("probe_size") or plan["patch"])),
            "batch size": m["batch_size"],
            "epochs": m["epochs"],
            "images / s (probe)": round(float(m["images_per_s"]), 1),
            "why": f"{m['why']}; {m['epochs_why']}",
        }
        for name, m in plan["models"].items()
    ]
    return dict(plan, table=_table_html(pd.DataFrame(rows)))


def _offline(text: str, limit: int = 400) -> str:
    """A recorded reason for the page: web addresses left out (the page links nowhere and loads
    nothing; the full text stays in the JSON file), cut to ``limit`` characters."""
    import re

    text = re.sub(r"https?://\S+", "(web address left out)", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _deploy(deploy_json) -> dict[str, Any] | None:
    """The deployment section (``deploy/summary.json``, :func:`segbench.deploy.summarise_variants`): the
    selected model and each variant on the same test images; variants that did not run, with why."""
    from ..records import read_json

    if deploy_json is None:
        return None
    d = read_json(deploy_json, required=("rows",))
    ran = [r for r in d["rows"] if r.get("status") == "ok"]
    if not ran:
        return None

    def num(v, fmt):
        return "" if v is None else format(float(v), fmt)

    rows = [
        {
            "variant": r["variant"],
            "engine": r.get("engine"),
            "precision": r.get("precision"),
            "test mIoU [95% CI]": f"{r['mIoU']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
            "vs PyTorch [95% CI]": ""
            if r.get("difference") is None
            else f"{r['difference']:+.4f} [{r['diff_low']:+.4f}, {r['diff_high']:+.4f}]",
            "ms / image (median, p95)": f"{num(r.get('time_ms_median'), '.1f')}, "
            f"{num(r.get('time_ms_p95'), '.1f')}",
            "speed-up": num(r.get("speedup"), ".2f"),
            "peak memory MB": num(r.get("peak_memory_mb"), ".0f"),
            "size MB": num(r.get("size_mb"), ".1f"),
            "threads": r.get("threads") or "",
        }
        for r in ran
    ]
    return {
        "reference": d.get("reference"),
        "table": _table_html(pd.DataFrame(rows)),
        "verdicts": [r["verdict"] for r in ran if r.get("verdict")],
        "not_run": [
            {"variant": r["variant"], "status": r["status"], "reason": _offline(r.get("reason") or "")}
            for r in d["rows"]
            if r.get("status") != "ok"
        ],
        "units": (d.get("units") or {}).get("description"),
        "recommendation": d.get("recommendation"),
    }


def _tuning(summary: dict[str, Any]) -> dict[str, Any]:
    """The tuning section: whether and how the candidates were tuned, one row per candidate."""
    from ..tuning.space import describe_params

    t = {"tuned": False, "text": "", "crossing_text": "", "estimator": "", **(summary.get("tuning") or {})}
    rows = [
        {
            "model": name,
            "trials": c["trials"],
            "complete": c["complete"],
            "pruned": c["pruned"],
            "failed": c["failed"],
            "compute (min)": round(float(c["compute_s"]) / 60, 1),
            "best trial": c["best_trial"],
            "best configuration": describe_params(c["params"]),
            f"validation {c['metric']}": c["value"],
        }
        for name, c in (t.get("candidates") or {}).items()
    ]
    return dict(t, table=_table_html(pd.DataFrame(rows)) if rows else None)


def _overlays(
    exp: ExperimentLayout,
    ds: DatasetLayout,
    meta: dict[str, Any],
    order: list[str],
    report_cfg: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """The prediction overlays of the first test images and each candidate's worst test images (fold 0,
    the first training seed)."""
    pal, ign = class_palette(meta["classes"]), meta["ignore_index"]
    alpha = float(report_cfg.get("overlay_alpha", 0.5))
    n_ov, n_worst = int(report_cfg.get("n_overlays", 3)), int(report_cfg.get("n_worst", 3))
    ids = sorted(p.stem for p in exp.predictions_dir(order[0], 0, seed).glob("*.png"))[:n_ov] if n_ov else []
    out: dict[str, Any] = {"grid": None, "worst": []}

    def entry(sid):
        return read_image(ds.file(meta["manifest"][sid]["image"])), read_mask(
            ds.file(meta["manifest"][sid]["mask"])
        )

    if ids:
        rows = []
        for sid in ids:
            img, truth = entry(sid)
            panels = [("ground truth", truth)] + [
                (n, read_mask(exp.prediction(n, 0, seed, sid))) for n in order
            ]
            rows.append({"id": sid, "image": img, "panels": panels})
        out["grid"] = plots.prediction_grid(rows, pal, [c["name"] for c in meta["classes"]], alpha, ign)
    for name in order if n_worst else []:
        worst = read_metrics(exp.eval_dir(name, 0, seed)).get("worst_images", [])[:n_worst]
        cases = [
            dict(
                w,
                image=entry(w["id"])[0],
                truth=entry(w["id"])[1],
                pred=read_mask(exp.prediction(name, 0, seed, w["id"])),
            )
            for w in worst
            if exp.prediction(name, 0, seed, w["id"]).is_file()
        ]
        if cases:
            out["worst"].append({"name": name, "src": plots.worst_images(name, cases, pal, alpha, ign)})
    return out


def build_context(
    experiment_dir,
    dataset_dir,
    report_cfg: dict[str, Any],
    select_cfg: dict[str, Any] | None = None,
    n_folds: int | None = None,
    plan_json=None,
    deploy_json=None,
) -> dict[str, Any]:
    """The report's content: numbers, tables (HTML) and figures (data URIs).

    Args:
        experiment_dir: ``results/<experiment>``.
        dataset_dir: the canonical dataset folder (images and masks for the overlays).
        report_cfg: ``{title, n_overlays, overlay_alpha, n_worst}``.
        select_cfg: the ``select`` config (``n_bootstrap``, ``onnx``); None = its defaults.
        n_folds: folds per candidate (default: as many as ``summary.json`` records).
        plan_json: ``plan.json`` when the recipe left keys to the plan (else no plan section).
        deploy_json: ``deploy/summary.json`` when deployment variants were built (else no section).

    Raises:
        FileNotFoundError: an input of the report is missing (names it and the step that writes it).
    """
    exp, ds = ExperimentLayout(experiment_dir), DatasetLayout(dataset_dir)
    select_cfg = select_cfg or {}
    summary, meta = read_summary(exp.summary_json), read_dataset(ds.dataset_json)
    df = pd.DataFrame(summary["models"])
    df["selectable"] = df.get("selectable", True)
    order = list(df["model"])
    n_folds = n_folds or int(df["folds"].max())
    crit = CRITERION_LABELS.get(summary["best"].get("criterion", "mIoU"), summary["best"].get("criterion"))
    parity = read_parity(exp.best_file("onnx_parity.json"), required=bool(select_cfg.get("onnx", False)))
    seeds = list((summary.get("uncertainty") or {}).get("seeds") or [0])
    return {
        "title": report_cfg.get("title") or f"segbench: {summary['experiment']}",
        "dataset": summary["dataset"],
        "n_models": len(order),
        "test_images": summary["test_images"],
        "n_bootstrap": int(select_cfg.get("n_bootstrap", 2000)),
        "answer": _answer(exp, summary, df, parity),
        "comparisons": _comparisons(summary["best"]),
        "summary_table": _summary_table(df, crit),
        "figures": _figures(exp, summary, df, order, crit, n_folds, seeds),
        "overlays": _overlays(exp, ds, meta, order, report_cfg, seeds[0]),
        "tuning": _tuning(summary),
        "plan": _plan(plan_json),
        "deploy": _deploy(deploy_json),
        "n_seeds": len(seeds),
    }
