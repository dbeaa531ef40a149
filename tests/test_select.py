"""Selection rules, paired comparisons (bootstrap + Wilcoxon), Pareto front, softmax ensembles."""

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from segbench.ensemble import EnsembleModel
from segbench.metrics import bootstrap_scores, metrics_from_confusion
from segbench.select import (
    MIN_UNITS,
    criterion_score,
    paired_comparison,
    pareto_front,
    per_image_miou,
    select_model,
)


def _stacks(seed=0, n=40, c=3, shift=0):
    """Two models' per-image matrices on the same images: b is a noisier copy of a's predictions."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, c, c), np.int64)
    b = np.zeros((n, c, c), np.int64)
    for i in range(n):
        gt = rng.integers(0, c, 400)
        pa = np.where(rng.random(400) < 0.8, gt, rng.integers(0, c, 400))
        pb = np.where(rng.random(400) < 0.8 - shift, gt, rng.integers(0, c, 400))
        np.add.at(a[i], (gt, pa), 1)
        np.add.at(b[i], (gt, pb), 1)
    return a, b


def test_paired_bootstrap_equals_a_per_resample_loop():
    a, b = _stacks(shift=0.1)
    r = paired_comparison("A", "B", [a], [b], n_resamples=300, seed=3)
    rng = np.random.default_rng(3)  # the same draws bootstrap_scores makes (one chunk of <= 500)
    counts = rng.multinomial(len(a), np.full(len(a), 1 / len(a)), size=300)
    diffs = [
        metrics_from_confusion(np.tensordot(w, a, 1))["mIoU"]
        - metrics_from_confusion(np.tensordot(w, b, 1))["mIoU"]
        for w in counts
    ]
    assert r["ci_low"] == pytest.approx(np.quantile(diffs, 0.025), abs=1e-12)
    assert r["ci_high"] == pytest.approx(np.quantile(diffs, 0.975), abs=1e-12)
    assert r["difference"] == pytest.approx(
        metrics_from_confusion(a.sum(0))["mIoU"] - metrics_from_confusion(b.sum(0))["mIoU"]
    )
    # Wilcoxon on per-image mIoU, as scipy computes it directly
    assert r["wilcoxon_p"] == pytest.approx(wilcoxon(per_image_miou(a), per_image_miou(b)).pvalue)
    # one training seed: the images separate them, the training noise was not measured: no "better"
    assert r["better"] is None and r["verdict"].startswith(
        "A scores higher than B on these test images (difference 0."
    )
    assert "training noise was not measured" in r["verdict"] and r["p_value"] < 0.05
    # with the seeds' noise measured (replicates from several seeds) the same gap is "better"
    r3 = paired_comparison(
        "A", "B", [a], [b], replicates=(bootstrap_scores(a, 300, 3), bootstrap_scores(b, 300, 3)), n_seeds=3
    )
    assert r3["better"] == "A" and r3["verdict"].startswith("A is better than B (difference 0.")
    assert np.isnan(r3["wilcoxon_p"])  # averaged over seeds, per-image ranks do not fit


def test_verdicts_indistinguishable_reversed_and_too_few_images():
    a, b = _stacks(seed=1, shift=0.0)
    r = paired_comparison("A", "B", [a], [b])
    assert r["better"] is None and "indistinguishable" in r["verdict"] and r["ci_low"] < 0 < r["ci_high"]
    r = paired_comparison("B", "A", *[[x] for x in _stacks(seed=2, shift=0.15)][::-1], n_seeds=2)
    assert r["better"] == "A" and r["verdict"].startswith("A is better than B")
    # correlated images (blocks of 10 consecutive images): fewer independent units than MIN_UNITS
    a, b = _stacks(seed=3, n=60, shift=0.3)
    r = paired_comparison("A", "B", [a], [b], n_seeds=3, units={"method": "blocks", "n_units": 6})
    assert r["better"] is None and "only 6 independent unit(s)" in r["verdict"]
    a, b = _stacks(seed=4, n=MIN_UNITS - 1, shift=0.3)
    r = paired_comparison("A", "B", [a], [b])
    assert r["better"] is None and "cannot be told apart reliably" in r["verdict"]
    with pytest.raises(ValueError, match="same test images"):
        paired_comparison("A", "B", [a], [b[:-1]])


def test_paired_comparison_with_folds_averages_the_folds():
    (a0, b0), (a1, b1) = _stacks(seed=5, shift=0.1), _stacks(seed=6, shift=0.1)
    r = paired_comparison("A", "B", [a0, a1], [b0, b1])
    d = [
        metrics_from_confusion(x.sum(0))["mIoU"] - metrics_from_confusion(y.sum(0))["mIoU"]
        for x, y in ((a0, b0), (a1, b1))
    ]
    assert r["difference"] == pytest.approx(np.mean(d))


def test_select_model_rules():
    cm = {"hi": np.array([[90, 10], [10, 90]]), "lo": np.array([[50, 50], [50, 50]])}
    cands = [
        {"name": "big", "parameters": 100, "val_confusion": cm["hi"], "val_time_ms": 10, "memory_mb": 500},
        {"name": "small", "parameters": 10, "val_confusion": cm["hi"], "val_time_ms": 20, "memory_mb": 100},
        {"name": "weak", "parameters": 1, "val_confusion": cm["lo"], "val_time_ms": 1, "memory_mb": 50},
    ]
    assert select_model(cands)["selected"] == "small"  # tie on score: fewer parameters
    r = select_model(cands, constraints={"max_memory_mb": 80})
    assert r["selected"] == "weak" and [x["selectable"] for x in r["ranking"]] == [True, False, False]
    with pytest.raises(ValueError, match="unknown constraint"):
        select_model(cands, constraints={"max_gpus": 1})
    with pytest.raises(ValueError, match="allowed values: mIoU, mDice_fg"):
        criterion_score(cm["hi"], "accuracy")
    with pytest.raises(ValueError, match="dataset.background"):
        criterion_score(cm["hi"], "mDice_fg")


def test_pareto_front():
    pts = [("fast", 10, 0.5), ("slow_best", 100, 0.9), ("dominated", 50, 0.4), ("mid", 30, 0.7)]
    assert sorted(pareto_front(pts)) == ["fast", "mid", "slow_best"]


def test_ensemble_averages_softmax_probabilities():
    torch.manual_seed(0)
    m1, m2 = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 8, 8)
    ens = EnsembleModel([m1, m2]).eval()
    with torch.no_grad():
        out = ens(x)
        expected = ((m1(x).softmax(1) + m2(x).softmax(1)) / 2).log()
        assert torch.allclose(out, expected, atol=1e-6)
        # an ensemble of one model with itself predicts exactly that model's classes
        assert torch.equal(EnsembleModel([m1, m1])(x).argmax(1), m1(x).argmax(1))
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleModel([m1])
