"""Evaluate one trained model on the test split with segbench's one metric implementation.

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
  images, time per image (median and p95, ms; wall clock including the resize back) and the peak GPU
  memory (MiB, on a GPU);
* ``per_image.csv``: one row per test image: ``id, mIoU, mDice, aAcc, mBoundaryIoU, pixels, time_ms``;
* ``predictions/<id>.png``: predicted masks of the first ``save_predictions`` test ids (sorted), for
  the report's overlays.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .data.dataset import read_image, read_mask
from .inference import InferenceConfig, segment
from .io import atomic_dir, atomic_path, atomic_write_json
from .metrics import MEAN_METRICS, boundary_iou, boundary_iou_counts, confusion_matrix, metrics_from_confusion
from .models import create_model

__all__ = ["load_trained_model", "evaluate_model", "device_of"]


def device_of(device_cfg: str) -> str:
    """torch device string for segbench's ``device`` setting (auto | cpu | cuda | cuda:K | mps)."""
    from .train import resolve_device

    accel, devices = resolve_device(device_cfg)
    if accel == "gpu":
        return f"cuda:{devices[0]}" if isinstance(devices, list) else "cuda"
    return accel


def load_trained_model(ckpt_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from ``model.json`` + ``model.safetensors`` in ``ckpt_dir``.

    Returns:
        ``(model in eval mode on device, model.json content)``.

    Raises:
        FileNotFoundError: either file is missing (names it and the step that writes it).
    """
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    for name in ("model.json", "model.safetensors"):
        if not (ckpt_dir / name).is_file():
            raise FileNotFoundError(f"{ckpt_dir / name} not found; train the model first (segbench train)")
    info = json.loads((ckpt_dir / "model.json").read_text())
    model_cfg = dict(info["model"], encoder_weights=None)  # the trained weights replace any pretrained ones
    model = create_model(num_classes=info["num_classes"], **model_cfg)
    model.load_state_dict(load_file(str(ckpt_dir / "model.safetensors")))
    return model.to(device).eval(), info


def evaluate_model(ckpt_dir: str | Path, dataset_json: str | Path, splits_json: str | Path, eval_cfg: dict[str, Any],
                   out_dir: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Evaluate the model in ``ckpt_dir`` on the test ids of ``splits.json``; write the files above.

    Args:
        ckpt_dir: ``results/<experiment>/models/<model>/fold<k>``.
        dataset_json: the canonical dataset's ``dataset.json``.
        splits_json: ``splits.json`` (its ``test`` list is evaluated).
        eval_cfg: ``{"device", "save_predictions", "mode", "scale", "overlap", "blend", "flip", ...}``
            (see :class:`segbench.inference.InferenceConfig`).
        out_dir: ``results/<experiment>/eval/<model>/fold<k>``.

    Returns:
        The ``metrics.json`` content.

    Raises:
        ValueError: the split has no test images.
    """
    if threads:
        torch.set_num_threads(int(threads))
    device = device_of(eval_cfg.get("device", "auto"))
    model, info = load_trained_model(ckpt_dir, device)
    meta = json.loads(Path(dataset_json).read_text())
    test_ids = json.loads(Path(splits_json).read_text())["test"]
    if not test_ids:
        raise ValueError(f"{splits_json}: no test images; set split.test_fraction > 0")
    root = Path(dataset_json).parent
    n = info["num_classes"]
    ignore = info["ignore_index"]
    infer = InferenceConfig.from_dict(eval_cfg, info["image_size"], info.get("normalize") or eval_cfg.get("normalize"))
    b_inter = np.zeros(n, np.int64)
    b_union = np.zeros(n, np.int64)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    keep = set(sorted(test_ids)[: int(eval_cfg.get("save_predictions", 0))])
    total = np.zeros((n, n), dtype=np.int64)
    rows = []
    per_image_cms: list[np.ndarray] = []
    out_dir = Path(out_dir)
    with atomic_dir(out_dir / "predictions") as pred_dir:
        for sid in sorted(test_ids):
            entry = meta["manifest"][sid]
            image = read_image(root / entry["image"])
            target = read_mask(root / entry["mask"])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pred = segment(model, image, infer, device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) * 1000
            cm = confusion_matrix(target, pred, n, ignore)
            total += cm
            per_image_cms.append(cm)
            m = metrics_from_confusion(cm)
            bi, bu = boundary_iou_counts(target, pred, n, ignore)
            b_inter += bi
            b_union += bu
            rows.append({"id": sid, "mIoU": m["mIoU"], "mDice": m["mDice"], "aAcc": m["aAcc"],
                         "mBoundaryIoU": boundary_iou(bi, bu)["mBoundaryIoU"], "pixels": int(cm.sum()), "time_ms": dt})
            if sid in keep:
                Image.fromarray(pred.astype(np.uint8 if n <= 256 else np.uint16)).save(pred_dir / f"{sid}.png")
    per_image = pd.DataFrame(rows)
    result = metrics_from_confusion(total, background=meta.get("background"))
    result.update(boundary_iou(b_inter, b_union))
    result.update({
        "classes": [c["name"] for c in meta["classes"]],
        "image_averaged": {k: float(per_image[k].mean()) for k in ("mIoU", "mDice", "aAcc", "mBoundaryIoU")},
        "num_images": len(test_ids),
        "num_pixels": int(total.sum()),
        "time_ms_median": float(per_image["time_ms"].median()),
        "time_ms_p95": float(per_image["time_ms"].quantile(0.95)),
        "peak_gpu_memory_mib": (torch.cuda.max_memory_allocated(device) / 2**20) if device.startswith("cuda") else None,
        "device": device,
        "inference": {k: getattr(infer, k) for k in ("mode", "scale", "overlap", "blend", "flip")},
        "model": info["model"].get("name"),
        "library": info["model"]["library"],
        "fold": info.get("fold"),
        "mean_metrics": list(MEAN_METRICS),
    })
    with atomic_path(out_dir / "confusion.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, total)
    with atomic_path(out_dir / "confusion_per_image.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.stack(per_image_cms))
    with atomic_path(out_dir / "per_image.csv") as tmp:
        per_image.to_csv(tmp, index=False, float_format="%.6g")
    atomic_write_json(out_dir / "metrics.json", result)
    return result
