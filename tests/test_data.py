"""Mask-folder import, validation and splits on real CamVid frames."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from segbench.data.convert import DatasetError, convert
from segbench.data.splits import make_splits
from segbench.data.validate import validate_dataset
from segbench.io import sha256_file


def _tree_hashes(root):
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_camvid_subset(tmp_path, camvid_subset, dataset_cfg):
    before = _tree_hashes(camvid_subset)
    meta = convert(dataset_cfg, tmp_path / "camvid")
    assert _tree_hashes(camvid_subset) == before  # raw data untouched
    n_raw = len(list((camvid_subset / "CamVid").glob("*/*.png"))) // 2
    assert meta["num_images"] == n_raw == len(meta["manifest"])
    sid, entry = next(iter(meta["manifest"].items()))
    # images keep their original bytes
    assert sha256_file(tmp_path / "camvid" / entry["image"]) == sha256_file(entry["source_image"])
    assert entry["group"] == sid[:6] and (entry["height"], entry["width"]) == (360, 480)
    raw = np.asarray(Image.open(entry["source_mask"]))
    out = np.asarray(Image.open(tmp_path / "camvid" / entry["mask"]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[raw == 11], 255)  # Unlabelled -> ignore_index
    np.testing.assert_array_equal(out[raw != 11], raw[raw != 11])
    assert json.loads((tmp_path / "camvid" / "dataset.json").read_text())["ignore_index"] == 255


def test_unpaired_files_reported_and_nothing_written(tmp_path, camvid_subset, dataset_cfg):
    raw = tmp_path / "raw"
    shutil.copytree(camvid_subset, raw)
    victim = sorted((raw / "CamVid" / "trainannot").glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(DatasetError) as e:
        convert(dict(dataset_cfg, root=str(raw)), tmp_path / "out")
    msg = str(e.value)
    assert victim.name in msg and "no mask" in msg and "add the mask" in msg
    assert not (tmp_path / "out").exists()


def test_size_mismatch_reported(tmp_path, camvid_subset, dataset_cfg):
    raw = tmp_path / "raw"
    shutil.copytree(camvid_subset, raw)
    victim = sorted((raw / "CamVid" / "valannot").glob("*.png"))[0]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(victim)
    with pytest.raises(DatasetError, match=f"{victim.name}.*12x10"):
        convert(dict(dataset_cfg, root=str(raw)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_validate_reports_undeclared_mask_values(tmp_path, processed):
    ds = tmp_path / "camvid"
    shutil.copytree(processed.parent, ds)
    meta = json.loads((ds / "dataset.json").read_text())
    sid, entry = next(iter(meta["manifest"].items()))
    mask = np.asarray(Image.open(ds / entry["mask"])).copy()
    mask[0, 0] = 42
    Image.fromarray(mask).save(ds / entry["mask"])
    entry["mask_sha256"] = sha256_file(ds / entry["mask"])
    (ds / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"mask values \[42\]"):
        validate_dataset(ds / "dataset.json", ds / "validation.json")
    assert not (ds / "validation.json").exists()


def test_validate_counts_pixels(processed):
    rep = json.loads((processed.parent / "validation.json").read_text())
    meta = json.loads(processed.read_text())
    total = sum(e["height"] * e["width"] for e in meta["manifest"].values())
    assert sum(rep["class_pixels"]) + rep["ignored_pixels"] == total
    assert len(rep["per_image"]) == meta["num_images"]


@pytest.mark.parametrize("strategy,n_folds", [("holdout", 1), ("kfold", 2)])
def test_group_aware_splits(processed, strategy, n_folds):
    meta = json.loads(processed.read_text())
    cfg = {
        "strategy": strategy,
        "seed": 3,
        "test_fraction": 0.25,
        "val_fraction": 0.0 if strategy == "kfold" else 0.25,
        "n_folds": n_folds,
        "group_aware": True,
    }
    s = make_splits(processed, cfg)
    assert make_splits(processed, cfg) == s  # seeded: deterministic
    group = {i: e["group"] for i, e in meta["manifest"].items()}
    assert len(s["folds"]) == n_folds
    for f in s["folds"]:
        sides = [set(s["test"]), set(f["train"]), set(f["val"])]
        groups = [{group[i] for i in side} for side in sides]
        for a in range(3):
            for b in range(a + 1, 3):
                assert not (groups[a] & groups[b])
        assert set().union(*sides) == set(meta["manifest"])
    if strategy == "kfold":  # every non-test image is validated exactly once
        vals = [i for f in s["folds"] for i in f["val"]]
        assert sorted(vals) == sorted(set(meta["manifest"]) - set(s["test"]))


def test_a_user_split_file_makes_as_many_folds_as_it_lists(processed, tmp_path):
    """split.strategy=file: the workflow trains every fold of the user's file (not only the first)."""
    from segbench.data.splits import n_folds_of

    s = make_splits(processed, {"strategy": "kfold", "seed": 1, "test_fraction": 0.25, "n_folds": 3})
    path = tmp_path / "my_splits.json"
    path.write_text(json.dumps({"test": s["test"], "folds": s["folds"]}))
    cfg = {"strategy": "file", "file": str(path), "group_aware": True}
    assert n_folds_of(cfg) == 3 and len(make_splits(processed, cfg)["folds"]) == 3
    assert n_folds_of({"strategy": "kfold", "n_folds": 4}) == 4 and n_folds_of({"strategy": "holdout"}) == 1
    with pytest.raises(DatasetError, match="missing.json: not found"):
        n_folds_of(dict(cfg, file=str(tmp_path / "missing.json")))


def test_split_too_few_groups(processed):
    with pytest.raises(DatasetError, match="cannot make 9 folds"):
        make_splits(
            processed,
            {"strategy": "kfold", "seed": 0, "test_fraction": 0.25, "n_folds": 9, "group_aware": True},
        )
