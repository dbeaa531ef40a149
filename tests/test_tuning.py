"""Hyper-parameter search (segbench.tuning, issue 14): the budget-curve estimator, the search space,
the study's rounds (reproducible asks, idempotent rounds, a continued or restarted study), pruning
that fires and only sees earlier rounds, and trials that never read the test split.

The study tests tell made-up results (no training); the trial tests train a U-Net for real on the
CamVid subset at 32x32. The workflow around them (checkpoint rounds, rerun, kill, SLURM) is tested in
tests/test_tuning_workflow.py and tests/test_slurm.py."""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.tuning import tune_enabled
from segbench.tuning.budget import curves_cross, expected_max
from segbench.tuning.space import distributions, space_for, trial_model_config
from segbench.tuning.steps import finish_study, read_round, spec_for
from segbench.tuning.study import ask_round, make_pruner, open_study

SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
}
TRAIN = {
    "epochs": 2,
    "batch_size": 4,
    "image_size": [32, 32],
    "optimizer": "adamw",
    "lr": 0.002,
    "loss": {"ce": 1.0, "dice": 1.0},
    "scheduler": "poly",
    "device": "cpu",
    "channels_last": False,
    "precision": "32-true",
    "checkpoint_every_min": 10,
    "num_workers": 0,
}
MODEL = {"library": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_weights": None, "name": "unet"}


# ---------------------------------------------------------------- the budget curve


def test_expected_max_equals_the_mean_best_of_every_subset():
    """Tang et al.'s unbiased estimator is, exactly, the mean over all n-subsets of their maximum."""
    values = [0.31, 0.12, 0.45, 0.28, 0.45, 0.05]
    curve = expected_max(values)
    for n in range(1, len(values) + 1):
        brute = np.mean([max(c) for c in combinations(values, n)])
        assert curve[n - 1] == pytest.approx(brute, abs=1e-12)
    assert curve == sorted(curve) and curve[-1] == max(values)
    assert expected_max([0.2, float("nan"), None, 0.4]) == expected_max([0.2, 0.4])


def test_curves_that_cross_say_where_the_leader_changes():
    cross = curves_cross({"a": [0.30, 0.31, 0.32, 0.33], "b": [0.20, 0.30, 0.35, 0.40]})
    assert cross["leaders"] == ["a", "a", "b", "b"] and cross["changes"] == [3] and not cross["stable"]
    assert curves_cross({"a": [0.3, 0.4], "b": [0.1, 0.2, 0.9]})["stable"]  # compared up to 2 trials
    assert curves_cross({"a": [0.3]})["stable"]


# ---------------------------------------------------------------- the search space


def test_the_space_becomes_optuna_distributions_and_a_trial_model_config():
    d = distributions({**SPACE, "batch_size": {"type": "categorical", "choices": [4, 8]}})
    assert d["lr"].log and d["lr"].low == 1e-5 and d["batch_size"].choices == (4, 8)
    with pytest.raises(ValueError, match="tune.space: 'epochs' cannot be tuned"):
        distributions({"epochs": {"type": "int", "low": 1, "high": 3}})
    with pytest.raises(ValueError, match="tune.space.lr"):
        distributions({"lr": {"type": "float", "low": 1.0}})
    cfg = trial_model_config(
        dict(MODEL, train={"freeze_epochs": 1}), TRAIN, {"lr": 0.01, "loss.dice": 0.5}, 3
    )
    assert cfg["train"] == {
        "freeze_epochs": 1,
        "lr": 0.01,
        "loss": {"ce": 1.0, "dice": 0.5},
        "epochs": 3,
        "devices": 1,  # a trial is one process
        "max_steps": None,
    }
    assert "train" not in MODEL  # the candidate's own config is left alone
    per_lib = {"space": SPACE, "space_by_library": {"smp": {"lr": {"high": 1e-3}, "weight_decay": None}}}
    assert space_for(per_lib, MODEL) == {"lr": dict(SPACE["lr"], high=1e-3)}
    assert space_for(per_lib, {"library": "mmseg"}) == SPACE
    assert not tune_enabled({"trials": 0}) and tune_enabled({"trials": 0, "budget_hours": 0.5})


# ---------------------------------------------------------------- the study, without training


def _fake_dataset(tmp_path: Path) -> tuple[Path, Path]:
    ds = tmp_path / "ds" / "dataset.json"
    ds.parent.mkdir(parents=True)
    ds.write_text(json.dumps({"name": "x", "classes": [], "ignore_index": 255, "manifest": {}}))
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": ["t"], "folds": [{"train": ["a", "b"], "val": ["c"]}]}))
    return ds, splits


def _spec(tmp_path: Path, **tune) -> dict:
    ds, splits = _fake_dataset(tmp_path)
    cfg = {
        "trials": 4,
        "batch": 2,
        "metric": "mIoU",
        "seed": 42,
        "space": SPACE,
        "sampler": {"name": "tpe", "seed": 7, "n_startup_trials": 2},
        "pruner": {"name": "none"},
        **tune,
    }
    return spec_for(cfg, "unet", MODEL, TRAIN, {}, ds, splits, tmp_path / "study")


def _result(number: int, value: float, state: str = "complete", seconds: float = 10.0) -> dict:
    return {
        "number": number,
        "state": state,
        "seconds": seconds,
        "intermediate": [value / 2, value],
        "value": value,
        "epochs": 2,
        "values": {"mIoU": value, "time_ms_median": 20.0 + number, "peak_memory_mb": 100.0, "parameters": 10},
    }


def _score(params: dict) -> float:
    """A made-up validation score: best near lr = 1e-3."""
    return float(0.5 - 0.05 * (np.log10(params["lr"]) + 3) ** 2)


def _run_study(spec: dict, study_dir: Path, out: Path) -> list[list[dict]]:
    """Every round of a study with made-up scores; returns each round's asked trials."""
    rounds, previous, r = [], [], 0
    while True:
        rec = ask_round(study_dir, spec, r, previous, out / f"round{r}")
        if rec["done"]:
            finish_study(study_dir, spec, read_round(out / f"round{r}"), [], study_dir)
            return rounds
        asked = [json.loads((out / f"round{r}" / f"trial{n}.json").read_text()) for n in rec["trials"]]
        rounds.append(asked)
        previous = [_result(a["number"], _score(a["params"])) for a in asked]
        r += 1


def test_the_same_study_in_a_fresh_folder_asks_the_same_trials_in_the_same_order(tmp_path):
    spec = _spec(tmp_path)
    first = _run_study(spec, tmp_path / "a", tmp_path / "a_out")
    again = _run_study(spec, tmp_path / "b", tmp_path / "b_out")
    assert [[t["params"] for t in r] for r in first] == [[t["params"] for t in r] for r in again]
    assert [len(r) for r in first] == [2, 2]  # 4 trials in batches of 2
    flat = [t["params"]["lr"] for r in first for t in r]
    assert len(set(flat)) == 4  # a sampler reseeded per round, not the same random draws again
    other = _run_study(dict(spec, sampler=dict(spec["sampler"], seed=8)), tmp_path / "c", tmp_path / "c_out")
    assert [t["params"] for r in other for t in r] != [t["params"] for r in first for t in r]
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    values = {t["number"]: _score(t["params"]) for r in first for t in r}
    assert best["best_trial"] == max(values, key=values.get) and best["value"] == pytest.approx(
        max(values.values())
    )
    assert best["budget_curve"] == pytest.approx(expected_max(list(values.values())))
    tuned = json.loads((tmp_path / "a" / "tuned_model.json").read_text())
    assert tuned["train"] == best["params"] and tuned["tuned"]["best_trial"] == best["best_trial"]
    assert "epochs" not in tuned["train"]  # the final training keeps the experiment's epochs


def test_asking_a_round_again_writes_the_same_trials_and_more_trials_continue_the_study(tmp_path):
    spec = _spec(tmp_path)
    study, out = tmp_path / "s", tmp_path / "out"
    r0 = ask_round(study, spec, 0, [], out / "round0")
    files = {p.name: p.read_text() for p in (out / "round0").iterdir()}
    again = ask_round(study, spec, 0, [], out / "round0")  # a rerun of the step: nothing new is asked
    assert again["trials"] == r0["trials"] == [0, 1] and again["asked_total"] == 2
    assert {p.name: p.read_text() for p in (out / "round0").iterdir()} == files
    asked = [json.loads((out / "round0" / f"trial{n}.json").read_text()) for n in r0["trials"]]
    results = [_result(a["number"], _score(a["params"])) for a in asked]
    assert ask_round(study, spec, 1, results, out / "round1")["trials"] == [2, 3]
    # the same results told again are a check, not a second tell; another value is an error
    assert ask_round(study, spec, 1, results, out / "round1")["trials"] == [2, 3]
    changed = [dict(results[0], value=0.9, values=dict(results[0]["values"], mIoU=0.9))]
    with pytest.raises(ValueError, match="trial 0 of unet was told COMPLETE"):
        ask_round(study, spec, 1, changed, out / "round1")
    # raising tune.trials continues the same study; changing the space starts a new one
    r2 = ask_round(study, dict(spec, trials=6), 2, [], out / "round2")
    assert r2["trials"] == [4, 5] and not (study / "study.journal.stale-1").exists()
    new = spec_for(
        dict(spec, space={"lr": SPACE["lr"]}), "unet", MODEL, TRAIN, {}, *_fake_dataset(tmp_path / "x")
    )
    assert ask_round(study, new, 0, [], out / "new0")["trials"] == [0, 1]
    assert (study / "study.journal.stale-1").is_file()


def test_a_compute_budget_ends_the_study_when_spent(tmp_path):
    """30 s per candidate, each made-up trial takes 10 s: round 0 asks a batch of 2 (20 s), round 1
    the 1 trial the remaining 10 s buy, round 2 none."""
    spec = _spec(tmp_path, trials=0, budget_hours=30 / 3600)
    rounds = _run_study(spec, tmp_path / "s", tmp_path / "out")
    assert [len(r) for r in rounds] == [2, 1]
    best = json.loads((tmp_path / "s" / "best.json").read_text())
    assert "compute budget" in best["stopped"] and best["compute_s"] == pytest.approx(30.0)


def _report(study_dir: Path, spec: dict, number: int, values: list[float], round_start: int, wrapped=True):
    """Report ``values`` (epochs 0, 1 ...) for trial ``number`` as its training job would; return
    the pruner's decision after the last one."""
    import optuna

    study = open_study(study_dir, spec, 1, round_start=round_start)
    if not wrapped:  # the same pruner without segbench's round view
        study.pruner = study.pruner.inner
    trial = optuna.trial.Trial(study, study.get_trials(deepcopy=False)[number]._trial_id)
    for step, v in enumerate(values):
        trial.report(v, step=step)
        decision = trial.should_prune()
    return decision


def test_a_pruner_compares_with_earlier_rounds_only(tmp_path):
    """Median pruning: the threshold comes from round 0's finished trials."""
    spec = _spec(tmp_path, pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    study_dir, out = tmp_path / "s", tmp_path / "out"
    ask_round(study_dir, spec, 0, [], out / "round0")
    ask_round(study_dir, spec, 1, [_result(0, 0.4), _result(1, 0.2)], out / "round1")  # epoch 0: 0.2, 0.1
    assert _report(study_dir, spec, 2, [0.5], 2) is False
    assert _report(study_dir, spec, 3, [0.1], 2) is True  # below the median 0.15 of round 0 at epoch 0


@pytest.mark.parametrize("order", [(2, 3), (3, 2)])
def test_trials_of_one_round_never_prune_each_other(tmp_path, order):
    """Successive halving compares a trial with every trial that reached its rung, running ones too:
    without segbench's round view, which of two parallel trials is pruned depends on which reported
    first. With it, neither sees the other, whatever the order."""
    spec = _spec(tmp_path, pruner={"name": "successive_halving", "min_resource": 1, "reduction_factor": 2})
    study_dir, out = tmp_path / "s", tmp_path / "out"
    ask_round(study_dir, spec, 0, [], out / "round0")
    ask_round(study_dir, spec, 1, [_result(0, 0.4), _result(1, 0.2)], out / "round1")
    values = {2: [0.5, 0.5], 3: [0.1, 0.1]}
    decisions = {n: _report(study_dir, spec, n, values[n], 2) for n in order}
    assert decisions == {2: False, 3: False}
    # the unwrapped pruner: the later, weaker sibling is pruned because the other reported first
    spec2 = _spec(tmp_path / "plain", pruner=spec["pruner"])
    d2, o2 = tmp_path / "plain" / "s", tmp_path / "plain" / "out"
    ask_round(d2, spec2, 0, [], o2 / "round0")
    ask_round(d2, spec2, 1, [_result(0, 0.4), _result(1, 0.2)], o2 / "round1")
    plain = {n: _report(d2, spec2, n, values[n], 2, wrapped=False) for n in order}
    assert plain[3] is (order == (2, 3))


def test_no_pruning_with_several_objectives(tmp_path):
    spec = _spec(
        tmp_path,
        objectives=["mIoU", "latency"],
        pruner={"name": "median"},
        sampler={"name": "auto", "seed": 1},
    )
    import optuna

    assert isinstance(make_pruner(spec), optuna.pruners.NopPruner)
    _run_study(spec, tmp_path / "s", tmp_path / "out")
    study = open_study(tmp_path / "s", spec, 0)
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler) and len(study.directions) == 2
    best = json.loads((tmp_path / "s" / "best.json").read_text())
    assert best["pareto"] and best["best_trial"] in best["pareto"]


# ---------------------------------------------------------------- trials that really train


def _tune_spec(tmp_path: Path, processed: Path, splits: Path, **tune) -> dict:
    from segbench.config import compose, job_configs

    jobs = job_configs(
        compose(
            [
                "train.image_size=[32,32]",
                "train.batch_size=4",
                "device=cpu",
                "train.epochs=3",
                "train.precision=32-true",
            ]
        )
    )
    cfg = dict(jobs["tune"], trials=2, batch=2, space={"lr": SPACE["lr"]}, **tune)
    cfg["sampler"] = dict(cfg["sampler"], n_startup_trials=2)
    return spec_for(
        cfg,
        "smp_unet_r18",
        jobs["models"]["smp_unet_r18"],
        jobs["train"],
        jobs["augment"],
        processed,
        splits,
        tmp_path / "study",
    )


def _tune(tmp_path: Path, processed: Path, spec: dict, splits: Path, finish: bool = True) -> list[dict]:
    """Round 0 of a study: ask, run both trials (training + validation), tell and close."""
    from segbench.config import compose, job_configs
    from segbench.tuning.trial import run_trial

    jobs = job_configs(compose(["device=cpu"]))
    study = Path(spec["study_dir"])
    ask_round(study, spec, 0, [], study / "round0" / "asked")
    results = [
        run_trial(
            study / "round0" / "asked" / f"trial{n}.json",
            spec,
            processed,
            splits,
            jobs["augment"],
            jobs["evaluate"],
            study,
            study / "round0" / f"trial{n}",
            threads=2,
        )
        for n in (0, 1)
    ]
    rec = ask_round(study, spec, 1, results, study / "round1" / "asked")
    assert rec["done"]
    if finish:
        finish_study(study, spec, rec, results, study)
    return results


@pytest.fixture
def tune_splits(tmp_path, processed) -> Path:
    from segbench.config import compose, job_configs
    from segbench.data.splits import make_splits

    make_splits(processed, job_configs(compose([]))["split"], tmp_path / "splits.json")
    return tmp_path / "splits.json"


def test_a_pruner_that_must_fire_stops_the_trial_early_and_records_it(tmp_path, processed, tune_splits):
    spec = _tune_spec(tmp_path, processed, tune_splits, pruner={"name": "threshold", "lower": 0.99})
    results = _tune(tmp_path, processed, spec, tune_splits, finish=False)
    for r in results:
        assert r["state"] == "pruned" and r["pruned_at_epoch"] == 0 and r["epochs"] == 1  # of 3
        assert 0 <= r["value"] < 0.99 and len(r["intermediate"]) == 1
    with pytest.raises(ValueError, match="none of its 2 trials completed"):
        finish_study(
            spec["study_dir"],
            spec,
            read_round(Path(spec["study_dir"]) / "round1" / "asked"),
            results,
            spec["study_dir"],
        )
    trials = (Path(spec["study_dir"]) / "trials_so_far.csv").read_text()  # what to look at is there
    assert trials.count(",pruned,") == 2


def test_tuning_never_reads_the_test_split(tmp_path, processed, tune_splits):
    """Replace every test image and mask by noise: the trials ask, train and score the same, and the
    chosen configuration does not move."""
    import shutil

    first = _tune(tmp_path / "a", processed, _tune_spec(tmp_path / "a", processed, tune_splits), tune_splits)
    copy_dir = tmp_path / "perturbed"
    shutil.copytree(processed.parent, copy_dir)
    meta = json.loads((copy_dir / "dataset.json").read_text())
    rng = np.random.default_rng(0)
    for sid in json.loads(tune_splits.read_text())["test"]:
        entry = meta["manifest"][sid]
        img, mask = copy_dir / entry["image"], copy_dir / entry["mask"]
        shape = np.asarray(Image.open(mask)).shape
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(img, format="PNG")
        Image.fromarray(rng.integers(0, 11, shape, dtype=np.uint8)).save(mask)
        entry["image_sha256"] = hashlib.sha256(img.read_bytes()).hexdigest()
        entry["mask_sha256"] = hashlib.sha256(mask.read_bytes()).hexdigest()
    (copy_dir / "dataset.json").write_text(json.dumps(meta))
    second = _tune(
        tmp_path / "b",
        copy_dir / "dataset.json",
        _tune_spec(tmp_path / "b", copy_dir / "dataset.json", tune_splits),
        tune_splits,
    )

    def strip(rs):
        return [{k: r[k] for k in ("number", "params", "state", "value", "intermediate")} for r in rs]

    assert strip(first) == strip(second)
    best_a = json.loads((tmp_path / "a" / "study" / "best.json").read_text())
    best_b = json.loads((tmp_path / "b" / "study" / "best.json").read_text())
    assert best_a["params"] == best_b["params"] and best_a["value"] == best_b["value"]


def test_an_ask_killed_half_way_is_completed_not_asked_again(tmp_path):
    """The run died after asking 1 of round 0's 2 trials, before labelling it: the rerun adopts it and
    asks only the second (the trial count and numbering stay those of an uninterrupted run)."""
    spec = _spec(tmp_path)
    study_dir = tmp_path / "s"
    study = open_study(study_dir, spec, 0, start=True)
    study.set_user_attr("asking", [0, 2])
    orphan = study.ask(fixed_distributions=distributions(spec["space"]))
    rec = ask_round(study_dir, spec, 0, [], tmp_path / "out")
    assert rec["trials"] == [0, 1] and rec["asked_total"] == 2
    assert json.loads((tmp_path / "out" / "trial0.json").read_text())["params"] == orphan.params
    clean = ask_round(tmp_path / "clean", spec, 0, [], tmp_path / "clean_out")
    assert json.loads((tmp_path / "clean_out" / "trial0.json").read_text())["params"] == orphan.params
    assert clean["trials"] == [0, 1]


def test_a_score_optuna_cannot_take_makes_the_trial_fail_not_the_study(tmp_path):
    spec = _spec(tmp_path)
    ask_round(tmp_path / "s", spec, 0, [], tmp_path / "out0")
    nan = dict(_result(0, 0.3), values={"mIoU": float("nan")})
    rec = ask_round(tmp_path / "s", spec, 1, [nan, _result(1, 0.2)], tmp_path / "out1")
    states = [t.state.name for t in open_study(tmp_path / "s", spec, 1).get_trials()[:2]]
    assert states == ["FAIL", "COMPLETE"] and rec["trials"] == [2, 3]


def test_tuning_settings_that_cannot_work_are_refused_before_anything_runs():
    from segbench.config import ConfigError, compose, job_configs

    with pytest.raises(ConfigError, match="tune.metric mDice_fg needs dataset.background"):
        job_configs(compose(["tune.trials=2", "tune.metric=mDice_fg"]))  # CamVid has no background
    with pytest.raises(ConfigError, match="tune.metric .mIoU. and the first of tune.objectives"):
        job_configs(compose(["tune.trials=2", "tune.metric=mIoU", "tune.objectives=[mDice_fg,latency]"]))
    with pytest.raises(ConfigError, match="with a planned recipe"):
        job_configs(compose(["tune.trials=2", "train=planned"]))
    with pytest.raises(ConfigError, match="with train.scale=0.5 is not supported yet"):
        job_configs(compose(["tune.trials=2", "+train.scale=0.5"]))
    tune = job_configs(compose(["tune.trials=2", "tune.objectives=[mIoU,latency]"]))["tune"]
    assert tune["metric"] == "mIoU" and tune["seed"] == 42 and tune["sampler"]["seed"] == 42
