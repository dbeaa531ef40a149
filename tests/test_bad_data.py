"""Data that would silently train the wrong thing, images whose orientation or storage lies, and files
whose structure is wrong, through the command line (issue 15, items 3, 5, 6, 7).

Each case asserts the exit code, that the message names the file (and, for structure, the field), that
the user's files are unchanged (hashes), that a previous output is intact and that no temporary folder
is left, as tests/test_bad_inputs.py does. Cases by class:

* silently wrong training data, refused at conversion: 0/255 masks saved as JPEG, 16-bit masks with
  values above 255, 16-bit and 32-bit images, multi-page TIFF masks, two images or two masks with one
  id, two COCO image entries with one id, malformed compressed COCO RLE (8);
* caught by ``segbench validate``: a declared class no mask holds, most pixels ignored, a lossy
  (JPEG) canonical mask, a 16-bit image, a path leaving the dataset folder (5, and the limits that
  accept the first two when the user says so);
* EXIF orientation, one rule (as displayed) for convert, validate, training data, evaluation and
  predict (4);
* symbolic links the user made are followed, paths in annotation files still cannot leave the
  dataset folder (4);
* a malformed field in a COCO file, a LabelMe file, ``dataset.json`` or a model folder's
  ``model.json``: a message naming the file and the field, exit code 2, never a traceback (16 named
  cases, then a sweep replacing every field of each file by wrong values);
* a resume checkpoint that is truncated or not a checkpoint: the job trains from scratch (2).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.cli import main

H, W = 12, 20


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.err + out.out


def _rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _square_mask(value: int = 1, h: int = H, w: int = W, dtype=np.uint8) -> np.ndarray:
    m = np.zeros((h, w), dtype)
    m[2:8, 3:12] = value
    return m


def _mask_folder(root: Path, n: int = 2, mask=None, mask_name="{i}.png", image_name="{i}.png") -> Path:
    """``root/images`` + ``root/masks``, ``n`` pairs (distinct images), masks from ``mask(i)``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(_rgb(i)).save(root / "images" / image_name.format(i=f"s{i}"))
        m = mask(i) if mask else _square_mask()
        Image.fromarray(m).save(root / "masks" / mask_name.format(i=f"s{i}"))
    return root


def _labels(tmp_path: Path, *names: str) -> Path:
    p = tmp_path / "labels.txt"
    p.write_text("\n".join(names or ("background", "crack")) + "\n")
    return p


def _convert_over_a_good_output(tmp_path, capsys, src: Path, *args) -> tuple[int, str]:
    """Convert ``src`` over an earlier, good output; assert what every refused case must hold."""
    out = tmp_path / "out"
    good = _mask_folder(tmp_path / "good")
    labels = _labels(tmp_path)
    assert _run(capsys, "convert", "--format", "masks", "--classes", labels, good, out)[0] == 0
    before_out, before_src = _tree_hash(out), _tree_hash(src)
    code, err = _run(capsys, "convert", *args, src, out)
    assert _tree_hash(src) == before_src, "the source changed"
    if code != 0:
        assert _tree_hash(out) == before_out, "a failed conversion changed the earlier output"
    assert not _temps(tmp_path) and not _temps(out.parent)
    return code, err


# ---------------------------------------------------------------- silently wrong training data


def test_binary_masks_saved_as_jpeg_are_refused_and_read_thresholded_when_asked(tmp_path, capsys):
    src = _mask_folder(tmp_path / "src", mask=lambda i: _square_mask(255), mask_name="{i}.jpg")
    labels = _labels(tmp_path, "membrane", "cell")
    code, err = _convert_over_a_good_output(tmp_path, capsys, src, "--format", "masks", "--classes", labels)
    assert code == 2 and "s0.jpg" in err and "JPEG" in err and "mask_encoding: binary" in err, err
    # the documented way out: read them as binary masks, thresholded at 128
    out = tmp_path / "binary"
    code, err = _run(
        capsys, "convert", "--format", "masks", "--classes", labels, "--mask-encoding", "binary", src, out
    )
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    mask = np.asarray(Image.open(out / meta["manifest"]["s0"]["mask"]))
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert abs(int(mask.sum()) - 6 * 9) <= 6  # the square, give or take JPEG's smear at its edge
    assert any("JPEG" in w for w in meta["warnings"])


def test_a_16_bit_mask_with_values_above_255_is_refused_not_wrapped(tmp_path, capsys):
    src = _mask_folder(tmp_path / "src", mask=lambda i: _square_mask(256, dtype=np.uint16))
    code, err = _convert_over_a_good_output(
        tmp_path, capsys, src, "--format", "masks", "--classes", _labels(tmp_path)
    )
    assert code == 2 and "s0.png" in err and "mask values 256" in err and "16-bit" in err, err


@pytest.mark.parametrize("dtype, mode", [(np.uint16, "I;16"), (np.float32, "F")])
def test_a_high_bit_image_is_refused_at_conversion_with_the_fix(tmp_path, capsys, dtype, mode):
    src = _mask_folder(tmp_path / "src")
    Image.fromarray(np.full((H, W), 3000, dtype)).save(src / "images" / "s1.tif")
    (src / "images" / "s1.png").unlink()
    code, err = _convert_over_a_good_output(
        tmp_path, capsys, src, "--format", "masks", "--classes", _labels(tmp_path)
    )
    assert code == 2 and "s1.tif" in err and mode in err and "intensity window" in err, err


def test_a_multi_page_tiff_mask_is_refused(tmp_path, capsys):
    src = _mask_folder(tmp_path / "src")
    page = Image.fromarray(_square_mask())
    page.save(src / "masks" / "s1.tif", save_all=True, append_images=[page])
    (src / "masks" / "s1.png").unlink()
    code, err = _convert_over_a_good_output(
        tmp_path, capsys, src, "--format", "masks", "--classes", _labels(tmp_path)
    )
    assert code == 2 and "s1.tif" in err and "2 pages" in err, err


@pytest.mark.parametrize("folder", ["images", "masks"])
def test_two_files_with_one_id_are_an_error_not_a_silent_choice(tmp_path, capsys, folder):
    src = _mask_folder(tmp_path / "src")
    extra = src / folder / "s0.bmp"
    Image.open(src / folder / "s0.png").save(extra)
    code, err = _convert_over_a_good_output(
        tmp_path, capsys, src, "--format", "masks", "--classes", _labels(tmp_path)
    )
    key = "image_suffix" if folder == "images" else "mask_suffix"
    assert code == 2 and "s0.bmp" in err and "s0.png" in err and key in err, err


def _coco_doc(**image_fields) -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "s0.png", "width": W, "height": H},
            {"id": 2, "file_name": "s1.png", "width": W, "height": H, **image_fields},
        ],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 8, 1, 8, 8]]}
        ],
    }


def _coco_folder(root: Path, doc: dict) -> Path:
    (root / "images").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(_rgb(i)).save(root / "images" / f"s{i}.png")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances.json").write_text(json.dumps(doc))
    return root


def test_two_coco_image_entries_with_one_id_are_refused(tmp_path, capsys):
    src = _coco_folder(tmp_path / "src", _coco_doc(id=1))
    code, err = _convert_over_a_good_output(tmp_path, capsys, src, "--format", "coco")
    assert code == 2 and "instances.json" in err and "image id 1 is used by 2 entries" in err, err


@pytest.mark.parametrize(
    "counts, words",
    [("0", "cover 0 pixels"), (";", "cover 11 pixels"), ("~", "malformed"), ("a", "malformed")],
)
def test_compressed_coco_rle_that_does_not_cover_the_image_is_refused(tmp_path, capsys, counts, words):
    """pycocotools 2.0.11 decodes the one-run string '0' into uninitialised memory instead of failing."""
    doc = _coco_doc()
    doc["annotations"][0]["segmentation"] = {"size": [H, W], "counts": counts}
    src = _coco_folder(tmp_path / "src", doc)
    code, err = _convert_over_a_good_output(tmp_path, capsys, src, "--format", "coco")
    assert code == 2 and "instances.json annotation id 5" in err and words in err, err


def test_compressed_coco_rle_of_a_real_mask_converts_exactly(tmp_path, capsys):
    from pycocotools import mask as mask_utils

    truth = np.zeros((H, W), np.uint8)
    truth[3:9, 5:17] = 1
    rle = mask_utils.encode(np.asfortranarray(truth))
    doc = _coco_doc()
    doc["annotations"][0]["segmentation"] = {"size": [H, W], "counts": rle["counts"].decode()}
    src = _coco_folder(tmp_path / "src", doc)
    code, err = _convert_over_a_good_output(tmp_path, capsys, src, "--format", "coco")
    assert code == 0, err
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / meta["manifest"]["s0"]["mask"])), truth)


# ---------------------------------------------------------------- what validate catches


def _converted(tmp_path: Path, capsys, labels=("background", "crack"), mask=None) -> Path:
    src = _mask_folder(tmp_path / "src", n=3, mask=mask)
    out = tmp_path / "ds"
    code, err = _run(
        capsys, "convert", "--format", "masks", "--classes", _labels(tmp_path, *labels), src, out
    )
    assert code == 0, err
    return out


def _validate(capsys, ds: Path, *extra) -> tuple[int, str, Path]:
    report = ds.parent / "validation.json"
    before = _tree_hash(ds)
    code, err = _run(capsys, "validate", "--dataset", ds / "dataset.json", "--report", report, *extra)
    assert _tree_hash(ds) == before, "validate changed the dataset"
    assert code == 0 or not report.exists(), "a report was left for a dataset that is not valid"
    return code, err, report


def test_a_declared_class_that_no_mask_holds_fails_validation_unless_allowed(tmp_path, capsys):
    ds = _converted(tmp_path, capsys, labels=("background", "crack", "rust"))
    code, err, _ = _validate(capsys, ds)
    assert code == 2 and "dataset.json" in err and "'rust'" in err and "allow_absent_classes" in err, err
    code, err, report = _validate(capsys, ds, "--allow-absent-classes")
    assert code == 0 and json.loads(report.read_text())["absent_classes"] == ["rust"], err


def test_a_dataset_mostly_ignored_fails_validation_unless_the_limit_is_raised(tmp_path, capsys):
    def mostly_ignored(i):
        m = np.full((H, W), 255, np.uint8)
        m[:2] = 0
        m[2:4] = 1
        return m  # 8 of 12 rows ignored

    ds = _converted(tmp_path, capsys, mask=mostly_ignored)
    code, err, _ = _validate(capsys, ds)
    assert code == 2 and "67% of all mask pixels are ignore_index 255" in err, err
    assert "max_ignore_share" in err and "mask_encoding: binary" in err and "masks/s0.png" in err
    code, err, report = _validate(capsys, ds, "--max-ignore-share", "0.9")
    assert code == 0 and abs(json.loads(report.read_text())["ignored_share"] - 8 / 12) < 1e-9, err


def _rewrite_entry(ds: Path, sid: str, **fields) -> None:
    meta = json.loads((ds / "dataset.json").read_text())
    meta["manifest"][sid].update(fields)
    (ds / "dataset.json").write_text(json.dumps(meta))


def test_a_lossy_canonical_mask_fails_validation(tmp_path, capsys):
    ds = _converted(tmp_path, capsys)
    jpg = ds / "masks" / "s1.jpg"
    Image.open(ds / "masks" / "s1.png").save(jpg, quality=95)
    _rewrite_entry(ds, "s1", mask="masks/s1.jpg", mask_sha256=hashlib.sha256(jpg.read_bytes()).hexdigest())
    code, err, _ = _validate(capsys, ds)
    assert code == 2 and "s1.jpg" in err and "PNG (lossless)" in err and "JPEG" in err, err


def test_a_16_bit_image_in_a_canonical_dataset_fails_validation(tmp_path, capsys):
    ds = _converted(tmp_path, capsys)
    img = ds / "images" / "s2.png"
    Image.fromarray(np.full((H, W), 40000, np.uint16)).save(img)
    _rewrite_entry(ds, "s2", image_sha256=hashlib.sha256(img.read_bytes()).hexdigest())
    code, err, _ = _validate(capsys, ds)
    assert code == 2 and "s2.png" in err and "16-bit" in err, err


def test_a_dataset_json_naming_a_file_outside_its_folder_is_refused(tmp_path, capsys):
    ds = _converted(tmp_path, capsys)
    _rewrite_entry(ds, "s0", image="../../../etc/passwd")
    code, err, _ = _validate(capsys, ds)
    assert code == 2 and "dataset.json" in err and "['manifest']['s0']['image']" in err, err


# ---------------------------------------------------------------- EXIF orientation: one rule


def _exif_rotated(path: Path, stored: np.ndarray, orientation: int = 6) -> None:
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, quality=95)


@pytest.fixture
def rotated_source(tmp_path) -> Path:
    """Two JPEGs stored W x H with EXIF orientation 6 (displayed H x W: rotated 90 degrees clockwise),
    and masks drawn on the displayed images (a square in the displayed top-left corner)."""
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for i in range(2):
        _exif_rotated(src / "images" / f"s{i}.jpg", _rgb(i))  # stored 12 x 20 (h x w)
        m = np.zeros((W, H), np.uint8)  # displayed: 20 rows x 12 columns
        m[:5, :4] = 1
        Image.fromarray(m).save(src / "masks" / f"s{i}.png")
    return src


def test_exif_rotated_images_convert_validate_train_and_predict_as_displayed(
    tmp_path, capsys, rotated_source
):
    from segbench.data.dataset import SegmentationDataset, build_transform
    from segbench.images import read_image

    out = tmp_path / "ds"
    code, err = _run(
        capsys, "convert", "--format", "masks", "--classes", _labels(tmp_path), rotated_source, out
    )
    assert code == 0, err
    assert "EXIF orientation" in err and "as displayed" in err  # the rule is said on the console
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["manifest"]["s0"]["height"], meta["manifest"]["s0"]["width"]) == (W, H)
    assert _validate(capsys, out)[0] == 0
    # training data: image and mask of one item have the displayed shape and line up
    ds = SegmentationDataset(
        out, meta["manifest"], ["s0"], build_transform({"normalize": {}}, (W, H), train=False)
    )
    x, y = ds[0]
    assert tuple(x.shape) == (3, W, H) and tuple(y.shape) == (W, H) and int(y[:5, :4].sum()) == 20
    assert read_image(out / "images" / "s0.jpg").shape == (W, H, 3)  # evaluation's and predict's reader


def test_a_mask_drawn_on_the_stored_pixels_of_a_rotated_image_is_refused_with_the_reason(
    tmp_path, capsys, rotated_source
):
    Image.fromarray(_square_mask()).save(rotated_source / "masks" / "s1.png")  # stored 12 x 20
    code, err = _convert_over_a_good_output(
        tmp_path, capsys, rotated_source, "--format", "masks", "--classes", _labels(tmp_path)
    )
    assert code == 2 and "s1.png" in err and "EXIF orientation 6" in err, err
    assert "stored, unrotated" in err and "Orientation=" in err


def test_labelme_annotations_of_a_rotated_image_use_the_displayed_size(tmp_path, capsys):
    src = tmp_path / "lm"
    src.mkdir()
    _exif_rotated(src / "a.jpg", _rgb(0))
    doc = {
        "version": "5.3.1",
        "shapes": [{"label": "thing", "points": [[1, 1], [8, 1], [8, 15]], "shape_type": "polygon"}],
        "imagePath": "a.jpg",
        "imageData": None,
        "imageHeight": W,  # as labelme saves it: the displayed size
        "imageWidth": H,
    }
    (src / "a.json").write_text(json.dumps(doc))
    code, err = _run(capsys, "convert", "--format", "labelme", src, tmp_path / "out")
    assert code == 0, err
    doc["imageHeight"], doc["imageWidth"] = H, W  # the stored size: drawn on the unrotated pixels
    (src / "a.json").write_text(json.dumps(doc))
    code, err = _run(capsys, "convert", "--format", "labelme", src, tmp_path / "out2")
    assert code == 2 and "a.json" in err and "EXIF orientation 6" in err, err


def test_predict_writes_masks_of_the_displayed_size(tmp_path, capsys, rotated_source):
    from test_no_code_runs import SMP, _model_folder

    model = _model_folder(tmp_path / "best", SMP)
    out = tmp_path / "pred.png"
    code, err = _run(capsys, "predict", rotated_source / "images" / "s0.jpg", "--model", model, "-o", out)
    assert code == 0, err
    assert Image.open(out).size == (H, W)  # width x height as displayed


# ---------------------------------------------------------------- symbolic links the user made


def test_a_mask_folder_whose_images_folder_is_a_link_converts(tmp_path, capsys):
    disk = _mask_folder(tmp_path / "other_disk")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(disk / "images", src / "images")
    os.symlink(disk / "masks", src / "masks")
    code, err = _run(
        capsys, "convert", "--format", "masks", "--classes", _labels(tmp_path), src, tmp_path / "out"
    )
    assert code == 0 and "converted 2 images" in err, err


@pytest.mark.parametrize("fmt", ["labelme", "coco"])
def test_annotations_whose_images_folder_is_a_link_convert(tmp_path, capsys, fmt):
    disk = tmp_path / "other_disk" / "images"
    disk.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(_rgb(i)).save(disk / f"s{i}.png")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(disk, src / "images")
    if fmt == "coco":
        (src / "annotations").mkdir()
        (src / "annotations" / "instances.json").write_text(json.dumps(_coco_doc()))
    else:
        (src / "ann").mkdir()
        for i in range(2):
            doc = {
                "shapes": [{"label": "thing", "points": [[1, 1], [8, 1], [8, 8]], "shape_type": "polygon"}],
                "imagePath": f"../images/s{i}.png",
                "imageData": None,
                "imageHeight": H,
                "imageWidth": W,
            }
            (src / "ann" / f"s{i}.json").write_text(json.dumps(doc))
    code, err = _run(capsys, "convert", "--format", fmt, src, tmp_path / "out")
    assert code == 0 and "converted 2 images" in err, err
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    sid = next(k for k in meta["manifest"] if k.endswith("s1"))  # LabelMe: ann__s1
    copied = tmp_path / "out" / meta["manifest"][sid]["image"]
    assert copied.read_bytes() == (disk / "s1.png").read_bytes() and not copied.is_symlink()


def test_a_path_in_an_annotation_file_still_cannot_leave_the_dataset_folder_through_dots(tmp_path, capsys):
    disk = tmp_path / "other_disk"
    disk.mkdir()
    Image.fromarray(_rgb(0)).save(disk / "secret.png")
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    Image.fromarray(_rgb(1)).save(src / "images" / "s0.png")
    doc = _coco_doc()
    doc["images"] = [{"id": 1, "file_name": "../../other_disk/secret.png", "width": W, "height": H}]
    doc["annotations"] = []
    (src / "annotations").mkdir()
    (src / "annotations" / "instances.json").write_text(json.dumps(doc))
    code, err = _convert_over_a_good_output(tmp_path, capsys, src, "--format", "coco")
    assert code == 2 and "instances.json" in err and "outside the dataset folder" in err, err


# ---------------------------------------------------------------- malformed fields: a message, no traceback

GOOD_COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}],
    "categories": [{"id": 1, "name": "thing"}],
    "annotations": [
        {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 8, 1, 8, 8]]},
        {
            "id": 6,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 1,
            "segmentation": {"size": [10, 20], "counts": [100, 100]},
        },
    ],
}
GOOD_LABELME = {
    "version": "5.3.1",
    "shapes": [
        {"label": "thing", "points": [[1, 1], [8, 1], [8, 8]], "shape_type": "polygon"},
        {"label": "thing", "points": [[1, 1], [4, 4]], "shape_type": "rectangle"},
    ],
    "imagePath": "a.png",
    "imageData": None,
    "imageHeight": 10,
    "imageWidth": 20,
}


def _set(doc, path: tuple, value):
    """A copy of ``doc`` with the field at ``path`` replaced by ``value`` (``_DELETE``: removed)."""
    d = copy.deepcopy(doc)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if value is _DELETE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


_DELETE = object()


def _annotation_source(tmp_path: Path, fmt: str, doc) -> tuple[Path, list, str]:
    src = tmp_path / "src"
    if fmt == "coco":
        (src / "images").mkdir(parents=True)
        Image.fromarray(np.full((10, 20, 3), 90, np.uint8)).save(src / "images" / "a.png")
        (src / "annotations").mkdir()
        (src / "annotations" / "instances.json").write_text(json.dumps(doc))
        return src, ["--format", "coco"], "instances.json"
    src.mkdir()
    Image.fromarray(np.full((10, 20, 3), 90, np.uint8)).save(src / "a.png")
    (src / "a.json").write_text(json.dumps(doc))
    return src, ["--format", "labelme"], "a.json"


STRUCTURE_CASES = {
    "coco category without name": ("coco", ("categories", 0, "name"), _DELETE, "categories[0]"),
    "coco category id text": ("coco", ("categories", 0, "id"), "x", "categories[0].id"),
    "coco image entry a number": ("coco", ("images", 0), 7, "images[0]"),
    "coco image width text": ("coco", ("images", 0, "width"), "x", "images[0].width"),
    "coco annotation a string": ("coco", ("annotations", 0), "x", "annotations[0]"),
    "coco image_id a list": ("coco", ("annotations", 1, "image_id"), [1], "annotations[1].image_id"),
    "coco bbox text": ("coco", ("annotations", 0, "bbox"), ["a", 1, 2, 3], "annotations[0].bbox[0]"),
    "labelme shape a number": ("labelme", ("shapes", 1), 3, "shapes[1]"),
    "labelme points an object": ("labelme", ("shapes", 0, "points"), {}, "shapes[0].points"),
    "labelme imageData a number": ("labelme", ("imageData",), 12, "imageData"),
    "labelme imageWidth text": ("labelme", ("imageWidth",), "x", "imageWidth"),
    "labelme label missing": ("labelme", ("shapes", 0, "label"), _DELETE, "shapes[0]"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_a_malformed_field_names_the_file_and_the_field(tmp_path, capsys, case):
    fmt, path, value, field = STRUCTURE_CASES[case]
    good = GOOD_COCO if fmt == "coco" else GOOD_LABELME
    src, args, file_name = _annotation_source(tmp_path, fmt, _set(good, path, value))
    code, err = _convert_over_a_good_output(tmp_path, capsys, src, *args)
    assert code == 2 and f"{file_name}: {field}" in err and "Traceback" not in err, err


def _fields(doc, prefix=()):
    """Every field path of a JSON document (list items: the first two)."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _fields(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:2]):
            yield prefix + (i,)
            yield from _fields(v, prefix + (i,))


SWEEP_VALUES = [None, "x", -1, [], {}, _DELETE]


@pytest.mark.parametrize("fmt", ["coco", "labelme"])
def test_every_field_of_an_annotation_file_replaced_by_a_wrong_value_fails_cleanly(tmp_path, capsys, fmt):
    """Each field of a good file replaced by each of ``SWEEP_VALUES`` (about 250 files per format):
    the conversion succeeds or exits 2 naming the file; no exception reaches the user."""
    import shutil

    good = GOOD_COCO if fmt == "coco" else GOOD_LABELME
    failures, tried = [], 0
    for path in _fields(good):
        for value in SWEEP_VALUES:
            work = tmp_path / "w"
            work.mkdir()
            try:
                src, args, file_name = _annotation_source(work, fmt, _set(good, path, value))
                try:
                    code = main(["convert", *args, str(src), str(work / "out")])
                except BaseException as err:  # noqa: BLE001 (what escapes is the finding)
                    failures.append(f"{path}={value!r}: {type(err).__name__}: {err}")
                    continue
                err = capsys.readouterr().err
                tried += 1
                if code not in (0, 2) or (code == 2 and file_name not in err):
                    failures.append(f"{path}={value!r}: exit {code}: {err[-200:]}")
            finally:
                shutil.rmtree(work)
    assert tried > 150 and not failures, "\n".join(failures[:20])


DATASET_FIELD_CASES = {
    "manifest entry a string": (("manifest", "s0"), "x", "['manifest']['s0']"),
    "image path a number": (("manifest", "s0", "image"), 3, "['manifest']['s0']['image']"),
    "group missing": (("manifest", "s1", "group"), _DELETE, "['manifest']['s1']"),
    "ignore_index huge": (("ignore_index",), 10**30, "['ignore_index']"),
}


@pytest.mark.parametrize("case", sorted(DATASET_FIELD_CASES))
def test_a_malformed_dataset_json_names_the_field_in_validate_and_split(tmp_path, capsys, case):
    path, value, field = DATASET_FIELD_CASES[case]
    ds = _converted(tmp_path, capsys)
    meta = json.loads((ds / "dataset.json").read_text())
    (ds / "dataset.json").write_text(json.dumps(_set(meta, path, value)))
    code, err, _ = _validate(capsys, ds)
    assert code == 2 and "dataset.json" in err and field in err, err
    split_cfg = tmp_path / "split.json"
    split_cfg.write_text(json.dumps({"strategy": "holdout", "test_fraction": 0.3, "val_fraction": 0.3}))
    code, err = _run(
        capsys, "split", "--dataset", ds / "dataset.json", "--config", split_cfg, "--out", tmp_path / "s.json"
    )
    assert code == 2 and field in err and not (tmp_path / "s.json").exists(), err


MODEL_JSON_CASES = {
    "unknown library": (("model", "library"), "keras", "does not build a model"),
    "architecture a number": (("model", "arch"), 5, "['model']['arch']"),
    "normalize a string": (("normalize",), "imagenet", "['normalize']"),
    "num_classes text": (("num_classes",), "two", "['num_classes']"),
    "ensemble member outside the folder": (
        ("ensemble",),
        [{"path": "../../elsewhere"}],
        "['ensemble'][0]['path']",
    ),
}


@pytest.mark.parametrize("case", sorted(MODEL_JSON_CASES))
def test_a_malformed_model_json_fails_predict_naming_the_file_and_field(tmp_path, capsys, case):
    from test_no_code_runs import SMP, _model_folder

    path, value, words = MODEL_JSON_CASES[case]
    folder = _model_folder(tmp_path / "best", SMP)
    info = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(_set(info, path, value)))
    image = tmp_path / "a.png"
    Image.fromarray(_rgb(0, 32, 32)).save(image)
    before = _tree_hash(folder)
    code, err = _run(capsys, "predict", image, "--model", folder, "-o", tmp_path / "out")
    assert code == 2 and "model.json" in err and words in err, err
    assert _tree_hash(folder) == before and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- a broken resume checkpoint


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated zip", b'{"epoch": 3}'])
def test_a_broken_resume_checkpoint_makes_the_job_start_over(tmp_path, processed, capsys, content):
    from test_no_code_runs import _train_args

    out = tmp_path / "job"
    ckpt = out / "lightning" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(content)
    code, err = _run(capsys, *_train_args(tmp_path, processed, out))
    assert code == 0 and "ignoring unreadable checkpoint" in err and "last.ckpt" in err, err
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["resumed_after_epoch"] is None and meta["epochs"] == 1
