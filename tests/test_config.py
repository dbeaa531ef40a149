"""Hydra composition and schema validation."""

import pytest

from segbench import config


def test_default_experiment_has_three_libraries():
    cfg = config.compose([])
    assert cfg["name"] == "camvid_quick"
    libs = {cfg["model"][m]["library"] for m in cfg["models"]}
    assert libs == {"smp", "torchvision", "mmseg"}
    # the raw data lives in the project (DVC-tracked), copied once from $SEGBENCH_SHARED/data/camvid
    assert cfg["dataset"]["root"] == "data/raw/camvid" and cfg["dataset"]["import_from"].endswith(
        "data/camvid"
    )


def test_overrides_and_model_overrides():
    cfg = config.compose(
        ["train.epochs=7", "models=[smp_unet_r18]", "+model_overrides.smp_unet_r18.encoder=resnet34"]
    )
    assert cfg["train"]["epochs"] == 7
    assert list(cfg["model"]) == ["smp_unet_r18"]
    assert cfg["model"]["smp_unet_r18"]["encoder"] == "resnet34"


def test_invalid_value_names_key_and_allowed_values():
    with pytest.raises(config.ConfigError) as e:
        config.compose(["split.strategy=random"])
    assert "split.strategy" in str(e.value) and "holdout, kfold, predefined, file" in str(e.value)
    with pytest.raises(config.ConfigError, match="train.image_size"):
        config.compose(["train.image_size=[100,100]"])


def test_unknown_model_lists_valid_names():
    with pytest.raises(config.ConfigError, match="allowed values: .*smp_unet_r18"):
        config.compose(["models=[unet_nonexistent]"])


def test_job_configs_isolate_steps():
    a = config.job_configs(config.compose([]))
    b = config.job_configs(config.compose(["report.n_overlays=1", "+model_overrides.tv_lraspp_mbv3.foo=1"]))
    # a report option and another model's change leave the training inputs of smp_unet_r18 unchanged
    for key in ("train", "augment", "split", "dataset"):
        assert config.dump_json(a[key]) == config.dump_json(b[key])
    assert a["models"]["smp_unet_r18"] == b["models"]["smp_unet_r18"]
    assert a["models"]["tv_lraspp_mbv3"] != b["models"]["tv_lraspp_mbv3"]
    assert a["report"] != b["report"]
