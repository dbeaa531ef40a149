"""Annotation importers: pixel-exact against the tools' own exports, format agreement, edge cases.

Reference data (never written by us), under $SEGBENCH_SHARED/data/annotations:
* labelme_examples: labelme's JSON with the PNG masks labelme's own export scripts wrote;
* 2label: one CVAT task exported as CVAT 1.1 XML, COCO and LabelMe 3.0 XML, plus LabelMe JSON of the
  same images annotated separately, and the grape photos;
* datumaro_fixtures: Datumaro's edge-case fixtures.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import matplotlib.path as mpath
import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from segbench.cli import main as cli_main
from segbench.data.convert import DatasetError, classes_from_file, convert
from segbench.data.importers import FORMATS
from segbench.data.importers.cvat import decode_cvat_rle

ANN = SHARED / "data" / "annotations"
EX = ANN / "labelme_examples" / "examples"
TWO = ANN / "2label" / "datasets"
DM = ANN / "datumaro_fixtures" / "tests" / "assets"


def _masks(out: Path) -> dict[str, np.ndarray]:
    meta = json.loads((out / "dataset.json").read_text())
    return {sid: np.asarray(Image.open(out / e["mask"])) for sid, e in meta["manifest"].items()}


def _names(out: Path, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Masks as arrays of class *names* (to compare imports whose class ids differ)."""
    meta = json.loads((out / "dataset.json").read_text())
    lut = np.array(["?"] * 256, dtype=object)
    for c in meta["classes"]:
        lut[c["id"]] = c["name"]
    lut[255] = "__ignore__"
    return {k: lut[v] for k, v in masks.items()}


def _convert(tmp_path: Path, name: str, **cfg) -> tuple[dict, dict[str, np.ndarray]]:
    cfg = {"name": name, "ignore_index": 255, **cfg}
    out = tmp_path / name
    meta = convert(cfg, out)
    return meta, _masks(out)


# --- LabelMe JSON against labelme's own PNG exports ---------------------------------------------------------


def _edge_distance(shapes: list[dict], x: int, y: int) -> float:
    """Distance from pixel centre (x, y) to the nearest polygon edge of ``shapes``."""
    p = np.array([x, y], float)
    best = np.inf
    for s in shapes:
        pts = np.asarray(s["points"], float)
        for a, b in zip(pts, np.roll(pts, -1, axis=0)):
            t = np.clip(np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0, 1)
            best = min(best, float(np.linalg.norm(a + t * (b - a) - p)))
    return best


@pytest.mark.parametrize(
    "example,ref_dir",
    [
        ("semantic_segmentation", "SegmentationClass"),
        ("instance_segmentation", "SegmentationClass"),
        ("video_annotation", "SegmentationClassPNG"),
    ],
)
def test_labelme_matches_labelme2voc_pngs(tmp_path, example, ref_dir):
    """labelme2voc.py's PNGs (class ids from labels.txt, __ignore__ = 255) are reproduced pixel for pixel,
    except single pixels on polygon edges, where Pillow's rasteriser changed since they were written."""
    src = EX / example
    cfg = {"format": "labelme", "root": str(src / "data_annotated"), **classes_from_file(src / "labels.txt")}
    meta, masks = _convert(tmp_path, example, **cfg)
    refs = sorted((src / "data_dataset_voc" / ref_dir).glob("*.png"))
    assert len(refs) == len(masks) >= 3
    exact = 0
    for ref in refs:
        r = np.asarray(Image.open(ref))
        ours = masks[ref.stem]
        diff = np.argwhere(ours != r)
        if not len(diff):
            exact += 1
            continue
        shapes = json.loads((src / "data_annotated" / f"{ref.stem}.json").read_text())["shapes"]
        assert len(diff) <= 2, f"{ref.name}: {len(diff)} pixels differ"
        for y, x in diff:  # every differing pixel sits on an edge of a polygon of one of the two classes
            assert _edge_distance(shapes, x, y) <= 1.0, (ref.name, x, y)
    # 2011_000006 differs in exactly one pixel (x=104, y=290): 0.57 px from a vertex of a later 'sofa' polygon
    assert exact == len(refs) - (1 if example != "video_annotation" else 0)
    if example == "semantic_segmentation":
        r = np.asarray(Image.open(src / "data_dataset_voc" / ref_dir / "2011_000006.png"))
        assert np.argwhere(masks["2011_000006"] != r).tolist() == [[290, 104]]
    # labelme's __ignore__ label is painted as ignore_index, and clipping is reported
    assert (np.concatenate([m.ravel() for m in masks.values()]) == 255).any() or example == "video_annotation"
    assert any("outside" in w for w in meta["warnings"])


def test_labelme_tutorial_embedded_image_matches_json_to_dataset(tmp_path):
    """labelme_json_to_dataset's label.png (embedded imageData, label_names.txt order): 8 pixels differ,
    all within 1 px of an edge of the 'highland' polygon drawn over 'shelf' (Pillow's rasteriser)."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(EX / "tutorial" / "apc2016_obj3.json", src / "apc2016_obj3.json")
    cfg = {
        "format": "labelme",
        "root": str(src),
        **classes_from_file(EX / "tutorial" / "apc2016_obj3" / "label_names.txt"),
    }
    meta, masks = _convert(tmp_path, "tut", **cfg)
    ref = np.asarray(Image.open(EX / "tutorial" / "apc2016_obj3" / "label.png"))
    ours = masks["apc2016_obj3"]
    diff = np.argwhere(ours != ref)
    assert 0 < len(diff) <= 10 and (ours == ref).mean() > 0.99999
    shapes = json.loads((EX / "tutorial" / "apc2016_obj3.json").read_text())["shapes"]
    for y, x in diff:
        assert _edge_distance(shapes, x, y) <= 1.0
    # the embedded image is written byte for byte as it was embedded
    data = json.loads((EX / "tutorial" / "apc2016_obj3.json").read_text())["imageData"]
    out_img = tmp_path / "tut" / meta["manifest"]["apc2016_obj3"]["image"]
    assert out_img.read_bytes() == base64.b64decode(data)


def test_labelme_every_shape_type(tmp_path):
    """primitives.json (labelme 5.7): polygon, rectangle, circle, line, linestrip, point and mask."""
    meta, masks = _convert(tmp_path, "prim", format="labelme", root=str(EX / "primitives"))
    m = masks["primitives"]
    ids = {c["name"]: c["id"] for c in meta["classes"]}
    shapes = {
        s["label"]: s for s in json.loads((EX / "primitives" / "primitives.json").read_text())["shapes"]
    }
    assert {s["shape_type"] for s in shapes.values()} == {
        "polygon",
        "rectangle",
        "circle",
        "line",
        "point",
        "linestrip",
        "mask",
    }
    # rectangle 32..132 x 35..135, outline included: 101 x 101 px (as labelme draws it)
    (x0, y0), (x1, y1) = shapes["rectangle"]["points"]
    assert (m[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1] == ids["rectangle"]).all()
    # circle: area within 2 % of pi r^2
    (cx, cy), (px, py) = shapes["circle"]["points"]
    r = np.hypot(cx - px, cy - py)
    assert abs((m == ids["circle"]).sum() / (np.pi * r * r) - 1) < 0.02
    # point: a disc of radius 5 around the point
    ((px, py),) = shapes["point"]["points"]
    assert m[int(py), int(px)] == ids["point"] and 60 <= (m == ids["point"]).sum() <= 125
    # line: 10 px wide across its middle
    (ax, ay), (bx, by) = shapes["line"]["points"]
    assert (m == ids["line"]).sum() == pytest.approx(10 * np.hypot(bx - ax, by - ay), rel=0.2)
    assert (m == ids["line_strip"]).sum() > 10 * 100
    # mask shape: exactly the embedded bitmap at its box
    sub = np.asarray(Image.open(io.BytesIO(base64.b64decode(shapes["octagon"]["mask"])))) > 0
    (mx, my), _ = shapes["octagon"]["points"]
    box = m[int(my) : int(my) + sub.shape[0], int(mx) : int(mx) + sub.shape[1]]
    assert ((box == ids["octagon"]) == sub).all()
    # polygon: inside pixels (by geometry) carry the class
    poly = np.asarray(shapes["polygon"]["points"])
    yy, xx = np.mgrid[0 : m.shape[0], 0 : m.shape[1]]
    inside = mpath.Path(poly).contains_points(np.c_[xx.ravel(), yy.ravel()]).reshape(m.shape)
    assert (m[inside] == ids["polygon"]).mean() > 0.99


# --- one CVAT task, four exports ----------------------------------------------------------------------------

POLYLINES_DROPPED = {"crack": None, "line": None}  # CVAT's COCO and LabelMe 3.0 exports drop polylines


def test_cvat_and_coco_exports_of_one_task_give_identical_masks(tmp_path):
    _, cvat = _convert(
        tmp_path, "cvat", format="cvat", root=str(TWO / "cvat1.1"), label_map=POLYLINES_DROPPED
    )
    meta, coco = _convert(
        tmp_path,
        "coco",
        format="coco",
        root=str(TWO / "coco1.0"),
        label_map=POLYLINES_DROPPED,
        empty_segmentation="bbox",
    )
    assert sorted(cvat) == sorted(coco) == ["birds", "crack", "shapes", "strawberry"]
    for sid in cvat:
        assert np.array_equal(cvat[sid], coco[sid]), sid
    assert (
        len(np.unique(cvat["strawberry"])) == 2 and len(np.unique(cvat["shapes"])) == 4
    )  # + triangle, box, ellipse


def test_cvat_ellipses_match_cvat_coco_rle_and_boxes_are_skipped_by_default(tmp_path):
    """CVAT stored its ellipses in COCO as RLE it rasterised itself: our ellipses equal them exactly.
    Boxes have an empty COCO segmentation: skipped with a warning unless empty_segmentation=bbox."""
    meta_c, coco = _convert(tmp_path, "coco", format="coco", root=str(TWO / "coco1.0"))
    _, cvat = _convert(tmp_path, "cvat", format="cvat", root=str(TWO / "cvat1.1"))
    ell = 4  # 'ellipse' is the 4th label in both (ids follow the CVAT meta labels and COCO category ids)
    assert (coco["shapes"] == ell).sum() == 21359 + 26287  # the two RLE areas of the export
    assert np.array_equal(coco["shapes"] == ell, cvat["shapes"] == ell)
    box_warnings = [w for w in meta_c["warnings"] if "empty segmentation" in w]
    assert len(box_warnings) == 18  # 17 strawberries + 1 rectangle
    assert (coco["strawberry"] == 0).all() and (cvat["strawberry"] > 0).any()


def test_labelme_xml_export_equals_cvat(tmp_path):
    """The LabelMe 3.0 XML export of the same task (polygons, boxes, ellipses as Masks/) equals the CVAT
    import."""
    _, cvat = _convert(
        tmp_path, "cvat", format="cvat", root=str(TWO / "cvat1.1"), label_map=POLYLINES_DROPPED
    )
    out = tmp_path / "lmx"
    convert(
        {"name": "lmx", "format": "labelme-xml", "root": str(TWO / "labelme3.0"), "ignore_index": 255}, out
    )
    lmx = _names(out, _masks(out))
    cv = _names(tmp_path / "cvat", cvat)
    for sid in ("birds", "shapes", "strawberry", "crack"):
        assert (lmx[sid] == cv[sid]).all(), sid


def test_labelme_json_annotated_separately_agrees_with_cvat(tmp_path):
    """LabelMe JSON of the same images, drawn by hand separately: the same objects overlap closely.
    (LabelMe's 'circle' is CVAT's circular 'ellipse'; polylines are compared as 10 px lines.)"""
    out = tmp_path / "lm"
    convert(
        {
            "name": "lm",
            "format": "labelme",
            "root": str(TWO / "labelme"),
            "ignore_index": 255,
            "label_map": {"circle": "ellipse"},
        },
        out,
    )
    lm = _names(out, _masks(out))
    _, cvat = _convert(tmp_path, "cvat", format="cvat", root=str(TWO / "cvat1.1"))
    cv = _names(tmp_path / "cvat", cvat)
    ious = {}
    for sid in lm:
        for name in set(np.unique(cv[sid])) - {"background"}:
            a, b = lm[sid] == name, cv[sid] == name
            ious[(sid, name)] = (a & b).sum() / (a | b).sum()
    area = {k: v for k, v in ious.items() if k[1] not in ("crack", "line")}
    assert min(v for k, v in area.items() if k[1] != "strawberry") > 0.95, ious
    assert ious[("strawberry", "strawberry")] > 0.75, (
        ious
    )  # 17 small boxes (~35 px), each drawn twice by hand
    assert ious[("crack", "crack")] > 0.5 and ious[("shapes", "line")] > 0.7, ious


# --- Datumaro's edge cases ----------------------------------------------------------------------------------


def test_datumaro_cvat_fixture_empty_labels_and_skeletons(tmp_path):
    meta, masks = _convert(tmp_path, "dcvat", format="cvat", root=str(DM / "cvat_dataset" / "for_images"))
    assert [c["name"] for c in meta["classes"]] == [
        "background",
        "label1",
        "label2",
    ]  # skeleton labels left out
    assert any("without a label" in w for w in meta["warnings"]) and any(
        "skeleton" in w for w in meta["warnings"]
    )
    m0 = masks["img0"]
    # the box (0,2)-(4,4), occluded or not, in continuous coordinates: 4 x 2 pixels (pycocotools, as CVAT and
    # COCO)
    assert (m0[2:4, 0:4] == 1).all() and m0.sum() == 8
    m1 = masks["img1"]
    assert set(np.unique(m1)) == {0, 2}  # unlabeled polygon skipped; points of label2 drawn as discs


def test_datumaro_cvat_for_video_is_refused_with_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="CVAT for images 1.1"):
        convert(
            {
                "name": "v",
                "format": "cvat",
                "root": str(DM / "cvat_dataset" / "for_video"),
                "ignore_index": 255,
            },
            tmp_path / "v",
        )
    assert not (tmp_path / "v").exists()


def test_datumaro_coco_non_consecutive_ids_uncompressed_rle_and_box_only(tmp_path):
    meta, masks = _convert(tmp_path, "dcoco", format="coco", root=str(DM / "coco_dataset" / "coco_instances"))
    assert [(c["id"], c["name"]) for c in meta["classes"]] == [
        (0, "background"),
        (1, "a"),
        (2, "b"),
        (3, "c"),
    ]
    assert {e["subset"] for e in meta["manifest"].values()} == {"train", "val"}
    assert (masks["a"] == 0).all()  # only a box with an empty segmentation: skipped, with a warning
    b = masks["b"]  # 5 wide x 10 high; RLE counts [0, 20, 30] (column-major) = the first two columns
    assert (b[:, :2] == 2).all() and (b[:, 2:] == 0).all()


def test_datumaro_coco_panoptic_is_refused_with_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="panoptic"):
        convert(
            {
                "name": "p",
                "format": "coco",
                "root": str(DM / "coco_dataset" / "coco_panoptic"),
                "ignore_index": 255,
            },
            tmp_path / "p",
        )


def test_datumaro_labelme_xml_masks_parts_and_polygons(tmp_path):
    meta, masks = _convert(tmp_path, "dlmx", format="labelme-xml", root=str(DM / "labelme_dataset"))
    ids = {c["name"]: c["id"] for c in meta["classes"]}
    m = masks["img1"]
    ref = (
        np.asarray(Image.open(DM / "labelme_dataset" / "Masks" / "img1_mask_1.png").convert("RGB")).max(
            axis=2
        )
        >= 128
    )
    assert ((m == ids["license plate"]) == ref).all() and ref.sum() == 10
    assert (m == ids["window"]).sum() > 0 and (m == ids["q1"]).sum() > 0


# --- synthetic formats: CVAT shapes, COCO RLE, palette and binary masks -------------------------------------


def _img(path: Path, w: int, h: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def _rle_runs(mask: np.ndarray) -> str:
    flat = mask.astype(np.uint8).ravel()
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    return ", ".join(map(str, runs))


def test_cvat_mask_rle_z_order_rotation_and_lines(tmp_path):
    root = tmp_path / "cvat"
    _img(root / "images" / "a.png", 40, 30)
    sub = np.zeros((6, 8), bool)
    sub[1:5, 2:7] = True
    sub[3, 0] = True
    xml = f"""<annotations><version>1.1</version><meta><task><labels>
      <label><name>low</name></label><label><name>high</name></label><label><name>blob</name></label>
      <label><name>wire</name></label></labels></task></meta>
      <image id="0" name="a.png" width="40" height="30">
        <box label="high" occluded="1" xtl="0" ytl="0" xbr="10" ybr="10" z_order="2"/>
        <box label="low" occluded="0" xtl="5" ytl="5" xbr="15" ybr="15" z_order="0"/>
        <box label="low" occluded="0" xtl="20" ytl="0" xbr="30" ybr="4" rotation="90" z_order="0"/>
        <mask label="blob" source="manual" occluded="0" rle="{_rle_runs(sub)}" left="30" top="20" width="8"
        height="6" z_order="0"/>
        <polyline label="wire" occluded="0" points="0,25;20,25" z_order="0"/>
        <tag label="low"/>
      </image></annotations>"""
    (root / "annotations.xml").write_text(xml)
    meta, masks = _convert(tmp_path, "c", format="cvat", root=str(root), line_width=3)
    m = masks["a"]
    low, high, blob, wire = 1, 2, 3, 4  # ids follow <labels>
    assert m[7, 7] == high  # z_order 2 over z_order 0, although it comes first in the file
    assert m[12, 12] == low
    assert np.array_equal(m[20:26, 30:38] == blob, sub)  # CVAT's RLE, row-major inside its box
    # the 10 x 4 box at (20..30, 0..4) rotated 90 degrees about its centre (25, 2): 4 wide, 10 high
    assert m[1, 21] == 0 and m[1, 25] == low and m[6, 25] == low and m[6, 21] == 0
    assert (m[23:28, 10] == wire).sum() == 3  # a 3 px wide line
    assert decode_cvat_rle("0, 2, 2", 1, 1, 2, 2, 4, 4).sum() == 2


def test_coco_compressed_rle_crowd_and_image_without_annotations(tmp_path):
    from pycocotools import mask as mask_utils

    root = tmp_path / "coco"
    _img(root / "images" / "x.png", 20, 10)
    _img(root / "images" / "empty.png", 20, 10)
    m = np.zeros((10, 20), np.uint8, order="F")
    m[2:6, 3:9] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    doc = {
        "images": [
            {"id": 7, "file_name": "x.png", "width": 20, "height": 10},
            {"id": 9, "file_name": "empty.png", "width": 20, "height": 10},
        ],
        "categories": [{"id": 10, "name": "crowd"}, {"id": 3, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 10, "segmentation": rle, "iscrowd": 1},
            {
                "id": 2,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [[10, 5, 18, 5, 18, 9, 10, 9]],
            },
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    meta, masks = _convert(tmp_path, "c", format="coco", root=str(root))
    assert [c["name"] for c in meta["classes"]] == ["background", "thing", "crowd"]  # ascending category id
    assert np.array_equal(masks["x"] == 2, m.astype(bool))
    # the polygon (10,5)-(18,9) in continuous coordinates covers pixels x 10..17, y 5..8 (pycocotools)
    assert (
        (masks["x"][5:9, 10:18] == 1).all() and (masks["x"] == 1).sum() == 32 and (masks["empty"] == 0).all()
    )
    _, masks = _convert(tmp_path, "c2", format="coco", root=str(root), crowd="ignore")
    assert np.array_equal(masks["x"] == 255, m.astype(bool))


def test_palette_masks_rgb_and_palette_png(tmp_path):
    root = tmp_path / "pal"
    _img(root / "images" / "a.png", 6, 4)
    _img(root / "images" / "b.png", 6, 4)
    (root / "masks").mkdir()
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, 3:] = (0, 128, 0)
    rgb[0, 0] = (255, 255, 255)
    Image.fromarray(rgb).save(root / "masks" / "a.png")
    p = Image.fromarray(np.array([[0, 1, 1, 2, 2, 2]] * 4, np.uint8), "P")
    p.putpalette([0, 0, 0, 0, 128, 0, 200, 0, 0] + [0] * 759)
    p.save(root / "masks" / "b.png")
    classes = [
        {"id": 0, "name": "bg", "color": [0, 0, 0]},
        {"id": 1, "name": "leaf", "color": [0, 128, 0]},
        {"id": 2, "name": "rot", "color": None},
    ]
    meta, masks = _convert(
        tmp_path, "p", format="palette", root=str(root), classes=classes, ignore_colors=["#ffffff"]
    )
    assert masks["a"][0, 0] == 255 and (masks["a"][:, 3:] == 1).all() and masks["a"][1, 0] == 0
    assert masks["b"][0].tolist() == [0, 1, 1, 2, 2, 2]
    assert meta["classes"][2]["color"] == [200, 0, 0]  # taken from the palette PNG
    with pytest.raises(DatasetError, match=r"#ffffff \(1 px\)"):
        convert(
            {"name": "p", "format": "palette", "root": str(root), "classes": classes, "ignore_index": 255},
            tmp_path / "p2",
        )


def test_binary_0_255_masks_become_classes_0_and_1(tmp_path):
    root = tmp_path / "bin"
    _img(root / "images" / "a.png", 5, 5)
    (root / "masks").mkdir()
    m = np.zeros((5, 5), np.uint8)
    m[1:3, 1:3] = 255
    Image.fromarray(m).save(root / "masks" / "a.png")
    classes = [{"id": 0, "name": "background"}, {"id": 1, "name": "crack"}]
    meta, masks = _convert(tmp_path, "b", format="masks", root=str(root), classes=classes)
    assert masks["a"].sum() == 4 and set(np.unique(masks["a"])) == {0, 1}
    assert any("binary" in w for w in meta["warnings"])
    _, masks = _convert(
        tmp_path, "b2", format="masks", root=str(root), classes=classes, mask_encoding="index"
    )
    assert (masks["a"] == 255).sum() == 4  # explicitly index masks: 255 stays ignore_index


# --- bad input: a clear error naming the file and the fix, nothing written ----------------------------------


def _labelme(
    dir_: Path,
    name: str,
    shapes: list[dict],
    image: str | None = None,
    w: int = 20,
    h: int = 10,
    image_data: bool = False,
) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": "5.3.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image if image is not None else f"{name}.png",
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
    }
    if image_data:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format="PNG")
        doc["imageData"] = base64.b64encode(buf.getvalue()).decode()
    p = dir_ / f"{name}.json"
    p.write_text(json.dumps(doc))
    return p


def _poly(label="thing", pts=((1, 1), (8, 1), (8, 8))):
    return {
        "label": label,
        "points": [list(p) for p in pts],
        "shape_type": "polygon",
        "group_id": None,
        "flags": {},
    }


def _expect_error(tmp_path: Path, cfg: dict, *needles: str) -> str:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "dataset.json").write_text("previous output")  # an earlier conversion's output
    with pytest.raises(DatasetError) as exc:
        convert({"name": "bad", "ignore_index": 255, **cfg}, out)
    msg = str(exc.value)
    for n in needles:
        assert n in msg, msg
    assert (out / "dataset.json").read_text() == "previous output"  # the old output is untouched
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary folder left
    return msg


def test_error_json_that_is_not_labelme_or_coco(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.json").write_text(json.dumps({"hello": 1}))
    _expect_error(tmp_path, {"format": "labelme", "root": str(src)}, "x.json", "not a LabelMe file")
    _expect_error(
        tmp_path, {"format": "coco", "root": str(src / "x.json")}, "x.json", "not a COCO instances file"
    )
    lm = _labelme(tmp_path / "lm", "a", [_poly()])
    _expect_error(tmp_path, {"format": "coco", "root": str(lm)}, "a LabelMe file (use --format labelme)")


def test_error_missing_and_unreadable_image(tmp_path):
    src = tmp_path / "src"
    _labelme(src, "a", [_poly()])
    _expect_error(tmp_path, {"format": "labelme", "root": str(src)}, "a.json", "not found", "beside the JSON")
    (src / "a.png").write_bytes(b"not a png at all")
    _expect_error(tmp_path, {"format": "labelme", "root": str(src)}, "a.png", "cannot read image")


@pytest.mark.parametrize("image_path", ["../../etc/passwd", "/etc/passwd", "..\\..\\secret.png"])
def test_error_image_path_escaping_the_dataset(tmp_path, image_path):
    src = tmp_path / "src"
    _labelme(src, "a", [_poly()], image=image_path)
    msg = _expect_error(tmp_path, {"format": "labelme", "root": str(src)}, "a.json", "imagePath")
    assert "outside the dataset folder" in msg or "absolute path" in msg


def test_error_image_size_disagrees_with_annotation(tmp_path):
    src = tmp_path / "src"
    _labelme(src, "a", [_poly()], w=20, h=10)
    _img(src / "a.png", 21, 10)
    _expect_error(tmp_path, {"format": "labelme", "root": str(src)}, "a.json", "20x10", "21x10")


def test_error_polygon_with_fewer_than_3_points(tmp_path):
    src = tmp_path / "src"
    _labelme(src, "a", [_poly(pts=((1, 1), (5, 5)))])
    _img(src / "a.png", 20, 10)
    _expect_error(tmp_path, {"format": "labelme", "root": str(src)}, "a.json shape 0", "at least 3 points")


def test_coordinates_outside_the_image_are_clipped_with_a_warning(tmp_path):
    src = tmp_path / "src"
    _labelme(src, "a", [_poly(pts=((-5, -5), (30, -5), (30, 30), (-5, 30)))], image_data=True)
    meta, masks = _convert(tmp_path, "clip", format="labelme", root=str(src))
    assert (masks["a"] == 1).all()
    assert any("outside the 20x10 image" in w and "clipped" in w for w in meta["warnings"])


def test_error_unknown_label_with_a_label_list(tmp_path):
    src = tmp_path / "src"
    _labelme(src, "a", [_poly("thing"), _poly("weed")], image_data=True)
    _labelme(src, "b", [_poly("weed")], image_data=True)
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nthing\n")
    msg = _expect_error(
        tmp_path,
        {"format": "labelme", "root": str(src), **classes_from_file(labels)},
        "label 'weed' is not in the class list",
        "a.json",
        "b.json",
        "label_map",
    )
    assert msg.count("weed") == 2  # one message for the label, naming both files


def test_error_decompression_bomb(tmp_path):
    """A PNG whose header claims 30000 x 30000 pixels (900 MP, above Pillow's 2 x 89 MP limit)."""
    src = tmp_path / "src"
    _labelme(src, "a", [_poly()], w=30000, h=30000)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    (src / "a.png").write_bytes(png)
    _expect_error(
        tmp_path, {"format": "labelme", "root": str(src)}, "a.json", "decompression bomb", "max_image_pixels"
    )


def test_error_two_annotation_files_for_one_image(tmp_path):
    src = tmp_path / "src"
    _labelme(src, "a", [_poly()], image="photo.png")
    _labelme(src, "b", [_poly()], image="photo.png")
    _img(src / "photo.png", 20, 10)
    _expect_error(tmp_path, {"format": "labelme", "root": str(src)}, "b.json", "also annotated by", "a.json")


def test_error_empty_dataset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _expect_error(
        tmp_path,
        {
            "format": "labelme",
            "root": str(src),
            "classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "x"}],
        },
        "no images found",
    )


def test_error_unknown_format_lists_the_valid_ones(tmp_path):
    msg = _expect_error(
        tmp_path, {"format": "yolo", "root": str(tmp_path)}, "dataset.format 'yolo' is unknown"
    )
    for f in FORMATS:
        assert f in msg


def test_raw_data_is_never_modified(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(TWO / "cvat1.1", src)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    convert({"name": "c", "format": "cvat", "root": str(src), "ignore_index": 255}, tmp_path / "out")
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before
    assert {p: p.stat().st_mtime_ns for p in before} == mtimes


# --- the CLI ------------------------------------------------------------------------------------------------


def test_cli_convert_with_format_and_classes(tmp_path, capsys):
    src = EX / "semantic_segmentation"
    out = tmp_path / "voc"
    rc = cli_main(
        [
            "convert",
            "--format",
            "labelme",
            str(src / "data_annotated"),
            str(out),
            "--classes",
            str(src / "labels.txt"),
        ]
    )
    assert rc == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source_format"] == "labelme" and meta["name"] == "voc" and len(meta["classes"]) == 21
    assert "converted 3 images" in capsys.readouterr().out
    rc = cli_main(["convert", "--format", "cvat", str(src / "data_annotated"), str(tmp_path / "bad")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "annotations.xml" in err and not (tmp_path / "bad").exists()


def test_labelme_3x_file_without_shape_type_is_a_polygon(tmp_path):
    """labelme 3.x wrote no shape_type (every shape was a polygon) and colour keys per shape."""
    src = tmp_path / "src"
    src.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(buf, format="JPEG")
    doc = {
        "flags": {},
        "shapes": [
            {
                "label": "thing",
                "line_color": None,
                "fill_color": None,
                "points": [[2, 2], [12, 2], [12, 8], [2, 8]],
            }
        ],
        "lineColor": [0, 255, 0, 128],
        "fillColor": [255, 0, 0, 128],
        "imagePath": "a.jpg",
        "imageData": base64.b64encode(buf.getvalue()).decode(),
    }
    (src / "a.json").write_text(json.dumps(doc))
    meta, masks = _convert(tmp_path, "v3", format="labelme", root=str(src))
    assert (masks["a"][2:9, 2:13] == 1).all() and (
        masks["a"] == 1
    ).sum() == 7 * 11  # outline included, as labelme
    assert meta["manifest"]["a"]["image"] == "images/a.jpg"


def test_error_malformed_coordinates_name_the_shape(tmp_path):
    src = tmp_path / "src"
    _labelme(
        src,
        "a",
        [{"label": "thing", "points": [[1, 1], [8], [8, 8]], "shape_type": "polygon"}],
        image_data=True,
    )
    _expect_error(
        tmp_path, {"format": "labelme", "root": str(src)}, "a.json shape 0", "points must be [[x, y], ...]"
    )
    root = tmp_path / "cvat"
    _img(root / "images" / "a.png", 20, 10)
    (root / "annotations.xml").write_text(
        "<annotations><version>1.1</version><meta><task><labels><label><name>x</name></label></labels></task></meta>"
        "<image id='0' name='a.png' width='20' height='10'><box label='x' xtl='1' ytl='1' "
        "xbr='5'/></image></annotations>"
    )
    _expect_error(
        tmp_path,
        {"format": "cvat", "root": str(root)},
        "annotations.xml image 'a.png' <box>",
        "malformed coordinates",
        "re-export",
    )
