"""The original LabelMe XML (MIT CSAIL LabelMe web tool, as also written by Datumaro and CVAT's
"LabelMe 3.0" export) -> canonical masks.

Source layout: ``dataset.root`` with one ``<image>.xml`` per image, the image beside it (``<filename>``,
inside ``<folder>`` when that folder exists under the root) and the masks in ``Masks/``.

* ``<polygon>`` objects (and ``<type>bounding_box</type>`` boxes, stored as 4-point polygons) are drawn
  by pycocotools' polygon rasteriser, as CVAT/Datumaro draw the same shapes, so a LabelMe 3.0 export
  of a CVAT task gives the CVAT import's masks.
* ``<segm><mask>`` objects read ``Masks/<mask>``: a full-size image whose non-black pixels (any
  colour channel >= 128) are the object. Scribbles are ignored.
* ``<deleted>1</deleted>`` objects are skipped; parts (``hasparts``/``ispartof``) are ordinary objects.
* Objects are painted in file order, later over earlier.
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
    polygon_mask_coco,
    safe_join,
)

__all__ = ["sources", "labels", "samples"]


def _files(cfg: dict[str, Any]) -> list[Path]:
    root = Path(cfg["root"])
    if not root.is_dir():
        raise DatasetError(
            [f"{root}: dataset root folder not found; set dataset.root to the folder of LabelMe XML files"]
        )
    return sorted(p for p in root.glob("*.xml"))


def _parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise DatasetError([f"{path}: not readable XML ({err}); fix or remove the file"]) from err
    if root.tag != "annotation":
        raise DatasetError(
            [
                f"{path}: not a LabelMe XML file (root <{root.tag}>, expected <annotation>); "
                f"for CVAT exports use --format cvat"
            ]
        )
    return root


def labels(cfg: dict[str, Any]) -> list[str]:
    """Object names found, sorted."""
    found: set[str] = set()
    for f in _files(cfg):
        try:
            found |= {(o.findtext("name") or "").strip() for o in _parse(f).iterfind("object")}
        except DatasetError:
            continue
    return sorted(n for n in found if n)


def _image_path(root: Path, xml: Path, ann: ET.Element) -> Path:
    name = (ann.findtext("filename") or "").strip()
    folder = (ann.findtext("folder") or "").strip()
    if folder and (root / folder).is_dir():
        return safe_join(root, f"{folder}/{name}", xml, "<filename>")
    return safe_join(root, name, xml, "<filename>")


def sources(cfg: dict[str, Any]) -> list[Path]:
    """The XML files, their images and masks."""
    root = Path(cfg["root"])
    out: list[Path] = []
    for f in _files(cfg):
        out.append(f)
        try:
            ann = _parse(f)
            p = _image_path(root, f, ann)
            if p.is_file():
                out.append(p)
            for m in ann.iterfind("object/segm/mask"):
                q = safe_join(root, f"Masks/{(m.text or '').strip()}", f, "<mask>")
                if q.is_file():
                    out.append(q)
        except DatasetError:
            continue
    return out


def _mask_file(path: Path, h: int, w: int) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB") if im.mode not in ("L", "1") else im.convert("L"))
    if a.shape[:2] != (h, w):
        raise DatasetError(
            [
                f"{path}: mask is {a.shape[1]}x{a.shape[0]} but its image is {w}x{h}; LabelMe masks "
                f"must have the image's size"
            ]
        )
    return (a.max(axis=2) if a.ndim == 3 else a) >= 128


def _paint_object(
    obj, where: str, value: int, root: Path, f: Path, painter: ShapePainter, problems: Problems
):
    """Add one ``<object>``'s polygon or ``Masks/`` file to ``painter`` (a problem noted when unusable).

    Raises:
        TypeError, ValueError: a point coordinate is missing or not a number (a malformed file).
    """
    h, w = painter.height, painter.width
    poly = obj.find("polygon")
    mask_el = obj.find("segm/mask")
    if poly is not None:
        pts = [(float(pt.findtext("x")), float(pt.findtext("y"))) for pt in poly.iterfind("pt")]
        if len(pts) < 3:
            problems.error(f"{where}: a polygon needs at least 3 points, it has {len(pts)}; fix or delete it")
            return
        if check_bounds(pts, h, w, where, problems):
            return
        flat = [c for p in pts for c in p]
        painter.add(0, value, lambda fl=flat, h=h, w=w: polygon_mask_coco([fl], h, w))
    elif mask_el is not None:
        mpath = safe_join(root, f"Masks/{(mask_el.text or '').strip()}", f, "<mask>")
        if not mpath.is_file():
            problems.error(
                f"{where}: mask file {mpath} not found; copy the Masks/ folder beside the XML files"
            )
            return
        m = _mask_file(mpath, h, w)
        painter.add(0, value, lambda m=m, h=h, w=w: m)
    else:
        problems.warn(f"{where}: object with neither polygon nor mask, skipped")


def samples(cfg: dict[str, Any], table: ClassTable, problems: Problems) -> Iterator[Sample]:
    """Yield one :class:`Sample` per XML file."""
    root = Path(cfg["root"])
    background = table.require_background("labelme-xml")
    for f in _files(cfg):
        try:
            ann = _parse(f)
            image = _image_path(root, f, ann)
            if not image.is_file():
                raise DatasetError(
                    [
                        f"{f}: image '{ann.findtext('filename')}' not found at {image}; put the image "
                        f"beside the XML"
                    ]
                )
            nrows, ncols = ann.findtext("imagesize/nrows"), ann.findtext("imagesize/ncols")
            with Image.open(image) as pim:
                w, h = displayed_size(pim)
                stated = (int(ncols), int(nrows)) if nrows and ncols else (w, h)
                hint = orientation_hint(pim, stated) if stated != (w, h) else ""
            if stated != (w, h):
                raise DatasetError(
                    [
                        f"{f}: the annotation is for a {ncols}x{nrows} image but {image.name} is {w}x{h}; "
                        f"fix <imagesize> or use the annotated image.{hint}"
                    ]
                )
            painter = ShapePainter(h, w, background)
            for i, obj in enumerate(ann.iterfind("object")):
                name = (obj.findtext("name") or "").strip()
                where = f"{f} object {i} ('{name}')"
                if (obj.findtext("deleted") or "0").strip() == "1":
                    continue
                if not name:
                    problems.warn(f"{where}: object without a name, skipped")
                    continue
                value = table.lookup(name, str(f))
                if value is None:
                    continue
                _paint_object(obj, where, value, root, f, painter, problems)
            yield Sample(
                id=f.stem,
                mask=painter.render(),
                source=f,
                image=image,
                image_ext=image.suffix.lower(),
                subset=cfg.get("subset"),
            )
        except DatasetError as err:
            problems.errors.extend(err.problems)
        except BOMB as err:
            problems.error(f"{f}: {err}; if the image is genuine, raise dataset.max_image_pixels")
        except (TypeError, ValueError) as err:
            problems.error(f"{f}: malformed LabelMe XML ({err}); fix or remove the file")
        except Exception as err:  # a broken image or mask file
            problems.error(f"{f}: cannot read its image or mask ({err}); replace or remove it")
