"""LabelMe JSON (wkentaro/labelme, versions 3.x to 5.x) -> canonical masks.

Source layout: ``dataset.root`` holds the ``*.json`` files (searched recursively), each with its image
beside it (``imagePath``, relative to the JSON file) or embedded as base64 ``imageData``.

* Shapes: polygon, rectangle, circle, line, linestrip, point and mask, drawn as labelme's own
  ``labelme.utils.shape_to_mask`` draws them (Pillow; ``line_width`` 10 px and ``point_size`` 5 px
  by default, both configurable) in file order, later over earlier, as ``labelme2voc.py`` does.
  Checked pixel for pixel against the PNGs labelme's export wrote (tests/test_importers.py).
* ``group_id`` joins shapes into one instance; a semantic mask does not depend on it (as in labelme's
  class export), so it is read and ignored.
* The image: the embedded ``imageData`` when present (the pixels the annotator saw, written as is),
  else the file at ``imagePath``, which must stay inside ``dataset.root``.
* Classes: a label list (``dataset.classes``, or ``--classes labels.txt`` where ``__ignore__`` is
  the ignore label and ``_background_`` the background) fixes the ids; an unknown label is then an
  error. Without one, the labels found are sorted by name after ``background`` = 0.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
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
    pil_draw_shape,
    pil_shape_mask,
    safe_join,
)

__all__ = ["sources", "labels", "samples", "is_labelme"]

SHAPE_TYPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "mask")


def _files(cfg: dict[str, Any]) -> list[Path]:
    root = Path(cfg["root"])
    if not root.is_dir():
        raise DatasetError(
            [f"{root}: dataset root folder not found; set dataset.root to the folder of LabelMe JSON files"]
        )
    return sorted(
        p for p in root.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def is_labelme(data: Any) -> bool:
    """True for a parsed LabelMe JSON document (a dict with ``shapes`` and ``imagePath``/``imageData``)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("shapes"), list)
        and ("imagePath" in data or "imageData" in data)
    )


_SIZE = {"type": ["integer", "null"], "minimum": 1}
#: the fields of a LabelMe JSON file segbench reads (as labelme's LabelFile writes them)
LABELME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["shapes"],
    "properties": {
        "shapes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["label", "points"],
                "properties": {
                    "label": {"type": ["string", "integer"]},
                    "points": {"type": "array", "items": {"type": "array"}},
                    "shape_type": {"type": ["string", "null"]},
                    "mask": {"type": ["string", "null"]},
                },
            },
        },
        "imagePath": {"type": ["string", "null"]},
        "imageData": {"type": ["string", "null"]},
        "imageHeight": _SIZE,
        "imageWidth": _SIZE,
    },
}


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError([f"{path}: not readable JSON ({err}); fix or remove the file"]) from err
    if not is_labelme(data):
        kind = (
            "a COCO file (use --format coco)"
            if isinstance(data, dict) and "annotations" in data and "images" in data
            else "not a LabelMe file (no 'shapes' and 'imagePath')"
        )
        raise DatasetError(
            [
                f"{path}: {kind}; keep only LabelMe JSON files in dataset.root, or choose the matching "
                f"dataset.format (masks, palette, labelme, labelme-xml, coco, cvat)"
            ]
        )
    check_structure(path, data, LABELME_SCHEMA, "fix the field, or re-save the file in labelme")
    return data


def _image_path(f: Path, root: Path, image_path: str) -> Path:
    """The image a JSON file names, resolved relative to the JSON's folder, never outside ``root``."""
    raw = str(image_path or "").replace("\\", "/")
    if not raw or raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        return safe_join(root, raw, f, "imagePath")  # raises with the fix
    return safe_join(root, str(f.parent.relative_to(root) / raw), f, "imagePath")


def sources(cfg: dict[str, Any]) -> list[Path]:
    """The JSON files and the images they name (when those exist inside the root)."""
    out: list[Path] = []
    root = Path(cfg["root"])
    for f in _files(cfg):
        out.append(f)
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(data, dict) and not data.get("imageData") and data.get("imagePath"):
                p = _image_path(f, root, data["imagePath"])
                if p.is_file():
                    out.append(p)
        except Exception:  # the conversion reports it
            continue
    return out


def labels(cfg: dict[str, Any]) -> list[str]:
    """Every label in the files, sorted by name."""
    found: set[str] = set()
    for f in _files(cfg):
        try:
            found |= {str(s.get("label", "")) for s in _load(f)["shapes"] if s.get("label")}
        except DatasetError:
            continue
    return sorted(found)


def _decode_image_data(b64: str, ann: Path) -> tuple[bytes, str, tuple[int, int]]:
    try:
        raw = base64.b64decode(b64, validate=False)
    except (binascii.Error, ValueError) as err:
        raise DatasetError(
            [
                f"{ann}: imageData is not valid base64 ({err}); re-save the file in labelme, "
                f"or delete imageData and put the image beside the JSON"
            ]
        ) from err
    try:
        with Image.open(io.BytesIO(raw)) as im:
            fmt, size = (im.format or "PNG").lower(), displayed_size(im)
    except BOMB:
        raise
    except Exception as err:
        raise DatasetError(
            [f"{ann}: imageData is not a readable image ({err}); re-save the file in labelme"]
        ) from err
    ext = {"jpeg": ".jpg", "mpo": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")
    return raw, ext, size


def _mask_shape(shape: dict[str, Any], h: int, w: int) -> np.ndarray:
    (x1, y1), _ = shape["points"][:2]
    with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as im:
        sub = np.asarray(im.convert("L")) > 0
    out = np.zeros((h, w), bool)
    x0, y0 = int(math.floor(x1)), int(math.floor(y1))
    ys, xs = slice(max(y0, 0), min(y0 + sub.shape[0], h)), slice(max(x0, 0), min(x0 + sub.shape[1], w))
    out[ys, xs] = sub[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


def _image_of(f: Path, root: Path, data: dict[str, Any]):
    """``(image path or None, embedded image bytes or None, extension, height, width)`` of one file.

    Raises:
        DatasetError: the image is neither embedded nor found, cannot be read, or is not the size the
            annotation states.
    """
    if data.get("imageData"):
        raw, ext, (w, h) = _decode_image_data(data["imageData"], f)
        image, image_bytes = None, raw
    else:
        image = _image_path(f, root, data.get("imagePath"))
        if not image.is_file():
            raise DatasetError(
                [
                    f"{f}: image '{data.get('imagePath')}' not found at {image} and no imageData "
                    f"embedded; put the image beside the JSON or re-save with imageData"
                ]
            )
        image_bytes, ext = None, image.suffix.lower()
        try:
            with Image.open(image) as im:
                w, h = displayed_size(im)
                ah, aw = data.get("imageHeight"), data.get("imageWidth")
                stated = (int(aw), int(ah)) if ah is not None and aw is not None else (w, h)
                hint = orientation_hint(im, stated) if stated != (w, h) else ""
        except BOMB:
            raise
        except (TypeError, ValueError) as err:
            raise DatasetError(
                [f"{f}: imageWidth/imageHeight must be whole numbers ({err}); re-save the file in labelme"]
            ) from err
        except Exception as err:
            raise DatasetError(
                [f"{image}: cannot read image ({err}); replace it or fix imagePath in {f}"]
            ) from err
        if stated != (w, h):
            raise DatasetError(
                [
                    f"{f}: the annotation is for a {stated[0]}x{stated[1]} image but the image is {w}x{h}; "
                    f"re-open the image in labelme and save again, or fix imageWidth/imageHeight.{hint}"
                ]
            )
        return image, image_bytes, ext, h, w
    ah, aw = data.get("imageHeight"), data.get("imageWidth")
    if ah is not None and aw is not None and (int(ah), int(aw)) != (h, w):
        raise DatasetError(
            [
                f"{f}: the annotation is for a {aw}x{ah} image but the image is {w}x{h}; "
                f"re-open the image in labelme and save again, or fix imageWidth/imageHeight"
            ]
        )
    return image, image_bytes, ext, h, w


def _shape_points(s: dict[str, Any], stype: str, where: str, problems: Problems):
    """The shape's points as floats, or None when the shape is unusable (the problem noted)."""
    try:
        pts = [(float(p[0]), float(p[1])) for p in s.get("points") or []]
    except (TypeError, ValueError, IndexError, KeyError):
        problems.error(
            f"{where}: points must be [[x, y], ...] numbers, got {str(s.get('points'))[:80]}; "
            f"fix or delete the shape in labelme"
        )
        return None
    if stype == "mask" and (not s.get("mask") or len(pts) < 2):
        problems.error(
            f"{where}: a mask shape needs 'mask' (base64 PNG) and 2 corner points; re-save it in labelme"
        )
        return None
    if stype == "polygon" and len(pts) < 3:
        problems.error(
            f"{where}: a polygon needs at least 3 points, it has {len(pts)}; "
            f"delete the shape or add points in labelme"
        )
        return None
    return pts


def _paint_shape(
    s: dict[str, Any], where: str, value: int, painter: ShapePainter, cfg: dict[str, Any], problems: Problems
) -> None:
    """Add one LabelMe shape (a known ``shape_type``, labelled) to ``painter``."""
    h, w = painter.height, painter.width
    line_width, point_size = int(cfg.get("line_width", 10)), int(cfg.get("point_size", 5))
    stype = s.get("shape_type") or "polygon"
    pts = _shape_points(s, stype, where, problems)
    if pts is None:
        return
    if stype == "mask":
        painter.add(0, value, lambda s=s, h=h, w=w: _mask_shape(s, h, w))
        return
    if check_bounds(pts, h, w, where, problems):  # before any drawing: NaN or far-away points
        return
    try:  # validate point counts now, so the error names the shape
        pil_shape_mask(stype, pts, 1, 1, line_width, point_size)
    except ValueError as err:
        problems.error(f"{where}: {err}; fix the shape in labelme")
        return
    painter.add_pil(
        0,
        value,
        lambda draw, fill, t=stype, p=pts: pil_draw_shape(draw, t, p, fill, line_width, point_size),
    )


def samples(cfg: dict[str, Any], table: ClassTable, problems: Problems) -> Iterator[Sample]:
    """Yield one :class:`Sample` per LabelMe JSON file."""
    root = Path(cfg["root"])
    files = _files(cfg)
    background = table.require_background("labelme")
    for f in files:
        try:
            data = _load(f)
            sid = "__".join(f.relative_to(root).with_suffix("").parts)
            image, image_bytes, ext, h, w = _image_of(f, root, data)
            painter = ShapePainter(h, w, background)
            for i, s in enumerate(data["shapes"]):
                where = f"{f} shape {i} ('{s.get('label', '')}')"
                stype = s.get("shape_type") or "polygon"
                if stype not in SHAPE_TYPES:
                    problems.error(
                        f"{where}: shape_type '{stype}' is unknown (known: {', '.join(SHAPE_TYPES)}); "
                        f"change or delete the shape"
                    )
                    continue
                if not s.get("label"):
                    problems.warn(f"{where}: shape without a label, skipped")
                    continue
                value = table.lookup(s["label"], str(f))
                if value is not None:
                    _paint_shape(s, where, value, painter, cfg, problems)
            yield Sample(
                id=sid,
                mask=painter.render(),
                source=f,
                image=image,
                image_bytes=image_bytes,
                image_ext=ext,
                subset=cfg.get("subset"),
            )
        except DatasetError as err:
            problems.errors.extend(err.problems)
        except BOMB as err:
            problems.error(f"{f}: {err}; if the image is genuine, raise dataset.max_image_pixels")
