"""Bad input through the command line, as a user meets it: the exit code, a message naming the file,
no temporary folder left behind, the user's files unchanged and a previous output intact.

Cases so far (issue 15): output folders that would destroy user files (5), 0/255 masks named
without a background class, by a label list or a dataset config (4), SIGTERM during a conversion (1),
a class with the ignore_index id (1), and a corpus of malformed annotation files (35: COCO 13, CVAT 9,
LabelMe 8, LabelMe XML 3, mask folders 2). tests/test_no_code_runs.py plants code in every loadable
file (7) and breaks model folders, predict's input and dataset.json (9); tests/test_bad_data.py has
silently wrong data, EXIF orientation, links, malformed fields and broken resume checkpoints."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def _tree_hash(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _binary_masks(root: Path, n: int = 2, size: int = 8) -> Path:
    """``root/images/*.png`` + ``root/masks/*.png``: 0/255 masks, foreground = 255."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            root / "images" / f"s{i}.png"
        )
        m = np.zeros((size, size), np.uint8)
        m[1 : 1 + size // 2, 1 : 1 + size // 2] = 255
        Image.fromarray(m).save(root / "masks" / f"s{i}.png")
    return root


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _convert(capsys, *args) -> tuple[int, str]:
    code = main(["convert", *map(str, args)])
    return code, capsys.readouterr().err


def _masks_args(tmp_path: Path) -> list:
    """``--format masks --classes <labels.txt>`` (background, crack), the label list beside the data."""
    labels = tmp_path / "labels.txt"
    labels.write_text("background\ncrack\n")
    return ["--format", "masks", "--classes", labels]


# ---------------------------------------------------------------- output folders that hold user files


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_an_output_overlapping_the_source_is_refused_and_nothing_changes(tmp_path, capsys, where):
    src = _binary_masks(tmp_path / "data" / "src")
    out = {"same": src, "inside": src / "converted", "around": tmp_path / "data"}[where]
    args = _masks_args(tmp_path)
    before = _tree_hash(tmp_path)
    code, err = _convert(capsys, *args, src, out)
    assert code == 2 and "overlaps the source" in err and str(out) in err
    assert _tree_hash(tmp_path) == before  # the source (and everything around it) is byte-identical
    assert not _temps(out.parent)


def test_a_folder_with_user_files_is_not_replaced_without_force(tmp_path, capsys):
    src = _binary_masks(tmp_path / "src")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "annotations.json").write_text('{"precious": true}')
    args = _masks_args(tmp_path)
    code, err = _convert(capsys, *args, src, out)
    assert code == 2 and str(out) in err and "annotations.json" in err and "--force" in err
    assert (out / "annotations.json").read_text() == '{"precious": true}' and not _temps(tmp_path)
    # a hidden folder of the user's (a .git) counts as theirs too
    (out / "annotations.json").unlink()
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    code, err = _convert(capsys, *args, src, out)
    assert code == 2 and ".git" in err and (out / ".git" / "HEAD").is_file()
    (out / "annotations.json").write_text('{"precious": true}')
    # asked for explicitly, it is replaced
    assert _convert(capsys, *args, src, out, "--force")[0] == 0
    assert (out / "dataset.json").is_file() and not (out / "annotations.json").exists()


def test_a_previous_segbench_dataset_is_replaced_and_a_failed_run_keeps_it(tmp_path, capsys):
    src = _binary_masks(tmp_path / "src")
    out = tmp_path / "out"
    args = _masks_args(tmp_path)
    assert _convert(capsys, *args, src, out)[0] == 0
    (out / "dataset.json").unlink()  # what Snakemake leaves before rerunning the convert rule
    assert _convert(capsys, *args, src, out)[0] == 0
    # the validate and fingerprint steps write beside the dataset: a reconversion replaces them too
    for name in ("validation.json", "fingerprint.json"):
        (out / name).write_text("{}")
    (out / "dataset.json").unlink()
    code, err = _convert(capsys, *args, src, out)
    assert code == 0, err
    assert not (out / "fingerprint.json").exists() and not (out / "validation.json").exists()
    before = _tree_hash(out)
    (src / "masks" / "s1.png").write_bytes(b"not a png")  # a broken source: the old output stays
    code, err = _convert(capsys, *args, src, out)
    assert code == 2 and "s1.png" in err and _tree_hash(out) == before and not _temps(tmp_path)


# ---------------------------------------------------------------- 0/255 masks named without a background


@pytest.mark.parametrize(
    "name, text",
    [
        ("labels.txt", "membrane\ncell\n"),
        ("classes.yaml", "- {id: 0, name: membrane}\n- {id: 1, name: cell}\n"),
        ("reversed.yaml", "- {id: 1, name: cell}\n- {id: 0, name: membrane}\n"),
    ],
)
def test_binary_masks_with_two_named_classes_become_those_classes(tmp_path, capsys, name, text):
    src = _binary_masks(tmp_path / "src")
    (tmp_path / name).write_text(text)
    code, _ = _convert(capsys, "--format", "masks", "--classes", tmp_path / name, src, tmp_path / "out")
    assert code == 0
    import json

    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert [(c["id"], c["name"]) for c in meta["classes"]] == [(0, "membrane"), (1, "cell")]
    mask = np.asarray(Image.open(tmp_path / "out" / meta["manifest"]["s0"]["mask"]))
    assert set(np.unique(mask)) == {0, 1} and int((mask == 1).sum()) == 16  # foreground kept, not ignored


# ---------------------------------------------------------------- interrupted


def test_sigterm_during_a_conversion_leaves_no_temporary_folder(tmp_path):
    src = _binary_masks(tmp_path / "src", n=400, size=256)
    out = tmp_path / "out"
    args = [str(a) for a in _masks_args(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segbench.cli", "convert", *args, str(src), str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not _temps(tmp_path):
        assert proc.poll() is None and time.time() < deadline, (
            "the conversion ended before it was interrupted"
        )
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not _temps(tmp_path) and not out.exists()


def test_binary_masks_with_two_classes_in_a_dataset_config(tmp_path):
    import json

    from segbench.data.convert import convert

    src = _binary_masks(tmp_path / "src")
    cfg = {
        "name": "cells",
        "format": "masks",
        "root": str(src),
        "ignore_index": 255,
        "background": None,
        "classes": [{"id": 0, "name": "membrane"}, {"id": 1, "name": "cell"}],
    }
    convert(cfg, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert [c["name"] for c in meta["classes"]] == ["membrane", "cell"]
    mask = np.asarray(Image.open(tmp_path / "out" / meta["manifest"]["s1"]["mask"]))
    assert set(np.unique(mask)) == {0, 1} and int((mask == 1).sum()) == 16


def test_a_class_with_the_ignore_index_id_is_refused(tmp_path, capsys):
    import json

    src = _binary_masks(tmp_path / "src")
    cfg = {
        "name": "cracks",
        "format": "masks",
        "root": str(src),
        "ignore_index": 255,
        "classes": [{"id": 0, "name": "background"}, {"id": 255, "name": "crack"}],
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    code, err = _convert(capsys, "--config", tmp_path / "cfg.json", "--out", tmp_path / "out")
    assert code == 2 and "class 'crack' has id 255" in err and "dataset.ignore_index" in err
    assert not (tmp_path / "out").exists() and not _temps(tmp_path)


# ---------------------------------------------------------------- a corpus of malformed annotation files
#
# Each case builds a source folder with one broken file and converts it over an earlier, good output:
# exit code 2, a message naming the broken file, the source unchanged, the earlier output intact, no
# temporary folder left. The NaN / huge-coordinate cases would otherwise make pycocotools or Pillow
# allocate gigabytes before anything is reported.


def _png(path: Path, w: int = 20, h: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def _coco(src: Path, segmentation, *, text: str | None = None, image_bytes: bytes | None = None) -> list:
    import json

    _png(src / "images" / "a.png")
    if image_bytes is not None:
        (src / "images" / "a.png").write_bytes(image_bytes)
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": segmentation}
        ],
    }
    (src / "annotations").mkdir()
    (src / "annotations" / "instances.json").write_text(text if text is not None else json.dumps(doc))
    return ["--format", "coco"]


def _cvat(src: Path, shape: str, *, text: str | None = None) -> list:
    _png(src / "images" / "a.png")
    xml = (
        "<annotations><version>1.1</version><meta><task><labels><label><name>x</name></label></labels>"
        f"</task></meta><image id='0' name='a.png' width='20' height='10'>{shape}</image></annotations>"
    )
    (src / "annotations.xml").write_text(text if text is not None else xml)
    return ["--format", "cvat"]


def _labelme_json(src: Path, points, *, text: str | None = None, **extra) -> list:
    import json

    _png(src / "a.png")
    doc = {
        "version": "5.3.1",
        "flags": {},
        "shapes": [{"label": "thing", "points": points, "shape_type": "polygon", "flags": {}}],
        "imagePath": "a.png",
        "imageData": None,
        "imageHeight": 10,
        "imageWidth": 20,
        **extra,
    }
    (src / "a.json").write_text(text if text is not None else json.dumps(doc))
    return ["--format", "labelme"]


def _labelme_xml(src: Path, xs, *, text: str | None = None) -> list:
    _png(src / "a.png")
    pts = "".join(f"<pt><x>{x}</x><y>{y}</y></pt>" for x, y in xs)
    xml = (
        "<annotation><filename>a.png</filename><folder></folder><imagesize><nrows>10</nrows>"
        f"<ncols>20</ncols></imagesize><object><name>thing</name><deleted>0</deleted><polygon>{pts}"
        "</polygon></object></annotation>"
    )
    (src / "a.xml").write_text(text if text is not None else xml)
    return ["--format", "labelme-xml"]


def _masks_pair(src: Path, *, mask_size=(20, 10), mask_bytes: bytes | None = None) -> list:
    _png(src / "images" / "a.png")
    (src / "masks").mkdir()
    if mask_bytes is not None:
        (src / "masks" / "a.png").write_bytes(mask_bytes)
    else:
        Image.fromarray(np.zeros(mask_size[::-1], np.uint8)).save(src / "masks" / "a.png")
    labels = src.parent / "pair_labels.txt"
    labels.write_text("background\ncrack\n")
    return ["--format", "masks", "--classes", labels]


NAN = float("nan")
TRIANGLE = [[1, 1], [8, 1], [8, 8]]
CORPUS = {
    # COCO polygons, RLE and files
    "coco polygon NaN": (lambda s: _coco(s, [[1, 1, NAN, 1, 8, 8]]), "instances.json", "not a finite"),
    "coco polygon inf": (lambda s: _coco(s, [[1, 1, float("inf"), 1, 8, 8]]), "instances.json", "finite"),
    "coco polygon 1e30": (lambda s: _coco(s, [[1, 1, 1e30, 1, 8, 8]]), "instances.json", "far outside"),
    "coco polygon -1e9": (lambda s: _coco(s, [[1, 1, 8, -1e9, 8, 8]]), "instances.json", "far outside"),
    "coco polygon text": (lambda s: _coco(s, [[1, 1, "x", 1, 8, 8]]), "instances.json", "not a number"),
    "coco RLE short runs": (
        lambda s: _coco(s, {"size": [10, 20], "counts": [5, 10, 5]}),
        "instances.json",
        "RLE runs cover 20 pixels",
    ),
    "coco RLE long runs": (
        lambda s: _coco(s, {"size": [10, 20], "counts": [150, 100]}),
        "instances.json",
        "RLE runs cover 250 pixels",
    ),
    "coco RLE counts text": (
        lambda s: _coco(s, {"size": [10, 20], "counts": [100, "x"]}),
        "instances.json",
        "whole numbers",
    ),
    "coco RLE wrong size": (
        lambda s: _coco(s, {"size": [11, 20], "counts": [220]}),
        "instances.json",
        "RLE size",
    ),
    "coco not JSON": (lambda s: _coco(s, None, text="{not json"), "instances.json", "instances.json"),
    "coco corrupt image": (
        lambda s: _coco(s, [[1, 1, 8, 1, 8, 8]], image_bytes=b"\x89PNG\r\n\x1a\n broken"),
        "a.png",
        "a.png",
    ),
    "coco without images": (
        lambda s: _coco(s, None, text='{"annotations": [], "categories": []}'),
        "instances.json",
        "instances.json",
    ),
    "coco top level a list": (lambda s: _coco(s, None, text="[1, 2]"), "instances.json", "instances.json"),
    # CVAT
    "cvat polygon NaN": (
        lambda s: _cvat(s, "<polygon label='x' points='1,1;nan,1;8,8'/>"),
        "annotations.xml",
        "finite",
    ),
    "cvat polygon 1e30": (
        lambda s: _cvat(s, "<polygon label='x' points='1,1;1e30,1;8,8'/>"),
        "annotations.xml",
        "far outside",
    ),
    "cvat box inf": (
        lambda s: _cvat(s, "<box label='x' xtl='1' ytl='1' xbr='inf' ybr='5'/>"),
        "annotations.xml",
        "finite",
    ),
    "cvat ellipse 1e12": (
        lambda s: _cvat(s, "<ellipse label='x' cx='5' cy='5' rx='1e12' ry='2'/>"),
        "annotations.xml",
        "far outside",
    ),
    "cvat polyline NaN": (
        lambda s: _cvat(s, "<polyline label='x' points='1,1;nan,nan'/>"),
        "annotations.xml",
        "finite",
    ),
    "cvat points 1e30": (
        lambda s: _cvat(s, "<points label='x' points='1e30,1'/>"),
        "annotations.xml",
        "far outside",
    ),
    "cvat mask box 100000 px": (
        lambda s: _cvat(
            s, "<mask label='x' rle='10000000000' left='0' top='0' width='100000' height='100000'/>"
        ),
        "annotations.xml",
        "far outside",
    ),
    "cvat mask runs short": (
        lambda s: _cvat(s, "<mask label='x' rle='1, 2' left='0' top='0' width='4' height='4'/>"),
        "annotations.xml",
        "RLE runs sum to 3",
    ),
    "cvat not XML": (
        lambda s: _cvat(s, "", text="<annotations><image"),
        "annotations.xml",
        "annotations.xml",
    ),
    # LabelMe JSON
    "labelme NaN point": (lambda s: _labelme_json(s, [[1, 1], [NAN, 1], [8, 8]]), "a.json", "finite"),
    "labelme 1e30 point": (lambda s: _labelme_json(s, [[1, 1], [1e30, 1], [8, 8]]), "a.json", "far outside"),
    "labelme point text": (
        lambda s: _labelme_json(s, [[1, 1], ["x", 1], [8, 8]]),
        "a.json",
        "points must be",
    ),
    "labelme not JSON": (lambda s: _labelme_json(s, TRIANGLE, text='{"shapes": ['), "a.json", "a.json"),
    "labelme bad imageData": (
        lambda s: _labelme_json(s, TRIANGLE, imageData="%%% not base64 %%%"),
        "a.json",
        "imageData",
    ),
    "labelme imagePath escapes": (
        lambda s: _labelme_json(s, TRIANGLE, imagePath="../../etc/passwd"),
        "a.json",
        "outside the dataset folder",
    ),
    "labelme shapes not a list": (lambda s: _labelme_json(s, TRIANGLE, shapes=7), "a.json", "a.json"),
    "labelme top level a list": (lambda s: _labelme_json(s, TRIANGLE, text="[]"), "a.json", "a.json"),
    # LabelMe XML
    "labelme-xml NaN point": (lambda s: _labelme_xml(s, [(1, 1), ("nan", 1), (8, 8)]), "a.xml", "finite"),
    "labelme-xml 1e30 point": (
        lambda s: _labelme_xml(s, [(1, 1), (1e30, 1), (8, 8)]),
        "a.xml",
        "far outside",
    ),
    "labelme-xml not XML": (lambda s: _labelme_xml(s, [], text="<annotation><filename>"), "a.xml", "a.xml"),
    # mask folders
    "mask of another size": (lambda s: _masks_pair(s, mask_size=(21, 10)), "a.png", "a.png"),
    "mask not an image": (lambda s: _masks_pair(s, mask_bytes=b"GIF89a broken"), "a.png", "a.png"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_a_malformed_annotation_fails_cleanly_naming_the_file(tmp_path, capsys, case):
    build, file_name, words = CORPUS[case]
    out = tmp_path / "out"
    good = _binary_masks(tmp_path / "good")
    assert _convert(capsys, *_masks_args(tmp_path), good, out)[0] == 0  # an earlier, good output
    before_out = _tree_hash(out)
    src = tmp_path / "src"
    src.mkdir()
    args = build(src)
    before_src = _tree_hash(src)
    code, err = _convert(capsys, *args, src, out)
    assert code == 2, err
    assert file_name in err and words in err, err
    assert _tree_hash(src) == before_src and _tree_hash(out) == before_out
    assert not _temps(tmp_path) and not _temps(out.parent)
