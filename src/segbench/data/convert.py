"""Importers: raw annotations -> the canonical dataset of DESIGN.md section 3.

Canonical layout (``data/processed/<dataset>/``)::

    images/<id>.<ext>   the original image bytes (copied, never re-encoded)
    masks/<id>.png      single-channel class indices, uint8 (uint16 when > 255 classes)
    dataset.json        name, classes [{id, name, color}], ignore_index, background, source format,
                        licence, and manifest {id: {image, mask, image_sha256, mask_sha256,
                        height, width, group, subset}}

The output folder is built in a temporary folder and renamed into place, so a failed conversion
leaves nothing half-written; the raw data is only read.

The mask-folder importer pairs ``<image_prefix><id><image_suffix>`` in an image folder with
``<mask_prefix><id><mask_suffix>`` in a mask folder, as the SegmentationManager seed tool does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io import atomic_dir, atomic_write_json, sha256_file

__all__ = ["DatasetError", "convert", "list_sources", "pair_mask_folder", "remap_mask"]

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


class DatasetError(ValueError):
    """A problem with the user's data; the message lists each file with its problem and the fix."""

    def __init__(self, problems: list[str], header: str = "dataset problems"):
        self.problems = problems
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{header} ({len(problems)}):\n  " + "\n  ".join(shown) + more)


def _strip(name: str, prefix: str, suffix: str) -> str | None:
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
        return name[len(prefix) : len(name) - len(suffix)]
    return None


def pair_mask_folder(cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Pair images with masks for a ``mask_folder`` dataset config.

    Returns:
        ``(items, problems)``: items ``{id, image: Path, mask: Path, subset}`` sorted by id, and a list
        of problems (unpaired files, duplicate ids, missing folders), each naming the file and the fix.
    """
    root = Path(cfg["root"])
    items: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if not root.is_dir():
        return [], [f"{root}: dataset root folder not found; set dataset.root (or SEGBENCH_SHARED) to the folder holding your data"]
    for pair in cfg.get("pairs") or [{"images": "images", "masks": "masks"}]:
        img_dir, mask_dir = root / pair["images"], root / pair["masks"]
        for d, key in ((img_dir, "images"), (mask_dir, "masks")):
            if not d.is_dir():
                problems.append(f"{d}: folder not found; fix dataset.pairs[].{key} (relative to {root})")
        if not img_dir.is_dir() or not mask_dir.is_dir():
            continue
        images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            sid = _strip(p.name, cfg.get("image_prefix", ""), cfg.get("image_suffix", ""))
            if sid is None:
                continue
            if p.suffix.lower() not in IMAGE_EXTS:
                problems.append(f"{p}: not an image type segbench reads ({', '.join(sorted(IMAGE_EXTS))}); remove it or change dataset.image_suffix")
                continue
            images[sid] = p
        masks: dict[str, Path] = {}
        for p in sorted(mask_dir.iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            sid = _strip(p.name, cfg.get("mask_prefix", ""), cfg.get("mask_suffix", ""))
            if sid is not None:
                masks[sid] = p
        for sid in sorted(set(images) - set(masks)):
            problems.append(
                f"{images[sid]}: no mask '{cfg.get('mask_prefix', '')}{sid}{cfg.get('mask_suffix', '')}' in {mask_dir}; "
                f"add the mask, remove the image, or fix dataset.mask_prefix/mask_suffix"
            )
        for sid in sorted(set(masks) - set(images)):
            problems.append(
                f"{masks[sid]}: no image '{cfg.get('image_prefix', '')}{sid}{cfg.get('image_suffix', '')}' in {img_dir}; "
                f"add the image, remove the mask, or fix dataset.image_prefix/image_suffix"
            )
        for sid in sorted(set(images) & set(masks)):
            if sid in items:
                problems.append(f"{images[sid]}: id '{sid}' also at {items[sid]['image']}; ids must be unique across dataset.pairs, rename one")
                continue
            items[sid] = {"id": sid, "image": images[sid], "mask": masks[sid], "subset": pair.get("subset")}
    if not items and not problems:
        problems.append(f"{root}: no image/mask pairs found; check dataset.pairs, prefixes and suffixes")
    return [items[k] for k in sorted(items)], problems


def list_sources(cfg: dict[str, Any]) -> list[str]:
    """The raw files a dataset config reads (images and masks), for the workflow's convert rule."""
    items, _ = pair_mask_folder(cfg)
    return [str(p) for it in items for p in (it["image"], it["mask"])]


def remap_mask(mask: np.ndarray, value_map: dict[Any, int] | None) -> np.ndarray:
    """Apply ``{raw value: canonical value}`` to an integer mask (keys may be strings from YAML/JSON)."""
    if not value_map:
        return mask
    out = mask.astype(np.int64, copy=True)
    for raw, new in value_map.items():
        out[mask == int(raw)] = int(new)
    return out


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16", "1"):
            raise DatasetError(
                [f"{path}: mask has {im.mode} pixels, expected single-channel class indices (mode L, P or I;16); "
                 f"convert RGB colour masks with a palette (see the annotation conversion docs)"]
            )
        return np.asarray(im).astype(np.int64)


def _group(cfg: dict[str, Any], sid: str) -> str:
    rx = cfg.get("group_regex")
    if not rx:
        return sid
    m = re.search(rx, sid)
    if not m:
        raise DatasetError([f"id '{sid}': dataset.group_regex '{rx}' does not match it; fix the regex or rename the file"])
    return m.group(1) if m.groups() else m.group(0)


def convert(cfg: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Build the canonical dataset from a ``mask_folder`` dataset config.

    Args:
        cfg: the ``dataset`` section of the config (root, pairs, prefixes/suffixes, classes,
            ignore_index, mask_value_map, group_regex ...).
        out_dir: ``data/processed/<dataset>``; replaced atomically when the conversion succeeds.

    Returns:
        The ``dataset.json`` content.

    Raises:
        DatasetError: unpaired or duplicate files, unreadable images or masks, masks that are not
            single-channel; every problem is listed with its file and fix. Nothing is written then.
    """
    if cfg.get("format", "mask_folder") != "mask_folder":
        raise DatasetError([f"dataset.format '{cfg.get('format')}' has no importer yet; allowed values: mask_folder"])
    items, problems = pair_mask_folder(cfg)
    if problems:
        raise DatasetError(problems, header=f"cannot convert dataset '{cfg['name']}'")
    n_classes = len(cfg["classes"])
    dtype = np.uint8 if max(n_classes, cfg["ignore_index"]) <= 255 else np.uint16
    manifest: dict[str, Any] = {}
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for it in items:
            sid = it["id"]
            try:
                with Image.open(it["image"]) as im:
                    width, height = im.size
            except Exception as err:  # PIL raises many types for broken files
                problems.append(f"{it['image']}: cannot read image ({err}); replace or remove it")
                continue
            try:
                mask = remap_mask(_read_mask(it["mask"]), cfg.get("mask_value_map"))
            except DatasetError as err:
                problems.extend(err.problems)
                continue
            except Exception as err:
                problems.append(f"{it['mask']}: cannot read mask ({err}); replace or remove it")
                continue
            if mask.shape != (height, width):
                problems.append(
                    f"{it['mask']}: mask is {mask.shape[1]}x{mask.shape[0]} but image {it['image'].name} is "
                    f"{width}x{height}; masks must have the image's width and height"
                )
                continue
            img_name = f"{sid}{it['image'].suffix.lower()}"
            shutil.copyfile(it["image"], tmp / "images" / img_name)
            Image.fromarray(mask.astype(dtype)).save(tmp / "masks" / f"{sid}.png")
            manifest[sid] = {
                "image": f"images/{img_name}",
                "mask": f"masks/{sid}.png",
                "image_sha256": sha256_file(tmp / "images" / img_name),
                "mask_sha256": sha256_file(tmp / "masks" / f"{sid}.png"),
                "height": height,
                "width": width,
                "group": _group(cfg, sid),
                "subset": it["subset"],
                "source_image": str(it["image"]),
                "source_mask": str(it["mask"]),
            }
        if problems:
            raise DatasetError(problems, header=f"cannot convert dataset '{cfg['name']}'")
        meta = {
            "name": cfg["name"],
            "format_version": 1,
            "source_format": cfg.get("format", "mask_folder"),
            "source_root": str(cfg["root"]),
            "licence": cfg.get("licence"),
            "classes": [{"id": c["id"], "name": c["name"], "color": c.get("color")} for c in cfg["classes"]],
            "ignore_index": cfg["ignore_index"],
            "background": cfg.get("background"),
            "mask_dtype": np.dtype(dtype).name,
            "num_images": len(manifest),
            "manifest": manifest,
        }
        atomic_write_json(tmp / "dataset.json", meta)
    return meta
