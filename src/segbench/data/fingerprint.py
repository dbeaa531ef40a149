"""What a dataset is, in numbers: ``fingerprint.json``, the input of the plan (:mod:`segbench.plan`).

As nnU-Net's dataset fingerprint (``nnunetv2/experiment_planning/dataset_fingerprint``): the numbers a
training configuration should follow, measured once after validation.

* image sizes (as displayed; from ``dataset.json``): min, 5th percentile, median, 95th percentile,
  max of height, width, diagonal and aspect ratio (height / width), and the number of images per size;
* channels (the images' modes) and intensity statistics per channel (mean, standard deviation, 0.5th
  and 99.5th percentiles) over a sample of images, read at reduced size (JPEG draft decoding);
* classes: pixel share and the number of images each appears in (from ``validation.json``, every
  image), the ignored share;
* object sizes per class: the connected components (8-connectivity, ``scipy.ndimage.label``) of each
  class in a sample of masks: their number, and the distribution of their areas in pixels at full
  resolution, leaving out specks of fewer than ``SPECK_PX`` pixels (stray labels along the edges of
  annotated regions, counted apart): the plan keeps the smallest *relevant* objects visible;
* whether object sizes follow image sizes (``object_scaling``): the slope of the log median object
  side (foreground classes) on the log image diagonal over the measured masks. A slope near 1 means the
  same scenes photographed at different resolutions (a single training scale then shows the same objects
  at different sizes); near 0, objects of one pixel size in larger or smaller fields of view; and the
  5th percentile of the objects' sides as a share of their image's diagonal (what the plan keeps visible
  when it rescales every image to one diagonal);
* the number of images and of groups.

The mask sample (``MAX_MASKS``, spread evenly over the ids) keeps a 10,000-image dataset under a minute
on 2 CPU cores (``bench/bench_fingerprint.py``): percentiles of object sizes need hundreds of masks,
not every one.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io import atomic_write_json
from ..records import read_dataset, read_validation

__all__ = ["fingerprint", "object_scaling", "MAX_MASKS", "MAX_IMAGES", "SPECK_PX"]

#: masks whose connected components are measured (evenly spread; all when fewer)
MAX_MASKS = 600
#: images whose intensities are measured
MAX_IMAGES = 200
#: components smaller than this (pixels) are annotation specks, not objects
SPECK_PX = 16


def _spread(ids: list[str], k: int) -> list[str]:
    if len(ids) <= k:
        return list(ids)
    idx = np.linspace(0, len(ids) - 1, k).round().astype(int)
    return [ids[i] for i in sorted(set(idx.tolist()))]


def _components(mask_path: Path, n_classes: int) -> dict[int, list[int]]:
    """Areas (pixels) of the connected components of each class present in one mask."""
    from scipy import ndimage

    with Image.open(mask_path) as im:
        mask = np.asarray(im)
    out: dict[int, list[int]] = {}
    structure = np.ones((3, 3), bool)
    for c in np.unique(mask).tolist():
        if c >= n_classes:
            continue
        labels, k = ndimage.label(mask == c, structure=structure)
        if k:
            out[int(c)] = np.bincount(labels.reshape(-1))[1:].tolist()
    return out


def object_scaling(
    diagonals: list[float], comps: list[dict[int, list[int]]], background: int | None
) -> dict[str, Any]:
    """How object sizes follow image sizes.

    Args:
        diagonals: each measured mask's image diagonal (px).
        comps: each mask's component areas per class (:func:`_components`), in the same order.
        background: the background class id (left out), or None.

    Returns:
        ``{"images": images with a foreground object, "diagonal_ratio": largest / smallest diagonal of
        those, "slope": least-squares slope of log(median object side) on log(diagonal), or None with
        fewer than 5 such images or diagonals within 1.2x of each other, "relative_side_p5": the smallest
        over the foreground classes of the 5th percentile of each class's object side / its image's
        diagonal (as the plan's one-factor rule takes the smallest class percentile; None without
        objects)}``.
        The median is over the image's foreground components of at least ``SPECK_PX`` pixels; side =
        sqrt(area).
    """
    x, y, rel = [], [], {}
    for d, comp in zip(diagonals, comps):
        areas = [a for c, v in comp.items() if c != background for a in v if a >= SPECK_PX]
        if areas:
            x.append(math.log(d))
            y.append(0.5 * math.log(float(np.median(areas))))
        for c, v in comp.items():
            if c != background:
                rel.setdefault(c, []).extend(math.sqrt(a) / d for a in v if a >= SPECK_PX)
    ratio = float(math.exp(max(x) - min(x))) if x else 1.0
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) >= 5 and ratio >= 1.2 else None
    return {
        "images": len(x),
        "diagonal_ratio": round(ratio, 3),
        "slope": None if slope is None else round(slope, 3),
        "relative_side_p5": (
            round(min(float(np.percentile(r, 5)) for r in rel.values() if r), 5)
            if any(rel.values())
            else None
        ),
    }


def _intensity(image_path: Path) -> tuple[str, np.ndarray]:
    """The image's mode and its pixels at about 256 px on the long side (float32 [N, C])."""
    with Image.open(image_path) as im:
        mode = im.mode
        if im.format == "JPEG":
            im.draft("RGB", (256, 256))  # decode at 1/2 .. 1/8 size: fast for large photos
        im = im.convert("RGB")
        im.thumbnail((256, 256))
        return mode, np.asarray(im, np.float32).reshape(-1, 3)


def _summary(values: list[float] | np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {}
    return {
        "min": float(v.min()),
        "p5": float(np.percentile(v, 5)),
        "median": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
    }


def fingerprint(dataset_json: str | Path, out: str | Path | None = None, threads: int = 2) -> dict[str, Any]:
    """Measure a validated canonical dataset (see the module docstring) and write ``fingerprint.json``.

    Args:
        dataset_json: ``data/processed/<dataset>/dataset.json`` (``validation.json`` beside it).
        out: where to write ``fingerprint.json`` (None: only return it).
        threads: reader threads (Pillow and scipy release the GIL while decoding and labelling).

    Returns:
        The fingerprint (a JSON object).

    Raises:
        FileNotFoundError: ``dataset.json`` or ``validation.json`` missing (names the step that writes it).
    """
    dataset_json = Path(dataset_json)
    meta = read_dataset(dataset_json)
    validation = read_validation(dataset_json.parent / "validation.json")
    root = dataset_json.parent
    classes = meta["classes"]
    n = len(classes)
    ids = sorted(meta["manifest"])
    heights = [int(meta["manifest"][i]["height"]) for i in ids]
    widths = [int(meta["manifest"][i]["width"]) for i in ids]
    sizes: dict[str, int] = {}
    for h, w in zip(heights, widths):
        sizes[f"{h}x{w}"] = sizes.get(f"{h}x{w}", 0) + 1
    mask_ids, image_ids = _spread(ids, MAX_MASKS), _spread(ids, MAX_IMAGES)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        comps = list(pool.map(lambda i: _components(root / meta["manifest"][i]["mask"], n), mask_ids))
        pixels = list(pool.map(lambda i: _intensity(root / meta["manifest"][i]["image"]), image_ids))
    areas: dict[int, list[int]] = {c: [] for c in range(n)}
    for comp in comps:
        for c, a in comp.items():
            areas[c].extend(a)
    px = np.concatenate([p for _, p in pixels]) if pixels else np.zeros((0, 3), np.float32)
    modes: dict[str, int] = {}
    for mode, _ in pixels:
        modes[mode] = modes.get(mode, 0) + 1
    class_pixels = np.asarray(validation.get("class_pixels") or np.zeros(n), dtype=np.int64)
    per_image = validation.get("per_image") or {}
    presence = np.zeros(n, np.int64)
    for counts in per_image.values():
        presence += np.asarray(counts[:n]) > 0
    total = max(1, int(class_pixels.sum()))
    record = {
        "dataset": meta["name"],
        "num_images": len(ids),
        "num_groups": len({(meta["manifest"][i].get("group") or i) for i in ids}),
        "height": _summary(heights),
        "width": _summary(widths),
        "diagonal": _summary([math.hypot(h, w) for h, w in zip(heights, widths)]),
        "aspect": _summary([h / w for h, w in zip(heights, widths)]),
        "sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:20]),
        "channels": modes,
        "intensity": {
            "mean": px.mean(axis=0).tolist() if len(px) else None,
            "std": px.std(axis=0).tolist() if len(px) else None,
            "p0_5": np.percentile(px, 0.5, axis=0).tolist() if len(px) else None,
            "p99_5": np.percentile(px, 99.5, axis=0).tolist() if len(px) else None,
            "images": len(pixels),
        },
        "background": meta.get("background"),
        "ignore_index": meta["ignore_index"],
        "ignored_share": float(validation.get("ignored_share") or 0.0),
        "classes": [
            {
                "id": int(c["id"]),
                "name": c["name"],
                "pixel_share": float(class_pixels[int(c["id"])] / total)
                if int(c["id"]) < len(class_pixels)
                else 0.0,
                "images": int(presence[int(c["id"])]),
                "objects": sum(a >= SPECK_PX for a in areas[int(c["id"])]),
                "specks": sum(a < SPECK_PX for a in areas[int(c["id"])]),
                "object_area": _summary([a for a in areas[int(c["id"])] if a >= SPECK_PX]),
            }
            for c in classes
        ],
        "object_masks": len(mask_ids),
        "object_scaling": object_scaling(
            [
                math.hypot(int(meta["manifest"][i]["height"]), int(meta["manifest"][i]["width"]))
                for i in mask_ids
            ],
            comps,
            meta.get("background"),
        ),
    }
    if out is not None:
        atomic_write_json(out, record)
    return record
