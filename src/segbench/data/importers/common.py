"""What every importer shares: the class table, the sample record, safe paths and the rasterisers.

Overlap rule (every shape format): shapes are painted in ascending ``z_order`` (CVAT; 0 elsewhere),
ties in file order, each later shape over the earlier ones, as labelme's ``shapes_to_label`` and
CVAT's mask export do. Pixels covered by no shape are the background class; shapes whose label is
declared ``ignore`` paint ``ignore_index``.

Rasterisation follows the tool that wrote the file, so our masks equal the tool's own exports:

* LabelMe JSON: Pillow ``ImageDraw`` exactly as ``labelme.utils.shape_to_mask`` (polygon with outline,
  rectangle, circle, line/linestrip of ``line_width`` 10 px, point as a disc of radius ``point_size`` 5).
* COCO, CVAT and LabelMe XML polygons and boxes: pycocotools' polygon rasteriser
  (``frPyObjects`` + ``decode``), which Datumaro, and so CVAT's own COCO and mask exports, use.
* CVAT ellipses: OpenCV ``cv2.ellipse`` filled, centre and half-axes rounded to integers, as CVAT
  rasterises them for its COCO export (checked pixel for pixel against that export).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DatasetError

__all__ = [
    "BACKGROUND_NAMES",
    "IGNORE_NAMES",
    "ClassTable",
    "Sample",
    "Problems",
    "ShapePainter",
    "BOMB",
    "read_class_file",
    "safe_join",
    "polygon_mask_coco",
    "ellipse_mask_cv2",
    "pil_draw_shape",
    "pil_shape_mask",
    "check_bounds",
    "rotate_points",
    "check_structure",
]

BACKGROUND_NAMES = ("_background_", "background", "__background__")
#: Pillow's decompression-bomb guard: the warning (above ``Image.MAX_IMAGE_PIXELS``) is raised as an
#: error during conversion, the error (above twice that) always is.
BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)
IGNORE_NAMES = ("__ignore__",)


@dataclass
class Sample:
    """One image and its canonical mask, as an importer yields it.

    Attributes:
        id: the canonical id (file stem; sub-folders joined with ``__``).
        mask: integer [H, W] class ids (``ignore_index`` for ignored pixels).
        source: the annotation (or mask) file, for error messages and ``dataset.json``.
        image: the image file to copy byte for byte, or None when ``image_bytes`` is given.
        image_bytes: an embedded image (LabelMe ``imageData``), written as is.
        image_ext: the extension for ``image_bytes`` (``.jpg``, ``.png``).
        subset: the subset the source assigns (``train``/``val``/``test``) or None.
    """

    id: str
    mask: np.ndarray
    source: Path
    image: Path | None = None
    image_bytes: bytes | None = None
    image_ext: str = ""
    subset: str | None = None


@dataclass
class Problems:
    """Collects errors (conversion fails) and warnings (kept in ``dataset.json``), each naming a file."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def read_class_file(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a label list: a text file with one name per line (labelme's ``labels.txt``), or YAML/JSON.

    ``__ignore__`` marks the ignore label and ``_background_`` the background, as labelme's
    ``labelme2voc.py`` reads them. YAML/JSON may be a list of names or of ``{name, id, ignore}``.

    Returns:
        ``(names, ignore_names)``: class names in id order (id = position), and labels to paint
        as ``ignore_index``.

    Raises:
        DatasetError: unreadable file, duplicate names.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DatasetError(
            [f"{path}: cannot read the label list ({err}); pass an existing file to --classes"]
        ) from err
    names: list[str] = []
    ignore: list[str] = []
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        data = yaml.safe_load(text) or []
        if isinstance(data, dict):
            data = data.get("classes", [])
        if data and all(isinstance(i, dict) and "id" in i for i in data):
            data = sorted(data, key=lambda i: int(i["id"]))  # a table with ids: id order
        for item in data:
            if isinstance(item, dict):
                if item.get("ignore"):
                    ignore.append(str(item["name"]))
                else:
                    names.append(str(item["name"]))
            else:
                names.append(str(item))
    else:
        for line in text.splitlines():
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            (ignore if name in IGNORE_NAMES else names).append(name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError([f"{path}: label(s) {dup} listed twice; each class once"])
    return names, ignore


class ClassTable:
    """Label name -> class id, with background, ignore labels and renames.

    Args:
        classes: ``[{id, name, color}]``; ids need not start at 0 but must be unique.
        background: the class id of pixels covered by no shape (None: formats that need one fail).
        ignore_index: the id painted for ignored labels.
        ignore_labels: labels painted as ``ignore_index`` (``__ignore__`` always is).
        label_map: ``{label in the file: class name, or None to drop the shape}``, applied first
            (merge ``green_grape`` and ``black_grape`` into ``grape``; drop a label you do not train on).
        fixed: True when the user gave the class list: an unknown label is then an error;
            False when the list was derived from the files.
    """

    def __init__(
        self,
        classes: list[dict[str, Any]],
        background: int | None,
        ignore_index: int = 255,
        ignore_labels: Iterable[str] = (),
        label_map: dict[str, str | None] | None = None,
        fixed: bool = True,
    ):
        self.classes = [dict(c) for c in classes]
        self.background = background
        self.ignore_index = int(ignore_index)
        self.ignore_labels = set(ignore_labels) | set(IGNORE_NAMES)
        self.label_map = dict(label_map or {})
        self.fixed = fixed
        self.by_name = {c["name"]: int(c["id"]) for c in self.classes}
        self.unknown: dict[str, list[str]] = {}

    @classmethod
    def build(cls, cfg: dict[str, Any], found_labels: list[str] | None) -> ClassTable:
        """The table for a dataset config; derives the class list from ``found_labels`` when the
        config has none (background first as id 0, then the labels in the order the source gives)."""
        label_map = cfg.get("label_map") or {}
        ignore = list(cfg.get("ignore_labels") or [])
        ignore_index = int(cfg.get("ignore_index", 255))
        if cfg.get("classes"):
            classes = cfg["classes"]
            clash = [c["name"] for c in classes if int(c["id"]) == ignore_index]
            if clash:
                raise DatasetError(
                    [
                        f"dataset.classes: class '{clash[0]}' has id {ignore_index}, the same as "
                        "dataset.ignore_index, so its pixels would be ignored in training and never "
                        "scored; give the class another id, or set dataset.ignore_index to an id no "
                        "class uses"
                    ]
                )
            bg = cfg.get("background")
            if bg is None:
                bg = next((int(c["id"]) for c in classes if c["name"] in BACKGROUND_NAMES), None)
            return cls(classes, bg, ignore_index, ignore, label_map, fixed=True)
        names: list[str] = []
        for label in found_labels or []:
            target = label_map.get(label, label)
            if target is None or target in ignore or target in IGNORE_NAMES or target in BACKGROUND_NAMES:
                continue
            if target not in names:
                names.append(target)
        classes = [{"id": 0, "name": "background", "color": None}]
        classes += [{"id": i + 1, "name": n, "color": None} for i, n in enumerate(names)]
        return cls(classes, 0, ignore_index, ignore, label_map, fixed=False)

    def lookup(self, label: str, where: str) -> int | None:
        """The id to paint for ``label`` (``None``: drop the shape). Unknown labels are collected
        (see :meth:`unknown_problems`) and dropped, so one conversion lists them all."""
        label = str(label)
        if label in self.label_map:
            target = self.label_map[label]
            if target is None:
                return None
            label = str(target)
        if label in self.ignore_labels:
            return self.ignore_index
        if label in self.by_name:
            return self.by_name[label]
        if label in BACKGROUND_NAMES and self.background is not None:
            return self.background
        self.unknown.setdefault(label, []).append(where)
        return None

    def unknown_problems(self) -> list[str]:
        """One message per unknown label, naming where it occurs and the fix."""
        valid = ", ".join(repr(n) for n in self.by_name)
        out = []
        for label, where in sorted(self.unknown.items()):
            files = sorted(set(where))
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            out.append(
                f"{shown}: label '{label}' is not in the class list ({valid}); add it to dataset.classes "
                f"(or --classes), map it with dataset.label_map ({{'{label}': <class>}}, or null to drop "
                "it), "
                f"or list it in dataset.ignore_labels"
            )
        return out

    def require_background(self, fmt: str) -> int:
        """The background id; raises DatasetError for shape formats when none is declared."""
        if self.background is None:
            raise DatasetError(
                [
                    f"dataset.format '{fmt}' paints shapes on a background, but no class is the background: "
                    f"set dataset.background to a class id, or add a class named 'background'"
                ]
            )
        return int(self.background)


def safe_join(root: Path, rel: str, ann_file: Path, key: str) -> Path:
    """``root / rel``, refusing absolute paths and paths that climb out of ``root`` (``../../etc/passwd``).

    The check is on the path as written in the annotation file (after normalising ``.`` and ``..``),
    not on where symbolic links lead: a link the user made inside the dataset folder (``images`` ->
    a folder on another disk, the usual way to avoid copying terabytes) is followed, while a path in
    an annotation file can never name a file outside the dataset folder by itself.

    Raises:
        DatasetError: naming ``ann_file``, the offending ``key`` value and the fix.
    """
    if not rel or not isinstance(rel, str):
        raise DatasetError([f"{ann_file}: {key} is empty; set it to the image's file name"])
    rel_norm = rel.replace("\\", "/")
    if Path(rel_norm).is_absolute() or (len(rel_norm) > 1 and rel_norm[1] == ":"):
        raise DatasetError(
            [
                f"{ann_file}: {key} '{rel}' is an absolute path; segbench only reads images inside the "
                f"dataset folder {root}: copy the image there and set {key} to its relative path"
            ]
        )
    lexical = os.path.normpath(rel_norm)
    if lexical == ".." or lexical.startswith("../"):
        raise DatasetError(
            [
                f"{ann_file}: {key} '{rel}' points outside the dataset folder {root}; copy the image "
                f"into the dataset folder and set {key} to its relative path"
            ]
        )
    return root / lexical


def polygon_mask_coco(polys: list[list[float]], height: int, width: int) -> np.ndarray:
    """bool[H, W] of COCO-style flat polygons ``[[x0, y0, x1, y1, ...], ...]`` rasterised by
    pycocotools (the rasteriser of COCO's own API, Datumaro and CVAT's exports)."""
    from pycocotools import mask as mask_utils

    polys = [list(map(float, p)) for p in polys if len(p) >= 6]
    if not polys:
        return np.zeros((height, width), bool)
    rles = mask_utils.frPyObjects(polys, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def ellipse_mask_cv2(
    cx: float, cy: float, rx: float, ry: float, angle_deg: float, height: int, width: int
) -> np.ndarray:
    """bool[H, W] of a filled ellipse drawn by OpenCV with centre and half-axes rounded to integers,
    as CVAT rasterises ellipses for its COCO export."""
    import cv2

    out = np.zeros((height, width), np.uint8)
    cv2.ellipse(
        out,
        (int(round(cx)), int(round(cy))),
        (int(round(rx)), int(round(ry))),
        float(angle_deg),
        0,
        360,
        1,
        -1,
    )
    return out.astype(bool)


def rotate_points(points: list[tuple[float, float]], angle_deg: float) -> list[tuple[float, float]]:
    """Rotate points clockwise on screen (y down) by ``angle_deg`` about their centroid, as CVAT's
    ``rotation`` attribute of boxes is defined."""
    if not angle_deg:
        return points
    a = math.radians(angle_deg)
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    c, s = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


class ShapePainter:
    """Paints the shapes of one image in the documented order (z_order, then file order).

    ``add(z_order, value, fn)`` takes ``fn() -> bool[H, W]``; ``add_pil(z_order, value, fn)`` takes
    ``fn(draw, fill)`` drawing with Pillow straight onto the label canvas (the same pixels as drawing
    onto an empty mask, without a full-size mask per shape). ``render()`` -> uint16[H, W] starting
    from ``background`` (class ids and ignore_index fit in 16 bits).
    """

    def __init__(self, height: int, width: int, background: int):
        self.height, self.width, self.background = int(height), int(width), int(background)
        self._shapes: list[tuple[float, int, int, bool, Callable[..., Any]]] = []

    def add(self, z_order: float, value: int, fn: Callable[[], np.ndarray]) -> None:
        self._shapes.append((float(z_order), len(self._shapes), int(value), False, fn))

    def add_pil(self, z_order: float, value: int, fn: Callable[[ImageDraw.ImageDraw, int], None]) -> None:
        self._shapes.append((float(z_order), len(self._shapes), int(value), True, fn))

    def render(self) -> np.ndarray:
        mode = "L" if max([self.background] + [s[2] for s in self._shapes]) <= 255 else "I"
        out: np.ndarray | None = np.full((self.height, self.width), self.background, np.uint16)
        img: Image.Image | None = None
        draw = None
        for _, _, value, is_pil, fn in sorted(self._shapes, key=lambda s: (s[0], s[1])):
            if is_pil:
                if img is None:
                    img = Image.fromarray(out.astype(np.uint8 if mode == "L" else np.int32), mode)
                    draw = ImageDraw.Draw(img)
                fn(draw, value)
            else:
                if img is not None:
                    out, img = np.asarray(img).astype(np.uint16), None
                out[fn()] = value
        if img is not None:
            out = np.asarray(img).astype(np.uint16)
        return out


def pil_draw_shape(
    draw: ImageDraw.ImageDraw,
    shape_type: str | None,
    points: list[tuple[float, float]],
    fill: int,
    line_width: int = 10,
    point_size: int = 5,
) -> None:
    """Draw one LabelMe shape with ``fill`` as ``labelme.utils.shape_to_mask`` draws it (Pillow).

    Raises:
        ValueError: wrong number of points for the shape type (the caller names the file).
    """
    xy = [(float(x), float(y)) for x, y in points]
    if shape_type == "circle":
        if len(xy) != 2:
            raise ValueError(f"a circle needs 2 points (centre, a point on the circle), got {len(xy)}")
        (cx, cy), (px, py) = xy
        d = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=fill, fill=fill)
    elif shape_type == "rectangle":
        if len(xy) != 2:
            raise ValueError(f"a rectangle needs 2 points (two corners), got {len(xy)}")
        (x0, y0), (x1, y1) = xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=fill, fill=fill)
    elif shape_type in ("line", "linestrip"):
        if len(xy) < 2:
            raise ValueError(f"a {shape_type} needs at least 2 points, got {len(xy)}")
        draw.line(xy=xy, fill=fill, width=line_width)
    elif shape_type == "point":
        if len(xy) != 1:
            raise ValueError(f"a point needs 1 point, got {len(xy)}")
        (cx, cy), r = xy[0], point_size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, fill=fill)
    elif shape_type in ("polygon", None, ""):
        if len(xy) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(xy)}")
        draw.polygon(xy=xy, outline=fill, fill=fill)
    else:
        raise ValueError(f"unknown shape_type '{shape_type}'")


def pil_shape_mask(
    shape_type: str | None,
    points: list[tuple[float, float]],
    height: int,
    width: int,
    line_width: int = 10,
    point_size: int = 5,
) -> np.ndarray:
    """bool[H, W] of one LabelMe shape (see :func:`pil_draw_shape`)."""
    m = Image.new("L", (width, height), 0)
    pil_draw_shape(ImageDraw.Draw(m), shape_type, points, 1, line_width, point_size)
    return np.asarray(m, dtype=bool)


def check_bounds(
    points: list[tuple[float, float]], height: int, width: int, where: str, problems: Problems
) -> bool:
    """Check a shape's points before it is rasterised; True when the shape is unusable (an error noted).

    * A coordinate that is not a finite number (NaN, inf), or that lies more than one image side
      outside the image (e.g. 1e30), is an error: such a point is a corrupt annotation, and rasterising
      it would make pycocotools or Pillow allocate memory in proportion to the coordinate (gigabytes)
      before anything could be reported.
    * A point outside the image but within that margin is a warning: the shape is clipped to the image.
    """
    margin = max(int(height), int(width))
    for x, y in points:
        if not (math.isfinite(x) and math.isfinite(y)):
            problems.error(f"{where}: point ({x:g}, {y:g}) is not a finite number; fix or delete the shape")
            return True
        if not (-margin <= x <= width + margin and -margin <= y <= height + margin):
            problems.error(
                f"{where}: point ({x:g}, {y:g}) lies far outside the {width}x{height} image (more than "
                f"{margin} px beyond its edge), a corrupt annotation; fix or delete the shape"
            )
            return True
    out = [(x, y) for x, y in points if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5)]
    if out:
        x, y = out[0]
        problems.warn(
            f"{where}: {len(out)} point(s) outside the {width}x{height} image (first ({x:g}, {y:g})); "
            f"the shape is clipped to the image"
        )
    return False


def check_structure(path: Path, data: Any, schema: dict[str, Any], fix: str) -> None:
    """Check a parsed annotation file against a JSON Schema (draft 2020-12, validated by the
    ``jsonschema`` library) of the fields segbench reads, before any of them is used.

    A wrong type or a missing key deep in a file (``"images": [7]``, a category without ``name``)
    would otherwise surface as a Python traceback far from the file; here it becomes one message per
    field (up to 5) naming the file, the field's location (``annotations[3].image_id``) and ``fix``.

    Raises:
        DatasetError: the file does not have the structure.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    out = []
    for err in errors[:5]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
        out.append(f"{path}: {where or 'the top level'}: {err.message}; {fix}")
    if len(errors) > 5:
        out.append(f"{path}: ... and {len(errors) - 5} more problems of the same kind")
    raise DatasetError(out)
