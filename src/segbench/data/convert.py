"""Raw annotations -> the canonical dataset (docs/annotations.md; docs/design.md, "Canonical dataset").

Canonical layout (``data/processed/<dataset>/``)::

    images/<id>.<ext>   the original image bytes (copied, never re-encoded)
    masks/<id>.png      single-channel class indices, uint8 (uint16 when > 255 classes)
    dataset.json        name, classes [{id, name, color}], ignore_index, background, source format,
                        licence, warnings, and manifest {id: {image, mask, image_sha256, mask_sha256,
                        height, width, group, subset, source}}

One importer per format (:mod:`segbench.data.importers`: masks, palette, labelme, labelme-xml, coco,
cvat) turns the source into masks; this module checks what every format shares (one annotation per
image, sizes, unknown labels, an empty dataset) and writes the output into a temporary folder that
replaces ``out_dir`` only when the whole conversion succeeded. The raw data is only read.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..images import (
    LOSSY_MASK_EXTS,
    ImageInputError,
    check_image_mode,
    displayed_size,
    exif_orientation,
    orientation_hint,
)
from ..io import atomic_dir, sha256_file
from ..records import write_dataset
from .errors import DatasetError
from .importers import get_importer, normalise_format
from .importers.common import BOMB, ClassTable, Problems, Sample, read_class_file
from .importers.masks import IMAGE_EXTS, pair_mask_folder, remap_mask

#: zlib level of mask PNGs: 1 encodes ~2x faster than Pillow's default 6 for ~1.5x the bytes
#: (class masks are long runs, a few tens of kB per megapixel either way).
PNG_LEVEL = 1

__all__ = [
    "DatasetError",
    "convert",
    "list_sources",
    "pair_mask_folder",
    "remap_mask",
    "IMAGE_EXTS",
    "classes_from_file",
]


def _group(cfg: dict[str, Any], sid: str) -> str:
    rx = cfg.get("group_regex")
    if not rx:
        return sid
    m = re.search(rx, sid)
    if not m:
        raise DatasetError(
            [f"id '{sid}': dataset.group_regex '{rx}' does not match it; fix the regex or rename the file"]
        )
    return m.group(1) if m.groups() else m.group(0)


def _merge_duplicate_groups(manifest: dict[str, Any], problems: Problems) -> None:
    """Byte-identical images (same sha256) join one group, with a warning, so no split ever puts
    copies of one photo on both sides (train and test)."""
    by_hash: dict[str, list[str]] = {}
    for sid in sorted(manifest):
        by_hash.setdefault(manifest[sid]["image_sha256"], []).append(sid)
    for ids in by_hash.values():
        if len(ids) < 2:
            continue
        target = manifest[ids[0]]["group"]
        merge = {manifest[sid]["group"] for sid in ids}
        for entry in manifest.values():
            if entry["group"] in merge:
                entry["group"] = target
        problems.warn(
            f"images {', '.join(manifest[sid]['source_image'] for sid in ids)} are byte-identical: kept in "
            f"one group ('{target}') so a split never puts copies on both sides; delete the duplicates if "
            f"they are not intended"
        )


def import_raw(src: str | Path, out: str | Path) -> Path:
    """Copy a raw dataset folder ``src`` into the project at ``out`` (e.g. ``data/raw/camvid``, where
    DVC versions it), byte for byte; ``out`` appears only when the whole copy succeeded.

    Raises:
        DatasetError: ``src`` is not a folder (names it and the fix).
    """
    import shutil

    src = Path(src)
    if not src.is_dir():
        raise DatasetError(
            [
                f"{src}: raw dataset folder not found; set SEGBENCH_SHARED to the folder holding "
                "data/<name>, or dataset.root to your data"
            ]
        )
    with atomic_dir(out) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return Path(out)


def ensure_raw(cfg: dict[str, Any]) -> bool:
    """If the dataset config's ``root`` does not exist and it names ``import_from``, copy that folder
    to ``root`` (:func:`import_raw`). Returns True when it copied. A root that exists is never touched."""
    root, src = cfg.get("root"), cfg.get("import_from")
    if not root or not src or Path(root).exists():
        return False
    import sys

    print(
        f"segbench: copying the raw dataset {src} to {root} (once; DVC versions it there)",
        file=sys.stderr,
        flush=True,
    )
    import_raw(src, root)
    return True


def list_sources(cfg: dict[str, Any]) -> list[str]:
    """The raw files a dataset config reads (the workflow's convert inputs); [] when the source is
    broken, so the convert step, not the DAG build, reports the problem."""
    try:
        return [str(p) for p in get_importer(cfg.get("format")).sources(cfg)]
    except DatasetError:
        return []


def classes_from_file(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """Dataset config keys from a label list file (see :func:`~.importers.common.read_class_file`):
    ``classes`` with ids in file order, ``background`` and ``ignore_labels``.

    For annotation formats that draw shapes (LabelMe, COCO, CVAT), unlabelled pixels are background:
    a "background" class is put first when the file names none. For mask formats (``masks``,
    ``palette``) the pixel values are the classes, so the file's names are the classes, id = position,
    and no class is added (0/255 masks with two names read as those two classes, 0 and 1)."""
    names, ignore = read_class_file(path)
    from .importers.common import BACKGROUND_NAMES

    bg = next((i for i, n in enumerate(names) if n in BACKGROUND_NAMES), None)
    if bg is None and normalise_format(fmt) not in MASK_FORMATS:
        names = ["background", *names]
        bg = 0
    return {
        "classes": [{"id": i, "name": n, "color": None} for i, n in enumerate(names)],
        "background": bg,
        "ignore_labels": ignore,
    }


def _mask_value_problem(s: Sample, class_ids: frozenset[int], ignore_index: int) -> str | None:
    """Why the sample's mask holds a value that is neither a class id nor ``ignore_index`` (None when it
    does not). Checked before the mask is cast to uint8/uint16, where 256 would silently wrap to 0."""
    mask = s.mask
    lo, hi = int(mask.min()), int(mask.max())
    if lo < 0 or hi >= 1 << 20:
        values = np.unique(mask).tolist()
    else:  # O(pixels), where np.unique sorts
        values = np.flatnonzero(np.bincount(mask.reshape(-1), minlength=hi + 1)).tolist()
    extra = [int(v) for v in values if v not in class_ids and v != ignore_index]
    if not extra:
        return None
    shown = ", ".join(map(str, extra[:12])) + (f" and {len(extra) - 12} more" if len(extra) > 12 else "")
    text = (
        f"{s.source}: mask values {shown} are neither class ids ({min(class_ids)}..{max(class_ids)}) nor "
        f"ignore_index {ignore_index}; declare the classes in the dataset config (or --classes), or map "
        "the values with dataset.mask_value_map"
    )
    if Path(str(s.source)).suffix.lower() in LOSSY_MASK_EXTS:
        text += (
            "; the mask is a JPEG, whose lossy compression smears class values at edges: save masks "
            "as PNG (for 0/255 masks, dataset.mask_encoding: binary thresholds them at 128)"
        )
    elif hi > 255:
        text += " (a 16-bit mask: values above 255 need a class each, or a mapping)"
    return text


def _write_sample(
    s: Sample, tmp: Path, dtype: Any, class_ids: frozenset[int], ignore_index: int
) -> tuple[dict[str, Any] | None, str | None, int]:
    """Check one sample's image (readable, 8-bit, size as displayed = mask size) and mask values, and
    write image + mask into ``tmp``. Runs in a worker thread (Pillow's encoder releases the GIL);
    returns ``(entry, None, exif orientation)`` or ``(None, problem, 1)``."""
    src = str(s.source)
    try:
        if s.image is not None:
            with Image.open(s.image) as im:
                check_image_mode(im, s.image)
                (width, height), orientation = displayed_size(im), exif_orientation(im)
                if s.mask.shape != (height, width):
                    hint = orientation_hint(im, (s.mask.shape[1], s.mask.shape[0]))
                else:
                    hint = ""
            with Image.open(s.image) as im:
                im.verify()  # must follow open directly: a truncated or corrupt file fails here
            ext = (s.image_ext or Path(s.image).suffix).lower()
        else:
            with Image.open(io.BytesIO(s.image_bytes)) as im:
                check_image_mode(im, src)
                (width, height), orientation = displayed_size(im), exif_orientation(im)
                hint = ""
            ext = s.image_ext
    except BOMB as err:
        return None, f"{s.image or src}: {err}; if the image is genuine, raise dataset.max_image_pixels", 1
    except ImageInputError as err:
        return None, str(err), 1
    except Exception as err:
        return None, f"{s.image or src}: cannot read image ({err}); replace or remove it", 1
    if ext not in IMAGE_EXTS:
        return (
            None,
            (
                f"{s.image or src}: image type '{ext}' is not one segbench reads "
                f"({', '.join(sorted(IMAGE_EXTS))}); convert the image"
            ),
            1,
        )
    if s.mask.shape != (height, width):
        return (
            None,
            (
                f"{src}: mask is {s.mask.shape[1]}x{s.mask.shape[0]} but image "
                f"{Path(s.image).name if s.image else s.id} is {width}x{height}; masks must have "
                f"the image's width and height.{hint}"
            ),
            1,
        )
    bad = _mask_value_problem(s, class_ids, ignore_index)
    if bad:
        return None, bad, 1
    img_name = f"{s.id}{ext}"
    if s.image is not None:
        shutil.copyfile(s.image, tmp / "images" / img_name)
    else:
        (tmp / "images" / img_name).write_bytes(s.image_bytes)
    Image.fromarray(s.mask.astype(dtype, copy=False)).save(
        tmp / "masks" / f"{s.id}.png", compress_level=PNG_LEVEL
    )
    return (
        {
            "image": f"images/{img_name}",
            "mask": f"masks/{s.id}.png",
            "image_sha256": sha256_file(tmp / "images" / img_name),
            "mask_sha256": sha256_file(tmp / "masks" / f"{s.id}.png"),
            "height": height,
            "width": width,
            "subset": s.subset,
            "source": src,
            "source_image": str(s.image) if s.image is not None else f"{src} (embedded imageData)",
            "source_mask": src,
        },
        None,
        orientation,
    )


@contextmanager
def _pixel_limit(max_pixels: int | None):
    """Pillow's decompression-bomb limit for the conversion; its warning is raised as an error."""
    old = Image.MAX_IMAGE_PIXELS
    if max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _class_table(cfg: dict[str, Any], importer, fmt: str) -> ClassTable:
    """The class table of the config, with the labels the annotation files name when it lists none.

    Raises:
        DatasetError: the format stores no class names and the config lists none.
    """
    found = None if cfg.get("classes") else importer.labels(cfg)
    if found is None and not cfg.get("classes"):
        raise DatasetError(
            [
                f"dataset.format '{fmt}' stores no class names: list them in dataset.classes "
                f"([{{id, name, color}}]) or pass --classes FILE"
            ]
        )
    return ClassTable.build(cfg, found)


def _annotated_twice(s, sources_of: dict[str, str], seen_image: dict[str, str], problems: Problems) -> bool:
    """Whether the sample's id or image file was already annotated by another file (an error noted);
    otherwise remember it."""
    src = str(s.source)
    if s.id in sources_of:
        problems.error(
            f"{src}: image id '{s.id}' is also annotated by {sources_of[s.id]}; "
            f"keep one annotation file per image (merge or delete one)"
        )
        return True
    sources_of[s.id] = src
    if s.image is not None:
        key = str(Path(s.image).resolve())
        if key in seen_image and seen_image[key] != src:
            problems.error(
                f"{src}: image {s.image} is also annotated by {seen_image[key]}; keep one "
                f"annotation file per image (merge or delete one)"
            )
            return True
        seen_image[key] = src
    return False


def _dataset_meta(cfg, fmt: str, name: str, table: ClassTable, dtype, manifest, problems: Problems) -> dict:
    """The ``dataset.json`` content (format version 1)."""
    return {
        "name": name,
        "format_version": 1,
        "source_format": fmt,
        "source_root": str(cfg["root"]),
        "licence": cfg.get("licence"),
        "classes": [{"id": int(c["id"]), "name": c["name"], "color": c.get("color")} for c in table.classes],
        "ignore_index": table.ignore_index,
        "background": table.background,
        "mask_dtype": np.dtype(dtype).name,
        "num_images": len(manifest),
        "warnings": problems.warnings,
        "manifest": dict(sorted(manifest.items())),
    }


#: formats whose pixel values are the classes (a label list names them; nothing is added)
MASK_FORMATS = ("masks", "palette")
#: what segbench itself writes into a dataset folder: a folder holding only these may be replaced
# what segbench writes into a converted dataset folder: conversion (dataset.json, images, masks), the
# validate step (validation.json) and the fingerprint step (fingerprint.json, segbench.data.fingerprint)
DATASET_ENTRIES = frozenset({"dataset.json", "validation.json", "fingerprint.json", "images", "masks"})


def check_output_folder(cfg: dict[str, Any], out_dir: str | Path, force: bool = False) -> None:
    """Refuse an output folder whose replacement would destroy the user's files.

    Conversion replaces ``out_dir`` whole. It is refused when it is the source, lies inside it or
    holds it (``root`` or any file the importer reads), is not a folder, or is a non-empty folder with
    anything segbench did not write there (:data:`DATASET_ENTRIES`) unless ``force``.

    Raises:
        DatasetError: naming both paths and the fix.
    """
    out = Path(out_dir).resolve()
    sources = [Path(cfg["root"])] if cfg.get("root") else []
    sources += [Path(p) for p in list_sources(cfg)[:1000]]
    for src in sources:
        s = src.resolve()
        if s == out or out in s.parents or s in out.parents:
            raise DatasetError(
                [
                    f"{out_dir}: the output folder overlaps the source {src} (conversion replaces its "
                    "output folder whole); choose an output folder outside the source, e.g. "
                    f"data/processed/{cfg.get('name') or out.name}"
                ]
            )
    if out.exists() and not out.is_dir():
        raise DatasetError([f"{out_dir}: exists and is not a folder; choose a new output folder"])
    if out.is_dir() and not force:
        foreign = sorted(
            p.name
            for p in out.iterdir()
            if p.name not in DATASET_ENTRIES  # hidden ones too (.git)
        )
        if foreign:
            raise DatasetError(
                [
                    f"{out_dir}: exists and holds files segbench did not write ({', '.join(foreign[:5])}"
                    f"{' ...' if len(foreign) > 5 else ''}); conversion replaces its output folder whole, "
                    "so choose a new or empty folder, or pass --force to replace it"
                ]
            )


def convert(cfg: dict[str, Any], out_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Build the canonical dataset from a dataset config.

    Args:
        cfg: the ``dataset`` section of the config: ``name``, ``format`` (masks, palette, labelme,
            labelme-xml, coco, cvat; ``mask_folder`` = masks), ``root``, ``classes`` (optional for
            formats that name their labels), ``ignore_index``, ``background``, ``label_map``,
            ``ignore_labels``, ``group_regex``, ``max_image_pixels`` and the format's own keys
            (see each importer's docstring).
        out_dir: ``data/processed/<dataset>``; replaced atomically when the conversion succeeds
            (:func:`check_output_folder` first refuses one that would destroy the user's files).
        force: replace an existing folder that holds other files.

    Returns:
        The ``dataset.json`` content.

    Raises:
        DatasetError: every problem found (unknown format or label, missing/unreadable image, an
            image path outside the dataset folder, size mismatch, a polygon with < 3 points, two
            annotation files for one image, a decompression bomb, an empty dataset ...), each with
            its file and fix. Nothing is written then. Warnings (clipped shapes, skipped boxes)
            are kept in ``dataset.json["warnings"]``.
    """
    fmt = normalise_format(cfg.get("format"))
    importer = get_importer(fmt)
    name = cfg.get("name") or "dataset"
    problems = Problems()
    check_output_folder(cfg, out_dir, force)
    out_dir = Path(out_dir)
    with _pixel_limit(cfg.get("max_image_pixels")):
        table = _class_table(cfg, importer, fmt)
        n_max = max([int(c["id"]) for c in table.classes] + [table.ignore_index])
        dtype = np.uint8 if n_max <= 255 else np.uint16
        manifest: dict[str, Any] = {}
        sources_of: dict[str, str] = {}
        seen_image: dict[str, str] = {}
        class_ids = frozenset(int(c["id"]) for c in table.classes)
        oriented: list[str] = []
        workers = max(1, min(4, os.cpu_count() or 1))
        with atomic_dir(out_dir) as tmp, ThreadPoolExecutor(workers) as pool:
            (tmp / "images").mkdir()
            (tmp / "masks").mkdir()
            pending: deque = deque()

            def finish_one() -> None:
                sid, fut = pending.popleft()
                entry, err, orientation = fut.result()
                if err:
                    problems.error(err)
                else:
                    if orientation != 1:
                        oriented.append(entry["source_image"])
                    entry["group"] = _group(cfg, sid)
                    manifest[sid] = entry

            for s in importer.samples({**cfg, "format": fmt}, table, problems):
                if _annotated_twice(s, sources_of, seen_image, problems):
                    continue
                pending.append(
                    (s.id, pool.submit(_write_sample, s, tmp, dtype, class_ids, table.ignore_index))
                )
                while len(pending) > 2 * workers:  # bounded memory: a few masks in flight
                    finish_one()
            while pending:
                finish_one()
            _merge_duplicate_groups(manifest, problems)
            if oriented:
                problems.warn(
                    f"{len(oriented)} image(s) carry an EXIF orientation (first: {oriented[0]}): segbench "
                    "uses every image as displayed, rotated as the tag says, so their masks and "
                    "annotations must match the displayed image (a 180-degree or mirrored mask cannot "
                    "be told apart by its size: check one overlay)"
                )
            problems.errors.extend(table.unknown_problems())
            if not manifest and not problems.errors:
                problems.error(
                    f"{cfg.get('root')}: no images found for dataset.format '{fmt}'; check dataset.root "
                    f"and the format (an empty dataset cannot be trained)"
                )
            if problems.errors:
                raise DatasetError(problems.errors, header=f"cannot convert dataset '{name}'")
            meta = _dataset_meta(cfg, fmt, name, table, dtype, manifest, problems)
            write_dataset(tmp / "dataset.json", meta)
    for w in problems.warnings[:20]:
        print(f"warning: {w}", file=sys.stderr)
    if len(problems.warnings) > 20:
        print(
            f"warning: ... and {len(problems.warnings) - 20} more (dataset.json lists them all)",
            file=sys.stderr,
        )
    return meta
