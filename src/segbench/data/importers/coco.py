"""COCO instances JSON -> canonical masks.

Source layout: ``dataset.root`` with the annotation file(s) (``dataset.annotations``, default every
``annotations/*.json``, else every ``*.json`` in the root) and the images under ``dataset.images``
(default ``images/``; ``images/<subset>/`` is tried too, as Datumaro lays out ``instances_<subset>.json``).

* ``segmentation`` as polygons, uncompressed RLE (``counts`` a list) or compressed RLE (``counts`` a
  string) is decoded by pycocotools; segbench has no RLE code of its own.
* ``iscrowd: 1`` regions are painted with their category (``dataset.crowd: ignore`` paints them as
  ``ignore_index`` instead).
* Category ids may have gaps: classes are matched by category *name*. Without a class list, the
  categories become classes 1..K in ascending category id, after ``background`` = 0.
* Images without annotations become all-background masks. Annotations with an empty segmentation
  (boxes only) are skipped with a warning; ``dataset.empty_segmentation: bbox`` fills their box.
* Overlaps: annotations are painted in file order, later over earlier.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...images import displayed_size, orientation_hint
from ..errors import DatasetError
from .common import (
    BOMB,
    ClassTable,
    Problems,
    Sample,
    ShapePainter,
    check_bounds,
    check_structure,
    polygon_mask_coco,
    safe_join,
)

__all__ = ["sources", "labels", "samples", "is_coco", "annotation_files"]


def is_coco(data: Any) -> bool:
    """True for a parsed COCO instances document (``images``, ``annotations``, ``categories``)."""
    return isinstance(data, dict) and all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    )


def annotation_files(cfg: dict[str, Any]) -> list[Path]:
    """The COCO JSON files of a config (see the module docstring for the defaults)."""
    root = Path(cfg["root"])
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DatasetError(
            [f"{root}: dataset root folder not found; set dataset.root to the COCO dataset folder"]
        )
    given = cfg.get("annotations")
    if given:
        given = [given] if isinstance(given, str) else given
        files = [safe_join(root, g, root, "dataset.annotations") for g in given]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DatasetError(
                [
                    f"{p}: annotation file not found; fix dataset.annotations (relative to {root})"
                    for p in missing
                ]
            )
        return files
    files = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    files = files or sorted(root.glob("*.json"))
    if not files:
        raise DatasetError(
            [
                f"{root}: no COCO JSON found (looked in annotations/*.json and *.json); "
                f"set dataset.annotations to the file"
            ]
        )
    return files


def _root_dir(cfg: dict[str, Any]) -> Path:
    root = Path(cfg["root"])
    return (
        root.parent.parent
        if root.is_file() and root.parent.name == "annotations"
        else (root.parent if root.is_file() else root)
    )


_ID = {"type": ["integer", "string"]}
_INT = {"type": "integer", "minimum": 1}
#: the fields of a COCO instances file segbench reads (https://cocodataset.org/#format-data)
COCO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["images", "annotations", "categories"],
    "properties": {
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "file_name"],
                "properties": {"id": _ID, "file_name": {"type": "string"}, "width": _INT, "height": _INT},
            },
        },
        "categories": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
            },
        },
        "annotations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["image_id", "category_id"],
                "properties": {
                    "image_id": _ID,
                    "category_id": {"type": "integer"},
                    "iscrowd": {"type": ["integer", "boolean"]},
                    "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                    "segmentation": {
                        "anyOf": [
                            {"type": "array", "items": {"type": "array"}},
                            {
                                "type": "object",
                                "required": ["counts"],
                                "properties": {
                                    "size": {"type": "array", "items": _INT, "minItems": 2, "maxItems": 2},
                                    "counts": {"type": ["array", "string"]},
                                },
                            },
                            {"type": "null"},
                        ]
                    },
                },
            },
        },
    },
}


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError([f"{path}: not readable JSON ({err}); fix or remove the file"]) from err
    if not is_coco(data):
        kind = (
            "a LabelMe file (use --format labelme)"
            if isinstance(data, dict) and "shapes" in data
            else "not a COCO instances file (needs 'images', 'annotations' and 'categories' lists)"
        )
        raise DatasetError(
            [
                f"{path}: {kind}; point dataset.annotations at the COCO file or choose the matching "
                "dataset.format"
            ]
        )
    if any(isinstance(a, dict) and "segments_info" in a for a in data["annotations"]):
        raise DatasetError(
            [
                f"{path}: a COCO panoptic file (annotations have segments_info); segbench reads COCO "
                f"instances files: export 'COCO 1.0' (instances) from your tool, or convert the panoptic "
                f"PNGs to index masks and use dataset.format: masks"
            ]
        )
    check_structure(
        path,
        data,
        COCO_SCHEMA,
        "fix the field, or re-export the annotations as COCO 1.0 (instances) from your tool",
    )
    return data


def _subset(path: Path) -> str | None:
    m = re.match(r"^(?:instances|panoptic|person_keypoints)_(.+)$", path.stem)
    name = m.group(1) if m else None
    return None if name in (None, "default") else name


def labels(cfg: dict[str, Any]) -> list[str]:
    """Category names in ascending category id (first file wins on a name clash)."""
    cats: dict[int, str] = {}
    for f in annotation_files(cfg):
        for c in _load(f)["categories"]:
            cats.setdefault(int(c["id"]), str(c["name"]))
    out: list[str] = []
    for _, name in sorted(cats.items()):
        if name not in out:
            out.append(name)
    return out


def _image_file(root: Path, images_dir: str, file_name: str, subset: str | None, ann: Path) -> Path:
    p = safe_join(root, f"{images_dir}/{file_name}", ann, "images[].file_name")
    if not p.is_file() and subset:
        q = safe_join(root, f"{images_dir}/{subset}/{file_name}", ann, "images[].file_name")
        if q.is_file():
            return q
    return p


def sources(cfg: dict[str, Any]) -> list[Path]:
    """The annotation files and the images they list."""
    root = _root_dir(cfg)
    out: list[Path] = []
    for f in annotation_files(cfg):
        out.append(f)
        try:
            data = _load(f)
            for im in data["images"]:
                p = _image_file(root, cfg.get("images", "images"), str(im["file_name"]), _subset(f), f)
                if p.is_file():
                    out.append(p)
        except Exception:  # reported by the conversion
            continue
    return out


def _segmentation_mask(seg: Any, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        return polygon_mask_coco(seg, h, w)
    if isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    m = mask_utils.decode(rle)
    return (m if m.ndim == 2 else m.max(axis=2)).astype(bool)


def _annotations_by_image(
    f: Path, data: dict[str, Any], problems: Problems
) -> dict[Any, list[dict[str, Any]]]:
    """The annotations of each image id; an annotation of an unknown image is an error."""
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    image_ids = {im["id"] for im in data["images"]}
    names: dict[Any, list[str]] = defaultdict(list)
    for im in data["images"]:
        names[im["id"]].append(str(im.get("file_name")))
    for iid, files in names.items():
        if len(files) > 1:  # their annotations would be painted on every one of them
            problems.error(
                f"{f}: image id {iid} is used by {len(files)} entries of 'images' ({', '.join(files[:5])}); "
                "give every image its own id (and its annotations the matching image_id)"
            )
    for a in data["annotations"]:
        if a.get("image_id") not in image_ids:
            problems.error(
                f"{f}: annotation id {a.get('id')} refers to image_id {a.get('image_id')}, which is not "
                f"in 'images'; remove the annotation or add the image entry"
            )
            continue
        by_image[a["image_id"]].append(a)
    return by_image


def _image_of(cfg: dict[str, Any], root: Path, f: Path, im: dict[str, Any], subset: str | None):
    """``(image path, height, width)`` of one ``images[]`` entry.

    Raises:
        DatasetError: the file is missing or its size is not the one the entry states.
    """
    file_name = str(im.get("file_name") or "")
    image = _image_file(root, cfg.get("images", "images"), file_name, subset, f)
    if not image.is_file():
        raise DatasetError(
            [
                f"{f}: image '{file_name}' (id {im['id']}) not found at {image}; copy the images "
                f"into {root / cfg.get('images', 'images')} or set dataset.images"
            ]
        )
    with Image.open(image) as pim:
        w, h = displayed_size(pim)
        ah, aw = int(im.get("height", h)), int(im.get("width", w))
        hint = orientation_hint(pim, (aw, ah)) if (ah, aw) != (h, w) else ""
    if (ah, aw) != (h, w):
        raise DatasetError(
            [
                f"{f}: image '{file_name}' is {w}x{h} but the annotation says "
                f"{im.get('width')}x{im.get('height')}; fix images[].width/height or the image.{hint}"
            ]
        )
    return image, h, w


def rle_string_counts(counts: str | bytes) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string, or None when the string is malformed.

    Mirrors ``rleFrString`` of the COCO API (``pycocotools/common/maskApi.c``): each run is a
    little-endian sequence of 6-bit characters (``chr(value + 48)``, bit 5 = more follows, the last
    chunk's bit 4 = sign), and from the fourth run on it is stored as the difference to the run two
    before. Used only to check that the runs cover the image before pycocotools decodes them: its
    decoder writes as many pixels as the runs say, and with runs that do not add up it returned
    uninitialised memory (pycocotools 2.0.11, a one-character string) instead of failing.
    """
    data = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    out: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                return None  # a run cut off in the middle
            c = data[p] - 48
            if not 0 <= c < 64:
                return None  # a character outside the encoding's alphabet (48..111)
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _shape_problem(seg: Any, where: str, h: int, w: int, problems: Problems) -> bool:
    """Note what is wrong with a non-empty segmentation (polygons or RLE); True when it is unusable."""
    if isinstance(seg, list):
        bad = [p for p in seg if len(p) < 6 or len(p) % 2]
        if bad:
            problems.error(
                f"{where}: a polygon needs at least 3 points (6 numbers), one has "
                f"{len(bad[0])} numbers; delete or fix the annotation"
            )
            return True
        try:
            pts = [(float(p[i]), float(p[i + 1])) for p in seg for i in range(0, len(p), 2)]
        except (TypeError, ValueError):
            problems.error(f"{where}: a polygon coordinate is not a number; fix the annotation")
            return True
        return check_bounds(pts, h, w, where, problems)
    if isinstance(seg, dict):
        size = seg.get("size")
        if size and [int(v) for v in size] != [h, w]:
            problems.error(f"{where}: RLE size {size} differs from the image ({h}, {w}); fix the annotation")
            return True
        counts = seg.get("counts")
        if isinstance(counts, (str, bytes)):  # compressed RLE: decode the runs to check them
            runs = rle_string_counts(counts)
            if runs is None or any(r < 0 for r in runs):
                problems.error(
                    f"{where}: the compressed RLE counts string is malformed (not COCO's run-length "
                    "encoding); re-export the annotation"
                )
                return True
            covered = sum(runs)
        elif isinstance(counts, list):  # uncompressed RLE: the runs must cover the image exactly
            try:
                covered = sum(int(c) for c in counts)
            except (TypeError, ValueError):
                problems.error(f"{where}: RLE counts must be whole numbers; fix the annotation")
                return True
        else:
            problems.error(
                f"{where}: RLE counts must be a list of run lengths or a string; fix the annotation"
            )
            return True
        if covered != h * w:
            problems.error(
                f"{where}: the RLE runs cover {covered} pixels, the {w}x{h} image has {h * w}; "
                "fix the annotation"
            )
            return True
        return False
    problems.error(f"{where}: segmentation is neither polygons nor RLE; fix the annotation")
    return True


def _paint_annotation(
    a: dict[str, Any], where: str, value: int, cfg: dict[str, Any], painter: ShapePainter, problems: Problems
) -> None:
    """Add one annotation's shape (polygons, RLE, or its box when configured) to ``painter``."""
    h, w, seg = painter.height, painter.width, a.get("segmentation")
    if not seg:
        if cfg.get("empty_segmentation", "skip") == "bbox" and a.get("bbox"):
            x, y, bw, bh = map(float, a["bbox"])
            poly = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
            painter.add(0, value, lambda p=poly, h=h, w=w: polygon_mask_coco(p, h, w))
        else:
            problems.warn(
                f"{where}: empty segmentation (a box only), skipped; set "
                f"dataset.empty_segmentation: bbox to fill the box instead"
            )
        return
    if not _shape_problem(seg, where, h, w, problems):
        painter.add(0, value, lambda s=seg, h=h, w=w: _segmentation_mask(s, h, w))


def _image_sample(cfg, root, f, im, subset, annotations, cats, table, background, problems) -> Sample:
    """The :class:`Sample` of one ``images[]`` entry: its annotations painted in file order."""
    image, h, w = _image_of(cfg, root, f, im, subset)
    file_name = str(im.get("file_name") or "")
    crowd_ignore = cfg.get("crowd", "class") == "ignore"
    painter = ShapePainter(h, w, background)
    for a in annotations:
        where = f"{f} annotation id {a.get('id')} (image '{file_name}')"
        name = cats.get(int(a.get("category_id", -1)))
        if name is None:
            problems.error(
                f"{where}: category_id {a.get('category_id')} is not in 'categories'; "
                f"add the category or fix the annotation"
            )
            continue
        value = table.lookup(name, str(f))
        if value is None:
            continue
        if a.get("iscrowd") and crowd_ignore:
            value = table.ignore_index
        _paint_annotation(a, where, value, cfg, painter, problems)
    sid = "__".join(Path(file_name).with_suffix("").parts)
    return Sample(
        id=sid, mask=painter.render(), source=f, image=image, image_ext=image.suffix.lower(), subset=subset
    )


def samples(cfg: dict[str, Any], table: ClassTable, problems: Problems) -> Iterator[Sample]:
    """Yield one :class:`Sample` per COCO image (images without annotations included)."""
    root = _root_dir(cfg)
    background = table.require_background("coco")
    for f in annotation_files(cfg):
        try:
            data = _load(f)
        except DatasetError as err:
            problems.errors.extend(err.problems)
            continue
        subset = _subset(f)
        cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        by_image = _annotations_by_image(f, data, problems)
        for im in data["images"]:
            try:
                yield _image_sample(
                    cfg, root, f, im, subset, by_image.get(im["id"], []), cats, table, background, problems
                )
            except DatasetError as err:
                problems.errors.extend(err.problems)
            except BOMB as err:
                problems.error(
                    f"{f}: image '{im.get('file_name')}': {err}; if the image is genuine, raise "
                    "dataset.max_image_pixels"
                )
            except Exception as err:  # a broken image file
                problems.error(
                    f"{f}: image '{im.get('file_name')}' cannot be read ({err}); replace or remove it"
                )
