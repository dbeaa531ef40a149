"""Aggregation: the summary table, a selection that never reads the test split, constraints, verdicts."""

import json
import math

import numpy as np
import pytest

from segbench.aggregate import aggregate, majority_baseline
from segbench.io import atomic_write_json
from segbench.metrics import metrics_from_confusion


def _cm(miou: float, n: int = 1000) -> np.ndarray:
    """A 2-class confusion matrix with (about) the given mIoU: [[n, e], [e, n]] has IoU n / (n + 2e)."""
    e = int(round((n / miou - n) / 2))
    return np.array([[n, e], [e, n]], np.int64)


def _stack(miou: float, n_images: int, seed: int) -> np.ndarray:
    """Per-image matrices around the given mIoU (varied per image, seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [_cm(float(np.clip(miou + rng.normal(0, 0.03), 0.05, 0.99)), 500) for _ in range(n_images)]
    )


def _fake_experiment(root, val, test, params, times=None, n_test=30):
    """Two-class experiment with one fold; val/test mIoU per model written as real evaluation files."""
    ds = root / "ds"
    atomic_write_json(
        ds / "dataset.json",
        {
            "name": "toy",
            "classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "fg"}],
            "ignore_index": 255,
            "background": 0,
            "manifest": {},
        },
    )
    per_image = {"a": [90, 10], "b": [80, 20]}
    per_image.update({f"t{i}": [30, 70] for i in range(n_test)})
    atomic_write_json(ds / "validation.json", {"per_image": per_image})
    exp = root / "exp"
    atomic_write_json(
        exp / "splits.json",
        {"test": [f"t{i}" for i in range(n_test)], "folds": [{"train": ["a"], "val": ["b"]}]},
    )
    for k, name in enumerate(val):
        ev = exp / "eval" / name / "fold0"
        test_stack = _stack(test[name], n_test, seed=k)
        tm = metrics_from_confusion(test_stack.sum(0))
        t = (times or {}).get(name, 5.0)
        m = dict(tm, image_averaged={"mIoU": tm["mIoU"]}, val={"mIoU": val[name]})
        atomic_write_json(ev / "metrics.json", m)
        atomic_write_json(
            ev / "timing.json",
            {
                "device": "cpu",
                "time_ms_median": t,
                "time_ms_p95": t + 1,
                "peak_memory_mb": 100.0,
                "peak_gpu_memory_mib": None,
                "test": {"time_ms_median": t},
                "val": {"time_ms_median": t},
            },
        )
        np.save(ev / "confusion.npy", test_stack.sum(0))
        np.save(ev / "confusion_per_image.npy", test_stack)
        np.save(ev / "val_confusion.npy", _cm(val[name]))
        d = exp / "models" / name / "fold0"
        atomic_write_json(
            d / "train_meta.json",
            {
                "parameters": params[name],
                "best_val_mIoU": val[name],
                "epoch_time_s_median": 1.0,
                "wall_time_s": 3.0,
            },
        )
        (d / "history.csv").write_text(
            f"epoch,train_loss,val_loss,val_mIoU,lr,epoch_time_s\n1,1,1,{val[name]},0,1\n"
        )
    return exp, ds


MODELS = {
    "a": {"library": "smp", "arch": "Unet"},
    "b": {"library": "mmseg", "config": "x/y.py"},
    "c": {"library": "torchvision", "arch": "lraspp"},
}


def _perturb_test(exp, name, miou):
    ev = exp / "eval" / name / "fold0"
    st = _stack(miou, 30, seed=99)
    np.save(ev / "confusion_per_image.npy", st)
    np.save(ev / "confusion.npy", st.sum(0))
    m = json.loads((ev / "metrics.json").read_text())
    m.update(mIoU=metrics_from_confusion(st.sum(0))["mIoU"], IoU=[miou, miou])
    (ev / "metrics.json").write_text(json.dumps(m))


def test_selection_uses_validation_not_test(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.6, "b": 0.5, "c": 0.4},
        test={"a": 0.3, "b": 0.9, "c": 0.95},
        params={"a": 10, "b": 5, "c": 3},
    )
    s = aggregate(exp, MODELS, 1, ds)
    assert s["best"]["model"] == "a" and s["best"]["selected_on"] == "validation"
    assert [m["model"] for m in s["models"]] == ["a", "b", "c"]
    assert json.loads((exp / "selection.json").read_text())["model"] == "a"
    before = [r["name"] for r in s["best"]["ranking"]], [r["score"] for r in s["best"]["ranking"]]
    # perturbing every test result (metrics, matrices, per-image stacks) changes nothing in the choice
    for name, v in (("a", 0.05), ("b", 0.99), ("c", 0.98)):
        _perturb_test(exp, name, v)
    s2 = aggregate(exp, MODELS, 1, ds)
    assert s2["best"]["model"] == "a"
    assert ([r["name"] for r in s2["best"]["ranking"]], [r["score"] for r in s2["best"]["ranking"]]) == before
    assert s2["models"][0]["mIoU"] < 0.1  # the test numbers did change


def test_ties_go_to_the_smaller_model(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.5, "b": 0.5, "c": 0.2},
        test={"a": 0.4, "b": 0.4, "c": 0.4},
        params={"a": 10, "b": 5, "c": 1},
    )
    assert aggregate(exp, MODELS, 1, ds)["best"]["model"] == "b"


def test_constraints_make_models_unselectable(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.7, "b": 0.6, "c": 0.5},
        test={"a": 0.7, "b": 0.6, "c": 0.5},
        params={"a": 10_000_000, "b": 2_000_000, "c": 1_000_000},
        times={"a": 50.0, "b": 400.0, "c": 20.0},
    )
    s = aggregate(exp, MODELS, 1, ds, {"max_params": 5_000_000, "max_ms_per_image": 100})
    assert s["best"]["model"] == "c"
    rows = {r["model"]: r for r in s["models"]}
    assert not rows["a"]["selectable"] and "parameters" in rows["a"]["violations"]
    assert not rows["b"]["selectable"] and "ms/image" in rows["b"]["violations"]
    assert rows["c"]["selectable"] and rows["c"]["pareto"]
    # the unconstrained best is shown first among... no: selectable models rank first
    assert [m["model"] for m in s["models"]][0] == "c"
    s = aggregate(exp, MODELS, 1, ds, {"max_params": 10})
    assert s["best"]["model"] is None and s["best"]["no_selectable_model"]


def test_foreground_dice_criterion(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.6, "b": 0.5, "c": 0.4},
        test={"a": 0.3, "b": 0.9, "c": 0.9},
        params={"a": 10, "b": 5, "c": 3},
    )
    # b: perfect foreground on validation, poor background
    np.save(exp / "eval" / "b" / "fold0" / "val_confusion.npy", np.array([[100, 300], [0, 1000]]))
    s = aggregate(exp, MODELS, 1, ds, {"criterion": "mDice_fg"})
    assert s["best"]["model"] == "b" and s["best"]["criterion"] == "mDice_fg"


def test_paired_verdicts_in_the_summary(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.8, "b": 0.6, "c": 0.79},
        test={"a": 0.8, "b": 0.5, "c": 0.8},
        params={"a": 10, "b": 5, "c": 3},
        n_test=40,
    )
    s = aggregate(exp, MODELS, 1, ds, {"compare_top": 3})
    comps = {c["b"]: c for c in s["best"]["comparisons"]}
    assert s["best"]["model"] == "a" and set(comps) == {"b", "c"}
    assert (
        comps["b"]["better"] == "a"
        and comps["b"]["ci_low"] > 0
        and "a is better than b" in comps["b"]["verdict"]
    )
    assert s["best"]["verdict"] == comps["c"]["verdict"]  # c is the runner-up on validation
    assert comps["c"]["ci_low"] < comps["c"]["difference"] < comps["c"]["ci_high"]


def test_missing_output_names_the_file(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.5, "b": 0.4, "c": 0.4},
        test={"a": 0.4, "b": 0.4, "c": 0.4},
        params={"a": 1, "b": 1, "c": 1},
    )
    (exp / "eval" / "b" / "fold0" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="eval/b/fold0/metrics.json"):
        aggregate(exp, MODELS, 1, ds)


def test_majority_baseline():
    b = majority_baseline(
        {"per_image": {"a": [90, 10], "c": [30, 70]}},
        {"test": ["c"], "folds": [{"train": ["a"]}]},
        ["bg", "fg"],
    )
    # always "bg" on an image with 30 bg / 70 fg pixels: IoU_bg = 0.3, IoU_fg = 0
    assert b["class"] == "bg" and b["mIoU"] == pytest.approx(0.15) and b["aAcc"] == pytest.approx(0.3)


def test_bootstrap_ci_in_summary(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.6, "b": 0.5, "c": 0.4},
        test={"a": 0.3, "b": 0.9, "c": 0.5},
        params={"a": 10, "b": 5, "c": 3},
    )
    rows = {r["model"]: r for r in aggregate(exp, MODELS, 1, ds)["models"]}
    cms = np.load(exp / "eval" / "a" / "fold0" / "confusion_per_image.npy")
    pooled = metrics_from_confusion(cms.sum(0))["mIoU"]
    assert rows["a"]["mIoU_ci_low"] < pooled < rows["a"]["mIoU_ci_high"]
    (exp / "eval" / "b" / "fold0" / "confusion_per_image.npy").unlink()
    rows = {r["model"]: r for r in aggregate(exp, MODELS, 1, ds)["models"]}
    assert math.isnan(rows["b"]["mIoU_ci_low"])  # no per-image matrices: no interval, not a made-up one
