"""Exact reruns: content (not timestamps) decides what is stale, the between-workflow cache trains a
shared model once, the same experiment run twice from scratch writes the same bytes, and a training
job killed with SIGKILL resumes to the same bytes as an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench import provenance

REPO = Path(__file__).resolve().parents[1]
SEGBENCH = [sys.executable, "-m", "segbench.cli"]
SMALL = [
    "train.epochs=1",
    "train.image_size=[64,96]",
    "train.batch_size=4",
    "select.ensemble_top_k=0",
    "select.onnx=false",
    "deploy.variants=[]",
]
RESULT_FILES = (
    "metrics.json",
    "per_image.csv",
    "confusion.npy",
    "confusion_per_image.npy",
    "val_per_image.csv",
    "val_confusion.npy",
    "val_confusion_per_image.npy",
)


def _env():
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("SNAKEMAKE_OUTPUT_CACHE", None)  # each work folder its own cache (.snakemake/output-cache)
    return env


def _run(workdir, *overrides, dry=False):
    args = (
        SEGBENCH
        + ["run", *overrides, "--workdir", str(workdir), "--cores", "2"]
        + (["--dry-run"] if dry else [])
    )
    r = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r.stdout + r.stderr


def _jobs(out):
    """Rule names of the jobs a Snakemake run executed (or would execute, for a dry run)."""
    return sorted(
        {
            ln.split()[-1].rstrip(":")
            for ln in out.splitlines()
            if ln.strip().startswith(("rule ", "localrule "))
        }
        - {"all"}
    )


# ---------------------------------------------------------------- what a step's code is


def test_each_step_fingerprints_the_code_it_runs(tmp_path, monkeypatch):
    closure = {
        s: {p.relative_to(provenance.PACKAGE_DIR).as_posix() for p in provenance.module_closure(*m)}
        for s, m in provenance.STEPS.items()
    }
    # the model registry imports its backends by name: all of them belong to training
    assert {
        "training/run.py",
        "training/module.py",
        "models/smp_backend.py",
        "models/mmseg_backend.py",
        "models/torchvision_backend.py",
        "losses.py",
        "data/dataset.py",
    } <= closure["train"]
    assert not any(p.startswith("report/") for p in closure["train"])
    assert not any(p.startswith("training/") for p in closure["report"])
    assert "report/templates/page.html.j2" in closure["report"] and "report/plots.py" in closure["report"]
    assert "report/templates/model_card.md.j2" in closure["best"] and "report/plots.py" not in closure["best"]
    assert "evaluate.py" in closure["ensemble"] and "inference.py" in closure["evaluate"]
    assert "data/importers/labelme.py" in closure["convert"]
    assert {"tuning/trial.py", "tuning/study.py", "training/run.py", "evaluate.py"} <= closure["tune"]

    # edit a copy of the package: a report change moves only the report's fingerprint, a backend
    # change moves training's and everything that loads a model, never the conversion's
    pkg = tmp_path / "segbench"
    shutil.copytree(provenance.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE_DIR", pkg)
    provenance._imports.cache_clear()
    before = {s: provenance.code_fingerprint(s) for s in provenance.STEPS}
    with open(pkg / "report" / "context.py", "a") as f:
        f.write("\n# a comment\n")
    provenance._imports.cache_clear()
    mid = {s: provenance.code_fingerprint(s) for s in provenance.STEPS}
    assert [s for s in before if before[s] != mid[s]] == ["report"]
    with open(pkg / "report" / "templates" / "page.html.j2", "a") as f:
        f.write("\n")
    provenance._imports.cache_clear()
    after = {s: provenance.code_fingerprint(s) for s in provenance.STEPS}
    assert [s for s in mid if mid[s] != after[s]] == ["report"]  # the page's layout is the report's code
    with open(pkg / "models" / "smp_backend.py", "a") as f:
        f.write("\nX = 1\n")
    provenance._imports.cache_clear()
    after2 = {s: provenance.code_fingerprint(s) for s in provenance.STEPS}
    # ... and tuning's (its trials train models), the plan's (it builds the model to probe the batch
    # size) and deploy's (it loads and exports the model)
    moved = {s for s in after if after[s] != after2[s]}
    assert moved == {"train", "tune", "evaluate", "ensemble", "best", "plan", "deploy"}
    with open(pkg / "tuning" / "study.py", "a") as f:  # a change of the search moves tuning only
        f.write("\nY = 1\n")
    provenance._imports.cache_clear()
    after3 = {s: provenance.code_fingerprint(s) for s in provenance.STEPS}
    assert {s for s in after2 if after2[s] != after3[s]} == {"tune"}
    with open(pkg / "deploy.py", "a") as f:  # the deployment variants move the deploy step only: no
        f.write("\nZ = 1\n")  # model is re-evaluated when the quantization code changes
    provenance._imports.cache_clear()
    after4 = {s: provenance.code_fingerprint(s) for s in provenance.STEPS}
    assert {s for s in after3 if after3[s] != after4[s]} == {"deploy"}
    provenance._imports.cache_clear()
    with pytest.raises(KeyError, match="steps: convert"):
        provenance.code_fingerprint("nope")


# ---------------------------------------------------------------- content decides, the cache shares


@pytest.mark.slow
def test_content_not_timestamps_decides_what_reruns_and_experiments_share_trained_models(
    tmp_path, camvid_subset
):
    raw = tmp_path / "raw"
    shutil.copytree(camvid_subset, raw)
    work = tmp_path / "work"
    common = [f"dataset.root={raw}", "models=[tv_lraspp_mbv3,smp_unet_r18]", *SMALL]
    _run(work, *common, "name=a")
    exp = work / "results" / "a"
    weights = {
        m: (exp / "models" / m / "fold0" / "seed42" / "model.safetensors")
        for m in ("tv_lraspp_mbv3", "smp_unet_r18")
    }
    first = {m: os.path.realpath(p) for m, p in weights.items()}

    # touching every raw image and mask (same bytes, new mtime) reruns nothing
    time.sleep(1.1)
    for p in raw.rglob("*.png"):
        os.utime(p)  # now: newer than every output
    out = _run(work, *common, "name=a", dry=True)
    assert "Nothing to be done" in out, _jobs(out)

    # a second experiment with the same dataset, split, models and recipe: training comes from the cache
    out = _run(work, *common, "name=b")
    assert "train" in _jobs(out) and out.count("from cache") >= 2 * 4, out[-3000:]
    # no training ran: Snakemake only created the (empty) log files
    assert all(f.stat().st_size == 0 for f in (work / "results" / "b" / "logs" / "train").glob("*.log"))
    for m, p in weights.items():
        q = work / "results" / "b" / "models" / m / "fold0" / "seed42" / "model.safetensors"
        assert q.read_bytes() == p.read_bytes() and os.path.realpath(q) == first[m]
    for f in RESULT_FILES:  # and the same weights scored on the same split give the same bytes
        assert (exp / "eval/smp_unet_r18/fold0/seed42" / f).read_bytes() == (
            work / "results/b/eval/smp_unet_r18/fold0/seed42" / f
        ).read_bytes()

    # a second training seed: only that seed's training and evaluation jobs are planned, and run
    out = _run(work, *common, "name=a", "train.seeds=[42,7]", dry=True)
    planned = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("wildcards:")]
    train_jobs = [ln for ln in planned if "seed=" in ln]
    assert train_jobs and all("seed=7" in ln for ln in train_jobs), planned
    before = {m: p.stat().st_mtime_ns for m, p in weights.items()}
    out = _run(work, *common, "name=a", "train.seeds=[42,7]")
    assert {m: p.stat().st_mtime_ns for m, p in weights.items()} == before  # seed 42 untouched
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["uncertainty"]["seeds"] == [42, 7] and {r["n_seeds"] for r in summary["models"]} == {2}
    assert summary["best"]["seed"] in (42, 7) and "median" in summary["best"]["seed_rule"]
    assert (exp / "best" / "model.safetensors").read_bytes() == (
        exp
        / "models"
        / summary["best"]["model"]
        / "fold0"
        / f"seed{summary['best']['seed']}"
        / "model.safetensors"
    ).read_bytes()
    html = (exp / "report" / "index.html").read_text()
    assert "2 training seed(s) per model" in html and "and 2 training seeds per model" in html
    out = _run(work, *common, "name=a", dry=True)  # back to one seed: nothing to train, only the summary
    assert "train" not in _jobs(out) and "evaluate" not in _jobs(out), _jobs(out)

    # one pixel of one mask changed: convert, split and everything downstream rerun, training included
    meta = json.loads((work / "data/processed/camvid/dataset.json").read_text())
    sid = sorted(meta["manifest"])[0]
    mask_path = Path(meta["manifest"][sid]["source_mask"])
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = (mask[0, 0] + 1) % 11
    Image.fromarray(mask).save(mask_path)
    splits_before = (exp / "splits.json").read_bytes()
    out = _run(work, *common, "name=a")
    assert {"convert", "validate", "split", "train", "evaluate", "aggregate", "report"} <= set(_jobs(out))
    meta2 = json.loads((work / "data/processed/camvid/dataset.json").read_text())
    assert meta2["manifest"][sid]["mask_sha256"] != meta["manifest"][sid]["mask_sha256"]
    assert (exp / "splits.json").read_bytes() == splits_before  # the split itself was not affected
    for m, p in weights.items():  # new content, new cache key: both models were trained again
        assert os.path.realpath(p) != first[m]
        assert '"wall_time_s"' in (exp / "logs" / "train" / f"{m}_fold0_seed42.log").read_text()  # it trained


# ---------------------------------------------------------------- bit-identical, and resume after SIGKILL


@pytest.mark.slow
def test_same_experiment_twice_from_scratch_is_bit_identical_and_a_killed_run_resumes_to_the_same_bytes(
    tmp_path, camvid_subset
):
    cfg = [
        f"dataset.root={camvid_subset}",
        "models=[smp_unet_r18]",
        "train.epochs=3",
        "train.image_size=[64,96]",
        "train.batch_size=4",
        "train.num_workers=1",
        "select.ensemble_top_k=0",
        "select.onnx=false",
        "deploy.variants=[]",
        "name=r",
    ]
    runs = {k: tmp_path / k for k in ("first", "second", "killed")}
    _run(runs["first"], *cfg)
    _run(runs["second"], *cfg)

    # the third run is killed (SIGKILL, the whole process group) during training, after an epoch ended
    ckpt_dir = runs["killed"] / "results/r/models/smp_unet_r18/fold0/seed42"
    args = SEGBENCH + ["run", *cfg, "--workdir", str(runs["killed"]), "--cores", "2"]
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        while not (ckpt_dir / "lightning" / "last.ckpt").is_file():
            assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # nothing downstream can see a partial result: the job's outputs do not exist yet
    assert not (ckpt_dir / "model.safetensors").exists() and not (ckpt_dir / "train_meta.json").exists()
    assert not (runs["killed"] / "results/r/eval").exists()
    _run(runs["killed"], *cfg)
    meta = json.loads((ckpt_dir / "train_meta.json").read_text())
    assert meta["resumed_after_epoch"] >= 1

    a = runs["first"] / "results/r"
    for k in ("second", "killed"):
        b = runs[k] / "results/r"
        assert (a / "models/smp_unet_r18/fold0/seed42/model.safetensors").read_bytes() == (
            b / "models/smp_unet_r18/fold0/seed42/model.safetensors"
        ).read_bytes(), k
        for f in RESULT_FILES:
            assert (a / "eval/smp_unet_r18/fold0/seed42" / f).read_bytes() == (
                b / "eval/smp_unet_r18/fold0/seed42" / f
            ).read_bytes(), (k, f)
        assert (a / "splits.json").read_bytes() == (b / "splits.json").read_bytes()
    # what the results were computed from is recorded beside them
    rec = json.loads((a / "provenance.json").read_text())
    assert rec["packages"]["torch"] == __import__("torch").__version__
    assert rec["dataset"]["num_images"] == len(
        json.loads((runs["first"] / "data/processed/camvid/dataset.json").read_text())["manifest"]
    )
    assert (
        rec["dataset"]["files_sha256"]
        == json.loads((runs["second"] / "results/r/provenance.json").read_text())["dataset"]["files_sha256"]
    )
    assert set(rec["code"]) == set(provenance.STEPS) and (a / "config.yaml").is_file()


def test_raw_data_is_copied_into_the_project_once_and_never_touched_after(tmp_path):
    from segbench.data.convert import DatasetError, ensure_raw

    src = tmp_path / "shared" / "ds"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.png").write_bytes(b"\x89PNG-bytes")
    root = tmp_path / "proj" / "data" / "raw" / "ds"
    assert ensure_raw({"root": str(root), "import_from": str(src)}) is True
    assert (root / "sub" / "a.png").read_bytes() == b"\x89PNG-bytes"
    (root / "sub" / "a.png").write_bytes(b"edited in the project")
    assert ensure_raw({"root": str(root), "import_from": str(src)}) is False  # an existing root is the data
    assert (root / "sub" / "a.png").read_bytes() == b"edited in the project"
    assert ensure_raw({"root": str(tmp_path / "mine")}) is False  # no import_from: the user's own folder
    with pytest.raises(DatasetError, match="SEGBENCH_SHARED"):
        ensure_raw({"root": str(tmp_path / "new"), "import_from": str(tmp_path / "missing")})
    assert not (tmp_path / "new").exists()
