"""End to end: the real Snakemake workflow via `segbench run` on a small real CamVid subset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SEGBENCH = [sys.executable, "-m", "segbench.cli"]


def _run(args, cwd, **kw):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500, **kw)


def test_snakemake_lint(tmp_path):
    r = _run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--lint",
            "--snakefile",
            "workflow/Snakefile",
            "--directory",
            str(tmp_path),
        ],
        REPO,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition" in r.stdout + r.stderr


def test_dvc_pipeline_declares_metrics_and_plots():
    r = _run([sys.executable, "-m", "dvc", "stage", "list"], REPO)
    assert r.returncode == 0, r.stderr
    assert "import_camvid" in r.stdout and "compare" in r.stdout
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert any("summary.json" in next(iter(m)) for m in stages["compare"]["metrics"])
    assert any("learning_curves.csv" in next(iter(p)) for p in stages["compare"]["plots"])


@pytest.mark.slow
def test_workflow_end_to_end(tmp_path, camvid_subset):
    overrides = [
        f"dataset.root={camvid_subset}",
        "models=[smp_unet_r18,tv_lraspp_mbv3,mmseg_fastscnn]",
        "train.epochs=1",
        "train.image_size=[64,96]",
        "train.batch_size=4",
        "name=e2e",
        "split.val_fraction=0.2",
    ]
    r = _run(SEGBENCH + ["run", *overrides, "--workdir", str(tmp_path), "--cores", "2"], REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    exp = tmp_path / "results" / "e2e"

    # confusion counts equal the number of non-ignored test pixels
    meta = json.loads((tmp_path / "data/processed/camvid/dataset.json").read_text())
    splits = json.loads((exp / "splits.json").read_text())
    expected = sum(
        int(
            (
                np.asarray(Image.open(tmp_path / "data/processed/camvid" / meta["manifest"][i]["mask"]))
                != 255
            ).sum()
        )
        for i in splits["test"]
    )
    models = ["smp_unet_r18", "tv_lraspp_mbv3", "mmseg_fastscnn"]
    for m in models:
        assert np.load(exp / "eval" / m / "fold0" / "seed42" / "confusion.npy").sum() == expected

    summary = pd.read_csv(exp / "summary.csv")
    assert sorted(summary["model"]) == sorted(models + ["ensemble_top2"])
    assert set(summary["library"]) == {"smp", "torchvision", "mmseg", "ensemble"}
    for col in ("mIoU", "mDice", "mAcc", "aAcc", "fwIoU", "mBoundaryIoU", "val_mIoU"):
        assert summary[col].between(0, 1).all(), col
    assert (summary["mIoU_ci_low"] <= summary["mIoU"]).all() and (
        summary["mIoU"] <= summary["mIoU_ci_high"]
    ).all()
    assert (summary["time_ms_median"] > 0).all() and (
        summary["time_ms_p95"] >= summary["time_ms_median"]
    ).all()
    sj = json.loads((exp / "summary.json").read_text())
    assert sj["best"]["model"] == summary.iloc[0]["model"]  # ranked on validation, selectable first
    assert 0 < sj["baseline"]["mIoU"] < 1
    html = (exp / "report" / "index.html").read_text()
    for m in models:
        assert m in html
    assert html.count("data:image/png;base64,") >= 6 and "http://" not in html and "https://" not in html
    assert "95% CI" in html and "Boundary IoU" in html and "ms / image (median)" in html
    # the answer first: selected model, test mIoU with CI, verdict against the runner-up
    sel = json.loads((exp / "selection.json").read_text())
    first = html.index("<div class='verdict")
    assert first < html.index("<h2>") and f"<b>Use {sel['model']}</b>" in html[first : first + 400]
    assert "Against the runner-up:" in html and sel["verdict"] and sel["selected_on"] == "validation"
    # one training seed: the report says the training noise was not measured, and no verdict says "better"
    assert "training noise was not measured" in html and sel["n_seeds"] == 1
    assert all(c["better"] is None for c in sel["comparisons"])
    for section in (
        "Paired comparisons on the test images",
        "Accuracy against latency",
        "Worst test images per model",
    ):
        assert section in html, section
    # an ensemble of the two best models is one more candidate, scored on the same images
    assert "ensemble_top2" in set(summary["model"])
    ens = json.loads((exp / "models/ensemble_top2/fold0/seed42/ensemble.json").read_text())
    assert len(ens["members"]) == 2 and set(ens["members"]) <= set(models)
    # best/: the chosen model ready to use, its ONNX export checked against PyTorch on real images
    best = exp / "best"
    for f in (
        "model.json",
        "classes.json",
        "preprocessing.json",
        "MODEL_CARD.md",
        "README.md",
        "selection.json",
    ):
        assert (best / f).is_file(), f
    assert (best / "model.safetensors").is_file() or (best / "members").is_dir()
    parity = json.loads((best / "onnx_parity.json").read_text())
    assert parity["passed"] or parity["error"], parity
    # with a passing export, the stand-alone pipeline travels with it (tests/test_reference_script.py)
    assert (best / "segment_onnx.py").is_file() == bool(parity["passed"])
    card = (best / "MODEL_CARD.md").read_text()
    assert "segbench predict --model" in card and "one training run scores" in card and sel["model"] in card
    assert "training noise was not measured" in card  # one seed: the card says what the interval omits
    # deploy/: the selected model's ONNX FP32 and INT8 exports scored by segbench's own evaluation on
    # the same test images, beside the PyTorch model; a variant that cannot run here says why
    dep = json.loads((exp / "deploy" / "summary.json").read_text())
    rows = {r["variant"]: r for r in dep["rows"]}
    assert dep["reference"]["model"] == sel["model"] and list(rows)[0] == "pytorch"
    ref = json.loads((exp / "eval" / sel["model"] / "fold0" / "seed42" / "metrics.json").read_text())
    assert rows["pytorch"]["mIoU"] == pytest.approx(ref["mIoU"])
    assert set(rows) == {"pytorch", "onnx_fp32", "onnx_int8", "onnx_fp16", "torch_bf16"}
    for r in rows.values():
        assert r["status"] in ("ok", "failed", "skipped"), r
        assert (r["status"] == "ok") != bool(r.get("reason")), r
    if not parity.get("error"):
        assert rows["onnx_fp32"]["status"] == "ok" and abs(rows["onnx_fp32"]["difference"]) < 1e-3
        assert rows["onnx_int8"]["status"] == "ok", rows["onnx_int8"]
        assert rows["onnx_int8"]["size_mb"] < rows["onnx_fp32"]["size_mb"] / 2.5
        q = rows["onnx_int8"]
        assert q["diff_low"] <= q["difference"] <= q["diff_high"]
        assert "Deployment: what you ship" in html and "onnx_int8 vs pytorch:" in html
    # the report as Chromium shows it: every picture displayed, none empty
    from segbench.report.check import check_report

    assert check_report(exp / "report" / "index.html")["broken_in_browser"] == 0

    # a second run does nothing
    r2 = _run(SEGBENCH + ["run", *overrides, "--workdir", str(tmp_path), "--cores", "2"], REPO)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "Nothing to be done" in r2.stdout + r2.stderr

    # a report option re-renders the report and retrains nothing
    r3 = _run(
        SEGBENCH
        + ["run", *overrides, "report.n_overlays=1", "--workdir", str(tmp_path), "--cores", "2", "--dry-run"],
        REPO,
    )
    out = r3.stdout + r3.stderr
    assert r3.returncode == 0, out[-3000:]
    assert "rule report:" in out or "localrule report:" in out
    assert "rule train:" not in out and "rule evaluate:" not in out

    # a second experiment on the same dataset reuses the converted data (and leaves the first up to date)
    r4 = _run(
        SEGBENCH
        + ["run", *overrides, "name=e2e_other", "--workdir", str(tmp_path), "--cores", "2", "--dry-run"],
        REPO,
    )
    out4 = r4.stdout + r4.stderr
    assert r4.returncode == 0, out4[-3000:]
    assert "rule train:" in out4 and "rule convert:" not in out4 and "rule validate:" not in out4
    r4b = _run(SEGBENCH + ["run", *overrides, "--workdir", str(tmp_path), "--cores", "2", "--dry-run"], REPO)
    assert "Nothing to be done" in r4b.stdout + r4b.stderr

    # changing one model's config retrains that model only
    r5 = _run(
        SEGBENCH
        + [
            "run",
            *overrides,
            "+model_overrides.smp_unet_r18.encoder=resnet34",
            "--workdir",
            str(tmp_path),
            "--cores",
            "2",
            "--dry-run",
        ],
        REPO,
    )
    out5 = r5.stdout + r5.stderr
    assert r5.returncode == 0, out5[-3000:]
    produced = [ln for ln in out5.splitlines() if ln.strip().startswith("output:")]  # what jobs would write
    assert any("smp_unet_r18/fold0/seed42/model.safetensors" in ln for ln in produced)
    assert not any(
        f"{m}/fold0/seed42/model.safetensors" in ln
        for ln in produced
        for m in ("tv_lraspp_mbv3", "mmseg_fastscnn")
    )


def _tree_digest(root: Path, outs: list[str]) -> dict[str, str]:
    """{relative path: md5} of every file under the DVC outputs (links followed, as DVC does)."""
    import hashlib

    files = {}
    for o in outs:
        base = root / o
        for p in [base] if base.is_file() else sorted(base.rglob("*")):
            if p.is_file():
                files[str(p.relative_to(root))] = hashlib.md5(p.read_bytes()).hexdigest()
    return files


@pytest.mark.slow
def test_dvc_round_trip_fresh_clone_pull_reruns_nothing(tmp_path, camvid_subset):
    """dvc repro imports the raw data and runs the workflow; dvc push fills a remote. A fresh clone that
    runs `dvc pull` and then the README's main-job command runs no job: every pulled file is
    byte-identical to what was pushed, and nothing is retrained, re-evaluated or rewritten."""
    import shutil
    import time

    proj = tmp_path / "proj"
    shutil.copytree(
        REPO,
        proj,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "results", "data", ".dvc-remote", "__pycache__", ".snakemake", "*.egg-info"
        ),
    )
    (proj / "data").mkdir()
    shared = tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "camvid").symlink_to(camvid_subset)
    overrides = [
        "models=[tv_lraspp_mbv3]",
        "train.epochs=1",
        "train.image_size=[64,96]",
        "train.batch_size=4",
    ]
    (proj / "params.yaml").write_text(
        f"experiment: camvid_quick\noverrides: \"'{overrides[0]}' {' '.join(overrides[1:])} --cores 2\"\n"
    )
    env = dict(
        os.environ,
        SEGBENCH_SHARED=str(shared),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    env.pop("SNAKEMAKE_OUTPUT_CACHE", None)  # each project its own cache: a fresh clone starts with none
    # as after `source .venv/bin/activate`: dvc.yaml's commands call `segbench` from PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

    def run(*a, cwd=proj):
        r = subprocess.run(
            list(a),
            cwd=cwd,
            env=dict(env, SEGBENCH_ROOT=str(cwd)),
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert r.returncode == 0, " ".join(a) + "\n" + r.stdout[-3000:] + r.stderr[-3000:]
        return r

    dvc = [sys.executable, "-m", "dvc"]
    run("git", "init", "-q")
    run(*dvc, "repro")
    assert len(list((proj / "data/raw/camvid/CamVid/test").glob("*.png"))) == len(
        list((camvid_subset / "CamVid/test").glob("*.png"))
    )
    summary = json.loads((proj / "results/camvid_quick/summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["tv_lraspp_mbv3"]
    # one model, exportable: the deploy step's ONNX FP32 and INT8 variants ran and were scored
    dep = json.loads((proj / "results/camvid_quick/deploy/summary.json").read_text())
    status = {r["variant"]: r["status"] for r in dep["rows"]}
    assert status["onnx_fp32"] == status["onnx_int8"] == "ok", dep["rows"]
    assert "mIoU" in run(*dvc, "metrics", "show", "--json").stdout
    assert run(*dvc, "status").stdout.strip().endswith("up to date.")
    run(*dvc, "push")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "experiment")

    outs = ["data/raw/camvid", "data/processed/camvid", ".snakemake/metadata"] + [
        f"results/camvid_quick/{d}"
        for d in (
            "models",
            "eval",
            "best",
            "deploy",
            "report",
            "selection.json",
            "splits.json",
            "summary.csv",
            "provenance.json",
            "summary.json",
            "learning_curves.csv",
        )
    ]
    pushed = _tree_digest(proj, outs)
    assert len(pushed) > 50 and any(k.endswith("model.safetensors") for k in pushed)
    for rel, md5 in pushed.items():  # DVC's content-addressed remote holds every output file under its MD5
        assert (proj / ".dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file(), rel

    # a collaborator: fresh clone, dvc pull, then the README's main-job command
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(proj), str(clone), cwd=tmp_path)
    run(*dvc, "remote", "modify", "--local", "local", "url", str(proj / ".dvc-remote"), cwd=clone)
    t0 = time.perf_counter()
    run(*dvc, "pull", cwd=clone)
    t_pull = time.perf_counter() - t0
    assert _tree_digest(clone, outs) == pushed
    t0 = time.perf_counter()
    r = run(*SEGBENCH, "run", "experiment=camvid_quick", *overrides, "--cores", "2", cwd=clone)
    t_run = time.perf_counter() - t0
    out = r.stdout + r.stderr
    assert "Nothing to be done" in out, out[-4000:]
    for rule in ("convert", "split", "train", "evaluate", "aggregate", "report"):
        assert f"rule {rule}:" not in out, rule
    assert _tree_digest(clone, outs) == pushed
    # the pulled best/ used without segbench: its segment_onnx.py gives segbench predict's masks
    best = clone / "results/camvid_quick/best"
    img = sorted((clone / "data/raw/camvid/CamVid/test").glob("*.png"))[0]
    script = best / "segment_onnx.py"
    run(sys.executable, "-I", str(script), str(img), "-o", str(tmp_path / "ref"), cwd=tmp_path)
    run(*SEGBENCH, "predict", "--model", str(best), str(img), "-o", str(tmp_path / "pred"), cwd=clone)
    a = np.asarray(Image.open(tmp_path / "ref" / f"{img.stem}_mask.png"))
    b = np.asarray(Image.open(tmp_path / "pred" / f"{img.stem}_mask.png"))
    assert a.shape == b.shape and (a == b).mean() >= 0.9999
    print(f"fresh clone: dvc pull {t_pull:.1f} s, then segbench run (no job) {t_run:.1f} s")


def test_constraints_pin_cpu_safe_torch():
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"
    assert not any(name.startswith(("nvidia-", "triton")) for name in pins)
    assert int(pins["setuptools"].split(".")[0]) < 81  # mmengine imports pkg_resources


def test_bad_config_fails_before_anything_runs(tmp_path):
    r = _run(SEGBENCH + ["run", "train.optimizer=rmsprop", "--workdir", str(tmp_path)], REPO)
    assert r.returncode == 2
    assert "train.optimizer" in r.stderr and "adamw, adam, sgd" in r.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_grapes_labelme_through_the_workflow(tmp_path):
    """The second real dataset: LabelMe polygons with embedded photos -> convert (labelme importer,
    label_map to one 'grape' class) -> validate -> split -> train -> evaluate -> report."""
    overrides = [
        "experiment=grapes_quick",
        "models=[smp_unet_r18]",
        "train.epochs=1",
        "train.image_size=[96,128]",
        "name=grapes_e2e",
        "deploy.variants=[]",
    ]
    r = _run(SEGBENCH + ["run", *overrides, "--workdir", str(tmp_path), "--cores", "2"], REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    ds = tmp_path / "data/processed/grapes"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["source_format"] == "labelme" and meta["num_images"] == 11
    assert [c["name"] for c in meta["classes"]] == ["background", "grape"]
    # both grape labels became class 1; every photo has grape pixels and background
    for sid, e in meta["manifest"].items():
        m = np.asarray(Image.open(ds / e["mask"]))
        assert set(np.unique(m)) == {0, 1}, sid
    # photos 1 and 7 are one picture annotated twice: one group, never on both sides of the split
    assert meta["manifest"]["1"]["group"] == meta["manifest"]["7"]["group"]
    splits = json.loads((tmp_path / "results/grapes_e2e/splits.json").read_text())
    sides = [
        name
        for name, ids in (
            ("test", splits["test"]),
            ("train", splits["folds"][0]["train"]),
            ("val", splits["folds"][0]["val"]),
        )
        if "1" in ids or "7" in ids
    ]
    assert len(sides) == 1
    summary = pd.read_csv(tmp_path / "results/grapes_e2e/summary.csv")
    assert summary["model"].tolist() == ["smp_unet_r18"] and summary["mIoU"].between(0, 1).all()
    assert "grape" in (tmp_path / "results/grapes_e2e/report/index.html").read_text()


def test_init_checkpoint_is_an_input_of_the_training_job(tmp_path, camvid_subset):
    """A model started from files (another run's weights, a local encoder_weights file) depends on them:
    missing, the DAG names them."""
    start = tmp_path / "other_run" / "models" / "m" / "fold0"
    backbone = tmp_path / "weights" / "mobilenet_v3_large.safetensors"
    overrides = [
        f"dataset.root={camvid_subset}",
        "models=[tv_lraspp_mbv3]",
        "name=e2e_init",
        f"+model_overrides.tv_lraspp_mbv3.init_checkpoint={start}",
        f"+model_overrides.tv_lraspp_mbv3.encoder_weights={backbone}",
    ]
    r = _run(SEGBENCH + ["run", *overrides, "--workdir", str(tmp_path), "--cores", "1", "--dry-run"], REPO)
    assert r.returncode != 0 and "MissingInputException" in r.stdout + r.stderr
    assert str(start / "model.safetensors") in r.stdout + r.stderr and str(backbone) in r.stdout + r.stderr
    start.mkdir(parents=True)
    backbone.parent.mkdir()
    (start / "model.safetensors").write_bytes(b"weights")
    backbone.write_bytes(b"backbone")
    r = _run(SEGBENCH + ["run", *overrides, "--workdir", str(tmp_path), "--cores", "1", "--dry-run"], REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "train" in r.stdout
