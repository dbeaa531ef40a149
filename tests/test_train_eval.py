"""Training writes a usable checkpoint and history; evaluation counts every non-ignored test pixel."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segbench.config import compose, job_configs
from segbench.data.splits import make_splits
from segbench.evaluate import evaluate_model, load_trained_model
from segbench.metrics import metrics_from_confusion
from segbench.training import lr_lambda, train_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory, processed):
    root = tmp_path_factory.mktemp("exp")
    jobs = job_configs(compose(["train.image_size=[64,96]", "train.epochs=2", "train.batch_size=4"]))
    splits = make_splits(processed, jobs["split"], root / "splits.json")
    model_cfg = jobs["models"]["tv_lraspp_mbv3"]
    info = train_model(
        processed,
        root / "splits.json",
        0,
        model_cfg,
        jobs["train"],
        jobs["augment"],
        root / "models" / "m" / "fold0",
        threads=2,
    )
    return root, jobs, splits, info


def test_training_outputs(trained):
    root, jobs, splits, info = trained
    out = root / "models" / "m" / "fold0"
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "val_mIoU", "lr", "epoch_time_s"]
    assert hist["epoch"].tolist() == [1, 2]
    assert hist["train_loss"].notna().all() and (hist["train_loss"] > 0).all()
    assert ((hist["val_mIoU"] >= 0) & (hist["val_mIoU"] <= 1)).all()
    assert info["train_images"] == len(splits["folds"][0]["train"]) and info["epochs"] == 2
    assert info["best_epoch"] in (1, 2)
    assert (out / "lightning" / "last.ckpt").is_file()
    model_json = json.loads((out / "model.json").read_text())
    assert model_json["num_classes"] == 11 and model_json["image_size"] == [64, 96]


def test_evaluation_counts_all_non_ignored_pixels(trained, processed):
    root, jobs, splits, _ = trained
    ev = root / "eval"
    m = evaluate_model(
        root / "models" / "m" / "fold0",
        processed,
        root / "splits.json",
        dict(jobs["evaluate"], save_predictions=2),
        ev,
    )
    meta = json.loads(processed.read_text())
    expected = sum(
        int((np.asarray(Image.open(processed.parent / meta["manifest"][i]["mask"])) != 255).sum())
        for i in splits["test"]
    )
    cm = np.load(ev / "confusion.npy")
    assert cm.shape == (11, 11) and cm.dtype == np.int64
    assert cm.sum() == expected == m["num_pixels"]
    again = metrics_from_confusion(cm)
    assert m["mIoU"] == pytest.approx(again["mIoU"])
    for key in ("mIoU", "mDice", "mAcc", "aAcc", "fwIoU"):
        assert 0.0 <= m[key] <= 1.0
    per_image = pd.read_csv(ev / "per_image.csv")
    assert sorted(per_image["id"]) == sorted(splits["test"])
    assert per_image["pixels"].sum() == expected
    preds = sorted((ev / "predictions").glob("*.png"))
    worst = [w["id"] for w in m["worst_images"]]
    assert len(worst) == 3 and [w["mIoU"] for w in m["worst_images"]] == sorted(
        w["mIoU"] for w in m["worst_images"]
    )
    assert min(per_image["mIoU"]) == pytest.approx(m["worst_images"][0]["mIoU"], rel=1e-5)  # CSV: 6 digits
    assert {p.stem for p in preds} == set(sorted(splits["test"])[:2]) | set(worst)
    assert np.asarray(Image.open(preds[0])).shape == (360, 480)
    # the fold's validation images are evaluated too (selection reads only these)
    val_ids = splits["folds"][0]["val"]
    val_cm = np.load(ev / "val_confusion.npy")
    assert len(pd.read_csv(ev / "val_per_image.csv")) == len(val_ids) == m["val"]["num_images"]
    assert val_cm.sum() == sum(
        int((np.asarray(Image.open(processed.parent / meta["manifest"][i]["mask"])) != 255).sum())
        for i in val_ids
    )
    assert np.array_equal(np.load(ev / "val_confusion_per_image.npy").sum(0), val_cm)
    assert m["val"]["mIoU"] == pytest.approx(metrics_from_confusion(val_cm)["mIoU"])
    assert m["peak_memory_mb"] > 0
    # what the machine determines (time, memory) is kept apart from what the model and data determine
    timing = json.loads((ev / "timing.json").read_text())
    assert sorted(timing["test"]["time_ms"]) == sorted(splits["test"]) and sorted(
        timing["val"]["time_ms"]
    ) == sorted(val_ids)
    assert timing["time_ms_median"] == pytest.approx(
        np.median(list(timing["test"]["time_ms"].values())), abs=1e-3
    )
    assert timing["peak_memory_mb"] == m["peak_memory_mb"] > 0
    on_disk = json.loads((ev / "metrics.json").read_text())
    assert (
        not {"time_ms_median", "time_ms_p95", "peak_memory_mb"} & set(on_disk)
        and "time_ms" not in per_image.columns
    )
    # so evaluating the same weights again writes every result file byte for byte again
    ev2 = root / "eval_again"
    evaluate_model(
        root / "models" / "m" / "fold0",
        processed,
        root / "splits.json",
        dict(jobs["evaluate"], save_predictions=2),
        ev2,
    )
    for f in (
        "metrics.json",
        "per_image.csv",
        "confusion.npy",
        "confusion_per_image.npy",
        "val_per_image.csv",
        "val_confusion.npy",
        "val_confusion_per_image.npy",
    ):
        assert (ev / f).read_bytes() == (ev2 / f).read_bytes(), f
    assert (ev / "timing.json").read_bytes() != (ev2 / "timing.json").read_bytes()


def test_checkpoint_roundtrip_is_exact(trained):
    import torch

    root, *_ = trained
    a, _ = load_trained_model(root / "models" / "m" / "fold0")
    b, _ = load_trained_model(root / "models" / "m" / "fold0")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_lr_schedules():
    poly = lr_lambda("poly", total_steps=20, steps_per_epoch=10, poly_power=1.0, warmup_epochs=1)
    assert poly(0) == pytest.approx(0.1) and poly(9) == pytest.approx(1.0)
    assert poly(10) == pytest.approx(1.0) and poly(15) == pytest.approx(0.5)
    cos = lr_lambda("cosine", total_steps=10, steps_per_epoch=5, poly_power=1.0, warmup_epochs=0)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.5)


def test_bn_momentum_is_part_of_the_protocol():
    from segbench.models import create_model
    from segbench.training import set_bn_momentum

    model = create_model("torchvision", num_classes=3, arch="lraspp_mobilenet_v3_large")
    moms = {m.momentum for m in model.modules() if isinstance(m, __import__("torch").nn.BatchNorm2d)}
    assert 0.01 in moms  # torchvision's own value, which collapses short trainings in eval mode
    n = set_bn_momentum(model, 0.1)
    assert n > 0
    assert {m.momentum for m in model.modules() if isinstance(m, __import__("torch").nn.BatchNorm2d)} == {0.1}
    assert set_bn_momentum(model, None) == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_training_is_reproducible(tmp_path, processed, workers):
    """Same experiment seed -> byte-identical weights (augmentations seeded, deterministic CPU ops)."""
    jobs = job_configs(
        compose(
            [
                "train.image_size=[64,96]",
                "train.epochs=1",
                "train.batch_size=4",
                f"train.num_workers={workers}",
            ]
        )
    )
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    digests = []
    for run in ("a", "b"):
        train_model(
            processed,
            tmp_path / "splits.json",
            0,
            jobs["models"]["smp_unet_r18"],
            jobs["train"],
            jobs["augment"],
            tmp_path / run,
            threads=2,
        )
        digests.append((tmp_path / run / "model.safetensors").read_bytes())
        assert (tmp_path / run / "history.csv").read_text().split("\n")[1].split(",")[:4] == (
            tmp_path / "a" / "history.csv"
        ).read_text().split("\n")[1].split(",")[:4]
    assert digests[0] == digests[1]


def test_onnx_export_matches_pytorch_on_real_images(trained, processed, tmp_path):
    from segbench.data.dataset import read_image
    from segbench.export import onnx_export_and_check

    root, jobs, splits, _ = trained
    model, info = load_trained_model(root / "models" / "m" / "fold0")
    meta = json.loads(processed.read_text())
    images = [read_image(processed.parent / meta["manifest"][i]["image"]) for i in splits["test"][:3]]
    r = onnx_export_and_check(model, info, images, tmp_path / "m.onnx")
    assert r["error"] is None and r["passed"], r
    assert r["argmax_agreement"] >= 0.9999 and r["max_abs_logit_diff"] < 1e-3 and r["images"] == 3
    assert r["dynamic_hw"]["ok"] and r["dynamic_hw"]["size"] != r["input_size"]  # another height and width
    import onnx

    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]  # dynamic H and W in the file itself

    import torch

    # a Python float from the data: traced as a constant, so parity fails
    class NotExportable(torch.nn.Module):
        def forward(self, x):
            return (
                torch.zeros((1, 11) + tuple(x.shape[2:]))
                + float(x.mean()) * torch.arange(11.0)[None, :, None, None]
            )

    r = onnx_export_and_check(NotExportable(), info, images, tmp_path / "bad.onnx")
    assert not r["passed"] and r["max_abs_logit_diff"] > 1e-3  # the baked-in constant is caught


def test_ensemble_of_a_model_with_itself_evaluates_like_the_model(trained, processed):
    import shutil

    from segbench.ensemble import build_ensemble
    from segbench.evaluate import evaluate_loaded
    from segbench.layout import ExperimentLayout

    root, jobs, splits, _ = trained
    exp = ExperimentLayout(root)  # the trained model as seed 0 of two models in the results layout
    for n in ("m", "m2"):
        shutil.copytree(
            root / "models" / "m" / "fold0", exp.model_dir(n, 0, 0), ignore=shutil.ignore_patterns("seed*")
        )
    ev_cfg = dict(jobs["evaluate"], save_predictions=0, n_worst=0)
    single = evaluate_model(
        exp.model_dir("m", 0, 0), processed, root / "splits.json", ev_cfg, exp.eval_dir("m", 0, 0)
    )
    evaluate_model(
        exp.model_dir("m2", 0, 0), processed, root / "splits.json", ev_cfg, exp.eval_dir("m2", 0, 0)
    )
    folder, info = build_ensemble(root, ["m", "m2"], 0, 1, 2, seed=0)
    assert info["ensemble"] == [{"name": "m", "path": "members/m"}, {"name": "m2", "path": "members/m2"}]
    model, info = load_trained_model(folder)  # self-contained: members copied beside model.json
    ens = evaluate_loaded(
        model, info, "cpu", processed, root / "splits.json", ev_cfg, root / "eval" / "ens" / "fold0"
    )
    assert np.array_equal(
        np.load(root / "eval" / "ens" / "fold0" / "confusion.npy"),
        np.load(exp.eval_file("m", 0, 0, "confusion.npy")),
    )
    # softmax can round two logits that differ by less than float32's resolution to equal
    # probabilities, and argmax then takes the first class: a few validation pixels of this barely
    # trained model may flip (seen: 7e-8 mIoU); the test split above is compared exactly
    assert ens["val"]["mIoU"] == pytest.approx(single["val"]["mIoU"], abs=1e-6)


def test_a_diverged_training_stops_with_the_fix_and_leaves_no_model(tmp_path, processed):
    """A NaN/inf training loss (here: lr 1e9) ends the job with a message naming the fixes, instead of
    scoring weights that are no longer numbers as a model that learned nothing."""
    jobs = job_configs(
        compose(["train.image_size=[64,96]", "train.epochs=2", "train.batch_size=4", "train.lr=1e9"])
    )
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    with pytest.raises(FloatingPointError, match="the model diverged.*train.precision=32-true"):
        train_model(
            processed, tmp_path / "splits.json", 0, jobs["models"]["tv_lraspp_mbv3"], jobs["train"],
            jobs["augment"], tmp_path / "m", threads=2,
        )  # fmt: skip
    assert not (tmp_path / "m" / "model.safetensors").exists()
    assert not (tmp_path / "m" / "lightning" / "last.ckpt").exists()  # a retry does not resume NaN weights


def test_killed_training_resumes_and_ends_as_an_uninterrupted_run(tmp_path, processed):
    """SIGKILL mid-training, start the same job again: it resumes from lightning/last.ckpt and the final
    weights and history equal an uninterrupted run's, byte for byte."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from segbench.config import dump_json

    jobs = job_configs(compose(["train.image_size=[128,160]", "train.epochs=5", "train.batch_size=2"]))
    make_splits(processed, jobs["split"], tmp_path / "splits.json")
    for key in ("train", "augment"):
        (tmp_path / f"{key}.json").write_text(dump_json(jobs[key]))
    (tmp_path / "model.json").write_text(dump_json(jobs["models"]["tv_lraspp_mbv3"]))
    files = {k: str(tmp_path / f"{k}.json") for k in ("splits", "model", "train", "augment")}

    def args(out):
        return (
            [sys.executable, "-m", "segbench.cli", "train", "--dataset", str(processed)]
            + [f"--{k}={v}" for k, v in files.items()]
            + ["--fold", "0", "--out", str(out), "--threads", "2"]
        )

    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    ref = subprocess.run(args(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(args(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, deadline = out / "lightning" / "last.ckpt", time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill in epoch 2 or 3, after a checkpoint exists
        if (
            ckpt.is_file()
            and (out / "history.csv").is_file()
            and len((out / "history.csv").read_text().splitlines()) >= 3
        ):
            time.sleep(0.1)
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed; make the test job longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "train_meta.json").exists()

    again = subprocess.run(args(out), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stdout
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["resumed_after_epoch"] in (1, 2, 3, 4) and meta["epochs"] == 5  # the last complete checkpoint
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "ref" / "model.safetensors").read_bytes()
    cols = ["epoch", "train_loss", "val_loss", "val_mIoU", "lr"]
    assert pd.read_csv(out / "history.csv")[cols].equals(pd.read_csv(tmp_path / "ref" / "history.csv")[cols])

    # a checkpoint of another job (different recipe) is never resumed
    jobs2 = job_configs(compose(["train.image_size=[64,96]", "train.epochs=1", "train.batch_size=2"]))
    (tmp_path / "train.json").write_text(dump_json(jobs2["train"]))
    other = subprocess.run(args(out), env=env, capture_output=True, text=True, timeout=600)
    assert other.returncode == 0 and "resuming" not in other.stdout
    assert json.loads((out / "train_meta.json").read_text())["resumed_after_epoch"] is None


def test_ddp_two_cpu_processes_share_the_batches_and_score_every_validation_image_once(tmp_path, processed):
    """train.devices=2 on a CPU: Lightning's DDP with two gloo processes. Each process takes its half of
    the training images per epoch; the validation confusion of both processes together counts every
    validation pixel exactly once (as one process does), and only the first process writes outputs."""
    import subprocess
    import sys

    from segbench.config import dump_json

    meta = json.loads(processed.read_text())
    ids = sorted(meta["manifest"])
    (tmp_path / "splits.json").write_text(
        json.dumps({"test": ids[:2], "folds": [{"train": ids[2:14], "val": ids[14:19]}]})
    )
    model = {"library": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_weights": None, "name": "u"}
    (tmp_path / "model.json").write_text(dump_json(model))
    jobs = job_configs(compose(["train.image_size=[64,96]", "train.epochs=1", "train.batch_size=2"]))
    (tmp_path / "augment.json").write_text(dump_json(jobs["augment"]))
    metas = {}
    for n in (1, 2):
        (tmp_path / f"train{n}.json").write_text(dump_json(dict(jobs["train"], devices=n, device="cpu")))
        out = tmp_path / f"out{n}"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "segbench.cli",
                "train",
                "--dataset",
                str(processed),
                "--splits",
                str(tmp_path / "splits.json"),
                "--fold",
                "0",
                "--model",
                str(tmp_path / "model.json"),
                "--train",
                str(tmp_path / f"train{n}.json"),
                "--augment",
                str(tmp_path / "augment.json"),
                "--out",
                str(out),
                "--threads",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        metas[n] = json.loads((out / "train_meta.json").read_text())
    assert metas[1]["processes"] == 1 and metas[2]["processes"] == 2 and metas[2]["strategy"] == "DDPStrategy"
    assert (
        metas[1]["steps_per_epoch"] == 6 and metas[2]["steps_per_epoch"] == 3
    )  # 12 images, batch 2 per process
    # 5 validation images on 2 processes: a padding sampler would score one of them twice
    assert metas[2]["val_pixels"] == metas[1]["val_pixels"] > 0
    assert (
        len(pd.read_csv(tmp_path / "out2" / "history.csv")) == 1
        and (tmp_path / "out2" / "model.safetensors").is_file()
    )
