"""The report's figures, one function each, returned as PNG data URIs (the page embeds them, so it
displays offline); and the class-colour overlay that ``segbench predict`` writes too.

seaborn on matplotlib's Agg backend; matplotlib is imported inside the functions, so importing this
module (as ``segbench predict`` does, for :func:`overlay`) costs nothing.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

__all__ = [
    "overlay",
    "png_uri",
    "miou_with_ci",
    "accuracy_latency",
    "budget_curves",
    "per_class_iou",
    "per_image_boxplot",
    "learning_curves",
    "confusion_matrices",
    "prediction_grid",
    "worst_images",
]


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    ignore_index: int | None = None,
) -> np.ndarray:
    """The class colours over an image: ``(1 - alpha) x image + alpha x palette[labels]``.

    Args:
        image: ``uint8[H, W, 3]`` RGB.
        labels: ``int[H, W]`` class indices (a prediction or a ground-truth mask).
        palette: ``uint8[K, 3]`` class colours (:func:`segbench.palette.class_palette`).
        alpha: opacity of the colours, in [0, 1].
        ignore_index: pixels with this label keep the plain image.

    Returns:
        ``uint8[H, W, 3]``, computed in uint8 (``cv2.addWeighted``: no float copy of a large photo).
    """
    import cv2

    colours = palette[np.minimum(labels, len(palette) - 1)]
    out = cv2.addWeighted(image, 1 - alpha, colours, alpha, 0)
    if ignore_index is not None:
        keep = labels == ignore_index
        out[keep] = image[keep]
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    return plt, sns


def png_uri(fig) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    plt, _ = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def miou_with_ci(
    df, order: list[str], baseline_miou: float, seed_values: dict[str, list[float]] | None = None
) -> str:
    """Horizontal bars of test mIoU per candidate, coloured by library, with 95 % interval error bars,
    the majority-class baseline and, with several training seeds, each seed's own test mIoU as a
    strip of points (the seed spread). ``df``: the summary rows (``model, library, mIoU,
    mIoU_ci_low/high``); ``seed_values``: ``{model: [test mIoU per seed]}``."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(df)))
    sns.barplot(data=df, y="model", x="mIoU", hue="library", dodge=False, ax=ax, order=order)
    strip = {m: v for m, v in (seed_values or {}).items() if len(v) > 1 and m in order}
    if strip:
        rows = [(m, v) for m, vals in strip.items() for v in vals]
        ys = [order.index(m) for m, _ in rows]
        jitter = np.linspace(-0.15, 0.15, 7)[np.arange(len(rows)) % 7]
        ax.scatter(
            [v for _, v in rows],
            np.add(ys, jitter),
            s=18,
            c="white",
            edgecolors="black",
            linewidths=0.8,
            zorder=4,
            label="one training seed",
        )
    if "mIoU_ci_low" in df.columns and np.isfinite(df["mIoU_ci_low"]).all():
        err = [df["mIoU"] - df["mIoU_ci_low"], df["mIoU_ci_high"] - df["mIoU"]]
        ax.errorbar(
            df["mIoU"],
            range(len(df)),
            xerr=err,
            fmt="none",
            ecolor="black",
            capsize=4,
            lw=1.2,
            label="95% interval",
        )
    ax.axvline(baseline_miou, color="k", ls="--", label=f"majority baseline ({baseline_miou:.3f})")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test mIoU")
    return png_uri(fig)


def rank_probabilities(probs: dict[str, list[float]], order: list[str]) -> str:
    """Rank-by-probability "blob" plot (Maier-Hein et al., Nat. Commun. 2018): one row per candidate,
    one column per rank, the circle's area the probability of that rank under the resampling.
    ``probs``: ``{candidate: [P(rank 1), ..., P(rank K)]}``."""
    plt, _ = _plt()
    names = [n for n in order if n in probs]
    k = len(next(iter(probs.values()))) if probs else 0
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * k, 0.6 + 0.42 * len(names)))
    for y, n in enumerate(names):
        p = np.asarray(probs[n], dtype=float)
        ranks = np.nonzero(p > 0)[0]
        ax.scatter(ranks + 1, [y] * len(ranks), s=900 * p[ranks], c="tab:blue", alpha=0.75)
        for r in ranks:
            if p[r] >= 0.05:
                ax.annotate(f"{100 * p[r]:.0f}%", (r + 1, y), fontsize=7, ha="center", va="center", color="k")
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(1, k + 1))
    ax.set_xlim(0.4, k + 0.6)
    ax.set_ylim(len(names) - 0.4, -0.6)
    ax.set_xlabel("rank on the test split (1 = best)")
    ax.grid(axis="x", lw=0.3)
    return png_uri(fig)


def accuracy_latency(
    df, selected: str | None, criterion_label: str, max_ms: float | None, trials: dict[str, Any] | None = None
) -> str:
    """Validation score against median ms per image: selectable and constrained-out candidates, the
    Pareto front (orange steps) and the selected model (red star); with ``trials`` (``{model: [rows of
    trials.csv]}``), every tuning trial as a small dot of its candidate (scored on the tuning fold's
    validation images)."""
    plt, _ = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    for name, rows in (trials or {}).items():
        pts = [
            (r["time_ms_median"], r["value"])
            for r in rows
            if r.get("time_ms_median") is not None and r.get("value") is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=14, alpha=0.45, label=f"{name}: tuning trials")
    ok = df["selectable"].astype(bool)
    ax.scatter(df.loc[ok, "time_ms_median"], df.loc[ok, "val_score"], s=60, c="tab:blue", label="selectable")
    if (~ok).any():
        ax.scatter(
            df.loc[~ok, "time_ms_median"],
            df.loc[~ok, "val_score"],
            s=60,
            c="0.6",
            marker="x",
            label="breaks a constraint",
        )
    front = (
        df[df["pareto"].astype(bool)].sort_values("time_ms_median") if "pareto" in df.columns else df.iloc[:0]
    )
    if len(front):
        ax.step(
            front["time_ms_median"],
            front["val_score"],
            where="post",
            color="tab:orange",
            lw=1.5,
            label="Pareto front",
        )
    if selected is not None:
        r = df[df["model"] == selected].iloc[0]
        ax.scatter(
            [r["time_ms_median"]],
            [r["val_score"]],
            s=260,
            marker="*",
            c="tab:red",
            zorder=5,
            label="selected",
        )
    if max_ms:
        ax.axvline(max_ms, color="tab:red", ls=":", lw=1, label="max ms / image")
    for _, r in df.iterrows():
        ax.annotate(
            r["model"],
            (r["time_ms_median"], r["val_score"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("ms per image (median)")
    ax.set_ylabel(f"validation {criterion_label}")
    ax.legend(fontsize=7, loc="best")
    return png_uri(fig)


def budget_curves(candidates: dict[str, dict[str, Any]], criterion_label: str) -> str:
    """Each candidate's expected best validation score against the number of tuning trials (the
    budget curve of :mod:`segbench.tuning.budget`), with every trial's own score as a dot at its
    trial number."""
    plt, _ = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    for i, (name, c) in enumerate(candidates.items()):
        color = f"C{i}"
        curve = c.get("budget_curve") or []
        ax.plot(
            range(1, len(curve) + 1), curve, marker="o", ms=3, color=color, label=f"{name}: expected best"
        )
        pts = [
            (r["number"] + 1, r["value"]) for r in c.get("trials_table") or [] if r.get("value") is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=12, alpha=0.4, color=color, marker="x")
    ax.set_xlabel("number of trials (budget)")
    ax.set_ylabel(f"validation {criterion_label}")
    ax.legend(fontsize=7, loc="lower right")
    return png_uri(fig)


def per_class_iou(per_class, classes: list[str]) -> str:
    """Heatmap of test IoU per candidate (rows) and class (columns). ``per_class``: a DataFrame."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(classes), 0.8 + 0.5 * len(per_class)))
    sns.heatmap(per_class, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False)
    ax.set_xlabel("class")
    return png_uri(fig)


def per_image_boxplot(per_image, order: list[str]) -> str:
    """Boxplot of per-image mIoU per candidate. ``per_image``: rows ``model, mIoU`` (one per test image and
    fold)."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(order)))
    sns.boxplot(data=per_image, y="model", x="mIoU", order=order, ax=ax)
    ax.set_xlabel("per-image mIoU (image-averaged metric)")
    return png_uri(fig)


def learning_curves(curves) -> str:
    """Training loss and validation mIoU per epoch, one line per model (``learning_curves.csv``)."""
    import matplotlib.ticker

    plt, sns = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    sns.lineplot(data=curves, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0], errorbar=None)
    if curves["val_mIoU"].notna().any():
        sns.lineplot(data=curves, x="epoch", y="val_mIoU", hue="model", marker="o", ax=axes[1], errorbar=None)
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].set_title("training loss")
    axes[1].set_title("validation mIoU")
    return png_uri(fig)


def confusion_matrices(matrices: dict[str, np.ndarray], classes: list[str]) -> str:
    """One row-normalised confusion matrix (test split, folds summed) per candidate."""
    plt, sns = _plt()
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4), squeeze=False)
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        cm = cm.astype(float)
        cmn = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        sns.heatmap(
            cmn, vmin=0, vmax=1, cmap="Blues", ax=ax, cbar=False, xticklabels=classes, yticklabels=classes
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.tick_params(labelsize=6)
    return png_uri(fig)


def prediction_grid(
    rows: list[dict[str, Any]], palette: np.ndarray, class_names: list[str], alpha: float, ignore_index: int
) -> str:
    """Test images: the image, its ground truth and each candidate's prediction as overlays.

    ``rows``: ``[{"id", "image": uint8[H, W, 3], "panels": [(label, int[H, W]), ...]}]`` (ground truth first).
    """
    import matplotlib.patches

    plt, _ = _plt()
    n_cols = 1 + len(rows[0]["panels"])
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(3.2 * n_cols, 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        panels = [("image", None), *row["panels"]]
        for c, (label, labels) in enumerate(panels):
            ax = axes[r][c]
            img = (
                row["image"]
                if labels is None
                else overlay(row["image"], labels, palette, alpha, ignore_index)
            )
            ax.imshow(img)
            ax.set_axis_off()
            ax.set_title(f"{label}" + (f"\n{row['id']}" if c == 0 else ""), fontsize=8)
    handles = [matplotlib.patches.Patch(color=palette[i] / 255, label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=7)
    return png_uri(fig)


def worst_images(
    name: str, cases: list[dict[str, Any]], palette: np.ndarray, alpha: float, ignore_index: int
) -> str:
    """One candidate's worst test images: ground truth and prediction side by side.

    ``cases``: ``[{"id", "mIoU", "image": uint8[H, W, 3], "truth": int[H, W], "pred": int[H, W]}]``.
    """
    plt, _ = _plt()
    fig, axes = plt.subplots(1, 2 * len(cases), figsize=(3.0 * 2 * len(cases), 2.6), squeeze=False)
    for j, w in enumerate(cases):
        for k, (label, labels) in enumerate(
            (("ground truth", w["truth"]), (f"{name}: mIoU {w['mIoU']:.2f}", w["pred"]))
        ):
            ax = axes[0][2 * j + k]
            ax.imshow(overlay(w["image"], labels, palette, alpha, ignore_index))
            ax.set_axis_off()
            ax.set_title(f"{w['id']}\n{label}", fontsize=8)
    return png_uri(fig)
