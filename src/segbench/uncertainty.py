"""How sure the comparison is: every source of randomness we can resample, in one place.

A test mIoU depends on which test images were drawn *and* on the training run (weights init, data
order, augmentation: the training seed). segbench trains each model x fold once per seed of
``train.seeds`` and resamples both:

* **Test units** (:func:`resampling_units`). Images are resampled as the units that are independent:
  single images when nothing says they are related; whole groups (``dataset.group_regex``: a video
  sequence, a patient, a field plot) when the test split holds at least ``min_clusters`` of them
  (cluster bootstrap, Davison & Hinkley 1997, "Bootstrap Methods and their Application", §3.8);
  with fewer groups, blocks of consecutive images inside each group, ordered by image id
  (moving-block bootstrap, Künsch 1989, Ann. Statist. 17:1217), the block length chosen from the
  data by Politis & White (2004, Econometric Reviews 23:53, with the correction of Patton, Politis &
  White 2009, Econometric Reviews 28:372) unless ``select.block_length`` fixes it.
* **Training seeds** (:func:`hierarchical_scores`). Each resample draws the test units once (shared
  by every candidate: comparisons are paired on the images) and, per candidate, ``S`` of its ``S``
  seeds with replacement; the score is the dataset-level mIoU of the resampled images, averaged over
  the drawn seeds and the folds (a two-level hierarchical bootstrap, Davison & Hinkley 1997, §3.8;
  Saravanan et al. 2020, "Application of the hierarchical bootstrap to multi-level data in
  neuroscience", NBDC 3(5)). Folds are kept, not resampled: the estimate is the fold mean, as in
  cross-validation.

From the same resamples: percentile intervals (Efron & Tibshirani 1993, "An Introduction to the
Bootstrap", ch. 13), paired differences with a two-sided p-value from inverting the percentile
interval (the smallest level whose interval excludes 0), and rank probabilities (Maier-Hein et al.
2018, Nat. Commun. 9:5217, "Why rankings of biomedical image analysis competitions should be
interpreted with care"). :func:`variance_components` splits the variance into seed, fold and
image parts (method-of-moments estimates of a nested random-effects model, Searle, Casella &
McCulloch 1992, "Variance Components", ch. 3; the image part is the bootstrap variance over test
units with the run fixed).

With one seed, the training noise is not measured: the intervals count the test units only, and
:mod:`segbench.select` says so instead of calling a model better.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import mean_iou

__all__ = [
    "ResamplingUnits",
    "resampling_units",
    "politis_white_block_length",
    "resample_weights",
    "run_scores",
    "hierarchical_scores",
    "percentile_interval",
    "bootstrap_p_value",
    "rank_probabilities",
    "variance_components",
    "seed_rng",
]

#: fewer independent test units than this: no verdict says "better"
MIN_UNITS = 10


@dataclass(frozen=True)
class ResamplingUnits:
    """How the test images are resampled.

    Attributes:
        method: ``"images"`` (independent images), ``"clusters"`` (whole groups) or ``"blocks"``
            (moving blocks of consecutive images inside each group).
        n_images: test images (N, the length of the per-image stacks).
        n_units: independent units the resampling assumes: images, groups, or blocks
            (``sum_g ceil(N_g / block_length)``).
        groups: per group, the stack positions of its images in order (all images in one group for
            ``images``).
        block_length: images per block (``blocks`` only).
        block_rule: how the block length was chosen.
    """

    method: str
    n_images: int
    n_units: int
    groups: tuple[tuple[int, ...], ...]
    block_length: int | None = None
    block_rule: str | None = None

    def describe(self) -> str:
        """The resampling in words, for the report."""
        if self.method == "images":
            return f"{self.n_images} test images resampled as independent units"
        if self.method == "clusters":
            return (
                f"{self.n_units} groups of test images resampled whole (cluster bootstrap; "
                f"{self.n_images} images" + (f"; {self.block_rule}" if self.block_rule else "") + ")"
            )
        return (
            f"{self.n_images} test images in {len(self.groups)} group(s) resampled in blocks of "
            f"{self.block_length} consecutive images ({self.block_rule}): about {self.n_units} "
            "independent units"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_images": self.n_images,
            "n_units": self.n_units,
            "n_groups": len(self.groups) if self.method != "images" else None,
            "block_length": self.block_length,
            "block_rule": self.block_rule,
            "description": self.describe(),
        }


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def politis_white_block_length(x: np.ndarray) -> int:
    """Block length for a moving/circular block bootstrap of the mean of the series ``x``
    (``float[n]``, in its natural order), after Politis & White (2004) with the correction of
    Patton, Politis & White (2009): the lag ``m`` after which ``K_N = max(5, sqrt(log10 n))``
    autocorrelations are all below ``2 sqrt(log10(n) / n)``, a flat-top lag window of width
    ``M = 2m`` (Politis & Romano 1995), and ``b = (2 G^2 / D)^(1/3) n^(1/3)`` with
    ``G = sum_k lambda(k/M) |k| R(k)``, ``D = 4/3 (sum_k lambda(k/M) R(k))^2``; capped at
    ``min(3 sqrt(n), n / 3)``.

    Returns:
        An integer >= 1 (1 for a series too short or constant).
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 8 or np.allclose(x, x[0]):
        return 1
    x = x - x.mean()
    k_n = max(5, int(math.sqrt(math.log10(n))))
    m_max = min(int(math.ceil(math.sqrt(n))) + k_n, n - 1)
    b_max = int(math.ceil(min(3 * math.sqrt(n), n / 3)))
    acv = np.array([np.dot(x[: n - k], x[k:]) / n for k in range(m_max + 1)])
    rho = acv[1:] / acv[0]
    small = np.abs(rho) < 2 * math.sqrt(math.log10(n) / n)
    m_hat = None
    for m in range(0, m_max - k_n + 1):
        if small[m : m + k_n].all():  # lags m+1 .. m+K_N all insignificant
            m_hat = m + 1
            break
    if m_hat is None:  # no insignificant run: the last significant lag
        significant = np.nonzero(~small)[0]
        m_hat = int(significant[-1]) + 1 if len(significant) else 1
    big_m = min(2 * m_hat, m_max)
    lags = np.arange(-big_m, big_m + 1)
    t = np.abs(lags) / big_m
    lam = np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2 * (1 - t), 0.0))
    r = acv[np.abs(lags)]
    g = float(np.sum(lam * np.abs(lags) * r))
    d = 4.0 / 3.0 * float(np.sum(lam * r)) ** 2
    if d <= 0:
        return 1
    b = (2 * g * g / d) ** (1 / 3) * n ** (1 / 3)
    return int(min(max(1, math.ceil(b)), b_max))


def resampling_units(
    ids: list[str],
    groups: list[str | None],
    block_length: int | str = "auto",
    min_clusters: int = 5,
    series: np.ndarray | None = None,
) -> ResamplingUnits:
    """Decide how the test images are resampled (see the module docstring).

    Args:
        ids: test image ids, in the order of the per-image stacks (``splits.json``'s ``test``).
        groups: each image's group (``dataset.json``'s manifest ``group``; None when the dataset
            names none).
        block_length: ``"auto"`` (:func:`politis_white_block_length` of ``series`` inside each group,
            the largest) or a number of images.
        min_clusters: groups needed for a cluster bootstrap.
        series: ``float[N]`` a per-image score (e.g. the candidates' mean per-image mIoU) for the
            automatic block length; None gives ``ceil(N_g^(1/3))`` (Hall, Horowitz & Jing 1995).

    Raises:
        ValueError: ``ids`` and ``groups`` differ in length, or no test image.
    """
    n = len(ids)
    if n == 0 or len(groups) != n:
        raise ValueError(
            f"resampling_units needs one group per test image (got {n} ids, {len(groups)} groups)"
        )
    labels = [g if g is not None else f"\0{i}" for i, g in enumerate(groups)]
    distinct = list(dict.fromkeys(labels))
    if len(distinct) == n:  # every image its own group (or none named): independent images
        return ResamplingUnits("images", n, n, (tuple(range(n)),))
    members = {
        g: sorted((i for i in range(n) if labels[i] == g), key=lambda i: _natural_key(ids[i]))
        for g in distinct
    }
    ordered = tuple(tuple(members[g]) for g in distinct)
    if len(distinct) >= min_clusters:
        return ResamplingUnits("clusters", n, len(distinct), ordered)
    if block_length == "auto":
        if series is not None:
            s = np.asarray(series, dtype=np.float64)
            length = max(politis_white_block_length(s[list(g)]) for g in ordered)
            rule = "Politis & White 2004, automatic"
        else:
            length = max(int(math.ceil(len(g) ** (1 / 3))) for g in ordered)
            rule = "n^(1/3), Hall, Horowitz & Jing 1995"
    else:
        length, rule = int(block_length), "select.block_length"
    length = max(1, length)
    if 2 * sum(len(g) for g in ordered if len(g) <= length) >= n:
        # a group no longer than a block is always drawn as itself (a single image: every resample
        # holds it once); when such groups hold half the test images or more, blocks inside groups give
        # an interval of almost no width: whole groups instead, few as they are (and a verdict then
        # refuses: fewer than MIN_UNITS units)
        return ResamplingUnits(
            "clusters", n, len(distinct), ordered, None, "most images in groups no longer than a block"
        )
    units = sum(math.ceil(len(g) / min(length, len(g))) for g in ordered)
    return ResamplingUnits("blocks", n, int(units), ordered, length, rule)


def resample_weights(units: ResamplingUnits, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``float64[B, N]``: how many times each test image is drawn in each of ``B`` resamples.

    ``images``: a multinomial draw of N images (the same draws as
    :func:`segbench.metrics.bootstrap_scores` for the same generator); ``clusters``: G groups drawn
    with replacement, each bringing all its images; ``blocks``: per group of ``N_g`` images,
    ``ceil(N_g / l)`` blocks of ``l`` consecutive images with uniformly drawn starts, cut to ``N_g``.
    """
    n, b = units.n_images, int(n_resamples)
    if units.method == "images":
        return np.concatenate(
            [
                rng.multinomial(n, np.full(n, 1.0 / n), size=min(500, b - start)).astype(np.float64)
                for start in range(0, b, 500)
            ]
        )
    w = np.zeros((b, n))
    rows = np.arange(b)[:, None]
    if units.method == "clusters":
        g = len(units.groups)
        counts = np.zeros((b, g))
        np.add.at(counts, (rows, rng.integers(0, g, size=(b, g))), 1.0)
        for j, members in enumerate(units.groups):
            w[:, list(members)] += counts[:, j : j + 1]
        return w
    for members in units.groups:
        pos = np.asarray(members)
        m = len(pos)
        length = min(int(units.block_length or 1), m)
        k = math.ceil(m / length)
        starts = rng.integers(0, m - length + 1, size=(b, k))
        idx = (starts[:, :, None] + np.arange(length)).reshape(b, k * length)[:, :m]
        np.add.at(w, (rows, pos[idx]), 1.0)
    return w


def run_scores(per_image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``float64[B]``: the dataset-level mIoU of each resample of one run's test images
    (``per_image``: ``int[N, C, C]``; ``weights``: :func:`resample_weights`)."""
    m = np.asarray(per_image)
    n, c, _ = m.shape
    flat = m.reshape(n, c * c).astype(np.float64)
    out = np.empty(weights.shape[0])
    for start in range(0, weights.shape[0], 500):
        w = weights[start : start + 500]
        out[start : start + len(w)] = mean_iou((w @ flat).reshape(len(w), c, c))
    return out


def seed_rng(name: str, base: int = 0) -> np.random.Generator:
    """The generator of one candidate's seed draws: fixed by its name, so adding a candidate leaves the
    others' resamples unchanged."""
    return np.random.default_rng([base, zlib.crc32(name.encode())])


def hierarchical_scores(
    run_replicates: np.ndarray, rng: np.random.Generator, draws: int | None = None
) -> np.ndarray:
    """``float64[B]``: the two-level bootstrap of a candidate's fold x seed mean score.

    Args:
        run_replicates: ``float[F, S, B]``: :func:`run_scores` of every fold x seed under the shared
            resample weights.
        rng: this candidate's seed-draw generator (:func:`seed_rng`).
        draws: seeds drawn per resample: ``S`` (default: the bootstrap of the mean over seeds, what
            rerunning the whole experiment would give) or ``1`` (one training run: the spread a user
            retraining the model would see).

    Each resample ``b`` draws ``draws`` seeds with replacement and averages
    ``run_replicates[f, seed, b]`` over the drawn seeds and every fold. With ``S = 1`` this is the
    fold mean of the image-only bootstrap.
    """
    r = np.asarray(run_replicates, dtype=np.float64)
    f, s, b = r.shape
    k = s if draws is None else int(draws)
    picks = rng.integers(0, s, size=(b, k)) if s > 1 else np.zeros((b, 1), dtype=int)
    cols = np.arange(b)[:, None]
    return np.mean([np.nanmean(r[k][picks, cols], axis=1) for k in range(f)], axis=0)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of bootstrap replicates (NaNs left out)."""
    alpha = (1 - level) / 2
    r = np.asarray(replicates, dtype=np.float64)
    if not np.isfinite(r).any():
        return float("nan"), float("nan")
    low, high = np.nanquantile(r, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from bootstrap replicates of a difference: the smallest
    ``1 - level`` whose percentile interval excludes 0, ``min(1, 2 min(P(d <= 0), P(d >= 0)))``
    (the interval-inversion test, Efron & Tibshirani 1993, ch. 15-16). Resolution ``1 / B``."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan")
    return float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))


def rank_probabilities(replicates: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """``{candidate: [P(rank 1), ..., P(rank K)]}``: how often each candidate takes each rank (1 = the
    highest score) over the joint resamples (``float[B]`` each, drawn with the same test units).
    NaN ranks last; ties go to the order of ``replicates``."""
    names = list(replicates)
    r = np.stack([np.nan_to_num(np.asarray(replicates[n], dtype=np.float64), nan=-np.inf) for n in names])
    k, b = r.shape
    order = np.argsort(-r, axis=0, kind="stable")  # [K, B]: order[j, b] = the candidate at rank j
    probs = np.zeros((k, k))
    for j in range(k):
        probs[:, j] = np.bincount(order[j], minlength=k) / b
    return {n: probs[i].tolist() for i, n in enumerate(names)}


def variance_components(run_values: np.ndarray, run_replicates: np.ndarray | None = None) -> dict[str, float]:
    """Seed, fold and image parts of a candidate's score variance.

    Args:
        run_values: ``float[F, S]``: the test mIoU of every fold x seed.
        run_replicates: ``float[F, S, B]``: their image-only bootstrap replicates (None: no image part).

    Returns:
        ``{"sd_seed", "sd_fold", "sd_image"}`` (standard deviations, mIoU units; NaN when that part
        cannot be measured: one seed, one fold). ``sd_seed^2`` is the mean over folds of the
        variance over seeds (ddof 1); ``sd_fold^2`` the variance over folds of the seed means less
        ``sd_seed^2 / S`` (clipped at 0; the method-of-moments estimate of a nested random-effects
        model, Searle, Casella & McCulloch 1992, ch. 3); ``sd_image^2`` the mean over runs of the
        bootstrap variance over test units.
    """
    x = np.asarray(run_values, dtype=np.float64)
    f, s = x.shape
    var_seed = float(np.mean(np.var(x, axis=1, ddof=1))) if s > 1 else float("nan")
    if f > 1:
        var_fold = float(np.var(x.mean(axis=1), ddof=1)) - (var_seed / s if s > 1 else 0.0)
        var_fold = max(0.0, var_fold)
    else:
        var_fold = float("nan")
    var_image = (
        float(np.nanmean(np.nanvar(np.asarray(run_replicates, dtype=np.float64), axis=2, ddof=1)))
        if run_replicates is not None
        else float("nan")
    )
    return {"sd_seed": math.sqrt(var_seed), "sd_fold": math.sqrt(var_fold), "sd_image": math.sqrt(var_image)}
