"""Folders of mask images: index masks, 0/255 binary masks (format ``masks``) and RGB colour masks
(format ``palette``).

Pairing: ``<image_prefix><id><image_suffix>`` in an image folder with ``<mask_prefix><id><mask_suffix>``
in a mask folder (``dataset.pairs``), as the SegmentationManager seed tool pairs them.

* ``masks``: single-channel class indices (mode L, P, I;16). ``mask_value_map`` renames raw values
  (CamVid's 11 -> 255 = ignore). ``mask_encoding: binary`` (or ``auto``, the default, when the dataset
  has exactly two classes and no mask holds a value other than 0 and 255) reads 0/255 masks as
  classes 0 and 1, so a foreground stored as 255 is not silently taken for ``ignore_index``.
* ``palette``: RGB(A) colour masks; each colour maps to a class through ``dataset.palette``
  (``{"#rrggbb" or "r,g,b": class id}``) or, by default, the classes' ``color``. A palette PNG
  (mode P) is read as its indices, and its own palette gives the class colours when the config has none.
  ``ignore_colors`` lists colours painted as ``ignore_index``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...images import IMAGE_EXTS, LOSSY_MASK_EXTS
from ..errors import DatasetError
from .common import ClassTable, Problems, Sample

__all__ = ["pair_mask_folder", "remap_mask", "sources", "labels", "samples", "parse_color", "IMAGE_EXTS"]


def _strip(name: str, prefix: str, suffix: str) -> str | None:
    if not suffix:  # no suffix configured: the id is the name without its extension
        name = Path(name).stem
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
        return name[len(prefix) : len(name) - len(suffix)]
    return None


def _files_by_id(
    folder: Path, prefix: str, suffix: str, problems: list[str], images: bool = False
) -> tuple[dict[str, Path], set[str]]:
    """``{id: file}`` of the files in ``folder`` named ``<prefix><id><suffix>`` (hidden files left out).

    Two files with one id (``a.png`` and ``a.jpg``) are a problem noted in ``problems``, and the id is
    left out (returned in the second element) rather than one file silently winning. For the images
    folder (``images``), a file that is not an image type segbench reads is noted there and left out.
    """
    found: dict[str, Path] = {}
    twice: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        sid = _strip(p.name, prefix, suffix)
        if sid is None:
            continue
        if images and p.suffix.lower() not in IMAGE_EXTS:
            problems.append(
                f"{p}: not an image type segbench reads ({', '.join(sorted(IMAGE_EXTS))}); remove it or "
                "change dataset.image_suffix"
            )
            continue
        if sid in found:
            twice.setdefault(sid, [found[sid]]).append(p)
            continue
        found[sid] = p
    key = "image_suffix" if images else "mask_suffix"
    for sid, files in twice.items():
        del found[sid]
        problems.append(
            f"{files[0]}: {len(files)} files have the id '{sid}' ({', '.join(f.name for f in files)}), "
            f"so which one belongs to the pair is ambiguous; keep one, or set dataset.{key} "
            "(e.g. '.png') to choose"
        )
    return found, set(twice)


def pair_mask_folder(cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Pair images with masks for a ``masks``/``palette`` dataset config.

    Returns:
        ``(items, problems)``: items ``{id, image: Path, mask: Path, subset}`` sorted by id, and a list
        of problems (unpaired files, duplicate ids, missing folders), each naming the file and the fix.
    """
    root = Path(cfg["root"])
    items: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if not root.is_dir():
        return [], [
            f"{root}: dataset root folder not found; set dataset.root (or SEGBENCH_SHARED) to the folder "
            "holding your data"
        ]
    for pair in cfg.get("pairs") or [{"images": "images", "masks": "masks"}]:
        img_dir, mask_dir = root / pair["images"], root / pair["masks"]
        for d, key in ((img_dir, "images"), (mask_dir, "masks")):
            if not d.is_dir():
                problems.append(f"{d}: folder not found; fix dataset.pairs[].{key} (relative to {root})")
        if not img_dir.is_dir() or not mask_dir.is_dir():
            continue
        images, twice = _files_by_id(
            img_dir, cfg.get("image_prefix", ""), cfg.get("image_suffix", ""), problems, images=True
        )
        masks, twice_m = _files_by_id(
            mask_dir, cfg.get("mask_prefix", ""), cfg.get("mask_suffix", ""), problems
        )
        twice |= twice_m
        images = {k: v for k, v in images.items() if k not in twice}
        masks = {k: v for k, v in masks.items() if k not in twice}
        for sid in sorted(set(images) - set(masks)):
            problems.append(
                f"{images[sid]}: no mask '{cfg.get('mask_prefix', '')}{sid}{cfg.get('mask_suffix', '')}' in "
                f"{mask_dir}; add the mask, remove the image, or fix dataset.mask_prefix/mask_suffix"
            )
        for sid in sorted(set(masks) - set(images)):
            problems.append(
                f"{masks[sid]}: no image '{cfg.get('image_prefix', '')}{sid}{cfg.get('image_suffix', '')}' "
                f"in {img_dir}; add the image, remove the mask, or fix dataset.image_prefix/image_suffix"
            )
        for sid in sorted(set(images) & set(masks)):
            if sid in items:
                problems.append(
                    f"{images[sid]}: id '{sid}' also at {items[sid]['image']}; ids must be unique across "
                    "dataset.pairs, rename one"
                )
                continue
            items[sid] = {"id": sid, "image": images[sid], "mask": masks[sid], "subset": pair.get("subset")}
    if not items and not problems:
        problems.append(f"{root}: no image/mask pairs found; check dataset.pairs, prefixes and suffixes")
    return [items[k] for k in sorted(items)], problems


def sources(cfg: dict[str, Any]) -> list[Path]:
    """The raw files this config reads (images and masks)."""
    items, _ = pair_mask_folder(cfg)
    return [p for it in items for p in (it["image"], it["mask"])]


def labels(cfg: dict[str, Any]) -> list[str] | None:
    """Mask folders carry no label names: the config's ``classes`` are required."""
    return None


def remap_mask(mask: np.ndarray, value_map: dict[Any, int] | None) -> np.ndarray:
    """Apply ``{raw value: canonical value}`` to an integer mask (keys may be strings from YAML/JSON)."""
    if not value_map:
        return mask
    out = mask.astype(np.int64, copy=True)
    for raw, new in value_map.items():
        out[mask == int(raw)] = int(new)
    return out


def _one_frame(im: Image.Image, path: Path) -> None:
    """Refuse a multi-page file (a TIFF stack): which page is the mask would be a guess."""
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        raise DatasetError(
            [
                f"{path}: a multi-page file ({frames} pages); a mask is one page: save each page as its "
                "own file"
            ]
        )


def _read_index_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        _one_frame(im, path)
        if im.mode not in ("L", "P", "I", "I;16", "1"):
            raise DatasetError(
                [
                    f"{path}: mask has {im.mode} pixels, expected single-channel class indices (mode L, P or "
                    "I;16); for RGB colour masks use dataset.format: palette with the class colours"
                ]
            )
        return np.asarray(im).astype(np.int64)


def parse_color(value: Any) -> tuple[int, int, int]:
    """``"#rrggbb"``, ``"r,g,b"`` or ``[r, g, b]`` -> ``(r, g, b)``.

    >>> parse_color("#ff8000"), parse_color("1, 2, 3"), parse_color([4, 5, 6])
    ((255, 128, 0), (1, 2, 3), (4, 5, 6))
    """
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("#") and len(s) == 7:
            return int(s[1:3], 16), int(s[3:5], 16), int(s[5:7], 16)
        parts = [p for p in s.replace("(", "").replace(")", "").split(",") if p.strip()]
        if len(parts) == 3:
            return tuple(int(p) for p in parts)  # type: ignore[return-value]
    elif isinstance(value, (list, tuple)) and len(value) == 3:
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    raise DatasetError([f"colour {value!r}: write it as '#rrggbb', 'r,g,b' or [r, g, b]"])


def _colour_table(cfg: dict[str, Any], table: ClassTable) -> dict[tuple[int, int, int], int]:
    out: dict[tuple[int, int, int], int] = {}
    if cfg.get("palette"):
        for colour, cid in cfg["palette"].items():
            out[parse_color(colour)] = int(cid)
    else:
        for c in table.classes:
            if c.get("color") is not None:
                out[parse_color(c["color"])] = int(c["id"])
    for colour in cfg.get("ignore_colors") or []:
        out[parse_color(colour)] = table.ignore_index
    return out


def _read_palette_mask(
    path: Path, colours: dict[tuple[int, int, int], int], palettes: dict[int, tuple[int, int, int]]
) -> np.ndarray:
    with Image.open(path) as im:
        _one_frame(im, path)
        if im.mode == "P":
            pal = im.getpalette() or []
            for i in range(len(pal) // 3):
                palettes.setdefault(i, tuple(pal[3 * i : 3 * i + 3]))  # type: ignore[arg-type]
            return np.asarray(im).astype(np.int64)
        if im.mode not in ("RGB", "RGBA"):
            raise DatasetError(
                [
                    f"{path}: palette masks must be RGB or palette PNG (mode P), not {im.mode}; "
                    f"for index masks use dataset.format: masks"
                ]
            )
        rgb = np.asarray(im.convert("RGB"))
    if not colours:
        raise DatasetError(
            [
                f"{path}: an RGB colour mask needs a colour -> class table: give each class a 'color' "
                f"or set dataset.palette"
            ]
        )
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], np.int64)
    vals = np.array(list(colours.values()), np.int64)
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    idx = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    hit = keys[idx] == code
    if not hit.all():
        uniq, counts = np.unique(code[~hit], return_counts=True)
        top = sorted(zip(counts.tolist(), uniq.tolist()), reverse=True)[:5]
        listed = ", ".join(f"#{c:06x} ({n} px)" for n, c in top)
        raise DatasetError(
            [
                f"{path}: colour(s) {listed} are not in the colour table; add them to the classes' colours "
                f"or dataset.palette, or list them in dataset.ignore_colors (anti-aliased edges mean "
                f"the mask was saved with smoothing: export it without)"
            ]
        )
    return vals[idx]


def _reads_binary(
    cfg: dict[str, Any], items: list[dict[str, Any]], table: ClassTable, problems: Problems
) -> bool:
    """Whether 0/255 masks are read as classes 0 and 1: ``mask_encoding: binary``, or ``auto`` with two
    classes, no ``mask_value_map`` and no mask holding a value other than 0 and 255 (said in a warning)."""
    encoding = cfg.get("mask_encoding", "auto")
    if (
        cfg.get("format", "masks") == "palette"
        or encoding not in ("binary", "auto")
        or cfg.get("mask_value_map")
    ):
        return False
    if encoding == "binary":
        return True
    if len(table.classes) != 2:
        return False
    seen: set[int] = set()
    for it in items:
        try:
            seen |= set(np.unique(_read_index_mask(it["mask"])).tolist())
        except Exception:
            break  # the conversion pass reports the unreadable file
    binary = 255 in seen and seen <= {0, 255}
    if binary:
        problems.warn(
            f"{cfg.get('root')}: masks hold only 0 and 255 and the dataset has 2 classes: read as binary "
            f"masks, 255 -> class 1 (set dataset.mask_encoding: index to keep 255 as ignore_index)"
        )
    return binary


def _check_lossy(cfg: dict[str, Any], items: list[dict[str, Any]], problems: Problems) -> None:
    """Refuse JPEG masks (their compression invents class values at edges), except 0/255 masks read
    with ``mask_encoding: binary``, which thresholds them at 128 (said in a warning)."""
    lossy = [it["mask"] for it in items if it["mask"].suffix.lower() in LOSSY_MASK_EXTS]
    if not lossy:
        return
    if cfg.get("format", "masks") == "palette" or cfg.get("mask_encoding", "auto") != "binary":
        raise DatasetError(
            [
                f"{p}: a JPEG mask: lossy compression smears class values at edges, so pixels would get "
                "classes nobody drew; export the masks as PNG (lossless). For 0/255 binary masks, "
                "dataset.mask_encoding: binary reads them thresholded at 128"
                for p in lossy[:20]
            ]
            + ([f"... and {len(lossy) - 20} more JPEG masks"] if len(lossy) > 20 else []),
            header=f"cannot convert dataset '{cfg['name']}'",
        )
    problems.warn(
        f"{lossy[0]}: {len(lossy)} JPEG (lossy) mask(s) read as binary masks thresholded at 128 "
        "(dataset.mask_encoding: binary); PNG masks avoid the smeared edges"
    )


def samples(cfg: dict[str, Any], table: ClassTable, problems: Problems) -> Iterator[Sample]:
    """Yield one :class:`Sample` per image/mask pair (``masks`` and ``palette`` formats)."""
    items, errs = pair_mask_folder(cfg)
    if errs:
        raise DatasetError(errs, header=f"cannot convert dataset '{cfg['name']}'")
    fmt = cfg.get("format", "masks")
    encoding = cfg.get("mask_encoding", "auto")
    binary = _reads_binary(cfg, items, table, problems)
    _check_lossy(cfg, items, problems)
    colours = _colour_table(cfg, table) if fmt == "palette" else {}
    palettes: dict[int, tuple[int, int, int]] = {}
    for it in items:
        try:
            if fmt == "palette":
                mask = _read_palette_mask(it["mask"], colours, palettes)
            else:
                mask = remap_mask(_read_index_mask(it["mask"]), cfg.get("mask_value_map"))
                if binary:
                    mask = (
                        np.where(mask >= 128, 1, 0)
                        if encoding == "binary"
                        else np.where(mask == 255, 1, mask)
                    )
        except DatasetError as err:
            problems.errors.extend(err.problems)
            continue
        except Exception as err:
            problems.error(f"{it['mask']}: cannot read mask ({err}); replace or remove it")
            continue
        yield Sample(id=it["id"], mask=mask, source=it["mask"], image=it["image"], subset=it["subset"])
    for c in table.classes:
        if c.get("color") is None and int(c["id"]) in palettes:
            c["color"] = list(palettes[int(c["id"])])
