"""The uncertainty estimators: hierarchical (seed x test unit) bootstrap, cluster and moving-block
bootstraps, the automatic block length, rank probabilities and variance components."""

import numpy as np
import pytest

from segbench.metrics import bootstrap_scores, metrics_from_confusion
from segbench.uncertainty import (
    bootstrap_p_value,
    hierarchical_scores,
    percentile_interval,
    politis_white_block_length,
    rank_probabilities,
    resample_weights,
    resampling_units,
    run_scores,
    seed_rng,
    variance_components,
)


def _image(quality: float, pixels: int = 400) -> np.ndarray:
    """A 2-class per-image confusion matrix whose IoU is about ``quality``."""
    q = float(np.clip(quality, 0.05, 0.95))
    e = int(round((pixels / q - pixels) / 2))
    return np.array([[pixels, e], [e, pixels]], np.int64)


def _stack(qualities) -> np.ndarray:
    return np.stack([_image(q) for q in qualities])


def _ar1(n: int, rho: float, rng, sd: float = 0.08) -> np.ndarray:
    x = np.zeros(n)
    e = rng.normal(0, sd * np.sqrt(1 - rho**2), n)
    x[0] = rng.normal(0, sd)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    return 0.6 + x


def _width(per_image, units, n=2000, seed=0) -> float:
    low, high = percentile_interval(
        run_scores(per_image, resample_weights(units, n, np.random.default_rng(seed)))
    )
    return high - low


IDS = [f"frame{i:04d}" for i in range(200)]


def test_independent_images_give_the_plain_bootstrap_exactly():
    st = _stack(np.random.default_rng(0).uniform(0.4, 0.8, 60))
    units = resampling_units(IDS[:60], [None] * 60)
    assert units.method == "images" and units.n_units == 60
    w = resample_weights(units, 700, np.random.default_rng(3))
    assert np.allclose(run_scores(st, w), bootstrap_scores(st, 700, seed=3))
    # every image its own group is the same as no groups
    assert resampling_units(IDS[:60], IDS[:60]).method == "images"


def test_hierarchical_interval_widens_with_injected_seed_spread():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.45, 0.75, 80)
    units = resampling_units(IDS[:80], [None] * 80)
    w = resample_weights(units, 2000, np.random.default_rng(0))
    widths, covered = {}, {}
    for effect in (0.0, 0.08):
        seeds = [base + effect * d for d in (-1.0, 0.0, 1.0)]  # a known seed effect on every image
        runs = np.stack([[run_scores(_stack(q), w) for q in seeds]])  # [F=1, S=3, B]
        values = [metrics_from_confusion(_stack(q).sum(0))["mIoU"] for q in seeds]
        one_run = hierarchical_scores(runs, seed_rng("m", 1), draws=1)
        mean = hierarchical_scores(runs, seed_rng("m"))
        lo, hi = percentile_interval(one_run)
        widths[effect] = (hi - lo, np.subtract(*percentile_interval(mean)[::-1]))
        covered[effect] = lo <= min(values) and max(values) <= hi
        comp = variance_components(np.array([values]), runs)
        if effect:
            assert comp["sd_seed"] == pytest.approx(np.std(values, ddof=1))
        else:
            assert comp["sd_seed"] == pytest.approx(0.0, abs=1e-12)
        assert comp["sd_image"] > 0 and np.isnan(comp["sd_fold"])  # one fold: no fold part
    # the seed effect widens both intervals (one run, and the mean over seeds) by far
    assert widths[0.08][0] > 3 * widths[0.0][0] and widths[0.08][1] > 2 * widths[0.0][1]
    # the one-run interval covers the seeds' own scores
    assert covered[0.08] and covered[0.0]
    # with one seed, the hierarchical bootstrap is the image bootstrap
    one = np.stack([[run_scores(_stack(base), w)]])
    assert np.allclose(hierarchical_scores(one, seed_rng("m")), one[0, 0])


def test_block_bootstrap_widens_on_correlated_images_and_not_on_independent_ones():
    n = 200
    correlated = _stack(_ar1(n, 0.9, np.random.default_rng(2)))
    independent = _stack(np.random.default_rng(2).normal(0.6, 0.08, n))
    plain = resampling_units(IDS, [None] * n)
    for st, series in ((correlated, "ar"), (independent, "iid")):
        quality = [metrics_from_confusion(m)["mIoU"] for m in st]
        blocks = resampling_units(IDS, ["seq"] * n, series=np.array(quality))
        assert blocks.method == "blocks" and blocks.block_rule.startswith("Politis & White")
        ratio = _width(st, blocks) / _width(st, plain)
        if series == "ar":
            assert blocks.block_length >= 8 and blocks.n_units <= n / 8
            assert ratio > 1.8  # AR(1), rho 0.9: the plain bootstrap is far too narrow
        else:
            assert blocks.block_length <= 5
            assert 0.8 < ratio < 1.25  # independent images: about the plain interval
    # a fixed block length is taken as given
    fixed = resampling_units(IDS, ["seq"] * n, block_length=10)
    assert fixed.block_length == 10 and fixed.n_units == 20 and "select.block_length" in fixed.describe()


def test_cluster_bootstrap_widens_on_grouped_images():
    rng = np.random.default_rng(4)
    n_groups, per = 20, 10
    groups = [f"g{i // per}" for i in range(n_groups * per)]
    effect = np.repeat(rng.normal(0, 0.1, n_groups), per)  # images of one group share a quality
    grouped = _stack(0.6 + effect + rng.normal(0, 0.02, n_groups * per))
    independent = _stack(0.6 + rng.normal(0, 0.1, n_groups * per))
    clusters = resampling_units(IDS, groups)
    plain = resampling_units(IDS, [None] * len(IDS))
    assert clusters.method == "clusters" and clusters.n_units == n_groups
    assert _width(grouped, clusters) > 2 * _width(grouped, plain)
    assert 0.7 < _width(independent, clusters) / _width(independent, plain) < 1.4
    w = resample_weights(clusters, 50, np.random.default_rng(0))
    # whole groups: every image of a group is drawn as often as its group
    assert all(len(set(w[b, i * per : (i + 1) * per])) == 1 for b in range(50) for i in range(n_groups))
    # fewer groups than min_clusters: blocks inside each group, in id order
    few = resampling_units(IDS[:40], ["a"] * 20 + ["b"] * 20, min_clusters=5)
    assert few.method == "blocks" and len(few.groups) == 2
    # few groups of one or two images (grape photos, a duplicate pair merged): blocks inside them would
    # never vary a single image; whole groups are drawn instead
    tiny = resampling_units(IDS[:5], ["a", "a", "b", "c", "d"], min_clusters=5)
    assert tiny.method == "clusters" and tiny.n_units == 4 and "no longer than a block" in tiny.describe()
    w = resample_weights(tiny, 200, np.random.default_rng(0))
    assert w[:, 2].std() > 0.5 and (w[:, 0] == w[:, 1]).all()


def test_politis_white_block_length_grows_with_dependence():
    rng = np.random.default_rng(5)
    lengths = [politis_white_block_length(_ar1(400, rho, rng)) for rho in (0.0, 0.5, 0.9)]
    assert lengths[0] <= 4 < lengths[1] < lengths[2]
    assert politis_white_block_length(np.ones(50)) == 1 and politis_white_block_length(np.arange(5.0)) == 1


def test_rank_probabilities_and_bootstrap_p_value():
    rng = np.random.default_rng(6)
    reps = {
        "a": rng.normal(0.7, 0.01, 4000),
        "b": rng.normal(0.6, 0.01, 4000),
        "c": rng.normal(0.6, 0.01, 4000),
    }
    p = rank_probabilities(reps)
    assert p["a"][0] == 1.0 and p["b"][0] == 0.0
    assert p["b"][1] == pytest.approx(0.5, abs=0.05) and sum(p["c"]) == pytest.approx(1.0)
    assert bootstrap_p_value(reps["a"] - reps["b"]) == 0.0
    assert bootstrap_p_value(reps["b"] - reps["c"]) > 0.5
