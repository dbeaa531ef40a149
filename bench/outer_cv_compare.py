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
summed over the test images, then averaged over the experiment's fold x seed runs; run (fold k, seed s)
of every experiment pooled into one run) with a 95 % percentile interval, and the difference b - a with
its interval. With several training seeds (``train.repeats``) the bootstrap is the report's two-level
one: test units and, inside each resample, training seeds. The verdict is the report's own: "better"
only when the interval excludes 0, there are at least MIN_UNITS independent units and the models were
trained with two or more seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from segbench.layout import ExperimentLayout
from segbench.metrics import mean_iou
from segbench.select import paired_comparison
from segbench.uncertainty import (
    hierarchical_scores,
    percentile_interval,
    resample_weights,
    resampling_units,
    run_scores,
    seed_rng,
)

Runs = dict[tuple[int, int], np.ndarray]  # (fold, seed) -> int[N, C, C] per-image test confusions


def _runs(exp: ExperimentLayout, model: str) -> Runs:
    """The per-image test confusion stacks (``int[N, C, C]``) of every fold x seed run of ``model``."""
    found = {
        (int(p.parent.parent.name[4:]), int(p.parent.name[4:])): p
        for p in (exp.root / "eval" / model).glob("fold*/seed*/confusion_per_image.npy")
    }
    if not found:
        sys.exit(f"{exp.root}: no evaluation of {model} (eval/{model}/fold*/seed*/confusion_per_image.npy)")
    return {k: np.load(p, allow_pickle=False) for k, p in sorted(found.items())}


def _grid(runs: Runs) -> list[list[np.ndarray]]:
    """The runs as ``[fold][seed]`` (sorted); every fold must have the same seeds."""
    folds = sorted({f for f, _ in runs})
    seeds = sorted({s for _, s in runs})
    missing = [(f, s) for f in folds for s in seeds if (f, s) not in runs]
    if missing:
        sys.exit(f"runs missing (fold, seed): {missing}: evaluate every fold x seed first")
    return [[runs[f, s] for s in seeds] for f in folds]


def compare(stacks: dict[str, Runs], ids: list[str], groups: list, n: int, seed: int) -> dict:
    """Paired two-level bootstrap of two candidates' fold x seed runs on the same ``ids``.

    The test units (images, blocks or groups: :func:`segbench.uncertainty.resampling_units`) are drawn
    once per resample for both candidates; each candidate's training seeds are drawn with replacement
    inside that resample (:func:`segbench.uncertainty.hierarchical_scores`, as the report does). The
    verdict is the report's own (:func:`segbench.select.paired_comparison`): "better" only with at least
    MIN_UNITS units, an interval that excludes 0 and two or more training seeds.
    """
    units = resampling_units(ids, groups)
    w = resample_weights(units, n, np.random.default_rng(seed))
    names = list(stacks)
    grids = {m: _grid(stacks[m]) for m in names}
    if len({(len(g), len(g[0])) for g in grids.values()}) > 1:
        sys.exit(f"the candidates have different fold x seed runs: { {m: sorted(stacks[m]) for m in names} }")
    n_seeds = len(grids[names[0]][0])
    points, reps = {}, {}
    for m, g in grids.items():
        points[m] = float(np.mean([mean_iou(r.sum(axis=0)[None])[0] for row in g for r in row]))
        reps[m] = hierarchical_scores(np.array([[run_scores(r, w) for r in row] for row in g]), seed_rng(m))
    a, b = names
    flat = {m: [r for row in grids[m] for r in row] for m in names}
    pc = paired_comparison(b, a, flat[b], flat[a], replicates=(reps[b], reps[a]), n_seeds=n_seeds,
                           units=units.as_dict())  # fmt: skip
    return {
        "units": units.describe(),
        "n_units": units.n_units,
        "n_seeds": n_seeds,
        "scores": {m: (points[m], percentile_interval(reps[m])) for m in names},
        "difference": (pc["difference"], (pc["ci_low"], pc["ci_high"])),
        "p_b_better": float(np.mean(reps[b] - reps[a] > 0)),
        "better": pc["better"],
        "verdict": pc["verdict"],
    }


def _print(title: str, r: dict) -> None:
    print(f"\n{title}: {r['units']}; {r['n_seeds']} training seed(s) per fold")
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
    pooled: dict[str, list[Runs]] = {args.a: [], args.b: []}
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
    keys = sorted(set.intersection(*(set(r) for runs in pooled.values() for r in runs)))
    if not keys:
        sys.exit("the experiments share no (fold, seed) run to pool")
    if any(set(r) != set(keys) for runs in pooled.values() for r in runs):
        print(f"warning: the experiments have different fold x seed runs; pooling the common {keys}")
    # run (fold k, seed s) of every experiment is one pooled run: its models never saw any test image
    merged = {m: {k: np.concatenate([r[k] for r in runs]) for k in keys} for m, runs in pooled.items()}
    groups = [manifest[i].get("group") for i in pooled_ids]
    title = f"pooled ({len(args.experiments)} experiments, {len(keys)} fold x seed runs each)"
    _print(title, compare(merged, pooled_ids, groups, args.n_bootstrap, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
