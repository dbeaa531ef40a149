"""Deployment variants (segbench.deploy): built from best/, scored by segbench's own evaluation, set
beside the PyTorch model with paired intervals; a variant that fails is recorded and stops nothing."""

import json
import shutil

import numpy as np
import pytest

from segbench.cli import main
from segbench.config import compose, job_configs
from segbench.data.splits import make_splits
from segbench.deploy import VARIANTS, OrtModel, run_variant, summarise_variants
from segbench.deploy_commands import VARIANTS as CLI_VARIANTS
from segbench.evaluate import evaluate_model
from segbench.export import onnx_export_and_check
from segbench.images import read_image
from segbench.models.checkpoint import load_trained_model
from segbench.training import train_model


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, processed):
    """A trained LRASPP (2 epochs, 64x96) laid out as an experiment: models/, eval/, selection.json and
    best/ with its ONNX export, as the workflow leaves them before the deploy step."""
    exp = tmp_path_factory.mktemp("exp")
    jobs = job_configs(compose(["train.image_size=[64,96]", "train.epochs=2", "train.batch_size=4"]))
    splits = make_splits(processed, jobs["split"], exp / "splits.json")
    mdir = exp / "models" / "tv_lraspp_mbv3" / "fold0" / "seed42"
    train_model(
        processed,
        exp / "splits.json",
        0,
        jobs["models"]["tv_lraspp_mbv3"],
        dict(jobs["train"], seed=42),
        jobs["augment"],
        mdir,
        threads=2,
    )
    evaluate_model(
        mdir, processed, exp / "splits.json", jobs["evaluate"], exp / "eval/tv_lraspp_mbv3/fold0/seed42"
    )
    (exp / "selection.json").write_text(
        json.dumps({"model": "tv_lraspp_mbv3", "fold": 0, "seed": 42, "rule": "the only candidate"})
    )
    best = exp / "best"
    best.mkdir()
    for f in ("model.json", "model.safetensors"):
        shutil.copyfile(mdir / f, best / f)
    model, info = load_trained_model(best, "cpu")
    meta = json.loads(processed.read_text())
    images = [
        read_image(processed.parent / meta["manifest"][i]["image"]) for i in splits["folds"][0]["val"][:2]
    ]
    assert onnx_export_and_check(model, info, images, best / "model.onnx")["passed"]
    return exp, jobs, splits


def test_the_cli_lists_the_same_variants():
    assert CLI_VARIANTS == VARIANTS


def test_onnx_fp32_and_int8_are_scored_by_segbench_evaluation(experiment, processed):
    exp, jobs, splits = experiment
    deploy = dict(jobs["deploy"], calibration_images=8)
    ref = np.load(exp / "eval/tv_lraspp_mbv3/fold0/seed42/confusion_per_image.npy")
    recs = {}
    for v in ("onnx_fp32", "onnx_int8"):
        recs[v] = run_variant(
            v, exp / "best", processed, exp / "splits.json", jobs["evaluate"], deploy, exp / "deploy" / v, 2
        )
        assert recs[v]["status"] == "ok", recs[v]
        d = exp / "deploy" / v
        assert json.loads((d / "variant.json").read_text())["status"] == "ok"
        cms = np.load(d / "confusion_per_image.npy")
        # the same test images, and every non-ignored pixel of each counted once: as the PyTorch model's
        assert cms.shape == ref.shape and (cms.sum(axis=(1, 2)) == ref.sum(axis=(1, 2))).all()
        m = json.loads((d / "metrics.json").read_text())
        assert m["mIoU"] == pytest.approx(recs[v]["test_mIoU"]) and 0 <= m["mIoU"] <= 1
        assert (d / "val_confusion.npy").is_file() and json.loads((d / "timing.json").read_text())[
            "time_ms_median"
        ] > 0
    # ONNX FP32 is the same network: its labels differ from PyTorch's on almost no pixel
    fp32 = np.load(exp / "deploy/onnx_fp32/confusion_per_image.npy")
    assert np.abs(fp32 - ref).sum() / 2 <= 1e-4 * ref.sum()
    q = recs["onnx_int8"]["quantization"]
    assert (
        q["method"] == "static" and q["format"] == "QDQ" and q["per_channel"] and q["calibration_images"] == 8
    )
    # calibrated on training images only, never on the test or validation split
    assert set(q["calibration_ids"]) <= set(splits["folds"][0]["train"])
    assert recs["onnx_int8"]["size_mb"] < recs["onnx_fp32"]["size_mb"] / 2.5
    sess = OrtModel(exp / "deploy/onnx_int8/model.onnx", threads=1)
    ops = {n.op_type for n in __import__("onnx").load(str(exp / "deploy/onnx_int8/model.onnx")).graph.node}
    assert (
        "QuantizeLinear" in ops and "DequantizeLinear" in ops and sess.providers == ["CPUExecutionProvider"]
    )


def test_variants_beside_the_pytorch_model_with_paired_intervals(experiment, processed):
    exp, jobs, _ = experiment
    for v in ("onnx_fp32", "onnx_fp16"):
        if not (exp / "deploy" / v / "variant.json").is_file():
            run_variant(
                v,
                exp / "best",
                processed,
                exp / "splits.json",
                jobs["evaluate"],
                jobs["deploy"],
                exp / "deploy" / v,
                2,
            )
    out = exp / "deploy" / "summary.json"
    assert (
        main(
            [
                "deploy-summary",
                "--experiment",
                str(exp),
                "--dataset",
                str(processed),
                "--variants",
                "onnx_fp32",
                "onnx_fp16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())
    rows = {r["variant"]: r for r in s["rows"]}
    ref = json.loads((exp / "eval/tv_lraspp_mbv3/fold0/seed42/metrics.json").read_text())
    assert rows["pytorch"]["mIoU"] == pytest.approx(ref["mIoU"])
    assert rows["pytorch"]["ci_low"] <= rows["pytorch"]["mIoU"] <= rows["pytorch"]["ci_high"]
    r = rows["onnx_fp32"]
    assert r["difference"] == pytest.approx(r["mIoU"] - ref["mIoU"])
    assert r["diff_low"] <= 0 <= r["diff_high"] and abs(r["diff_high"] - r["diff_low"]) < 0.01
    # the subset's test split has fewer than 10 independent units: the verdict says it cannot tell
    assert "cannot be told apart reliably" in r["verdict"] or "indistinguishable" in r["verdict"]
    assert r["speedup"] > 0 and r["size_mb"] > 0
    assert isinstance(s["recommendation"], str) and s["recommendation"].endswith(".")
    # with the comparison's summary.json, the variants use its test units (here its block length)
    assert s["units"]["method"] == "blocks" and s["units"]["block_length"] != 3
    chosen = {"method": "blocks", "block_length": 3, "block_rule": "Politis & White 2004, automatic"}
    (exp / "summary.json").write_text(json.dumps({"uncertainty": {"units": chosen}}))
    try:
        again = summarise_variants(exp, processed, ["onnx_fp32"])
    finally:
        (exp / "summary.json").unlink()
    assert again["units"]["block_length"] == 3 and "Politis & White 2004" in again["units"]["description"]
    # no CUDA onnxruntime here: FP16 is recorded as skipped, with the reason, and has no numbers
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert rows["onnx_fp16"]["status"] == "skipped" and "float16" in rows["onnx_fp16"]["reason"]
        assert "mIoU" not in rows["onnx_fp16"]


def test_a_variant_that_fails_is_recorded_and_the_command_succeeds(experiment, processed, tmp_path, capsys):
    exp, jobs, _ = experiment
    best = tmp_path / "best"
    shutil.copytree(exp / "best", best)
    (best / "model.onnx").write_bytes(b"not an onnx model")
    cfg = tmp_path / "evaluate.json"
    cfg.write_text(json.dumps(jobs["evaluate"]))
    dcfg = tmp_path / "deploy.json"
    dcfg.write_text(json.dumps(jobs["deploy"]))
    out = tmp_path / "deploy" / "onnx_int8"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier run")
    args = ["deploy", "--variant", "onnx_int8", "--best", str(best), "--dataset", str(processed)]
    args += [
        "--splits",
        str(exp / "splits.json"),
        "--evaluate",
        str(cfg),
        "--deploy",
        str(dcfg),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    rec = json.loads((out / "variant.json").read_text())
    assert rec["status"] == "failed" and rec["reason"] and rec["test_mIoU"] is None
    assert "onnx_int8: failed" in capsys.readouterr().out
    # the folder holds the record only: no half-built model, no metrics, nothing stale
    assert sorted(p.name for p in out.iterdir()) == ["variant.json"]
    # and no temporary folder is left beside it
    assert sorted(p.name for p in out.parent.iterdir()) == ["onnx_int8"]
    # best/ without an ONNX export: the reason names the file and where the export's error is
    (best / "model.onnx").unlink()
    rec = run_variant(
        "onnx_fp32", best, processed, exp / "splits.json", jobs["evaluate"], {}, tmp_path / "v", 1
    )
    assert rec["status"] == "failed" and "model.onnx" in rec["reason"] and "select.onnx" in rec["reason"]
    with pytest.raises(ValueError, match="allowed values: onnx_fp32"):
        run_variant("tflite", best, processed, exp / "splits.json", jobs["evaluate"], {}, tmp_path / "w", 1)


def _test_images(processed, splits, n=3):
    meta = json.loads(processed.read_text())
    return [str(processed.parent / meta["manifest"][i]["image"]) for i in sorted(splits["test"])[:n]]


def test_predict_with_onnxruntime_gives_the_pytorch_masks(experiment, processed, tmp_path, capsys):
    from PIL import Image

    exp, jobs, splits = experiment
    imgs = _test_images(processed, splits)
    base = ["predict", "--model", str(exp / "best"), *imgs, "--mode", "slide", "--overlap", "0.25"]
    assert main([*base, "-o", str(tmp_path / "pt")]) == 0
    assert main([*base, "-o", str(tmp_path / "ort"), "--engine", "onnxruntime", "--threads", "1"]) == 0
    for f in sorted((tmp_path / "pt").glob("*_mask.png")):
        a = np.asarray(Image.open(f))
        b = np.asarray(Image.open(tmp_path / "ort" / f.name))
        assert a.shape == b.shape and (a == b).mean() >= 0.999, f.name  # float32 kernels differ by ~1e-6
    # without an ONNX file: exit 2, the file named and where one comes from
    capsys.readouterr()
    no_onnx = tmp_path / "no_onnx"
    shutil.copytree(exp / "best", no_onnx, ignore=shutil.ignore_patterns("*.onnx"))
    args = ["predict", "--model", str(no_onnx), imgs[0], "-o", str(tmp_path / "x"), "--engine", "onnxruntime"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.onnx" in err and "--engine pytorch" in err and not (tmp_path / "x").exists()


def test_evaluation_through_onnxruntime_scores_the_export(experiment, processed, tmp_path):
    exp, jobs, _ = experiment
    mdir = exp / "models" / "tv_lraspp_mbv3" / "fold0" / "seed42"
    m = evaluate_model(
        mdir, processed, exp / "splits.json", dict(jobs["evaluate"], engine="onnxruntime"), tmp_path
    )
    ref = np.load(exp / "eval/tv_lraspp_mbv3/fold0/seed42/confusion_per_image.npy")
    got = np.load(tmp_path / "confusion_per_image.npy")
    assert got.shape == ref.shape and np.abs(got - ref).sum() / 2 <= 1e-4 * ref.sum()
    assert m["mIoU"] == pytest.approx(
        json.loads((exp / "eval/tv_lraspp_mbv3/fold0/seed42/metrics.json").read_text())["mIoU"], abs=1e-3
    )
    with pytest.raises(ValueError, match="allowed values: pytorch, onnxruntime"):
        evaluate_model(
            mdir, processed, exp / "splits.json", dict(jobs["evaluate"], engine="tensorrt"), tmp_path / "t"
        )


def test_the_recommendation_names_the_file_to_ship():
    from segbench.deploy import _violations, recommend

    def variant(name, ms, mb, diff, lo, hi, engine="onnxruntime"):
        return dict(variant=name, status="ok", engine=engine, time_ms_median=ms, peak_memory_mb=mb,
                    difference=diff, diff_low=lo, diff_high=hi, speedup=60.0 / ms, size_mb=17.4)  # fmt: skip

    ref = {"variant": "pytorch", "status": "ok", "time_ms_median": 60.0, "peak_memory_mb": 550.0}
    rows = [
        ref,
        variant("onnx_fp32", 66.0, 540.0, 0.0, -0.0001, 0.0001),
        variant("onnx_int8", 43.0, 430.0, -0.0005, -0.0009, 0.0003),
        variant("lossy", 10.0, 100.0, -0.05, -0.07, -0.03),  # the fastest, but shown to lose accuracy
        {"variant": "onnx_fp16", "status": "skipped", "reason": "no CUDA"},
    ]

    def rec(limits):
        for r in rows[1:4]:
            r["violations"] = _violations(r, limits)
        return recommend(rows, limits)

    text = rec({})
    assert text.startswith("Fastest without a measurable loss of accuracy: onnx_int8")
    assert "ship deploy/onnx_int8/model.onnx" in text and "-0.0009 to +0.0003" in text
    text = rec({"max_ms_per_image": 50})
    assert text.startswith("The PyTorch model misses select.max_ms_per_image (60.0 ms per image > 50)")
    assert "its variant onnx_int8" in text
    assert "no variant meets" in rec({"max_ms_per_image": 40})  # only the lossy one is that fast
    assert "no variant meets" in rec({"max_memory_mb": 400, "max_ms_per_image": 100})
    rows[2].update(diff_high=-0.0001)  # INT8 now shown to lose: only slower ones remain
    assert rec({}).startswith("No variant is faster") and "ship the PyTorch model" in rec({})
    rows.append(variant("torch_bf16", 45.0, 580.0, 0.0001, -0.0001, 0.0002, engine="pytorch"))
    assert "torch_bf16" in rec({}) and "segbench predict --bf16" in rec({})
    rows[-1]["speedup"] = None  # no reference time: said, not a crash
    assert "the PyTorch model's time unknown" in rec({"max_ms_per_image": 50})


def test_a_recorded_reason_reaches_the_offline_page_without_web_addresses():
    from segbench.report.context import _offline

    reason = "SymbolicValueError: Unsupported: ONNX export of adaptive_avg_pool2d. See https://github.com/x/y/issues."
    text = _offline(reason)
    assert "http" not in text and text.startswith("SymbolicValueError: Unsupported") and "left out" in text
    assert len(_offline("x" * 1000)) == 400


def test_evaluation_through_onnxruntime_of_a_model_that_does_not_export_says_the_fix(
    experiment, processed, tmp_path, monkeypatch
):
    import segbench.export

    exp, jobs, _ = experiment
    monkeypatch.setattr(
        segbench.export, "onnx_export_and_check", lambda *a, **k: {"passed": False, "error": "Unsupported op"}
    )
    mdir = exp / "models" / "tv_lraspp_mbv3" / "fold0" / "seed42"
    cfg = dict(jobs["evaluate"], engine="onnxruntime")
    with pytest.raises(RuntimeError, match=r"Unsupported op.*evaluate\.engine=pytorch"):
        evaluate_model(mdir, processed, exp / "splits.json", cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
