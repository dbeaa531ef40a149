"""Evaluate one trained model on its validation and test splits with segbench's one metric implementation.

Inference (:mod:`segbench.inference`; default ``mode: resize``): each test image is resized to the
training size, the logits are resized bilinearly back to the image's own size and the argmax is
compared with the full-resolution mask, so every model is scored on the same pixels whatever its
internal stride. ``whole`` and ``slide`` (with ``scale``, ``overlap``, ``blend``) and ``flip`` test-time
augmentation are available from the evaluate config.

Outputs in ``out_dir``:

* ``confusion.npy``: int64[C, C] dataset-level confusion matrix (rows = ground truth);
* ``confusion_per_image.npy``: int64[N, C, C], one matrix per test image in ``per_image.csv`` order
  (their sum is ``confusion.npy``), for bootstrap confidence intervals and paired comparisons;
* ``metrics.json``: :func:`segbench.metrics.metrics_from_confusion` of it, per-class Boundary IoU
  and ``mBoundaryIoU``, class names, the image-averaged means, the number of evaluated pixels and
  images. It holds only what the model and the data determine, so the same run repeated on a CPU
  writes it byte for byte again;
* ``per_image.csv``: one row per test image: ``id, mIoU, mDice, aAcc, mBoundaryIoU, pixels``;
* ``timing.json``: what the machine determines: time per image (median and p95, ms; wall clock
  including the resize back; per image under ``"time_ms"``) for test and validation, and
  ``peak_memory_mb`` (peak GPU memory on a GPU, else the evaluation process's peak RSS) and
  ``peak_gpu_memory_mib``;
* ``predictions/<id>.png``: predicted masks of the first ``save_predictions`` test ids (sorted) and
  of the ``n_worst`` test images with the lowest per-image mIoU (listed in ``metrics.json``
  ``worst_images``), for the report's overlays;
* ``val_confusion.npy``, ``val_confusion_per_image.npy``, ``val_per_image.csv`` and
  ``metrics.json["val"]``: the same on the fold's validation images, which selection and ensembling
  use (they never read the test files).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .device import device_of, peak_gpu_memory_mib, peak_memory_mb, reset_peak_memory, synchronize
from .images import read_image, read_mask
from .inference import InferenceConfig, segment
from .io import atomic_dir
from .metrics import MEAN_METRICS, boundary_iou, boundary_iou_counts, confusion_matrix, metrics_from_confusion
from .models.checkpoint import load_trained_model
from .records import (
    merge_timing,
    read_dataset,
    read_splits,
    write_array,
    write_metrics,
    write_table,
    write_timing,
)

__all__ = ["load_trained_model", "evaluate_model", "evaluate_loaded", "evaluate_validation", "device_of"]


def _run_split(
    model: torch.nn.Module,
    ids: list[str],
    meta: dict[str, Any],
    root: Path,
    infer: InferenceConfig,
    device: str,
    n: int,
    ignore: int,
    keep: set[str],
    n_worst: int,
    background: int | None,
) -> dict[str, Any]:
    """Evaluate ``ids``: the dataset-level confusion, per-image rows and matrices, Boundary IoU counts,
    the predictions of ``keep`` and of the ``n_worst`` images with the lowest per-image mIoU."""
    b_inter = np.zeros(n, np.int64)
    b_union = np.zeros(n, np.int64)
    total = np.zeros((n, n), dtype=np.int64)
    rows, cms, saved, worst = [], [], {}, []
    for sid in sorted(ids):
        entry = meta["manifest"][sid]
        image = read_image(root / entry["image"])
        target = read_mask(root / entry["mask"])
        synchronize(device)
        t0 = time.perf_counter()
        pred = segment(model, image, infer, device)
        synchronize(device)
        dt = (time.perf_counter() - t0) * 1000
        cm = confusion_matrix(target, pred, n, ignore)
        total += cm
        cms.append(cm)
        m = metrics_from_confusion(cm)
        bi, bu = boundary_iou_counts(target, pred, n, ignore)
        b_inter += bi
        b_union += bu
        rows.append(
            {
                "id": sid,
                "mIoU": m["mIoU"],
                "mDice": m["mDice"],
                "aAcc": m["aAcc"],
                "mBoundaryIoU": boundary_iou(bi, bu)["mBoundaryIoU"],
                "pixels": int(cm.sum()),
                "time_ms": dt,
            }
        )
        if sid in keep:
            saved[sid] = pred
        if n_worst and not np.isnan(m["mIoU"]):  # keep the n_worst lowest-mIoU predictions (a bounded list)
            worst.append((m["mIoU"], sid, pred))
            worst.sort(key=lambda w: (w[0], w[1]))
            del worst[n_worst:]
    for _, sid, pred in worst:
        saved[sid] = pred
    per_image = pd.DataFrame(
        rows, columns=["id", "mIoU", "mDice", "aAcc", "mBoundaryIoU", "pixels", "time_ms"]
    )
    times = per_image.pop("time_ms")
    result = metrics_from_confusion(total, background=background)
    result.update(boundary_iou(b_inter, b_union))
    result.update(
        {
            "image_averaged": {
                k: float(per_image[k].mean()) for k in ("mIoU", "mDice", "aAcc", "mBoundaryIoU")
            },
            "num_images": len(ids),
            "num_pixels": int(total.sum()),
            "worst_images": [{"id": sid, "mIoU": float(v)} for v, sid, _ in worst],
        }
    )
    timing = {
        "time_ms_median": float(times.median()) if len(times) else None,
        "time_ms_p95": float(times.quantile(0.95)) if len(times) else None,
        "time_ms": dict(zip(per_image["id"], (round(float(t), 3) for t in times))),
    }
    return {
        "result": result,
        "timing": timing,
        "total": total,
        "cms": cms,
        "per_image": per_image,
        "saved": saved,
    }


def _write_split(out_dir: Path, prefix: str, run: dict[str, Any], n: int) -> None:
    write_array(out_dir / f"{prefix}confusion.npy", run["total"])
    write_array(
        out_dir / f"{prefix}confusion_per_image.npy",
        np.stack(run["cms"]) if run["cms"] else np.zeros((0, n, n), np.int64),
    )
    write_table(out_dir / f"{prefix}per_image.csv", run["per_image"])


def evaluate_model(
    ckpt_dir: str | Path,
    dataset_json: str | Path,
    splits_json: str | Path,
    eval_cfg: dict[str, Any],
    out_dir: str | Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate the model in ``ckpt_dir`` on its fold's validation ids and on the test ids of
    ``splits.json``; write the files above.

    Args:
        ckpt_dir: ``results/<experiment>/models/<model>/fold<k>/seed<s>``.
        dataset_json: the canonical dataset's ``dataset.json``.
        splits_json: ``splits.json`` (its ``test`` list, and the fold's ``val`` list, are evaluated).
        eval_cfg: ``{"device", "save_predictions", "n_worst", "mode", "scale", "target_diagonal",
            "overlap", "blend", "flip", ...}`` (see :class:`segbench.inference.InferenceConfig`).
        out_dir: ``results/<experiment>/eval/<model>/fold<k>/seed<s>``.

    Returns:
        The ``metrics.json`` content (test split), with the validation metrics under ``"val"``, updated
        with ``timing.json``'s ``time_ms_median``, ``time_ms_p95``, ``peak_memory_mb``.

    Raises:
        ValueError: the split has no test images.
    """
    if threads:
        torch.set_num_threads(int(threads))
    device = device_of(eval_cfg.get("device", "auto"))
    model, info = load_trained_model(ckpt_dir, device)
    engine = eval_cfg.get("engine", "pytorch")
    if engine == "onnxruntime":
        return _evaluate_onnx(model, info, dataset_json, splits_json, eval_cfg, out_dir, threads)
    if engine != "pytorch":
        raise ValueError(f"evaluate.engine '{engine}' unknown; allowed values: pytorch, onnxruntime")
    return evaluate_loaded(model, info, device, dataset_json, splits_json, eval_cfg, out_dir)


def _evaluate_onnx(model, info, dataset_json, splits_json, eval_cfg, out_dir, threads) -> dict[str, Any]:
    """``evaluate.engine: onnxruntime``: export the model to ONNX
    (:func:`segbench.export.onnx_export_and_check`, parity checked on two test images), then evaluate the
    export through onnxruntime on the CPU. Ensembles (the ensemble step) stay on PyTorch.

    Raises:
        RuntimeError: the export does not match PyTorch (the message holds the parity report)."""
    import tempfile

    from .engines import OrtModel
    from .export import onnx_export_and_check

    meta, splits = read_dataset(dataset_json), read_splits(splits_json)
    root = Path(dataset_json).parent
    images = [read_image(root / meta["manifest"][i]["image"]) for i in sorted(splits["test"])[:2]]
    model = model.to("cpu").eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        parity = onnx_export_and_check(model, info, images, path)
        if not parity["passed"]:
            raise RuntimeError(
                f"evaluate.engine=onnxruntime: the ONNX export of {info['model'].get('name')} does not match "
                f"PyTorch ({parity.get('error') or parity}); evaluate it with evaluate.engine=pytorch"
            )
        result = evaluate_loaded(
            OrtModel(path, threads), info, "cpu", dataset_json, splits_json, eval_cfg, out_dir
        )
    return result


def evaluate_loaded(
    model: torch.nn.Module,
    info: dict[str, Any],
    device: str,
    dataset_json: str | Path,
    splits_json: str | Path,
    eval_cfg: dict[str, Any],
    out_dir: str | Path,
) -> dict[str, Any]:
    """:func:`evaluate_model` for a model already built (e.g. an ensemble); ``info`` as in ``model.json``."""
    meta = read_dataset(dataset_json)
    splits = read_splits(splits_json)
    test_ids = splits["test"]
    if not test_ids:
        raise ValueError(f"{splits_json}: no test images; set split.test_fraction > 0")
    fold = int(info.get("fold") or 0)
    val_ids = splits["folds"][fold]["val"] if fold < len(splits["folds"]) else []
    root = Path(dataset_json).parent
    n = info["num_classes"]
    ignore = info["ignore_index"]
    infer = InferenceConfig.from_dict(
        eval_cfg,
        info["image_size"],
        info.get("normalize") or eval_cfg.get("normalize"),
        info.get("inference"),
    )
    reset_peak_memory(device)
    keep = set(sorted(test_ids)[: int(eval_cfg.get("save_predictions", 0))])
    n_worst = int(eval_cfg.get("n_worst", 3))
    background = meta.get("background")
    out_dir = Path(out_dir)
    val = _run_split(model, val_ids, meta, root, infer, device, n, ignore, set(), 0, background)
    test = _run_split(model, test_ids, meta, root, infer, device, n, ignore, keep, n_worst, background)
    with atomic_dir(out_dir / "predictions") as pred_dir:
        for sid, pred in test["saved"].items():
            Image.fromarray(pred.astype(np.uint8 if n <= 256 else np.uint16)).save(pred_dir / f"{sid}.png")
    result = dict(test["result"])
    timing = {
        "device": device,
        "time_ms_median": test["timing"]["time_ms_median"],
        "time_ms_p95": test["timing"]["time_ms_p95"],
        "peak_gpu_memory_mib": peak_gpu_memory_mib(device),
        "peak_memory_mb": peak_memory_mb(device),
        "test": test["timing"],
        "val": val["timing"],
    }
    result.update(
        {
            "classes": [c["name"] for c in meta["classes"]],
            "device": device,
            "inference": {
                k: getattr(infer, k) for k in ("mode", "scale", "target_diagonal", "overlap", "blend", "flip")
            },
            "model": info["model"].get("name"),
            "library": info["model"].get("library"),
            "fold": info.get("fold"),
            "seed": info.get("seed"),
            "mean_metrics": list(MEAN_METRICS),
            "val": val["result"],
        }
    )
    _write_split(out_dir, "", test, n)
    _write_split(out_dir, "val_", val, n)
    write_timing(out_dir, timing)
    write_metrics(out_dir, result)
    return merge_timing(result, timing)


def evaluate_validation(
    ckpt_dir: str | Path,
    dataset_json: str | Path,
    splits_json: str | Path,
    eval_cfg: dict[str, Any],
    out_dir: str | Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate the model in ``ckpt_dir`` on its fold's **validation** images only (a tuning trial:
    the test split's files are never opened), with the same inference and metric code as
    :func:`evaluate_model`.

    Writes ``val_confusion.npy``, ``val_confusion_per_image.npy``, ``val_per_image.csv`` and
    ``val_metrics.json`` (the metrics with ``time_ms_median``, ``time_ms_p95``, ``peak_memory_mb``) into
    ``out_dir``.

    Returns:
        The ``val_metrics.json`` content.

    Raises:
        ValueError: the fold has no validation images (tuning needs them: set split.val_fraction > 0).
    """
    from .io import atomic_write_json

    if threads:
        torch.set_num_threads(int(threads))
    device = device_of(eval_cfg.get("device", "auto"))
    model, info = load_trained_model(ckpt_dir, device)
    meta, splits = read_dataset(dataset_json), read_splits(splits_json)
    fold = int(info.get("fold") or 0)
    val_ids = splits["folds"][fold]["val"] if fold < len(splits["folds"]) else []
    if not val_ids:
        raise ValueError(
            f"{splits_json}: fold {fold} has no validation images; tuning needs them (split.val_fraction)"
        )
    n, ignore = info["num_classes"], info["ignore_index"]
    infer = InferenceConfig.from_dict(
        eval_cfg,
        info["image_size"],
        info.get("normalize") or eval_cfg.get("normalize"),
        info.get("inference"),
    )
    reset_peak_memory(device)
    root = Path(dataset_json).parent
    val = _run_split(model, val_ids, meta, root, infer, device, n, ignore, set(), 0, meta.get("background"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_split(out_dir, "val_", val, n)
    result = dict(
        val["result"],
        device=device,
        fold=fold,
        time_ms_median=val["timing"]["time_ms_median"],
        time_ms_p95=val["timing"]["time_ms_p95"],
        peak_memory_mb=peak_memory_mb(device),
    )
    atomic_write_json(out_dir / "val_metrics.json", result)
    return result
