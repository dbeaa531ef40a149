"""Validation of a canonical dataset before anything trains (docs/design.md, "Canonical dataset").

Checks, for every manifest entry: both files exist and are readable, their SHA-256 matches the
manifest, image and mask have the same height and width, mask values are declared class ids or
``ignore_index``; class ids are 0..C-1 without gaps; ids are unique (the manifest is a dict). Every
problem is collected and reported together, each with the file and the fix. Nothing is modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io import sha256_file
from ..records import write_validation
from .convert import DatasetError

__all__ = ["validate_dataset", "load_dataset_json"]


def load_dataset_json(path: str | Path) -> dict[str, Any]:
    """Read ``dataset.json``.

    Raises:
        DatasetError: missing file, invalid JSON, or missing keys (names the file and the fix).
    """
    from ..records import RecordError, StageOutputMissing, read_dataset

    try:
        return read_dataset(path)
    except (RecordError, StageOutputMissing) as err:
        raise DatasetError([str(err)]) from err


def _pixel_counts(
    dataset_json: Path, entry: dict[str, Any], n: int, ignore: int, problems: list[str]
) -> np.ndarray | None:
    """``int64[>= n]`` pixel count per mask value of one manifest entry, or None after noting in
    ``problems`` why the entry is not valid (a file missing or changed since conversion, unreadable,
    mask and image of different sizes, mask values that are neither a class nor ``ignore``)."""
    root = dataset_json.parent
    img_path, mask_path = root / entry["image"], root / entry["mask"]
    ok = True
    for p, key in ((img_path, "image_sha256"), (mask_path, "mask_sha256")):
        if not p.is_file():
            problems.append(f"{p}: listed in {dataset_json.name} but missing; rerun the convert step")
            ok = False
        elif entry.get(key) and sha256_file(p) != entry[key]:
            problems.append(
                f"{p}: content differs from the SHA-256 in {dataset_json.name}; rerun the convert step, "
                "do not edit processed files"
            )
            ok = False
    if not ok:
        return None
    try:
        with Image.open(img_path) as im:
            im.load()
            w, h = im.size
    except Exception as err:
        problems.append(f"{img_path}: unreadable image ({err}); replace the source image and reconvert")
        return None
    try:
        with Image.open(mask_path) as mm:
            mask = np.asarray(mm)
    except Exception as err:
        problems.append(f"{mask_path}: unreadable mask ({err}); reconvert")
        return None
    if mask.ndim != 2:
        problems.append(f"{mask_path}: mask has shape {mask.shape}, expected one channel; reconvert")
        return None
    if mask.shape != (h, w):
        problems.append(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image {img_path.name} is {w}x{h}; "
            "fix the source mask"
        )
        return None
    counts = np.bincount(mask.reshape(-1).astype(np.int64), minlength=max(n, ignore + 1))
    extra = [v for v in np.nonzero(counts)[0].tolist() if v >= n and v != ignore]
    if extra:
        problems.append(
            f"{entry.get('source_mask', mask_path)}: mask values {extra} are neither class ids "
            f"0..{n - 1} nor "
            f"ignore_index {ignore}; declare the classes in the dataset config or map them with "
            "dataset.mask_value_map"
        )
        return None
    return counts


def validate_dataset(dataset_json: str | Path, report_path: str | Path | None = None) -> dict[str, Any]:
    """Validate a canonical dataset and compute per-image class pixel counts.

    Args:
        dataset_json: path to ``data/processed/<dataset>/dataset.json``.
        report_path: where to write the validation report (JSON) when everything is valid.

    Returns:
        ``{"ok": True, "num_images", "num_classes", "class_pixels": [C] (int), "ignored_pixels",
        "per_image": {id: [C] class pixel counts}}``.

    Raises:
        DatasetError: listing every problem found (file + fix); no report is written then, and an
            existing one at ``report_path`` is removed.
    """
    dataset_json = Path(dataset_json)
    meta = load_dataset_json(dataset_json)
    ids = [c["id"] for c in meta["classes"]]
    n = len(ids)
    problems: list[str] = []
    if sorted(ids) != list(range(n)):
        problems.append(
            f"{dataset_json}: class ids {ids} must be 0..{n - 1} without gaps; renumber dataset.classes"
        )
    ignore = int(meta["ignore_index"])
    if 0 <= ignore < n:
        problems.append(
            f"{dataset_json}: ignore_index {ignore} is also a class id; use a value >= {n} (255 by default)"
        )
    class_pixels = np.zeros(n, dtype=np.int64)
    ignored = 0
    per_image: dict[str, list[int]] = {}
    for sid, entry in sorted(meta["manifest"].items()):
        counts = _pixel_counts(dataset_json, entry, n, ignore, problems)
        if counts is None:
            continue
        class_pixels += counts[:n]
        ignored += int(counts[ignore]) if ignore < counts.size else 0
        per_image[sid] = counts[:n].tolist()
    if problems:
        if report_path is not None:  # a stale report must not claim the dataset is valid
            Path(report_path).unlink(missing_ok=True)
        raise DatasetError(problems, header=f"dataset '{meta['name']}' is not valid")
    report = {
        "ok": True,
        "dataset": meta["name"],
        "num_images": len(per_image),
        "num_classes": n,
        "class_pixels": class_pixels.tolist(),
        "ignored_pixels": ignored,
        "absent_classes": [meta["classes"][c]["name"] for c in range(n) if class_pixels[c] == 0],
        "per_image": per_image,
    }
    if report_path is not None:
        write_validation(report_path, report)
    return report
