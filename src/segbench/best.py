"""Package the selected model, ready to use: ``results/<experiment>/best/``.

Contents:

* ``model.safetensors``, ``model.json``: the weights and the config that builds them (the selected
  candidate's run whose validation score is the median of its training seeds, not the luckiest one;
  with k folds, that seed's best fold on its own validation images: ``selection.json``'s ``fold``,
  ``seed`` and ``seed_rule``)
  (``segbench.models.load_trained_model('results/<experiment>/best')``); an ensemble keeps its
  members in ``members/``;
* ``classes.json``: ``[{id, name, color}]``, ``ignore_index``, ``background``;
* ``preprocessing.json``: what an image goes through before the network (RGB, resize to
  ``image_size``, albumentations ``Normalize(mean, std, max_pixel_value)``, NCHW float32) and the
  evaluated inference settings;
* ``model.onnx`` + ``onnx_parity.json``: the ONNX export checked against PyTorch on real images of
  the dataset (:func:`segbench.export.onnx_export_and_check`); with a passing export,
  ``segment_onnx.py`` (:mod:`segbench.reference.segment_onnx`): the whole pipeline (preprocessing,
  sliding window, blending, argmax, resize back) with onnxruntime, numpy and Pillow only;
* ``selection.json``: how it was chosen; ``MODEL_CARD.md``: data, metrics with 95 % CIs, selection,
  constraints, limits and the exact ``segbench predict`` command; ``README.md``
  (``templates/model_card.md.j2`` and ``best_readme.md.j2`` of :mod:`segbench.report`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .export import onnx_export_and_check
from .io import atomic_dir, atomic_write_json, atomic_write_text
from .layout import DatasetLayout, ExperimentLayout
from .records import (
    read_dataset,
    read_ensemble_spec,
    read_model_info,
    read_selection,
    read_splits,
    read_summary,
    read_train_meta,
    write_parity,
    write_selection,
)
from .report.templating import render_template

__all__ = ["package_best", "onnx_export_and_check"]


def _copy_model(exp: ExperimentLayout, sel: dict[str, Any], tmp: Path) -> Path:
    """Copy the selected model's files into ``tmp``; returns its source folder."""
    src = exp.model_dir(sel["model"], sel["fold"], sel["seed"])
    if (src / "ensemble.json").is_file():  # an ensemble: its members travel with it
        shutil.copytree(src / "members", tmp / "members")
        names = ("model.json", "ensemble.json")
    else:
        names = ("model.safetensors", "model.json")
    for name in names:
        shutil.copyfile(src / name, tmp / name)
    return src


def _preprocessing(info: dict[str, Any], evaluate_cfg: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "color": "RGB",
        "resize": {
            "height": info["image_size"][0],
            "width": info["image_size"][1],
            "interpolation": "bilinear",
        },
        "normalize": info.get("normalize"),
        "layout": "NCHW float32",
        "formula": "x = (pixel / max_pixel_value - mean) / std  (albumentations.Normalize)",
        "inference": {
            k: v
            for k, v in (evaluate_cfg or {}).items()
            if k in ("mode", "scale", "target_diagonal", "crop", "overlap", "blend", "flip")
        },
        "output": "logits [N, C, H, W]; resize bilinearly to the image size, then argmax over C",
    }


def _onnx(
    exp: ExperimentLayout, ds: DatasetLayout, sel: dict[str, Any], meta, splits, info, sel_cfg, tmp: Path
):
    """Export to ONNX and check parity on real images (validation first, then test: parity is not a
    selection criterion); writes ``onnx_parity.json``."""
    from .images import read_image
    from .models.checkpoint import load_trained_model

    n = int(sel_cfg.get("onnx_parity_images", 4))
    ids = (list(splits["folds"][sel["fold"]]["val"]) + list(splits["test"]))[:n]
    images = [read_image(ds.file(meta["manifest"][i]["image"])) for i in ids]
    model, _ = load_trained_model(tmp, "cpu")
    parity = onnx_export_and_check(model, info, images, tmp / "model.onnx")
    parity["image_ids"] = ids
    write_parity(tmp / "onnx_parity.json", parity)
    return parity


def _train_meta(exp: ExperimentLayout, sel: dict[str, Any], src: Path) -> dict[str, Any]:
    """The recipe the model was trained with (an ensemble: its first member's; one protocol for all)."""
    if (src / "train_meta.json").is_file():
        return read_train_meta(src)
    first = exp.model_dir(read_ensemble_spec(src)["members"][0], sel["fold"], sel["seed"])
    return read_train_meta(first) if (first / "train_meta.json").is_file() else {}


def _tuning_text(info: dict[str, Any], train_meta: dict[str, Any], summary: dict[str, Any]) -> str:
    """How the model's training recipe was chosen, for the model card."""
    from .tuning.space import describe_params

    tuned = (info.get("model") or {}).get("tuned")
    study = ((summary.get("tuning") or {}).get("candidates") or {}).get(
        (info.get("model") or {}).get("name"), {}
    )
    if (info.get("model") or {}).get("library") == "ensemble":
        return "those of its members (the summary's tuning section); averaging has none of its own"
    if not tuned:
        return (
            "not tuned: the experiment's one shared recipe (learning rate "
            f"{train_meta.get('lr', '?')}), the same for every candidate"
        )
    return (
        f"tuned on validation images with {study.get('trials', '?')} trials "
        f"({study.get('sampler', '?')}), the same budget for every candidate; chosen: trial "
        f"{tuned['best_trial']} (validation {tuned['metric']} {float(tuned['value']):.4f}): "
        f"{describe_params(tuned['params'])}"
    )


def _card(exp: ExperimentLayout, sel, summary, meta, info, parity, splits, train_meta, mode: str) -> str:
    row = next(r for r in summary["models"] if r["model"] == sel["model"])
    per_class = [float("nan") if v is None else float(v) for v in summary["per_class_IoU"][sel["model"]]]
    return render_template(
        "model_card.md.j2",
        sel=sel,
        row=row,
        meta=meta,
        info=info,
        parity=parity,
        splits=splits,
        train_meta=train_meta,
        mode=mode,
        exp_name=exp.name,
        exp_path=exp.root.as_posix(),
        classes_text=", ".join(f"{c['id']} {c['name']}" for c in meta["classes"]),
        n_train=len(splits["folds"][sel["fold"]]["train"]),
        n_val=len(splits["folds"][sel["fold"]]["val"]),
        baseline_miou=summary["baseline"]["mIoU"],
        rule=sel["rule"][:1].upper() + sel["rule"][1:],
        per_class_text=", ".join(
            f"{c} {v:.3f}" if v == v else f"{c} n/a" for c, v in zip(summary["classes"], per_class)
        ),
        weak=[c for c, v in zip(summary["classes"], per_class) if v == v and v < 0.05],
        tuning_text=_tuning_text(info, train_meta, summary),
    )


def package_best(
    experiment_dir: str | Path,
    dataset_dir: str | Path,
    select_cfg: dict[str, Any] | None = None,
    evaluate_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``best/`` (see the module docstring) for the model in ``selection.json``, atomically.

    Returns:
        The ONNX parity report (``{}`` when ONNX is off), or ``{"error": ...}`` when no model was selectable.

    Raises:
        FileNotFoundError: ``selection.json`` or the selected model's files are missing.
    """
    exp, ds = ExperimentLayout(experiment_dir), DatasetLayout(dataset_dir)
    sel_cfg = dict(select_cfg or {})
    sel, summary = read_selection(exp.selection), read_summary(exp.summary_json)
    meta, splits = read_dataset(ds.dataset_json), read_splits(exp.splits)
    readme = {"sel": sel, "exp_name": exp.name, "exp_path": exp.root.as_posix()}
    with atomic_dir(exp.best_dir) as tmp:
        write_selection(tmp / "selection.json", sel)
        if sel.get("model") is None:
            atomic_write_text(tmp / "README.md", render_template("best_readme.md.j2", **readme))
            return {"error": "no selectable model"}
        src = _copy_model(exp, sel, tmp)
        info = read_model_info(src)
        atomic_write_json(
            tmp / "classes.json",
            {
                "classes": meta["classes"],
                "ignore_index": meta["ignore_index"],
                "background": meta.get("background"),
            },
        )
        atomic_write_json(tmp / "preprocessing.json", _preprocessing(info, evaluate_cfg))
        parity = _onnx(exp, ds, sel, meta, splits, info, sel_cfg, tmp) if sel_cfg.get("onnx", True) else {}
        if parity.get("passed"):  # the pipeline without segbench: the same masks from model.onnx
            from .reference import segment_onnx

            shutil.copyfile(segment_onnx.__file__, tmp / "segment_onnx.py")
        card = _card(
            exp,
            sel,
            summary,
            meta,
            info,
            parity,
            splits,
            _train_meta(exp, sel, src),
            (evaluate_cfg or {}).get("mode", "resize"),
        )
        atomic_write_text(tmp / "MODEL_CARD.md", card)
        atomic_write_text(tmp / "README.md", render_template("best_readme.md.j2", **readme))
    return parity
