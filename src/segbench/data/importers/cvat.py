"""CVAT for images 1.1 XML -> canonical masks.

Source layout: ``dataset.root`` with the XML (``dataset.annotations``, default ``annotations.xml`` or
the only ``*.xml``) and the images under ``dataset.images`` (default ``images/``), named as in
``<image name=...>``.

Shapes and how each is drawn (the overlap rule of :mod:`.common`: ascending ``z_order``, then file
order, later over earlier):

* ``polygon``, ``box`` (with ``rotation``, degrees clockwise about its centre): pycocotools polygon
  rasteriser, as CVAT's own mask and COCO exports (through Datumaro) draw them.
* ``ellipse``: ``cv2.ellipse`` with rounded centre and half-axes, as CVAT's COCO export draws it.
* ``polyline``: a line ``dataset.line_width`` px wide (default 10) and ``points``: discs of radius
  ``dataset.point_size`` (default 5), drawn as the LabelMe importer draws linestrips and points, so
  the same annotation gives the same mask from either tool. CVAT's mask export drops both.
* ``mask``: CVAT's own RLE (``rle`` counts, background first, row-major inside ``left, top, width,
  height``).
* ``occluded`` does not change a shape's pixels (CVAT's exports ignore it too); ``skeleton``,
  ``cuboid`` and ``tag`` carry no area and are skipped with a warning.

``<labels>`` in the meta block fix the class list when the config gives none (skeleton labels and
their point children excluded). A CVAT-for-video file (``<track>``) is refused with the fix.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
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
    ellipse_mask_cv2,
    pil_shape_mask,
    polygon_mask_coco,
    rotate_points,
    safe_join,
)

__all__ = ["sources", "labels", "samples", "decode_cvat_rle"]

AREA_SHAPES = ("polygon", "box", "ellipse", "polyline", "points", "mask")
SKIPPED = ("skeleton", "cuboid", "tag")


def _xml_file(cfg: dict[str, Any]) -> Path:
    root = Path(cfg["root"])
    if root.is_file():
        return root
    if not root.is_dir():
        raise DatasetError(
            [f"{root}: dataset root folder not found; set dataset.root to the CVAT export folder"]
        )
    if cfg.get("annotations"):
        p = safe_join(root, cfg["annotations"], root, "dataset.annotations")
        if not p.is_file():
            raise DatasetError(
                [f"{p}: annotation file not found; fix dataset.annotations (relative to {root})"]
            )
        return p
    if (root / "annotations.xml").is_file():
        return root / "annotations.xml"
    xmls = sorted(root.glob("*.xml"))
    if len(xmls) != 1:
        raise DatasetError(
            [
                f"{root}: expected annotations.xml (CVAT for images 1.1 export), found "
                f"{[p.name for p in xmls] or 'no XML'}; set dataset.annotations to the file"
            ]
        )
    return xmls[0]


def _parse(path: Path) -> ET.Element:
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as err:
        raise DatasetError(
            [f"{path}: not readable XML ({err}); re-export the task as 'CVAT for images 1.1'"]
        ) from err
    root = tree.getroot()
    if root.tag != "annotations":
        raise DatasetError(
            [
                f"{path}: not a CVAT XML file (root element <{root.tag}>, expected <annotations>); "
                f"for MIT LabelMe XML use --format labelme-xml"
            ]
        )
    if root.find("track") is not None:
        raise DatasetError(
            [
                f"{path}: a 'CVAT for video' export (it has <track> elements); export the task as "
                f"'CVAT for images 1.1' instead"
            ]
        )
    return root


def _root_dir(cfg: dict[str, Any]) -> Path:
    root = Path(cfg["root"])
    return root.parent if root.is_file() else root


def labels(cfg: dict[str, Any]) -> list[str]:
    """Label names from the meta block, in their order (skeletons and their points left out)."""
    root = _parse(_xml_file(cfg))
    out = []
    for lab in root.iterfind("./meta//labels/label"):
        if (lab.findtext("type") or "") == "skeleton" or lab.findtext("parent"):
            continue
        name = lab.findtext("name") or ""
        if name and name not in out:
            out.append(name)
    if not out:  # no meta: the labels used, in order of appearance
        for el in root.iter():
            name = el.get("label")
            if el.tag in AREA_SHAPES and name and name not in out:
                out.append(name)
    return out


def sources(cfg: dict[str, Any]) -> list[Path]:
    """The XML file and the images it names."""
    xml = _xml_file(cfg)
    out = [xml]
    try:
        base = _root_dir(cfg)
        for im in _parse(xml).iterfind("image"):
            p = safe_join(base, f"{cfg.get('images', 'images')}/{im.get('name', '')}", xml, "image name")
            if p.is_file():
                out.append(p)
    except DatasetError:
        pass
    return out


def decode_cvat_rle(
    counts: str, left: int, top: int, width: int, height: int, img_h: int, img_w: int
) -> np.ndarray:
    """bool[img_h, img_w] of a CVAT mask shape: ``counts`` are run lengths alternating 0 and 1 (0 first),
    row-major inside the ``width`` x ``height`` box at (``left``, ``top``).

    Raises:
        ValueError: the box reaches more than one image side beyond the image (checked before
            anything is allocated), or the runs do not add up to the box area.
    """
    # checked before the box is allocated: at most one image side beyond each edge (as for points,
    # segbench.data.importers.common.check_bounds), so memory stays within 9 images
    if not (
        width > 0
        and height > 0
        and -img_w <= left
        and -img_h <= top
        and left + width <= 2 * img_w
        and top + height <= 2 * img_h
    ):
        raise ValueError(
            f"the mask box (left {left}, top {top}, {width}x{height}) lies far outside the {img_w}x{img_h} "
            "image, a corrupt annotation"
        )
    runs = np.array([int(v) for v in counts.replace(" ", "").split(",") if v != ""], np.int64)
    if runs.sum() != width * height:
        raise ValueError(f"RLE runs sum to {int(runs.sum())}, the box is {width}x{height} = {width * height}")
    values = np.arange(len(runs)) % 2
    box = np.repeat(values.astype(bool), runs).reshape(height, width)
    out = np.zeros((img_h, img_w), bool)
    ys, xs = slice(max(top, 0), min(top + height, img_h)), slice(max(left, 0), min(left + width, img_w))
    out[ys, xs] = box[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]
    return out


def _points(s: str) -> list[tuple[float, float]]:
    pts = []
    for pair in (s or "").split(";"):
        if pair.strip():
            x, y = pair.split(",")
            pts.append((float(x), float(y)))
    return pts


def _shape_fn(
    el: ET.Element, h: int, w: int, line_width: int, point_size: int, where: str, problems: Problems
):
    """A closure drawing one shape, or None (problem recorded)."""
    tag = el.tag
    rotation = float(el.get("rotation", 0) or 0)
    if tag == "polygon":
        pts = _points(el.get("points", ""))
        if len(pts) < 3:
            problems.error(
                f"{where}: a polygon needs at least 3 points, it has {len(pts)}; fix or delete it in CVAT"
            )
            return None
        if check_bounds(pts, h, w, where, problems):
            return None
        flat = [c for p in pts for c in p]
        return lambda: polygon_mask_coco([flat], h, w)
    if tag == "box":
        x0, y0, x1, y1 = (float(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
        pts = rotate_points([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], rotation)
        if check_bounds(pts, h, w, where, problems):
            return None
        flat = [c for p in pts for c in p]
        return lambda: polygon_mask_coco([flat], h, w)
    if tag == "ellipse":
        cx, cy, rx, ry = (float(el.get(k)) for k in ("cx", "cy", "rx", "ry"))
        if check_bounds([(cx - rx, cy - ry), (cx + rx, cy + ry)], h, w, where, problems):
            return None
        return lambda: ellipse_mask_cv2(cx, cy, rx, ry, rotation, h, w)
    if tag == "polyline":
        pts = _points(el.get("points", ""))
        if len(pts) < 2:
            problems.error(
                f"{where}: a polyline needs at least 2 points, it has {len(pts)}; fix or delete it in CVAT"
            )
            return None
        if check_bounds(pts, h, w, where, problems):
            return None
        return lambda: pil_shape_mask("linestrip", pts, h, w, line_width=line_width)
    if tag == "points":
        pts = _points(el.get("points", ""))
        if check_bounds(pts, h, w, where, problems):
            return None
        return lambda: (
            np.logical_or.reduce([pil_shape_mask("point", [p], h, w, point_size=point_size) for p in pts])
            if pts
            else np.zeros((h, w), bool)
        )
    if tag == "mask":
        try:
            left, top, bw, bh = (int(float(el.get(k))) for k in ("left", "top", "width", "height"))
            m = decode_cvat_rle(el.get("rle", ""), left, top, bw, bh, h, w)
        except (TypeError, ValueError) as err:
            problems.error(f"{where}: unreadable mask RLE ({err}); re-export the task from CVAT")
            return None
        return lambda: m
    return None


def samples(cfg: dict[str, Any], table: ClassTable, problems: Problems) -> Iterator[Sample]:
    """Yield one :class:`Sample` per ``<image>`` of the XML."""
    xml = _xml_file(cfg)
    root = _parse(xml)
    base = _root_dir(cfg)
    background = table.require_background("cvat")
    line_width, point_size = int(cfg.get("line_width", 10)), int(cfg.get("point_size", 5))
    for im in root.iterfind("image"):
        name = im.get("name", "")
        try:
            image = safe_join(base, f"{cfg.get('images', 'images')}/{name}", xml, "image name")
            if not image.is_file():
                raise DatasetError(
                    [
                        f"{xml}: image '{name}' not found at {image}; export the task with images, or copy "
                        f"them into {base / cfg.get('images', 'images')} (or set dataset.images)"
                    ]
                )
            with Image.open(image) as pim:
                w, h = displayed_size(pim)
                ah, aw = int(im.get("height", h)), int(im.get("width", w))
                hint = orientation_hint(pim, (aw, ah)) if (ah, aw) != (h, w) else ""
            if (ah, aw) != (h, w):
                raise DatasetError(
                    [
                        f"{xml}: image '{name}' is {w}x{h} but the annotation says {aw}x{ah}; "
                        f"re-export the task or replace the image with the annotated one.{hint}"
                    ]
                )
            painter = ShapePainter(h, w, background)
            for i, el in enumerate(im):
                where = f"{xml} image '{name}' <{el.tag}> #{i} ('{el.get('label', '')}')"
                if el.tag in SKIPPED:
                    if el.tag != "tag":
                        problems.warn(f"{where}: a {el.tag} has no area for a segmentation mask, skipped")
                    continue
                if el.tag not in AREA_SHAPES:
                    problems.warn(f"{where}: unknown element, skipped")
                    continue
                if not el.get("label"):
                    problems.warn(f"{where}: shape without a label, skipped")
                    continue
                value = table.lookup(el.get("label"), str(xml))
                if value is None:
                    continue
                try:
                    fn = _shape_fn(el, h, w, line_width, point_size, where, problems)
                except (TypeError, ValueError) as err:  # a missing or non-numeric coordinate attribute
                    problems.error(f"{where}: malformed coordinates ({err}); re-export the task from CVAT")
                    continue
                if fn is not None:
                    painter.add(float(el.get("z_order", 0) or 0), value, fn)
            sid = "__".join(Path(name).with_suffix("").parts)
            yield Sample(
                id=sid,
                mask=painter.render(),
                source=xml,
                image=image,
                image_ext=image.suffix.lower(),
                subset=im.get("subset") or None,
            )
        except DatasetError as err:
            problems.errors.extend(err.problems)
        except BOMB as err:
            problems.error(
                f"{xml}: image '{name}': {err}; if the image is genuine, raise dataset.max_image_pixels"
            )
        except Exception as err:
            problems.error(f"{xml}: image '{name}' cannot be read ({err}); replace or remove it")
