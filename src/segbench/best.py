"""Package the selected model, ready to use: ``results/<experiment>/best/``.

Contents:

* ``model.safetensors``, ``model.json``: the weights and the config that builds them
  (``segbench.evaluate.load_trained_model('results/<experiment>/best')``);
* ``classes.json``: ``[{id, name, color}]``, ``ignore_index``, ``background``;
* ``preprocessing.json``: what an image goes through before the network (RGB, resize to
  ``image_size``, albumentations ``Normalize(mean, std, max_pixel_value)``, NCHW float32) and the
  evaluated inference settings;
* ``model.onnx`` + ``onnx_parity.json``: an ONNX export (opset 17, dynamic batch, height and width;
  ``torch.onnx.export``) checked with onnxruntime against PyTorch on real images of the dataset:
  max absolute logit difference (pass: <= 1e-3 x the largest logit) and the share of pixels with the
  same argmax (pass: >= 99.99 %);
  a second input size checks the dynamic height and width. A model that cannot be exported says why;
* ``selection.json``: how it was chosen; ``MODEL_CARD.md``: data, metrics with 95 % CIs, selection,
  constraints, limits and the exact ``segbench predict`` command; ``README.md``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_dir, atomic_write_json, atomic_write_text

__all__ = ["package_best", "onnx_export_and_check", "ARGMAX_AGREEMENT_MIN"]

#: ONNX parity: the share of pixels whose argmax must agree with PyTorch, and the largest logit
#: difference allowed, relative to the largest logit magnitude (float32 kernels differ by ~1e-6)
ARGMAX_AGREEMENT_MIN = 0.9999
LOGIT_RTOL = 1e-3


def _inputs(images: list[np.ndarray], size: tuple[int, int], normalize: dict[str, Any]) -> list[np.ndarray]:
    import cv2

    from .inference import _normalize

    out = []
    for img in images:
        x = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out.append(_normalize(x, normalize or {}).transpose(2, 0, 1)[None].copy())
    return out


def onnx_export_and_check(model: Any, info: dict[str, Any], images: list[np.ndarray], path: Path) -> dict[str, Any]:
    """Export ``model`` to ONNX at ``path`` and compare onnxruntime with PyTorch on ``images``.

    Args:
        model: the trained model (eval mode, CPU).
        info: its ``model.json`` (image_size, normalize).
        images: real ``uint8[H, W, 3]`` RGB images, fed resized to the model's input size as in evaluation.
        path: the ``.onnx`` file to write.

    Returns:
        ``{"passed", "opset", "max_abs_logit_diff", "argmax_agreement", "images", "input_size",
        "dynamic_hw": {"size", "max_abs_logit_diff", "argmax_agreement", "ok"} , "error"}``.
    """
    import torch

    size = tuple(int(v) for v in info["image_size"])
    report: dict[str, Any] = {"passed": False, "opset": 17, "images": len(images), "input_size": list(size),
                              "onnxruntime": None, "error": None}
    try:
        import warnings

        import onnxruntime as ort

        report["onnxruntime"] = ort.__version__
        dummy = torch.from_numpy(_inputs(images[:1], size, info.get("normalize"))[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), str(path), opset_version=17, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "logits": {0: "batch", 2: "height", 3: "width"}}, dynamo=False)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def compare(sz: tuple[int, int]) -> tuple[float, float, bool]:
            worst, agree, total, scale = 0.0, 0, 0, 1.0
            for x in _inputs(images, sz, info.get("normalize")):
                with torch.inference_mode():
                    ref = model(torch.from_numpy(x)).float().numpy()
                got = sess.run(None, {"image": x})[0]
                worst = max(worst, float(np.abs(got - ref).max()))
                scale = max(scale, float(np.abs(ref).max()))
                agree += int((got.argmax(1) == ref.argmax(1)).sum())
                total += ref.shape[0] * ref.shape[2] * ref.shape[3]
            return worst, agree / total, agree / total >= ARGMAX_AGREEMENT_MIN and worst <= LOGIT_RTOL * scale

        diff, agreement, ok = compare(size)
        report.update(max_abs_logit_diff=diff, argmax_agreement=agreement, passed=ok)
        other = (int(round(size[0] * 1.5 / 32)) * 32, int(round(size[1] * 1.5 / 32)) * 32)
        try:
            d2, a2, ok2 = compare(other)
            report["dynamic_hw"] = {"size": list(other), "max_abs_logit_diff": d2, "argmax_agreement": a2, "ok": ok2}
        except Exception as err:  # traced shapes baked into the graph
            report["dynamic_hw"] = {"size": list(other), "ok": False, "error": f"{type(err).__name__}: {str(err)[:300]}"}
    except Exception as err:
        report["error"] = f"{type(err).__name__}: {str(err)[:500]}"
        path.unlink(missing_ok=True)
    return report


def _card(exp: Path, sel: dict[str, Any], summary: dict[str, Any], meta: dict[str, Any], info: dict[str, Any],
          parity: dict[str, Any] | None, splits: dict[str, Any], train_meta: dict[str, Any], mode: str) -> str:
    row = next(r for r in summary["models"] if r["model"] == sel["model"])
    per_class = [float("nan") if v is None else float(v) for v in summary["per_class_IoU"][sel["model"]]]
    n_train = len(splits["folds"][sel["fold"]]["train"])
    n_val = len(splits["folds"][sel["fold"]]["val"])
    lines = [
        f"# Model card: {sel['model']} ({sel['library']}, {row['architecture']})",
        "",
        f"Selected in experiment `{exp.name}` on dataset `{meta['name']}` ({meta.get('licence') or 'licence not recorded'}).",
        "",
        "## Intended use",
        f"Semantic segmentation of images like those of `{meta['name']}` into {len(meta['classes'])} classes: "
        + ", ".join(f"{c['id']} {c['name']}" for c in meta["classes"]) + f"; {meta['ignore_index']} = ignore.",
        "",
        "## How to run it",
        "```bash",
        f"segbench predict --model {exp.as_posix()}/best photo.jpg -o photo_mask.png",
        f"segbench predict --model {exp.as_posix()}/best images/ -o masks/ --mode {mode}",
        "```",
    ]
    if parity and parity.get("passed"):
        lines += ["", "ONNX (`model.onnx`, input `image` float32 [N, 3, H, W] preprocessed as in `preprocessing.json`, "
                  "output `logits` [N, C, H, W]); checked with onnxruntime: max |logit diff| "
                  f"{parity['max_abs_logit_diff']:.2e}, argmax agreement {100 * parity['argmax_agreement']:.4f} % on "
                  f"{parity['images']} real images."]
    lines += [
        "",
        "## Data",
        f"{meta['num_images']} images; split `{splits['strategy']}`: {n_train} train / {n_val} validation images "
        f"(fold {sel['fold']}), {len(splits['test'])} test images, groups kept on one side.",
        "",
        "## Metrics (test split, reported once, never used for selection)",
        f"- mIoU **{row['mIoU']:.4f}** (95 % bootstrap CI {row['mIoU_ci_low']:.4f} to {row['mIoU_ci_high']:.4f}), "
        f"mDice {row['mDice']:.4f}, pixel accuracy {row['aAcc']:.4f}, Boundary IoU {row['mBoundaryIoU']:.4f}",
        f"- majority-class baseline mIoU {summary['baseline']['mIoU']:.4f}",
        f"- {row['time_ms_median']:.0f} ms per image (median) on the evaluation device; {row['parameters']:,} parameters",
        "- per class IoU: " + ", ".join(f"{c} {v:.3f}" if v == v else f"{c} n/a"
                                      for c, v in zip(summary["classes"], per_class)),
        "",
        "## How it was selected",
        f"{sel['rule'][:1].upper() + sel['rule'][1:]}.",
        f"Constraints: {sel['constraints'] or 'none'}.",
    ]
    if sel.get("verdict"):
        lines.append(f"Against the runner-up on the test images: {sel['verdict']}.")
    lines += [
        "",
        "## Limits",
        f"- Trained for {train_meta.get('epochs', '?')} epochs at {info['image_size'][0]}x{info['image_size'][1]} "
        f"on {n_train} images; quality outside this data (other cameras, seasons, sites) is unknown.",
        "- The confidence interval covers resampling of test images, not a different population.",
    ]
    weak = [c for c, v in zip(summary["classes"], per_class) if v == v and v < 0.05]
    if weak:
        lines.append(f"- Not learned (test IoU < 0.05): {', '.join(weak)}; do not rely on the model for these classes.")
    lines += [
        "- Classes absent from the test split have no IoU (n/a).",
    ]
    return "\n".join(lines) + "\n"


def package_best(experiment_dir: str | Path, dataset_dir: str | Path, select_cfg: dict[str, Any] | None = None,
                 evaluate_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``best/`` (see the module docstring) for the model in ``selection.json``.

    Returns:
        The ONNX parity report (``{}`` when ONNX is off), or ``{"error": ...}`` when no model was selectable.

    Raises:
        FileNotFoundError: ``selection.json`` or the selected model's files are missing.
    """
    from .data.dataset import read_image
    from .evaluate import load_trained_model

    exp, dataset_dir = Path(experiment_dir), Path(dataset_dir)
    sel_cfg = dict(select_cfg or {})
    sel = json.loads((exp / "selection.json").read_text())
    summary = json.loads((exp / "summary.json").read_text())
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    splits = json.loads((exp / "splits.json").read_text())
    with atomic_dir(exp / "best") as tmp:
        atomic_write_json(tmp / "selection.json", sel)
        if sel.get("model") is None:
            atomic_write_text(tmp / "README.md", "# No model selected\n\nNo model met the constraints "
                              f"{sel.get('constraints')}; see summary.csv (violations column) and relax select.*.\n")
            return {"error": "no selectable model"}
        src = exp / "models" / sel["model"] / f"fold{sel['fold']}"
        if (src / "ensemble.json").is_file():  # an ensemble: its members travel with it
            shutil.copytree(src / "members", tmp / "members")
            for name in ("model.json", "ensemble.json"):
                shutil.copyfile(src / name, tmp / name)
        else:
            for name in ("model.safetensors", "model.json"):
                shutil.copyfile(src / name, tmp / name)
        info = json.loads((src / "model.json").read_text())
        atomic_write_json(tmp / "classes.json", {"classes": meta["classes"], "ignore_index": meta["ignore_index"],
                                                "background": meta.get("background")})
        atomic_write_json(tmp / "preprocessing.json", {
            "color": "RGB", "resize": {"height": info["image_size"][0], "width": info["image_size"][1],
                                       "interpolation": "bilinear"},
            "normalize": info.get("normalize"), "layout": "NCHW float32",
            "formula": "x = (pixel / max_pixel_value - mean) / std  (albumentations.Normalize)",
            "inference": {k: v for k, v in (evaluate_cfg or {}).items()
                          if k in ("mode", "scale", "crop", "overlap", "blend", "flip")},
            "output": "logits [N, C, H, W]; resize bilinearly to the image size, then argmax over C",
        })
        parity: dict[str, Any] = {}
        if sel_cfg.get("onnx", True):
            # real images of the dataset (validation first, then test: parity is not a selection criterion)
            ids = (list(splits["folds"][sel["fold"]]["val"]) + list(splits["test"]))[: int(sel_cfg.get("onnx_parity_images", 4))]
            images = [read_image(dataset_dir / meta["manifest"][i]["image"]) for i in ids]
            model, _ = load_trained_model(tmp, "cpu")
            parity = onnx_export_and_check(model, info, images, tmp / "model.onnx")
            parity["image_ids"] = ids
            atomic_write_json(tmp / "onnx_parity.json", parity)
        if (src / "train_meta.json").is_file():
            train_meta = json.loads((src / "train_meta.json").read_text())
        else:  # an ensemble: its members' recipe (one protocol for every model)
            members = json.loads((src / "ensemble.json").read_text())["members"]
            first = exp / "models" / members[0] / f"fold{sel['fold']}" / "train_meta.json"
            train_meta = json.loads(first.read_text()) if first.is_file() else {}
        card = _card(exp, sel, summary, meta, info, parity, splits, train_meta, (evaluate_cfg or {}).get("mode", "resize"))
        atomic_write_text(tmp / "MODEL_CARD.md", card)
        atomic_write_text(tmp / "README.md", (
            f"# Best model of {exp.name}: {sel['model']} ({sel['library']})\n\n"
            f"Segment images:\n\n```bash\nsegbench predict --model {exp.as_posix()}/best photo.jpg -o photo_mask.png\n```\n\n"
            "In Python:\n\n```python\nfrom segbench.evaluate import load_trained_model\n"
            f"model, info = load_trained_model('{exp.as_posix()}/best')\n```\n\n"
            "Files: `model.safetensors` + `model.json` (weights and the config that builds them; an ensemble keeps "
            "its members in `members/`), `classes.json`, "
            "`preprocessing.json`, `model.onnx` + `onnx_parity.json` (when exported), `selection.json`, "
            "`MODEL_CARD.md` (data, metrics with CIs, selection, limits).\n"))
    return parity
