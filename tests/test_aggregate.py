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


def _fake_experiment(root, val, test, params, times=None, n_test=30, seeds=(0,), shifts=None, groups=None):
    """Two-class experiment with one fold; val/test mIoU per model written as real evaluation files.

    With several training seeds, ``shifts[name][j]`` moves seed j's validation and test mIoU (a known
    seed effect); ``groups`` gives each test image a group (manifest ``group``)."""
    ds = root / "ds"
    manifest = {f"t{i}": {"group": groups[i]} for i in range(n_test)} if groups else {}
    atomic_write_json(
        ds / "dataset.json",
        {
            "name": "toy",
            "classes": [{"id": 0, "name": "bg"}, {"id": 1, "name": "fg"}],
            "ignore_index": 255,
            "background": 0,
            "manifest": manifest,
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
        for j, seed in enumerate(seeds):
            shift = (shifts or {}).get(name, [0.0] * len(seeds))[j]
            _write_run(
                exp,
                name,
                seed,
                val[name] + shift,
                test[name] + shift,
                params[name],
                n_test,
                k * 100 + j,
                (times or {}).get(name, 5.0),
            )
    return exp, ds


def _write_run(exp, name, seed, val_miou, test_miou, params, n_test, rng_seed, t):
    ev = exp / "eval" / name / "fold0" / f"seed{seed}"
    test_stack = _stack(test_miou, n_test, seed=rng_seed)
    tm = metrics_from_confusion(test_stack.sum(0))
    m = dict(tm, image_averaged={"mIoU": tm["mIoU"]}, val={"mIoU": val_miou})
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
    np.save(ev / "val_confusion.npy", _cm(val_miou))
    d = exp / "models" / name / "fold0" / f"seed{seed}"
    atomic_write_json(
        d / "train_meta.json",
        {"parameters": params, "best_val_mIoU": val_miou, "epoch_time_s_median": 1.0, "wall_time_s": 3.0},
    )
    (d / "history.csv").write_text(
        f"epoch,train_loss,val_loss,val_mIoU,lr,epoch_time_s\n1,1,1,{val_miou},0,1\n"
    )


MODELS = {
    "a": {"library": "smp", "arch": "Unet"},
    "b": {"library": "mmseg", "config": "x/y.py"},
    "c": {"library": "torchvision", "arch": "lraspp"},
}


def _perturb_test(exp, name, miou):
    ev = exp / "eval" / name / "fold0" / "seed0"
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
    np.save(exp / "eval" / "b" / "fold0" / "seed0" / "val_confusion.npy", np.array([[100, 300], [0, 1000]]))
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
    # one training seed: a clear gap on the images, but training noise was not measured, so no "better"
    assert comps["b"]["better"] is None and comps["b"]["ci_low"] > 0
    assert (
        "a scores higher than b" in comps["b"]["verdict"]
        and "training noise was not measured" in (comps["b"]["verdict"])
    )
    assert "train.repeats=3" in comps["b"]["verdict"] and "not measured" in s["best"]["uncertainty_text"]
    assert s["best"]["verdict"] == comps["c"]["verdict"]  # c is the runner-up on validation
    assert comps["c"]["ci_low"] < comps["c"]["difference"] < comps["c"]["ci_high"]
    # independent images and one seed: the Wilcoxon test still applies
    assert 0 <= comps["b"]["wilcoxon_p"] < 0.05


def test_verdicts_count_training_seeds(tmp_path):
    """Three seeds: a large gap survives the seed noise; a gap smaller than the seed spread does not."""
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.8, "b": 0.6, "c": 0.77},
        test={"a": 0.8, "b": 0.5, "c": 0.77},
        params={"a": 10, "b": 5, "c": 30},
        n_test=40,
        seeds=(1, 2, 3),
        shifts={"a": [0.0, 0.01, -0.01], "b": [0.0, 0.01, -0.01], "c": [0.1, -0.1, 0.0]},
    )
    s = aggregate(exp, MODELS, 1, ds, {"compare_top": 3}, seeds=[1, 2, 3])
    comps = {c["b"]: c for c in s["best"]["comparisons"]}
    assert s["best"]["model"] == "a" and s["best"]["n_seeds"] == 3
    assert comps["b"]["better"] == "a" and "a is better than b" in comps["b"]["verdict"]
    assert "training seeds and test units" in comps["b"]["verdict"]
    assert comps["c"]["better"] is None and "indistinguishable" in comps["c"]["verdict"]
    assert math.isnan(comps["b"]["wilcoxon_p"])  # several seeds: the per-image test does not fit
    rows = {r["model"]: r for r in s["models"]}
    # c's seeds spread by 0.1: its interval covers them, and its seed sd is measured
    per_seed = s["uncertainty"]["candidates"]["c"]["test_mIoU"]
    assert rows["c"]["mIoU_ci_low"] <= min(per_seed) and max(per_seed) <= rows["c"]["mIoU_ci_high"]
    assert rows["c"]["test_mIoU_sd_seed"] == pytest.approx(np.std(per_seed, ddof=1))
    assert rows["c"]["mIoU_ci_images_high"] - rows["c"]["mIoU_ci_images_low"] < (
        rows["c"]["mIoU_ci_high"] - rows["c"]["mIoU_ci_low"]
    )
    assert rows["a"]["p_rank1"] > 0.5 and rows["b"]["p_rank1"] == 0.0
    assert sum(r["p_rank1"] for r in rows.values()) == pytest.approx(1.0)
    # best/ gets the seed with the median validation score, not the luckiest (a: seeds 0.8, 0.81, 0.79)
    assert s["best"]["seed"] == 1 and "median" in s["best"]["seed_rule"]
    header = (exp / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"test_mIoU_mean", "test_mIoU_sd_seed", "n_seeds", "p_rank1"} <= set(header)


def test_within_seed_noise_the_cheaper_model_is_selected(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.70, "b": 0.3, "c": 0.69},
        test={"a": 0.7, "b": 0.3, "c": 0.7},
        params={"a": 10, "b": 5, "c": 3},
        seeds=(1, 2, 3),
        shifts={"a": [0.05, -0.05, 0.0], "b": [0, 0, 0], "c": [0.05, -0.05, 0.0]},
    )
    s = aggregate(exp, MODELS, 1, ds, seeds=[1, 2, 3])
    assert s["best"]["model"] == "c" and s["best"]["tie"]["candidates"] == ["a", "c"]
    assert "cannot separate a, c" in s["best"]["tie"]["text"]
    # without seed noise (one seed) the validation ranking decides
    exp, ds = _fake_experiment(
        tmp_path / "one",
        val={"a": 0.70, "b": 0.3, "c": 0.69},
        test={"a": 0.7, "b": 0.3, "c": 0.7},
        params={"a": 10, "b": 5, "c": 3},
    )
    s = aggregate(exp, MODELS, 1, ds)
    assert s["best"]["model"] == "a" and s["best"]["tie"] is None


def test_a_model_that_learned_nothing_is_flagged(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.7, "b": 0.5, "c": 0.6},
        test={"a": 0.7, "b": 0.5, "c": 0.6},
        params={"a": 10, "b": 5, "c": 3},
    )
    # b predicts background everywhere: validation 1000 bg / 1000 fg pixels, all called bg
    np.save(exp / "eval" / "b" / "fold0" / "seed0" / "val_confusion.npy", np.array([[1000, 0], [1000, 0]]))
    s = aggregate(exp, MODELS, 1, ds)
    rows = {r["model"]: r for r in s["models"]}
    assert "predicts only 'bg'" in rows["b"]["learned_nothing"] and rows["b"]["never_predicted"] == "fg"
    assert rows["a"]["learned_nothing"] == "" and rows["c"]["learned_nothing"] == ""


def test_missing_output_names_the_file(tmp_path):
    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.5, "b": 0.4, "c": 0.4},
        test={"a": 0.4, "b": 0.4, "c": 0.4},
        params={"a": 1, "b": 1, "c": 1},
    )
    (exp / "eval" / "b" / "fold0" / "seed0" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="eval/b/fold0/seed0/metrics.json"):
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
    cms = np.load(exp / "eval" / "a" / "fold0" / "seed0" / "confusion_per_image.npy")
    pooled = metrics_from_confusion(cms.sum(0))["mIoU"]
    assert rows["a"]["mIoU_ci_low"] < pooled < rows["a"]["mIoU_ci_high"]
    (exp / "eval" / "b" / "fold0" / "seed0" / "confusion_per_image.npy").unlink()
    rows = {r["model"]: r for r in aggregate(exp, MODELS, 1, ds)["models"]}
    assert math.isnan(rows["b"]["mIoU_ci_low"])  # no per-image matrices: no interval, not a made-up one


def test_models_that_learned_nothing_are_left_out_of_ensembles(tmp_path):
    from segbench.ensemble import eligible_members, rank_members

    exp, ds = _fake_experiment(
        tmp_path,
        val={"a": 0.7, "b": 0.5, "c": 0.6},
        test={"a": 0.7, "b": 0.5, "c": 0.6},
        params={"a": 10, "b": 5, "c": 3},
        seeds=(1, 2),
    )
    for s in (1, 2):  # b: the majority class everywhere, on every seed
        np.save(
            exp / "eval" / "b" / "fold0" / f"seed{s}" / "val_confusion.npy", np.array([[1000, 0], [1000, 0]])
        )
    members, left_out = eligible_members(exp, ["a", "b", "c"], 1, [1, 2], 0, ["bg", "fg"], 0.01)
    assert members == ["a", "c"] and set(left_out) == {"b"} and "predicts only 'bg'" in left_out["b"]
    assert [n for n, _ in rank_members(exp, members, 1, [1, 2])] == ["a", "c"]
    # a model just at the baseline (validation mIoU within the margin of always predicting bg) is out too
    np.save(exp / "eval" / "c" / "fold0" / "seed1" / "val_confusion.npy", np.array([[1000, 0], [990, 10]]))
    np.save(exp / "eval" / "c" / "fold0" / "seed2" / "val_confusion.npy", np.array([[1000, 0], [990, 10]]))
    members, left_out = eligible_members(exp, ["a", "b", "c"], 1, [1, 2], 0, ["bg", "fg"], 0.01)
    assert members == ["a"] and "no better than always predicting 'bg'" in left_out["c"]
