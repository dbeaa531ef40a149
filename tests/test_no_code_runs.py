"""No file that travels with results or a model folder can run code (issue 15): a harmless payload is
planted in each file segbench loads (the resume checkpoint, a model folder's weights and its model
config, ``init_checkpoint``, ``encoder_weights``) and must never run. Each case also checks that the
user gets exit code 2 and a message naming the file, and that the planted files are unchanged. Then
corrupt model folders (``segbench predict``), a corrupt input image and a corrupt ``dataset.json``
(``segbench validate``) fail the same clean way."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.cli import main


class _RunsCode:
    """Unpickling it creates the folder ``marker``: the payload's only effect, easy to detect."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _plant_pickle(path: Path, marker: Path) -> str:
    """A torch file (zip + pickle) whose unpickling runs the payload; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _RunsCode(str(marker))}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_folder(folder: Path, model: dict) -> Path:
    """A model folder as training writes it (``model.json`` + ``model.safetensors``), tiny: 2 classes."""
    from segbench.models import create_model
    from segbench.models.checkpoint import save_weights

    folder.mkdir(parents=True)
    net = create_model(num_classes=2, **model)
    save_weights(folder / "model.safetensors", net.state_dict())
    info = {
        "model": model,
        "num_classes": 2,
        "classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "crack"}],
        "ignore_index": 255,
        "image_size": [32, 32],
        "normalize": None,
    }
    (folder / "model.json").write_text(json.dumps(info))
    return folder


@pytest.fixture
def image(tmp_path) -> Path:
    p = tmp_path / "in" / "a.png"
    p.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    return p


SMP = {"library": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_weights": None, "name": "u"}


def test_model_weights_that_are_a_pickle_are_refused_by_predict(tmp_path, image, capsys):
    folder = _model_folder(tmp_path / "best", SMP)
    marker = tmp_path / "code_ran"
    sha = _plant_pickle(folder / "model.safetensors", marker)  # a pickle under the safetensors name
    code = main(["predict", str(image), "--model", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "model.safetensors" in err and "safetensors" in err
    assert not marker.exists() and _sha(folder / "model.safetensors") == sha
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "where", ["inside the model folder", "escaping with ..", "a link out of a trusted folder"]
)
def test_a_model_folder_naming_an_mmseg_config_of_its_own_is_refused_before_it_runs(
    tmp_path, image, capsys, monkeypatch, where
):
    """An mmseg config is Python: a model folder (a DVC pull, a colleague's ``best/``) that names one of
    its own, reaches one through ``..``, or through a link planted in a folder the user trusts, is
    refused before mmengine reads it."""
    from segbench.models.mmseg_backend import TRUST_ENV

    monkeypatch.delenv(TRUST_ENV, raising=False)
    folder = tmp_path / "best"
    folder.mkdir()
    marker = tmp_path / "code_ran"
    evil = folder / "evil.py"
    evil.write_text(f"import os\nos.mkdir({str(marker)!r})\nmodel = dict(type='EncoderDecoder')\n")
    if where == "inside the model folder":
        config = str(evil)
    elif where == "escaping with ..":
        config = "segformer/" + "../" * 30 + str(evil).lstrip("/")
    else:
        trusted = tmp_path / "trusted"
        trusted.mkdir()
        (trusted / "evil_link.py").symlink_to(evil)
        monkeypatch.setenv(TRUST_ENV, str(trusted))
        config = str(trusted / "evil_link.py")
    info = {"model": {"library": "mmseg", "config": config}, "num_classes": 2, "image_size": [32, 32]}
    (folder / "model.json").write_text(json.dumps(info))
    (folder / "model.safetensors").write_bytes(b"")
    before = {p.name: _sha(p) for p in folder.iterdir()}
    code = main(["predict", str(image), "--model", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "evil" in err and TRUST_ENV in err
    assert not marker.exists()
    assert {p.name: _sha(p) for p in folder.iterdir()} == before


@pytest.mark.parametrize("key", ["init_checkpoint", "encoder_weights"])
def test_start_weights_that_are_a_pickle_are_refused_and_never_run(tmp_path, key):
    from segbench.models import create_model

    marker = tmp_path / "code_ran"
    weights = tmp_path / "weights" / "start.pth"
    sha = _plant_pickle(weights, marker)
    with pytest.raises(PermissionError, match="holds Python objects besides tensors") as err:
        create_model(num_classes=2, **dict(SMP, **{key: str(weights)}))
    assert str(weights) in str(err.value) and "nothing in it ran" in str(err.value)
    assert not marker.exists() and _sha(weights) == sha


def _train_args(tmp_path: Path, processed: Path, out: Path) -> list[str]:
    """``segbench train`` arguments of a 1-epoch U-Net job at 32x32 on the CamVid subset, writing to
    ``out`` (configs and splits written into ``tmp_path``)."""
    from segbench.config import compose, job_configs
    from segbench.data.splits import make_splits

    jobs = job_configs(compose(["train.image_size=[32,32]", "train.epochs=1", "train.batch_size=4"]))
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    cfgs = {}
    for name, cfg in (
        ("model", jobs["models"]["smp_unet_r18"]),
        ("train", jobs["train"]),
        ("augment", jobs["augment"]),
    ):
        cfgs[name] = tmp_path / f"{name}.json"
        cfgs[name].write_text(json.dumps(cfg))
    return [
        "train",
        "--dataset",
        str(processed),
        "--splits",
        str(tmp_path / "splits.json"),
        "--fold",
        "0",
        "--seed",
        "42",
        "--model",
        str(cfgs["model"]),
        "--train",
        str(cfgs["train"]),
        "--augment",
        str(cfgs["augment"]),
        "--out",
        str(out),
        "--threads",
        "2",
    ]


def test_a_resume_checkpoint_holding_code_is_not_run_by_the_training_job(tmp_path, processed, capsys):
    """A tampered ``lightning/last.ckpt`` in the job's folder (DVC versions it): the job trains from
    scratch, says so, and the payload never runs."""
    out = tmp_path / "job"
    marker = tmp_path / "code_ran"
    _plant_pickle(out / "lightning" / "last.ckpt", marker)
    code = main(_train_args(tmp_path, processed, out))
    err = capsys.readouterr().err
    assert code == 0 and not marker.exists()
    assert "ignoring unreadable checkpoint" in err and "last.ckpt" in err
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["resumed_after_epoch"] is None and meta["epochs"] == 1


# ---------------------------------------------------------------- a corrupt model folder or dataset.json


def _break_model_json(folder: Path) -> None:
    (folder / "model.json").write_text('{"model": {"library": "smp"')


def _drop_num_classes(folder: Path) -> None:
    info = json.loads((folder / "model.json").read_text())
    del info["num_classes"]
    (folder / "model.json").write_text(json.dumps(info))


def _truncate_weights(folder: Path) -> None:
    p = folder / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])


def _other_architecture(folder: Path) -> None:
    info = json.loads((folder / "model.json").read_text())
    info["model"] = dict(SMP, encoder="resnet34")
    (folder / "model.json").write_text(json.dumps(info))


MODEL_FOLDER_CASES = {
    "model.json not JSON": (_break_model_json, "model.json"),
    "model.json without num_classes": (_drop_num_classes, "model.json"),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors"),
    "weights truncated": (_truncate_weights, "model.safetensors"),
    "weights of another architecture": (_other_architecture, "model.safetensors"),
}


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return _model_folder(tmp_path_factory.mktemp("model") / "best", SMP)


@pytest.mark.parametrize("case", sorted(MODEL_FOLDER_CASES))
def test_a_corrupt_model_folder_fails_predict_cleanly_naming_the_file(
    tmp_path, image, capsys, good_model, case
):
    import shutil

    breaks, file_name = MODEL_FOLDER_CASES[case]
    folder = tmp_path / "best"
    shutil.copytree(good_model, folder)
    breaks(folder)
    before = {p.name: _sha(p) for p in folder.iterdir()}
    out = tmp_path / "out"
    code = main(["predict", str(image), "--model", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and file_name in err, err
    assert {p.name: _sha(p) for p in folder.iterdir()} == before and not out.exists()


def test_an_image_that_is_not_an_image_fails_predict_cleanly(tmp_path, capsys, good_model):
    bad = tmp_path / "in" / "photo.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code = main(["predict", str(bad), "--model", str(good_model), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "photo.png" in err, err
    assert not out.exists() or not any(out.iterdir())


DATASET_CASES = {
    "not JSON": lambda d: d.write_text("{"),
    "no manifest": lambda d: d.write_text(
        json.dumps({k: v for k, v in json.loads(d.read_text()).items() if k != "manifest"})
    ),
    "a mask missing": lambda d: next((d.parent / "masks").iterdir()).unlink(),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_a_corrupt_dataset_fails_validate_cleanly_naming_the_file(tmp_path, capsys, case):
    src = tmp_path / "src"
    for sub in ("images", "masks"):
        (src / sub).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(src / "images" / f"s{i}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(src / "masks" / f"s{i}.png")
    (tmp_path / "labels.txt").write_text("background\ncrack\n")
    out = tmp_path / "ds"
    assert (
        main(["convert", "--format", "masks", "--classes", str(tmp_path / "labels.txt"), str(src), str(out)])
        == 0
    )
    capsys.readouterr()
    DATASET_CASES[case](out / "dataset.json")
    before = {p.relative_to(out).as_posix(): _sha(p) for p in out.rglob("*") if p.is_file()}
    report = tmp_path / "validation.json"
    code = main(["validate", "--dataset", str(out / "dataset.json"), "--report", str(report)])
    err = capsys.readouterr().err
    named = "dataset.json" if case != "a mask missing" else "s0.png"
    assert code == 2 and named in err, err
    assert {p.relative_to(out).as_posix(): _sha(p) for p in out.rglob("*") if p.is_file()} == before
    assert not report.exists()
