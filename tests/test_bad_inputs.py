"""Bad input through the command line, as a user meets it: the exit code, a message naming the file,
no temporary folder left behind, the user's files unchanged and a previous output intact.

Cases so far (issue 15): output folders that would destroy user files (5), 0/255 masks named
without a background class, by a label list or a dataset config (4), SIGTERM during a conversion (1)."""

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
