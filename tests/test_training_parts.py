"""The training package's parts on their own: the typed recipe, the tracking loggers, and a resume
checkpoint that can never run code."""

import json
import os
import pickle

import pytest
import torch

from segbench.config import compose, job_configs
from segbench.training.loggers import build_logger
from segbench.training.recipe import Placement, TrainRecipe
from segbench.training.resume import resumable_epochs


def _train_cfg(*overrides):
    return job_configs(compose(list(overrides)))["train"]


# ---------------------------------------------------------------- the recipe


def test_the_recipe_holds_every_configured_value_typed():
    cfg = _train_cfg("train.lr=0.01", "train.epochs=7", "train.image_size=[64,96]")
    recipe = TrainRecipe.from_dict(cfg)
    assert recipe.lr == 0.01 and recipe.epochs == 7 and recipe.image_size == (64, 96)
    # every key of config/train/ is a field, with the config's value (none is silently dropped)
    as_dict = recipe.as_dict()
    for key, value in cfg.items():
        if key == "lr_find":
            continue
        assert as_dict[key] == (list(value) if key == "image_size" else value), key
    assert json.loads(json.dumps(as_dict)) == as_dict  # plain values: fingerprints and loggers take it


def _recipe(**keys):
    """The default experiment's recipe with ``keys`` on top."""
    return TrainRecipe.from_dict({**_train_cfg(), **keys})


def test_what_defines_a_run_has_no_default():
    with pytest.raises(TypeError, match="epochs"):
        TrainRecipe.from_dict({"lr": 0.1})


def test_null_means_the_default_except_where_null_switches_something_off():
    recipe = _recipe(poly_power=None, bn_momentum=None, max_steps=None)
    assert recipe.poly_power == 0.9  # TrainRecipe's default, the one config/train/ also states
    assert recipe.bn_momentum is None  # None keeps each library's own BatchNorm momentum
    assert recipe.max_steps is None


def test_unknown_keys_and_refused_combinations_say_what_to_change():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr_rate'\]; allowed: .*lr"):
        _recipe(lr_rate=0.1)
    with pytest.raises(ValueError, match="freeze_epochs with train.devices > 1"):
        _recipe(freeze_epochs=1, devices=2)
    with pytest.raises(ValueError, match="lr=find with train.devices > 1 is not supported"):
        _recipe(lr="find", devices=2)


def test_placement_on_the_cpu():
    from segbench.device import auto_precision

    p = Placement.of(_recipe(device="cpu"))  # precision auto: bf16-mixed where the CPU computes bf16
    assert (p.accelerator, p.world_size, p.precision) == ("cpu", 1, auto_precision("cpu"))
    assert p.precision in ("bf16-mixed", "32-true")
    p = Placement.of(_recipe(device="cpu", devices=2))
    assert p.world_size == 2 and p.trainer_kwargs()["strategy"] == "ddp"


# ---------------------------------------------------------------- experiment tracking


def _log_two_steps(logger):
    logger.log_metrics({"train_loss": 0.75}, step=0)
    logger.log_metrics({"train_loss": 0.5}, step=1)
    logger.finalize("success")


def test_csv_logger_writes_the_metrics_and_the_recipe(tmp_path):
    logger = build_logger({"name": "csv"}, tmp_path / "logs", tmp_path / "mlruns", "exp", "m/fold0",
                          params={"train": {"lr": 0.002}})  # fmt: skip
    _log_two_steps(logger)
    text = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "train_loss" in text and "0.5" in text
    assert "lr: 0.002" in (tmp_path / "logs" / "hparams.yaml").read_text()


def test_tensorboard_logger_writes_an_event_file(tmp_path):
    logger = build_logger({"name": "tensorboard"}, tmp_path / "logs", tmp_path / "mlruns", "exp", "m/fold0")
    _log_two_steps(logger)
    events = list((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert events and b"train_loss" in events[0].read_bytes()


def test_mlflow_logger_records_a_run_in_the_local_store(tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    logger = build_logger({"name": "mlflow"}, tmp_path / "logs", store, "camvid_quick", "m/fold0",
                          params={"train": {"lr": 0.002}})  # fmt: skip
    _log_two_steps(logger)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    run = client.get_run(logger.run_id)
    assert run.data.params["train.lr"] == "0.002"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0.75, 0.5]
    assert client.get_experiment(run.info.experiment_id).name == "camvid_quick"
    assert run.info.run_name == "m/fold0"


def test_no_logger_and_unknown_loggers():
    assert build_logger({"name": "none"}, None, None, "e", "r") is False
    assert build_logger(None, None, None, "e", "r") is False
    with pytest.raises(ValueError, match="logger.name 'wandb' unknown; allowed values: none, csv"):
        build_logger({"name": "wandb"}, None, None, "e", "r")


# ---------------------------------------------------------------- resuming never runs code


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_checkpoint_holding_code_is_refused_not_run(tmp_path, capsys):
    """A checkpoint in a results folder is data: one that would run code when unpickled (a tampered
    or foreign file) is ignored with a note, and the code never runs."""
    marker = str(tmp_path / "code_ran")
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {"epoch": 3, "callbacks": {"segbench_resume": {"fingerprint": "x"}}, "x": _RunsCode(marker)}, ckpt
    )
    with pytest.raises(pickle.UnpicklingError):  # the same file, read the unsafe way, would run it
        torch.load(ckpt, weights_only=True)
    assert resumable_epochs(ckpt, "x") is None
    assert not os.path.exists(marker)
    assert "ignoring unreadable checkpoint" in capsys.readouterr().err


def test_a_checkpoint_of_this_job_resumes_after_its_epochs(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"epoch": 2, "callbacks": {"ResumeCheckpoint{segbench_resume}": {"fingerprint": "job"}}}, ckpt)
    assert resumable_epochs(ckpt, "job") == 3
    assert resumable_epochs(ckpt, "another job") is None


def test_a_training_job_logs_its_curves_and_the_lr_and_trains_the_same_weights_either_way(
    tmp_path, processed
):
    """The tracking logger records what history.csv records (plus the LR per parameter group), and
    changing it changes nothing that is trained: the weights are byte-identical with and without it."""
    from segbench.data.splits import make_splits
    from segbench.training import train_model

    jobs = job_configs(compose(["train.image_size=[64,64]", "train.epochs=2", "train.batch_size=4"]))
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    results = tmp_path / "results" / "exp"
    for logger in ("csv", "none"):
        train_model(processed, tmp_path / "splits.json", 0, jobs["models"]["tv_lraspp_mbv3"], jobs["train"],
                    jobs["augment"], results / logger / "models" / "m" / "fold0" / "seed0", threads=2,
                    logger_cfg={"name": logger})  # fmt: skip
    logged = (
        (results / "csv" / "logs" / "lightning" / "m" / "fold0" / "seed0" / "metrics.csv")
        .read_text()
        .splitlines()
    )
    columns = set(logged[0].split(","))
    assert {"train_loss", "train_loss_epoch", "val_loss", "val_mIoU", "lr-AdamW/pg1"} <= columns
    assert not (results / "none" / "logs").exists()
    a, b = (results / k / "models" / "m" / "fold0" / "seed0" / "model.safetensors" for k in ("csv", "none"))
    assert a.read_bytes() == b.read_bytes()
