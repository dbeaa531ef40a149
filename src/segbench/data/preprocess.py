"""The images and masks rescaled once to the training scale: an experiment's ``preprocessed/`` dataset,
as nnU-Net's preprocessed folder, so a training job never decodes and shrinks a 24-megapixel photo
for every sample.

The output is a canonical dataset (``dataset.json`` + ``images/`` + ``masks/``, the same ids, groups
and classes) whose images are the originals as displayed (EXIF applied, :func:`segbench.images.read_image`)
rescaled by ``scale`` (or, with ``target_diagonal``, each by its own factor so that every image's diagonal
becomes ``target_diagonal`` pixels: :func:`image_scale`) with OpenCV (``INTER_AREA`` when shrinking,
``INTER_LINEAR`` otherwise) and saved as PNG, and whose masks are rescaled by nearest neighbour (no invented
class ids). At scale 1 the files are hard links to the originals (no copy, no re-encoding). The workflow's
``preprocess`` rule writes it when the recipe has a ``scale`` (the plan's, :mod:`segbench.plan`);
Snakemake reruns it only when the dataset, the scale or the target diagonal changes.
"""

from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..images import read_image, read_mask
from ..io import atomic_dir, sha256_file
from ..records import read_dataset, write_dataset

__all__ = ["preprocess", "scaled_size", "image_scale"]


def image_scale(height: int, width: int, scale: float, target_diagonal: float | None = None) -> float:
    """The factor one image of ``height`` x ``width`` pixels is rescaled by for training and inference.

    ``scale`` for every image, unless ``target_diagonal`` (pixels) is set: then each image gets its own
    factor ``target_diagonal / sqrt(height**2 + width**2)``, so every image ends with the same diagonal
    (the plan's size normalisation, :mod:`segbench.plan`: photos of the same kind of scene at different
    resolutions then show their objects at one size, as nnU-Net resamples every case to one voxel
    spacing). The same function serves preprocessing, evaluation, ``predict`` and the deployment
    benchmarks; ``reference/segment_onnx.py`` restates it.

    Raises:
        ValueError: a non-positive factor, target diagonal or image side.

    >>> image_scale(300, 400, 0.5)
    0.5
    >>> image_scale(300, 400, 0.5, target_diagonal=250)
    0.5
    >>> image_scale(600, 800, 0.5, target_diagonal=250)
    0.25
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size {height}x{width} must be positive")
    if target_diagonal is not None:
        if not target_diagonal > 0:
            raise ValueError(f"target_diagonal {target_diagonal} must be > 0")
        return float(target_diagonal) / math.hypot(height, width)
    if not scale > 0:
        raise ValueError(f"scale {scale} must be > 0")
    return float(scale)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(height, width)`` of an image rescaled by ``scale`` (rounded, at least 1 pixel).

    >>> scaled_size(3024, 4032, 0.25)
    (756, 1008)
    """
    return max(1, round(height * scale)), max(1, round(width * scale))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)


def _one(
    root: Path, sid: str, entry: dict[str, Any], scale: float, target: float | None, tmp: Path, dtype
) -> dict[str, Any]:
    import cv2

    scale = image_scale(int(entry["height"]), int(entry["width"]), scale, target)
    if scale == 1.0:
        img_name, mask_name = Path(entry["image"]).name, Path(entry["mask"]).name
        _link_or_copy(root / entry["image"], tmp / "images" / img_name)
        _link_or_copy(root / entry["mask"], tmp / "masks" / mask_name)
        h, w = int(entry["height"]), int(entry["width"])
    else:
        image, mask = read_image(root / entry["image"]), read_mask(root / entry["mask"])
        h, w = scaled_size(image.shape[0], image.shape[1], scale)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (w, h), interpolation=interp)
        mask = cv2.resize(mask.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST)
        img_name, mask_name = f"{sid}.png", f"{sid}.png"
        Image.fromarray(image).save(tmp / "images" / img_name, compress_level=1)
        Image.fromarray(mask.astype(dtype)).save(tmp / "masks" / mask_name, compress_level=1)
    return {
        **{k: entry[k] for k in ("group", "subset") if k in entry},
        "image": f"images/{img_name}",
        "mask": f"masks/{mask_name}",
        "image_sha256": sha256_file(tmp / "images" / img_name),
        "mask_sha256": sha256_file(tmp / "masks" / mask_name),
        "height": h,
        "width": w,
    }


def preprocess(
    dataset_json: str | Path,
    scale: float,
    out_dir: str | Path,
    threads: int = 2,
    target_diagonal: float | None = None,
) -> dict[str, Any]:
    """Write the dataset rescaled by ``scale`` (or each image to ``target_diagonal``) into ``out_dir``
    (replaced whole, atomically).

    Args:
        dataset_json: the canonical dataset's ``dataset.json``.
        scale: the factor (the plan's ``scale``, or ``train.scale``), > 0.
        target_diagonal: each image rescaled to this diagonal (pixels) instead (:func:`image_scale`).
        out_dir: ``results/<experiment>/preprocessed``.
        threads: worker threads (OpenCV and Pillow release the GIL).

    Returns:
        The new ``dataset.json`` (its ``scale``, ``target_diagonal`` and ``source_sha256`` say where it
        came from).

    Raises:
        ValueError: ``scale`` (or ``target_diagonal`` when set) is not positive.
    """
    image_scale(1, 1, scale, target_diagonal)  # the same checks, before any file is written
    dataset_json = Path(dataset_json)
    meta = read_dataset(dataset_json)
    root = dataset_json.parent
    dtype = np.uint8 if max([c["id"] for c in meta["classes"]] + [meta["ignore_index"]]) <= 255 else np.uint16
    with atomic_dir(out_dir) as tmp, ThreadPoolExecutor(max(1, threads)) as pool:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        ids = sorted(meta["manifest"])
        entries = list(
            pool.map(
                lambda i: _one(root, i, meta["manifest"][i], float(scale), target_diagonal, tmp, dtype), ids
            )
        )
        out = {k: v for k, v in meta.items() if k != "manifest"}
        out.update(
            scale=float(scale),
            target_diagonal=None if target_diagonal is None else float(target_diagonal),
            source=str(dataset_json),
            source_sha256=sha256_file(dataset_json),
            manifest=dict(zip(ids, entries)),
        )
        write_dataset(tmp / "dataset.json", out)
    return out
