"""bench/outer_cv_compare.py: two candidates compared over the pooled test images of experiments with
disjoint test sets, with the report's two-level bootstrap (test units, then training seeds) and its
verdict rules (at least MIN_UNITS units, two or more seeds for "better")."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("outer_cv_compare", REPO / "bench" / "outer_cv_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _confusion(rng: np.random.Generator, n: int, error: float) -> np.ndarray:
    """``int64[n, 2, 2]``: per-image confusions of 1000-pixel images, about ``error`` of each class wrong."""
    out = np.zeros((n, 2, 2), np.int64)
    for i in range(n):
        for c in (0, 1):
            wrong = int(500 * min(0.9, max(0.0, error + rng.normal(0, 0.03))))
            out[i, c, c], out[i, c, 1 - c] = 500 - wrong, wrong
    return out


def _experiment(root: Path, ids: list[str], seeds: list[int], errors: dict[str, float], rng) -> Path:
    (root).mkdir(parents=True)
    (root / "splits.json").write_text(json.dumps({"test": ids}))
    for model, err in errors.items():
        for fold in (0, 1):
            for seed in seeds:
                d = root / "eval" / model / f"fold{fold}" / f"seed{seed}"
                d.mkdir(parents=True)
                np.save(d / "confusion_per_image.npy", _confusion(rng, len(ids), err + rng.normal(0, 0.01)))
    return root


def _setup(tmp_path: Path, seeds: list[int], overlap: bool = False) -> list[str]:
    rng = np.random.default_rng(0)
    ids_a = [f"img{i}" for i in range(6)]
    ids_b = [f"img{i}" for i in range(6, 12)] if not overlap else [f"img{i}" for i in range(5, 11)]
    manifest = {f"img{i}": {"group": None} for i in range(12)}
    (tmp_path / "dataset.json").write_text(json.dumps({"manifest": manifest}))
    errors = {"planned": 0.30, "resize": 0.10}
    return [
        str(_experiment(tmp_path / "A", ids_a, seeds, errors, rng)),
        str(_experiment(tmp_path / "B", ids_b, seeds, errors, rng)),
        "--a",
        "planned",
        "--b",
        "resize",
        "--dataset",
        str(tmp_path / "dataset.json"),
        "--n-bootstrap",
        "2000",
    ]


def test_pooled_experiments_give_a_verdict_that_neither_alone_can(tmp_path, capsys):
    assert _script().main(_setup(tmp_path, seeds=[42, 43])) == 0
    out = capsys.readouterr().out
    per_experiment, pooled = out.split("\npooled")
    # 6 test images per experiment: too few units for any verdict
    assert per_experiment.count("cannot be told apart reliably") == 2
    assert "12 test images resampled as independent units; 2 training seed(s)" in pooled
    assert "verdict: resize is better than planned" in pooled and "training seeds and test units" in pooled


def test_one_training_seed_never_gives_better(tmp_path, capsys):
    assert _script().main(_setup(tmp_path, seeds=[42])) == 0
    pooled = capsys.readouterr().out.split("\npooled")[1]
    assert "1 training seed(s)" in pooled
    assert "training noise was not measured" in pooled and "is better than" not in pooled


def test_overlapping_test_sets_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="also tested by an earlier experiment"):
        _script().main(_setup(tmp_path, seeds=[42], overlap=True))
