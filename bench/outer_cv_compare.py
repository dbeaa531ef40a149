"""Two candidates compared over the test images of several experiments (outer cross-validation).

A dataset of a dozen images leaves one experiment 3 to 6 test images: too few for any verdict
(segbench.uncertainty.MIN_UNITS). Running the same comparison with disjoint test sets (a user split
file per experiment, ``split.strategy=file``, e.g. two halves of the images) tests every image once,
each by models that never saw it. This script pools those experiments' per-image confusion matrices and
bootstraps the paired difference of the two candidates over all the pooled test images, with segbench's
own resampling (segbench.uncertainty: images, or whole groups when the images have groups).

    python bench/outer_cv_compare.py results/grapes_vs_A results/grapes_vs_B \
        --a smp_unet_r18 --b unet_resize --dataset data/processed/grapes/dataset.json

Per experiment and pooled, it prints each candidate's test mIoU (dataset-level: confusion matrices
summed over the test images, then averaged over the experiment's fold x seed runs; run k of every
experiment pooled into one run) with a 95 % percentile interval, and the difference b - a with its
interval. The verdict follows the report's rule: "better" only when the interval excludes 0 and there
are at least MIN_UNITS independent units.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from segbench.layout import ExperimentLayout
from segbench.metrics import mean_iou
from segbench.uncertainty import (
    MIN_UNITS,
    percentile_interval,
    resample_weights,
    resampling_units,
    run_scores,
)


def _runs(exp: ExperimentLayout, model: str) -> list[np.ndarray]:
    """The per-image test confusion stacks (``int[N, C, C]``) of every fold x seed run, in order."""
    found = sorted(
        (int(p.parent.parent.name[4:]), int(p.parent.name[4:]), p)
        for p in (exp.root / "eval" / model).glob("fold*/seed*/confusion_per_image.npy")
    )
    if not found:
        sys.exit(f"{exp.root}: no evaluation of {model} (eval/{model}/fold*/seed*/confusion_per_image.npy)")
    return [np.load(p, allow_pickle=False) for _, _, p in found]


def _scores(runs: list[np.ndarray], w: np.ndarray) -> tuple[float, np.ndarray]:
    point = float(np.mean([mean_iou(r.sum(axis=0)[None])[0] for r in runs]))
    return point, np.mean([run_scores(r, w) for r in runs], axis=0)


def compare(stacks: dict[str, list[np.ndarray]], ids: list[str], groups: list, n: int, seed: int) -> dict:
    """Paired bootstrap of two candidates' runs on the same ``ids`` (``stacks``: name -> runs)."""
    units = resampling_units(ids, groups)
    w = resample_weights(units, n, np.random.default_rng(seed))
    (a, ra), (b, rb) = (_scores(r, w) for r in stacks.values())
    d = rb - ra
    lo, hi = percentile_interval(d)
    return {
        "units": units.describe(),
        "n_units": units.n_units,
        "scores": {m: (p, percentile_interval(r)) for (m, p, r) in zip(stacks, (a, b), (ra, rb))},
        "difference": (b - a, (lo, hi)),
        "p_b_better": float(np.mean(d > 0)),
        "verdict": (
            f"cannot be told apart reliably: {units.n_units} independent test units (< {MIN_UNITS})"
            if units.n_units < MIN_UNITS
            else "indistinguishable"
            if lo <= 0 <= hi
            else ("the second is better" if lo > 0 else "the first is better")
        ),
    }


def _print(title: str, r: dict) -> None:
    print(f"\n{title}: {r['units']}")
    for m, (p, (lo, hi)) in r["scores"].items():
        print(f"  {m:24s} test mIoU {p:.3f}  [{lo:.3f}, {hi:.3f}]")
    diff, (lo, hi) = r["difference"]
    names = list(r["scores"])
    print(f"  {names[1]} - {names[0]}: {diff:+.3f}  [{lo:+.3f}, {hi:+.3f}]  P(> 0) = {r['p_b_better']:.3f}")
    print(f"  verdict: {r['verdict']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiments", nargs="+", help="results/<experiment> folders with disjoint test sets")
    ap.add_argument("--a", required=True, help="first candidate (e.g. the planned model)")
    ap.add_argument("--b", required=True, help="second candidate")
    ap.add_argument("--dataset", required=True, help="dataset.json (the images' groups)")
    ap.add_argument("--n-bootstrap", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.a == args.b:
        ap.error("--a and --b name the same candidate")
    manifest = json.loads(Path(args.dataset).read_text())["manifest"]
    pooled_ids: list[str] = []
    pooled: dict[str, list[list[np.ndarray]]] = {args.a: [], args.b: []}
    for e in args.experiments:
        exp = ExperimentLayout(e)
        ids = list(json.loads(exp.splits.read_text())["test"])
        overlap = set(ids) & set(pooled_ids)
        if overlap:
            sys.exit(f"{e}: test images also tested by an earlier experiment: {sorted(overlap)[:5]}")
        stacks = {m: _runs(exp, m) for m in (args.a, args.b)}
        groups = [manifest[i].get("group") for i in ids]
        _print(e, compare(stacks, ids, groups, args.n_bootstrap, args.seed))
        pooled_ids += ids
        for m in stacks:
            pooled[m].append(stacks[m])
    counts = {len(r) for runs in pooled.values() for r in runs}
    n_runs = min(counts)
    if len(counts) > 1:
        print(f"warning: the experiments have {sorted(counts)} fold x seed runs; pooling the first {n_runs}")
    merged = {m: [np.concatenate([r[k] for r in runs]) for k in range(n_runs)] for m, runs in pooled.items()}
    groups = [manifest[i].get("group") for i in pooled_ids]
    _print(f"pooled ({len(args.experiments)} experiments, {n_runs} runs each)", compare(
        merged, pooled_ids, groups, args.n_bootstrap, args.seed
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
