"""``segbench predict``: a trained model + images -> index masks and colour overlays.

The model is a folder holding ``model.json`` and ``model.safetensors``: an experiment's ``best/``, or
any ``models/<model>/fold<k>/seed<s>/``. Images are read by :func:`segbench.images.read_image`, the reader
training and evaluation use: EXIF orientation applied; greyscale, palette, RGBA (alpha dropped) and
CMYK images converted to RGB; 16- and 32-bit single-channel images refused with the fix, since the
models were trained on 8-bit RGB.

Outputs, for ``photo.jpg``: ``photo_mask.png`` (class indices; a palette PNG holding the class colours
when there are at most 256 classes, so a viewer shows colours while the pixel values stay the class ids;
uint16 beyond) and
``photo_overlay.jpg`` (the class colours over the image). With one input and ``-o x.png`` the mask
is written to ``x.png`` and the overlay beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .device import device_of
from .images import IMAGE_EXTS, ImageInputError, read_image
from .inference import InferenceConfig, segment
from .io import atomic_path
from .models.checkpoint import load_trained_model
from .palette import class_palette
from .report.plots import overlay

__all__ = ["ImageInputError", "predict_files", "list_images"]


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive) into a sorted list of image files.

    Raises:
        ImageInputError: a path does not exist, or no image is found.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS and q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise ImageInputError(f"{p}: no such file or folder")
    if not files:
        raise ImageInputError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {', '.join(map(str, inputs))}")
    return files


def predict_files(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    inference: dict[str, Any] | None = None,
    device: str = "auto",
    alpha: float = 0.5,
    progress: bool = True,
    engine: str = "pytorch",
    onnx: str | Path | None = None,
    threads: int | None = None,
    bf16: bool = False,
) -> list[dict[str, Any]]:
    """Segment images with a trained model and write masks and overlays.

    Args:
        model_dir: folder with ``model.json`` and ``model.safetensors``.
        inputs: image files and/or folders.
        out: output folder, or with a single input a ``.png`` path for the mask.
        inference: :class:`segbench.inference.InferenceConfig` keys (mode, scale, overlap, blend, flip ...).
        device: auto | cpu | cuda | cuda:K.
        alpha: overlay opacity of the class colours.
        progress: show a tqdm progress bar.
        engine: ``pytorch`` (the trained weights) or ``onnxruntime`` (the ONNX export, on the CPU:
            ``onnx``, default ``<model_dir>/model.onnx``, e.g. an INT8 variant from ``deploy/``), fed the
            same preprocessed windows (:class:`segbench.engines.OrtModel`).
        onnx: the ``.onnx`` file for ``engine="onnxruntime"``.
        threads: intra-op threads of torch or onnxruntime (None: the library's default).
        bf16: PyTorch engine: run under bfloat16 autocast (:class:`segbench.engines.Bf16Model`; on CPUs
            with AVX-512 BF16/AMX about twice as fast; the deploy step measures what it changes).

    Returns:
        One record per image: ``{image, mask, overlay, height, width, time_ms}``.

    Raises:
        FileNotFoundError: the model folder lacks its files, or the ONNX file is missing.
        ValueError: an unknown engine.
        ImageInputError: unusable inputs (the message names the file); earlier outputs stay written.
    """
    from tqdm import tqdm

    files = list_images(inputs)
    out = Path(out)
    single = len(files) == 1 and out.suffix.lower() == ".png"
    if engine not in ("pytorch", "onnxruntime"):
        raise ValueError(f"engine '{engine}' unknown; allowed values: pytorch, onnxruntime")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    if engine == "onnxruntime":
        from .engines import OrtModel
        from .records import read_model_info

        path = Path(onnx) if onnx else Path(model_dir) / "model.onnx"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no ONNX model; best/ holds model.onnx when select.onnx is on, deploy/onnx_int8/ "
                "its INT8 variant (--onnx FILE), or use --engine pytorch"
            )
        dev, info = "cpu", read_model_info(model_dir)
        model = OrtModel(path, threads)
    else:
        dev = device_of(device)
        model, info = load_trained_model(model_dir, dev)
        if bf16:
            from .engines import Bf16Model

            model = Bf16Model(model, dev).eval()
    cfg = InferenceConfig.from_dict(
        inference or {}, info["image_size"], info.get("normalize"), info.get("inference")
    )
    classes = info.get("classes") or [{"id": i, "name": str(i)} for i in range(int(info["num_classes"]))]
    pal = class_palette(classes)
    records = []
    for f in tqdm(files, desc="segbench predict", unit="image", disable=not progress):
        image = read_image(f)
        t0 = time.perf_counter()
        labels = segment(model, image, cfg, dev)
        dt = (time.perf_counter() - t0) * 1000
        mask_path = out if single else out / f"{f.stem}_mask.png"
        overlay_path = (
            mask_path.with_name(f"{mask_path.stem}_overlay.jpg") if single else out / f"{f.stem}_overlay.jpg"
        )
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(mask_path) as tmp:
            mask = Image.fromarray(labels)
            if labels.dtype == np.uint8:  # a palette PNG: the pixel values stay the class ids, and any
                # image viewer shows the class colours (model.json's classes)
                mask = mask.convert("P") if mask.mode != "P" else mask
                mask.putpalette(pal[: min(256, len(pal))].astype(np.uint8).reshape(-1).tolist())
            mask.save(tmp, format="PNG")
        with atomic_path(overlay_path) as tmp:
            Image.fromarray(overlay(image, labels, pal, alpha)).save(tmp, format="JPEG", quality=90)
        records.append(
            {
                "image": str(f),
                "mask": str(mask_path),
                "overlay": str(overlay_path),
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "time_ms": dt,
            }
        )
    return records
