"""The comparison report: one self-contained HTML page (plots embedded as PNG data URIs).

It reads only files other steps wrote (summary.json, learning_curves.csv, eval/*/per_image.csv,
confusion.npy, predictions/) and needs no network to display. Plots: seaborn on matplotlib (Agg).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data.dataset import read_image, read_mask
from .io import atomic_write_text
from .palette import class_palette

__all__ = ["render_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.9rem} th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3} td:nth-child(2),td:nth-child(3),td:nth-child(4){text-align:left}
.note{color:#555;font-size:.9rem} .verdict{background:#eef6ee;border-left:4px solid #3a3;padding:.8rem 1rem}
img{max-width:100%}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _colorize(mask: np.ndarray, pal: np.ndarray, ignore: int) -> np.ndarray:
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    valid = (mask != ignore) & (mask < len(pal))
    out[valid] = pal[mask[valid]]
    return out


def render_report(experiment_dir: str | Path, dataset_dir: str | Path, report_cfg: dict[str, Any], out_path: str | Path) -> str:
    """Render ``report/index.html`` for an experiment.

    Args:
        experiment_dir: ``results/<experiment>`` (with summary.json, learning_curves.csv, eval/).
        dataset_dir: the canonical dataset folder (images and masks for the overlays).
        report_cfg: ``{title, n_overlays, overlay_alpha}``.
        out_path: where to write the HTML (atomically).

    Returns:
        The HTML text.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    exp = Path(experiment_dir)
    dataset_dir = Path(dataset_dir)
    summary = json.loads((exp / "summary.json").read_text())
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    df = pd.DataFrame(summary["models"])
    order = list(df["model"])
    classes = summary["classes"]
    base = summary["baseline"]
    best = summary["best"]
    title = report_cfg.get("title") or f"segbench: {summary['experiment']}"
    sections: list[str] = []

    # verdict
    verdict = f"<p class='verdict'><b>Best model: {html.escape(best['model'])}</b> ({html.escape(best['library'])})"
    if best.get("val_mIoU") is not None:
        verdict += f", validation mIoU {best['val_mIoU']:.3f}"
    verdict += f"; test mIoU {best['mIoU']:.3f}"
    brow = df[df["model"] == best["model"]].iloc[0]
    if "mIoU_ci_low" in df.columns and np.isfinite(brow["mIoU_ci_low"]):
        verdict += f" (95% CI {brow['mIoU_ci_low']:.3f} to {brow['mIoU_ci_high']:.3f}, bootstrap over test images)"
    if best.get("runner_up"):
        verdict += f" ({best['margin_mIoU']:+.3f} against the runner-up {html.escape(best['runner_up'])} on test)"
    verdict += (f". Majority-class baseline (always '{html.escape(base['class'])}'): mIoU {base['mIoU']:.3f}. "
                f"Selected by {html.escape(best['criterion'])}; {summary['test_images']} test images"
                f"{', one fold: no spread over folds yet' if int(df['folds'].iloc[0]) == 1 else ''}.</p>")
    sections.append(verdict)

    # summary table
    cols = ["rank", "model", "library", "architecture", "parameters", "val_mIoU", "mIoU", "mIoU_std", "mDice", "mAcc", "aAcc",
            "fwIoU", "mBoundaryIoU", "mIoU_image_avg", "time_ms_median", "time_ms_p95", "epoch_time_s"]
    if "mIoU_ci_low" in df.columns:
        df["mIoU 95% CI"] = [f"{lo:.3f} to {hi:.3f}" if np.isfinite(lo) else "" for lo, hi in zip(df["mIoU_ci_low"], df["mIoU_ci_high"])]
        cols.insert(cols.index("mIoU") + 1, "mIoU 95% CI")
    cols = [c for c in cols if c in df.columns]
    table = df[cols].rename(columns={"val_mIoU": "val mIoU (selection)", "mIoU_image_avg": "mIoU (image-averaged)", "time_ms_median": "ms / image (median)", "time_ms_p95": "ms / image (p95)",
                                     "mBoundaryIoU": "Boundary IoU",
                                     "epoch_time_s": "s / epoch", "mIoU_std": "mIoU std (folds)"})
    sections.append("<h2>Summary</h2><p class='note'>Ranked by validation mIoU, on which the best model is "
                    "selected; every other metric is measured once on the test split.</p>" + table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)
                    + "<p class='note'>Dataset-level metrics from one confusion matrix over all test pixels (ignore_index "
                      "excluded); classes absent from both prediction and ground truth are left out of means. "
                      "mAcc is the mean per-class recall, aAcc the pixel accuracy, fwIoU the frequency-weighted IoU, "
                      "Boundary IoU (Cheng et al., CVPR 2021) the IoU of the 2%-of-diagonal bands along each class's "
                      "boundaries. Times are wall-clock per test image on the evaluation device, including resizing.</p>")

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(df)))
    sns.barplot(data=df, y="model", x="mIoU", hue="library", dodge=False, ax=ax, order=order)
    ax.axvline(base["mIoU"], color="k", ls="--", label=f"majority baseline ({base['mIoU']:.3f})")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    sections.append(f"<img src='{_png(fig)}' alt='mIoU per model'>")

    # speed against accuracy
    if "time_ms_median" in df.columns:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        sns.scatterplot(data=df, x="time_ms_median", y="mIoU", hue="library", size="parameters", sizes=(40, 300), ax=ax, legend="brief")
        for _, r in df.iterrows():
            ax.annotate(r["model"], (r["time_ms_median"], r["mIoU"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("ms per test image (median)")
        ax.set_ylabel("test mIoU")
        ax.legend(fontsize=7, loc="best")
        sections.append(f"<h2>Speed against accuracy</h2><img src='{_png(fig)}' alt='speed against accuracy'>")

    # per-class IoU
    pc = pd.DataFrame(summary["per_class_IoU"], index=classes).T.loc[order]
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(classes), 0.8 + 0.5 * len(order)))
    sns.heatmap(pc, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False)
    ax.set_xlabel("class")
    sections.append(f"<h2>Per-class IoU</h2><img src='{_png(fig)}' alt='per-class IoU'>")

    # per-image boxplot
    frames = []
    for name in order:
        for f in sorted((exp / "eval" / name).glob("fold*/per_image.csv")):
            d = pd.read_csv(f)
            d["model"] = name
            frames.append(d)
    per_image = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(order)))
    sns.boxplot(data=per_image, y="model", x="mIoU", order=order, ax=ax)
    ax.set_xlabel("per-image mIoU (image-averaged metric)")
    sections.append(f"<h2>Per-image mIoU</h2><img src='{_png(fig)}' alt='per-image mIoU boxplot'>"
                    "<p class='note'>Each point of the distribution is one test image's own mIoU; "
                    "its mean is the image-averaged mIoU of the table, which differs from the dataset-level mIoU.</p>")

    # learning curves
    lc = pd.read_csv(exp / "learning_curves.csv")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    sns.lineplot(data=lc, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0], errorbar=None)
    if lc["val_mIoU"].notna().any():
        sns.lineplot(data=lc, x="epoch", y="val_mIoU", hue="model", marker="o", ax=axes[1], errorbar=None)
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].set_title("training loss")
    axes[1].set_title("validation mIoU")
    sections.append(f"<h2>Learning curves</h2><img src='{_png(fig)}' alt='learning curves'>")

    # confusion matrices
    fig, axes = plt.subplots(1, len(order), figsize=(4.2 * len(order), 4), squeeze=False)
    for ax, name in zip(axes[0], order):
        cm = sum(np.load(f) for f in sorted((exp / "eval" / name).glob("fold*/confusion.npy"))).astype(float)
        cmn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        sns.heatmap(cmn, vmin=0, vmax=1, cmap="Blues", ax=ax, cbar=False, xticklabels=classes, yticklabels=classes)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.tick_params(labelsize=6)
    sections.append(f"<h2>Confusion matrices (rows normalised)</h2><img src='{_png(fig)}' alt='confusion matrices'>")

    # overlays
    n_ov = int(report_cfg.get("n_overlays", 3))
    pred_dirs = {name: exp / "eval" / name / "fold0" / "predictions" for name in order}
    ids = sorted(p.stem for p in pred_dirs[order[0]].glob("*.png"))[:n_ov] if n_ov else []
    if ids:
        pal = class_palette(meta["classes"])
        alpha = float(report_cfg.get("overlay_alpha", 0.5))
        ign = meta["ignore_index"]
        fig, axes = plt.subplots(len(ids), 2 + len(order), figsize=(3.2 * (2 + len(order)), 2.6 * len(ids)), squeeze=False)
        for r, sid in enumerate(ids):
            entry = meta["manifest"][sid]
            img = read_image(dataset_dir / entry["image"]).astype(float)
            panels = [("image", img.astype(np.uint8)), ("ground truth", read_mask(dataset_dir / entry["mask"]))]
            panels += [(name, read_mask(pred_dirs[name] / f"{sid}.png")) for name in order]
            for c, (label, arr) in enumerate(panels):
                ax = axes[r][c]
                if arr.ndim == 2:
                    arr = ((1 - alpha) * img + alpha * _colorize(arr, pal, ign)).astype(np.uint8)
                ax.imshow(arr)
                ax.set_axis_off()
                ax.set_title(f"{label}" + (f"\n{sid}" if c == 0 else ""), fontsize=8)
        handles = [matplotlib.patches.Patch(color=pal[i] / 255, label=c["name"]) for i, c in enumerate(meta["classes"])]
        fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=7)
        sections.append(f"<h2>Predictions on test images</h2><img src='{_png(fig)}' alt='prediction overlays'>")

    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
           f"<p class='note'>Dataset {html.escape(summary['dataset'])}, {len(order)} models, "
           f"{summary['test_images']} test images. Files: summary.csv, summary.json, eval/&lt;model&gt;/fold&lt;k&gt;/.</p>"
           + "\n".join(sections) + "</body></html>\n")
    atomic_write_text(out_path, doc)
    return doc
