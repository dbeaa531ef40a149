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

from ..images import (
    LOSSY_MASK_EXTS,
    ImageInputError,
    check_image_mode,
    displayed_size,
    orientation_hint,
)
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
            check_image_mode(im, img_path)
            im.load()
            (w, h), hint = displayed_size(im), ""
    except ImageInputError as err:
        problems.append(str(err))
        return None
    except Exception as err:
        problems.append(f"{img_path}: unreadable image ({err}); replace the source image and reconvert")
        return None
    try:
        with Image.open(mask_path) as mm:
            if (mm.format or "").upper() != "PNG" or mask_path.suffix.lower() in LOSSY_MASK_EXTS:
                problems.append(
                    f"{mask_path}: a canonical mask must be a PNG (lossless), this one is "
                    f"{mm.format or 'unknown'}; reconvert with segbench convert"
                )
                return None
            mask = np.asarray(mm)
    except Exception as err:
        problems.append(f"{mask_path}: unreadable mask ({err}); reconvert")
        return None
    if mask.ndim != 2:
        problems.append(f"{mask_path}: mask has shape {mask.shape}, expected one channel; reconvert")
        return None
    if mask.shape != (h, w):
        with Image.open(img_path) as im:
            hint = orientation_hint(im, (mask.shape[1], mask.shape[0]))
        problems.append(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image {img_path.name} is {w}x{h}; "
            f"fix the source mask.{hint}"
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


#: default of ``dataset.max_ignore_share``: above this share of ignored pixels, a dataset is refused
MAX_IGNORE_SHARE = 0.5


def _dataset_level_problems(
    dataset_json: Path,
    meta: dict[str, Any],
    class_pixels: np.ndarray,
    ignored: int,
    per_image_ignored: dict[str, int],
    total: int,
    max_ignore_share: float,
    allow_absent_classes: bool,
) -> list[str]:
    """What only the whole dataset shows: most pixels ignored, or a declared class no mask holds."""
    out: list[str] = []
    ignore = int(meta["ignore_index"])
    share = ignored / total if total else 0.0
    if share > max_ignore_share:
        worst = sorted(per_image_ignored.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(meta["manifest"][sid]["mask"] for sid, _ in worst)
        out.append(
            f"{dataset_json}: {share:.0%} of all mask pixels are ignore_index {ignore} (limit "
            f"dataset.max_ignore_share = {max_ignore_share:g}; most ignored: {shown}), so most pixels "
            f"would never be trained on or scored. If a class is stored as {ignore} (0/255 binary masks), "
            "reconvert with dataset.mask_encoding: binary or a dataset.mask_value_map; if the "
            "annotations are sparse on purpose (scribbles), raise dataset.max_ignore_share"
        )
    absent = [c["name"] for c in meta["classes"] if class_pixels[int(c["id"])] == 0]
    if absent and not allow_absent_classes:
        out.append(
            f"{dataset_json}: class(es) {', '.join(repr(a) for a in absent)} appear in no mask, so no "
            "model can learn them and their IoU is undefined. Check the conversion (dataset.label_map, "
            "dataset.mask_value_map, the label list), remove the class from dataset.classes, or set "
            "dataset.allow_absent_classes: true to keep it"
        )
    return out


def validate_dataset(
    dataset_json: str | Path,
    report_path: str | Path | None = None,
    max_ignore_share: float = MAX_IGNORE_SHARE,
    allow_absent_classes: bool = False,
) -> dict[str, Any]:
    """Validate a canonical dataset and compute per-image class pixel counts.

    Per image: both files present and unchanged since conversion (SHA-256), readable, an 8-bit image,
    a lossless (PNG) single-channel mask of the image's size as displayed (EXIF orientation applied,
    :mod:`segbench.images`), mask values that are class ids or ``ignore_index``. Over the dataset:
    class ids 0..C-1, ``ignore_index`` not a class, at most ``max_ignore_share`` of the pixels ignored,
    and every declared class present in some mask (unless ``allow_absent_classes``).

    Args:
        dataset_json: path to ``data/processed/<dataset>/dataset.json``.
        report_path: where to write the validation report (JSON) when everything is valid.
        max_ignore_share: largest allowed share (0..1) of ``ignore_index`` pixels over all masks
            (``dataset.max_ignore_share``; a class misread as ignore shows up here).
        allow_absent_classes: accept declared classes that no mask holds (``dataset.allow_absent_classes``).

    Returns:
        ``{"ok": True, "num_images", "num_classes", "class_pixels": [C] (int), "ignored_pixels",
        "ignored_share", "absent_classes", "per_image": {id: [C] class pixel counts}}``.

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
    per_image_ignored: dict[str, int] = {}
    total = 0
    for sid, entry in sorted(meta["manifest"].items()):
        counts = _pixel_counts(dataset_json, entry, n, ignore, problems)
        if counts is None:
            continue
        class_pixels += counts[:n]
        per_image_ignored[sid] = int(counts[ignore]) if ignore < counts.size else 0
        ignored += per_image_ignored[sid]
        total += int(counts.sum())
        per_image[sid] = counts[:n].tolist()
    if not problems:
        problems += _dataset_level_problems(
            dataset_json,
            meta,
            class_pixels,
            ignored,
            per_image_ignored,
            total,
            float(max_ignore_share),
            bool(allow_absent_classes),
        )
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
        "ignored_share": ignored / total if total else 0.0,
        "absent_classes": [meta["classes"][c]["name"] for c in range(n) if class_pixels[c] == 0],
        "per_image": per_image,
    }
    if report_path is not None:
        write_validation(report_path, report)
    return report
