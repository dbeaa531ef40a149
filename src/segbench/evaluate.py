"""Evaluate one trained model on the test split with segbench's one metric implementation.

Inference (``mode: resize``): each test image is resized to the training size, the logits are
resized bilinearly back to the image's own size and the argmax is compared with the full-resolution
mask, so every model is scored on the same pixels whatever its internal stride.

Outputs in ``out_dir``:

* ``confusion.npy``: int64[C, C] dataset-level confusion matrix (rows = ground truth);
* ``metrics.json``: :func:`segbench.metrics.metrics_from_confusion` of it, class names, the
  image-averaged means, the number of evaluated pixels and images, timing per image (ms);
* ``per_image.csv``: one row per test image: ``id, mIoU, mDice, aAcc, pixels, time_ms``;
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

from .data.dataset import build_transform, read_image, read_mask
from .io import atomic_dir, atomic_path, atomic_write_json
from .metrics import MEAN_METRICS, confusion_matrix, metrics_from_confusion
from .models import create_model

__all__ = ["load_trained_model", "predict_image", "evaluate_model"]


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


@torch.inference_mode()
def predict_image(model: torch.nn.Module, image: np.ndarray, transform, device: str = "cpu") -> np.ndarray:
    """Predict class indices ``int64[H, W]`` for one ``uint8[H, W, 3]`` image at its own resolution."""
    h, w = image.shape[:2]
    x = transform(image=image)["image"]
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).unsqueeze(0).float().to(device)
    logits = model(x)
    logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].cpu().numpy().astype(np.int64)


def evaluate_model(ckpt_dir: str | Path, dataset_json: str | Path, splits_json: str | Path, eval_cfg: dict[str, Any],
                   out_dir: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Evaluate the model in ``ckpt_dir`` on the test ids of ``splits.json``; write the files above.

    Args:
        ckpt_dir: ``results/<experiment>/models/<model>/fold<k>``.
        dataset_json: the canonical dataset's ``dataset.json``.
        splits_json: ``splits.json`` (its ``test`` list is evaluated).
        eval_cfg: ``{"device", "save_predictions", "image_size", "normalize"}``.
        out_dir: ``results/<experiment>/eval/<model>/fold<k>``.

    Returns:
        The ``metrics.json`` content.

    Raises:
        ValueError: the split has no test images.
    """
    if threads:
        torch.set_num_threads(int(threads))
    from .train import resolve_device

    accel, devices = resolve_device(eval_cfg.get("device", "auto"))
    device = "cuda" if accel == "gpu" else accel
    if accel == "gpu" and isinstance(devices, list):
        device = f"cuda:{devices[0]}"
    model, info = load_trained_model(ckpt_dir, device)
    meta = json.loads(Path(dataset_json).read_text())
    test_ids = json.loads(Path(splits_json).read_text())["test"]
    if not test_ids:
        raise ValueError(f"{splits_json}: no test images; set split.test_fraction > 0")
    root = Path(dataset_json).parent
    n = info["num_classes"]
    ignore = info["ignore_index"]
    transform = build_transform({"train": [], "normalize": info.get("normalize") or eval_cfg.get("normalize")},
                                info["image_size"], train=False)
    keep = set(sorted(test_ids)[: int(eval_cfg.get("save_predictions", 0))])
    total = np.zeros((n, n), dtype=np.int64)
    rows = []
    out_dir = Path(out_dir)
    with atomic_dir(out_dir / "predictions") as pred_dir:
        for sid in sorted(test_ids):
            entry = meta["manifest"][sid]
            image = read_image(root / entry["image"])
            target = read_mask(root / entry["mask"])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pred = predict_image(model, image, transform, device)
            dt = (time.perf_counter() - t0) * 1000
            cm = confusion_matrix(target, pred, n, ignore)
            total += cm
            m = metrics_from_confusion(cm)
            rows.append({"id": sid, "mIoU": m["mIoU"], "mDice": m["mDice"], "aAcc": m["aAcc"],
                         "pixels": int(cm.sum()), "time_ms": dt})
            if sid in keep:
                Image.fromarray(pred.astype(np.uint8 if n <= 256 else np.uint16)).save(pred_dir / f"{sid}.png")
    per_image = pd.DataFrame(rows)
    result = metrics_from_confusion(total, background=meta.get("background"))
    result.update({
        "classes": [c["name"] for c in meta["classes"]],
        "image_averaged": {k: float(per_image[k].mean()) for k in ("mIoU", "mDice", "aAcc")},
        "num_images": len(test_ids),
        "num_pixels": int(total.sum()),
        "time_ms_median": float(per_image["time_ms"].median()),
        "time_ms_p95": float(per_image["time_ms"].quantile(0.95)),
        "device": device,
        "inference_mode": eval_cfg.get("mode", "resize"),
        "model": info["model"].get("name"),
        "library": info["model"]["library"],
        "fold": info.get("fold"),
        "mean_metrics": list(MEAN_METRICS),
    })
    with atomic_path(out_dir / "confusion.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, total)
    with atomic_path(out_dir / "per_image.csv") as tmp:
        per_image.to_csv(tmp, index=False, float_format="%.6g")
    atomic_write_json(out_dir / "metrics.json", result)
    return result
