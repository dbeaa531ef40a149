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
.verdict.bad{background:#fbeeee;border-left-color:#c33} .answer{font-size:1.15rem;margin:.2rem 0 .5rem}
img{max-width:100%} .scroll{overflow-x:auto}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _short_error(parity: dict[str, Any]) -> str:
    """One line for the report: the exception type, or the parity figures (the full text stays in the JSON)."""
    err = parity.get("error")
    if err:
        return err.split(":", 1)[0] + " during export"
    return (f"argmax agreement {100 * parity.get('argmax_agreement', 0):.4f}%, max |logit difference| "
            f"{parity.get('max_abs_logit_diff', float('nan')):.1e}")


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

    # the answer first: the selected model, its test mIoU with CI, the verdict against the runner-up
    crit = {"mIoU": "mIoU", "mDice_fg": "foreground mean Dice"}.get(best.get("criterion", "mIoU"), best.get("criterion"))
    parity = {}
    if (exp / "best" / "onnx_parity.json").is_file():
        parity = json.loads((exp / "best" / "onnx_parity.json").read_text())
    if best.get("model") is None:
        answer = ("<div class='verdict bad'><b>No model meets the constraints</b> "
                  f"{html.escape(json.dumps(best.get('constraints')))}: see the 'not selectable' column below and "
                  "relax select.max_ms_per_image / max_memory_mb / max_params.</div>")
    else:
        brow = df[df["model"] == best["model"]].iloc[0]
        answer = (f"<div class='verdict'><p class='answer'><b>Use {html.escape(best['model'])}</b> "
                  f"({html.escape(str(brow['library']))}, {html.escape(str(brow['architecture']))}): test mIoU "
                  f"<b>{best['mIoU']:.3f}</b>")
        if best.get("mIoU_ci_low") is not None and np.isfinite(best["mIoU_ci_low"]):
            answer += f" (95% CI {best['mIoU_ci_low']:.3f} to {best['mIoU_ci_high']:.3f}, bootstrap over {summary['test_images']} test images)"
        answer += ".</p><ul>"
        if best.get("verdict"):
            answer += f"<li><b>Against the runner-up:</b> {html.escape(best['verdict'])}.</li>"
        answer += (f"<li><b>How it was chosen:</b> {html.escape(best.get('rule') or '')}"
                   f" (validation {html.escape(crit)} {best['val_score']:.3f}"
                   + (f", {best['margin_val_score']:+.3f} over {html.escape(best['runner_up'])}" if best.get("runner_up") else "")
                   + ").</li>")
        if best.get("constraints"):
            answer += f"<li><b>Constraints:</b> {html.escape(', '.join(f'{k} = {v}' for k, v in best['constraints'].items()))}.</li>"
        answer += (f"<li>Majority-class baseline (always '{html.escape(base['class'])}'): mIoU {base['mIoU']:.3f}.</li>")
        if parity:
            if parity.get("passed"):
                answer += (f"<li><b>Ready to use:</b> <code>segbench predict --model {html.escape(str(exp))}/best IMAGE -o MASK.png</code>; "
                           f"ONNX export checked with onnxruntime on {parity['images']} real images: max |logit difference| "
                           f"{parity['max_abs_logit_diff']:.1e}, argmax identical on {100 * parity['argmax_agreement']:.4f}% of pixels"
                           + ("" if (parity.get("dynamic_hw") or {}).get("ok") else
                              f"; valid only at {parity['input_size'][0]}x{parity['input_size'][1]} input (dynamic size not supported by this export)")
                           + ".</li>")
            else:
                answer += (f"<li><b>Ready to use:</b> <code>segbench predict --model {html.escape(str(exp))}/best IMAGE -o MASK.png</code>; "
                           f"ONNX export did not pass ({html.escape(_short_error(parity))}; details in best/onnx_parity.json).</li>")
        answer += "</ul></div>"
    sections.append(answer)
    if best.get("comparisons"):
        comp = pd.DataFrame(best["comparisons"])
        comp = comp[["a", "b", "difference", "ci_low", "ci_high", "wilcoxon_p", "n_images", "verdict"]].rename(columns={
            "a": "model", "b": "against", "difference": "mIoU difference", "ci_low": "95% CI low", "ci_high": "95% CI high",
            "wilcoxon_p": "Wilcoxon p", "n_images": "test images"})
        comp["Wilcoxon p"] = [f"{p:.2g}" for p in comp["Wilcoxon p"]]
        sections.append("<h2>Paired comparisons on the test images</h2><p class='note'>Paired bootstrap of the "
                        "dataset-level mIoU difference (same resampled images for both models, 2,000 seeded resamples) "
                        "and Wilcoxon signed-rank test on per-image mIoU. 'Better' only when the 95% interval excludes 0.</p>"
                        + comp.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0))

    # summary table
    df["selectable"] = df.get("selectable", True)
    cols = ["rank", "model", "library", "architecture", "start", "parameters", "val_score", "mIoU", "mIoU_std", "mDice", "mAcc", "aAcc",
            "fwIoU", "mBoundaryIoU", "mIoU_image_avg", "time_ms_median", "time_ms_p95", "peak_memory_mb", "epoch_time_s",
            "violations"]
    if "mIoU_ci_low" in df.columns:
        df["mIoU 95% CI"] = [f"{lo:.3f} to {hi:.3f}" if np.isfinite(lo) else "" for lo, hi in zip(df["mIoU_ci_low"], df["mIoU_ci_high"])]
        cols.insert(cols.index("mIoU") + 1, "mIoU 95% CI")
    cols = [c for c in cols if c in df.columns]
    table = df[cols].rename(columns={"val_score": f"validation {crit} (selection)", "mIoU": "test mIoU",
                                     "mIoU_image_avg": "mIoU (image-averaged)", "time_ms_median": "ms / image (median)",
                                     "time_ms_p95": "ms / image (p95)", "mBoundaryIoU": "Boundary IoU",
                                     "peak_memory_mb": "peak memory MB", "violations": "not selectable",
                                     "epoch_time_s": "s / epoch", "mIoU_std": "mIoU std (folds)"})
    sections.append("<h2>Summary</h2><p class='note'>Ranked by the validation score on which the best model is "
                    "selected; every other metric is measured once on the test split.</p><div class='scroll'>"
                    + table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0) + "</div>"
                    + "<p class='note'>Dataset-level metrics from one confusion matrix over all test pixels (ignore_index "
                      "excluded); classes absent from both prediction and ground truth are left out of means. "
                      "mAcc is the mean per-class recall, aAcc the pixel accuracy, fwIoU the frequency-weighted IoU, "
                      "Boundary IoU (Cheng et al., CVPR 2021) the IoU of the 2%-of-diagonal bands along each class's "
                      "boundaries. Times are wall-clock per test image on the evaluation device, including resizing; "
                      "peak memory is GPU memory on a GPU, the evaluation process's peak RSS on CPU.</p>")

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(df)))
    sns.barplot(data=df, y="model", x="mIoU", hue="library", dodge=False, ax=ax, order=order)
    if "mIoU_ci_low" in df.columns and np.isfinite(df["mIoU_ci_low"]).all():
        ax.errorbar(df["mIoU"], range(len(df)), xerr=[df["mIoU"] - df["mIoU_ci_low"], df["mIoU_ci_high"] - df["mIoU"]],
                    fmt="none", ecolor="black", capsize=4, lw=1.2, label="95% CI")
    ax.axvline(base["mIoU"], color="k", ls="--", label=f"majority baseline ({base['mIoU']:.3f})")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test mIoU")
    sections.append(f"<img src='{_png(fig)}' alt='test mIoU per model with 95% CI'>")

    # accuracy against latency: Pareto front on the selection data, the selected model marked
    if "time_ms_median" in df.columns and "val_score" in df.columns:
        fig, ax = plt.subplots(figsize=(6.8, 3.8))
        ok = df["selectable"].astype(bool)
        ax.scatter(df.loc[ok, "time_ms_median"], df.loc[ok, "val_score"], s=60, c="tab:blue", label="selectable")
        if (~ok).any():
            ax.scatter(df.loc[~ok, "time_ms_median"], df.loc[~ok, "val_score"], s=60, c="0.6", marker="x",
                       label="breaks a constraint")
        front = df[df["pareto"].astype(bool)].sort_values("time_ms_median") if "pareto" in df.columns else df.iloc[:0]
        if len(front):
            ax.step(front["time_ms_median"], front["val_score"], where="post", color="tab:orange", lw=1.5,
                    label="Pareto front")
        if best.get("model") is not None:
            r = df[df["model"] == best["model"]].iloc[0]
            ax.scatter([r["time_ms_median"]], [r["val_score"]], s=260, marker="*", c="tab:red", zorder=5, label="selected")
        if (best.get("constraints") or {}).get("max_ms_per_image"):
            ax.axvline(best["constraints"]["max_ms_per_image"], color="tab:red", ls=":", lw=1, label="max ms / image")
        for _, r in df.iterrows():
            ax.annotate(r["model"], (r["time_ms_median"], r["val_score"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("ms per image (median)")
        ax.set_ylabel(f"validation {crit}")
        ax.legend(fontsize=7, loc="best")
        sections.append(f"<h2>Accuracy against latency</h2><img src='{_png(fig)}' alt='accuracy against latency, Pareto front'>"
                        "<p class='note'>Models on the orange front are not beaten by another model that is both faster "
                        "and more accurate on validation.</p>")

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

    # worst test images per model (lowest per-image mIoU), with overlays
    n_worst = int(report_cfg.get("n_worst", 3))
    if n_worst:
        pal = class_palette(meta["classes"])
        alpha = float(report_cfg.get("overlay_alpha", 0.5))
        ign = meta["ignore_index"]
        blocks = []
        for name in order:
            mpath = exp / "eval" / name / "fold0" / "metrics.json"
            worst = json.loads(mpath.read_text()).get("worst_images", [])[:n_worst] if mpath.is_file() else []
            worst = [w for w in worst if (exp / "eval" / name / "fold0" / "predictions" / f"{w['id']}.png").is_file()]
            if not worst:
                continue
            fig, axes = plt.subplots(1, 2 * len(worst), figsize=(3.0 * 2 * len(worst), 2.6), squeeze=False)
            for j, w in enumerate(worst):
                entry = meta["manifest"][w["id"]]
                img = read_image(dataset_dir / entry["image"]).astype(float)
                gt = read_mask(dataset_dir / entry["mask"])
                pr = read_mask(exp / "eval" / name / "fold0" / "predictions" / f"{w['id']}.png")
                for k, (label, arr) in enumerate((("ground truth", gt), (f"{name}: mIoU {w['mIoU']:.2f}", pr))):
                    ax = axes[0][2 * j + k]
                    ax.imshow(((1 - alpha) * img + alpha * _colorize(arr, pal, ign)).astype(np.uint8))
                    ax.set_axis_off()
                    ax.set_title(f"{w['id']}\n{label}", fontsize=8)
            blocks.append(f"<h3>{html.escape(name)}</h3><img src='{_png(fig)}' alt='worst images of {html.escape(name)}'>")
        if blocks:
            sections.append("<h2>Worst test images per model</h2><p class='note'>The test images with the lowest "
                            "per-image mIoU (fold 0): where each model fails.</p>" + "\n".join(blocks))

    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
           f"<p class='note'>Dataset {html.escape(summary['dataset'])}, {len(order)} models, "
           f"{summary['test_images']} test images. Files: summary.csv, summary.json, eval/&lt;model&gt;/fold&lt;k&gt;/.</p>"
           + "\n".join(sections) + "</body></html>\n")
    atomic_write_text(out_path, doc)
    return doc
