"""Tuning inside the real workflow (`segbench run`, Snakemake checkpoints), on the CamVid subset at
32x32: rounds of trials as ordinary jobs, a finished experiment that reruns nothing, the same trials in
a fresh folder, a run killed mid-study that loses no finished trial, and raising tune.trials that
runs only the new trials (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEGBENCH = [sys.executable, "-m", "segbench.cli"]


def _overrides(root: Path, trials: int = 4) -> list[str]:
    return [
        f"dataset.root={root}",
        "models=[smp_unet_r18]",
        "train.epochs=1",
        "train.image_size=[32,32]",
        "train.batch_size=4",
        "split.val_fraction=0.2",
        "name=tuned",
        f"tune.trials={trials}",
        "tune.batch=2",
        "tune.sampler.n_startup_trials=2",
        "select.ensemble_top_k=0",
        "select.onnx=false",
        "deploy.variants=[]",
        "device=cpu",
    ]


def _run(work: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("SNAKEMAKE_OUTPUT_CACHE", None)
    return subprocess.run(
        [*SEGBENCH, "run", *overrides, "--workdir", str(work), "--cores", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def _jobs(out: str) -> list[str]:
    """The rules of the jobs a Snakemake run executed, in its log order."""
    import re

    return re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", out, re.M)


def _asked(exp: Path, model: str) -> list[dict]:
    """Every asked trial (number, round, params) of one candidate, in order."""
    out = []
    for f in sorted((exp / "tune" / model).glob("round*/asked/trial*.json")):
        t = json.loads(f.read_text())
        out.append({k: t[k] for k in ("number", "round", "params", "model_config")})
    return sorted(out, key=lambda t: t["number"])


@pytest.mark.slow
def test_tuning_in_the_workflow_is_reproducible_resumable_and_incremental(tmp_path, camvid_subset):
    work = tmp_path / "a"
    r = _run(work, _overrides(camvid_subset))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    exp = work / "results" / "tuned"
    jobs = _jobs(r.stdout + r.stderr)
    assert jobs.count("tune_trial") == 4 and jobs.count("tune_best") == 1 and jobs.count("tune_ask") == 3
    # the candidate trains the tuned configuration: its params are in the model's model.json
    for m in ("smp_unet_r18",):
        best = json.loads((exp / "tune" / m / "best.json").read_text())
        info = json.loads((exp / "models" / m / "fold0" / "seed42" / "model.json").read_text())
        assert info["model"]["train"] == best["params"]
        assert info["model"]["tuned"]["best_trial"] == best["best_trial"]
        assert best["trials"] == 4 and best["complete"] + best["pruned"] + best["failed"] == 4
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["tuning"]["tuned"] and set(summary["tuning"]["candidates"]) == {"smp_unet_r18"}
    html = (exp / "report" / "index.html").read_text()
    assert "Tuning (validation only)" in html and "expected best of n trials" in html
    card = (exp / "best" / "MODEL_CARD.md").read_text()
    assert "Hyper-parameters: tuned on validation images with 4 trials" in card

    # a finished experiment reruns nothing
    again = _run(work, _overrides(camvid_subset))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert not _jobs(again.stdout + again.stderr)

    # the same experiment in a fresh folder asks exactly the same trials, in the same order
    fresh = tmp_path / "b"
    killed = _kill_mid_study(fresh, _overrides(camvid_subset))
    r2 = _run(fresh, _overrides(camvid_subset))
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-6000:]
    exp2 = fresh / "results" / "tuned"
    for m in ("smp_unet_r18",):
        assert _asked(exp2, m) == _asked(exp, m)
        best2, best1 = (json.loads((e / "tune" / m / "best.json").read_text()) for e in (exp2, exp))
        assert best2.pop("compute_s") > 0 and best1.pop("compute_s") > 0  # the only thing timing-dependent
        assert best2 == best1
    # the run killed mid-study lost no finished trial: those were not run again
    rerun = (r2.stdout + r2.stderr).count("rule tune_trial:")
    assert killed and rerun == 4 - len(killed)
    for f, (mtime, text) in killed.items():
        assert f.stat().st_mtime == mtime and f.read_text() == text

    # raising tune.trials asks and runs only the new trials
    more = _run(work, _overrides(camvid_subset, trials=6))
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-6000:]
    assert _jobs(more.stdout + more.stderr).count("tune_trial") == 2  # the 2 new trials
    assert [t["number"] for t in _asked(exp, "smp_unet_r18")] == list(range(6))


def _kill_mid_study(work: Path, overrides: list[str]) -> dict[Path, tuple[float, str]]:
    """Start the run, kill it (its whole process group, as a crash would) once some trials have
    finished and others have not (round 0's two trials done, round 1 not); return the finished
    trials' files with their mtime and text."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("SNAKEMAKE_OUTPUT_CACHE", None)
    proc = subprocess.Popen(
        [*SEGBENCH, "run", *overrides, "--workdir", str(work), "--cores", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    exp = work / "results" / "tuned"
    deadline = time.time() + 900
    try:
        # round 1 asked: Snakemake recorded round 0's two trials as done and started round 1's
        while not (exp / "tune" / "smp_unet_r18" / "round1" / "asked" / "round.json").is_file():
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # a job killed after writing its file but before Snakemake recorded it is incomplete: rerun, rightly
    unfinished = _incomplete(work)
    done = sorted(
        f
        for f in exp.glob("tune/*/round*/trial*/trial.json")
        if f.relative_to(work).as_posix() not in unfinished
    )
    assert 1 <= len(done) < 4, f"the kill came too early or too late: {len(done)} of 4 trials recorded done"
    return {f: (f.stat().st_mtime, f.read_text()) for f in done}


def _incomplete(work: Path) -> set[str]:
    """The outputs Snakemake marked incomplete (``.snakemake/incomplete``: one file per output, named
    by the url-safe base64 of its path, split into chunks prefixed with '@')."""
    import base64

    root = work / ".snakemake" / "incomplete"
    out = set()
    for f in root.rglob("*") if root.is_dir() else []:
        if f.is_file() and f.name != "migration_underway":
            parts = [p.lstrip("@") for p in f.relative_to(root).parts]
            try:
                out.add(base64.urlsafe_b64decode("".join(parts)).decode())
            except ValueError:
                continue
    return out
