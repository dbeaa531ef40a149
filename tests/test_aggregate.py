"""Aggregation: the summary table and a selection that never reads the test split."""

import json

import pytest

from segbench.aggregate import aggregate, majority_baseline
from segbench.io import atomic_write_json


def _fake_experiment(root, val, test, params):
    """Two-class experiment with one fold: val/test mIoU and parameter count per model."""
    ds = root / "ds"
    atomic_write_json(ds / "dataset.json", {"name": "toy", "classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "fg"}],
                                            "ignore_index": 255, "manifest": {}})
    atomic_write_json(ds / "validation.json", {"per_image": {"a": [90, 10], "b": [80, 20], "c": [30, 70]}})
    exp = root / "exp"
    atomic_write_json(exp / "splits.json", {"test": ["c"], "folds": [{"train": ["a"], "val": ["b"]}]})
    for name in val:
        m = {"mIoU": test[name], "mDice": test[name], "mAcc": test[name], "aAcc": test[name], "fwIoU": test[name],
             "IoU": [test[name], test[name]], "image_averaged": {"mIoU": test[name]}, "time_ms_median": 5.0, "time_ms_p95": 6.0}
        atomic_write_json(exp / "eval" / name / "fold0" / "metrics.json", m)
        d = exp / "models" / name / "fold0"
        atomic_write_json(d / "train_meta.json", {"parameters": params[name], "best_val_mIoU": val[name],
                                                  "epoch_time_s_median": 1.0, "wall_time_s": 3.0})
        (d / "history.csv").write_text(f"epoch,train_loss,val_loss,val_mIoU,lr,epoch_time_s\n1,1,1,{val[name]},0,1\n")
        for f in ("model.safetensors", "model.json"):
            (d / f).write_text("x")
    return exp, ds


MODELS = {"a": {"library": "smp", "arch": "Unet"}, "b": {"library": "mmseg", "config": "x/y.py"}}


def test_selection_uses_validation_not_test(tmp_path):
    exp, ds = _fake_experiment(tmp_path, val={"a": 0.6, "b": 0.5}, test={"a": 0.3, "b": 0.9}, params={"a": 10, "b": 5})
    s = aggregate(exp, MODELS, 1, ds)
    assert s["best"]["model"] == "a" and s["best"]["selected_on"] == "validation"
    assert [m["model"] for m in s["models"]] == ["a", "b"]
    assert json.loads((exp / "best" / "selection.json").read_text())["model"] == "a"
    # perturbing every test result changes nothing in the choice
    for name, v in (("a", 0.0), ("b", 1.0)):
        p = exp / "eval" / name / "fold0" / "metrics.json"
        m = json.loads(p.read_text())
        m.update(mIoU=v, IoU=[v, v])
        p.write_text(json.dumps(m))
    assert aggregate(exp, MODELS, 1, ds)["best"]["model"] == "a"


def test_ties_go_to_the_smaller_model(tmp_path):
    exp, ds = _fake_experiment(tmp_path, val={"a": 0.5, "b": 0.5}, test={"a": 0.4, "b": 0.4}, params={"a": 10, "b": 5})
    assert aggregate(exp, MODELS, 1, ds)["best"]["model"] == "b"


def test_missing_output_names_the_file(tmp_path):
    exp, ds = _fake_experiment(tmp_path, val={"a": 0.5, "b": 0.4}, test={"a": 0.4, "b": 0.4}, params={"a": 1, "b": 1})
    (exp / "eval" / "b" / "fold0" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="eval/b/fold0/metrics.json"):
        aggregate(exp, MODELS, 1, ds)


def test_majority_baseline():
    b = majority_baseline({"per_image": {"a": [90, 10], "c": [30, 70]}}, {"test": ["c"], "folds": [{"train": ["a"]}]}, ["bg", "fg"])
    # always "bg" on an image with 30 bg / 70 fg pixels: IoU_bg = 0.3, IoU_fg = 0
    assert b["class"] == "bg" and b["mIoU"] == pytest.approx(0.15) and b["aAcc"] == pytest.approx(0.3)


def test_bootstrap_ci_in_summary(tmp_path):
    import math

    import numpy as np

    from segbench.metrics import metrics_from_confusion

    exp, ds = _fake_experiment(tmp_path, val={"a": 0.6, "b": 0.5}, test={"a": 0.3, "b": 0.9}, params={"a": 10, "b": 5})
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, size=(30, 2, 2))
    np.save(exp / "eval" / "a" / "fold0" / "confusion_per_image.npy", cms)
    rows = {r["model"]: r for r in aggregate(exp, MODELS, 1, ds)["models"]}
    pooled = metrics_from_confusion(cms.sum(0))["mIoU"]
    assert rows["a"]["mIoU_ci_low"] < pooled < rows["a"]["mIoU_ci_high"]
    assert math.isnan(rows["b"]["mIoU_ci_low"])  # no per-image matrices: no interval, not a made-up one
