"""How much the training seed moves a comparison: per model, each seed's test mIoU and the interval a
single-seed experiment would have reported (plain bootstrap over independent test images), against
the intervals segbench reports from all seeds (summary.json), and every pairwise verdict both ways.

    .venv/bin/python bench/seed_variance.py results/camvid_seeds [--dataset-dir data/processed/camvid]

Reads a finished multi-seed experiment (``train.repeats`` >= 2, one fold); trains nothing.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from segbench.aggregate import collect, summarise
from segbench.baseline import majority_baseline
from segbench.config import load_json
from segbench.layout import DatasetLayout, ExperimentLayout
from segbench.metrics import bootstrap_miou, bootstrap_scores, mean_iou
from segbench.records import read_dataset, read_splits, read_summary, read_validation
from segbench.select import paired_comparison


def _single_seed(exp: ExperimentLayout, rows: dict, seeds: list[int]) -> dict:
    stacks = {}
    for m, r in rows.items():
        print(f"\n{m}: mean {r['mIoU']:.4f}, sd over seeds {r['test_mIoU_sd_seed']:.4f}")
        for s in seeds:
            st = np.load(exp.eval_file(m, 0, s, "confusion_per_image.npy"))
            stacks[m, s] = st
            b = bootstrap_miou(st, 2000, 0)
            print(
                f"  seed {s}: {b['mIoU']:.4f}, single-seed interval (images) "
                f"{b['low']:.4f} to {b['high']:.4f}"
            )
        print(
            f"  all seeds: one training run {r['mIoU_ci_low']:.4f} to {r['mIoU_ci_high']:.4f}; seed mean "
            f"{r['mIoU_mean_ci_low']:.4f} to {r['mIoU_mean_ci_high']:.4f}; P(rank 1) {r['p_rank1']:.2f}"
        )
    return stacks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--dataset-dir", default="data/processed/camvid")
    args = ap.parse_args()
    exp, ds = ExperimentLayout(args.experiment), DatasetLayout(args.dataset_dir)
    summary = read_summary(exp.summary_json)
    seeds, rows = summary["uncertainty"]["seeds"], {r["model"]: r for r in summary["models"]}
    print("test units:", summary["uncertainty"]["units"]["description"], "| seeds", seeds)
    stacks = _single_seed(exp, rows, seeds)
    print("\nsingle-seed verdicts (plain image bootstrap):")
    for s in seeds:
        for a, b in itertools.combinations(rows, 2):
            d = mean_iou(stacks[a, s].sum(0)) - mean_iou(stacks[b, s].sum(0))
            lo, hi = np.quantile(
                bootstrap_scores(stacks[a, s], 2000, 0) - bootstrap_scores(stacks[b, s], 2000, 0),
                [0.025, 0.975],
            )
            print(
                f"  seed {s}: {a} - {b} = {d:+.4f} ({lo:+.4f} to {hi:+.4f}): "
                + ("better" if lo > 0 or hi < 0 else "indistinguishable")
            )
    meta, splits = read_dataset(ds.dataset_json), read_splits(exp.splits)
    classes = [c["name"] for c in meta["classes"]]
    models = {m: load_json(exp.model_config(m)) for m in rows if Path(exp.model_config(m)).is_file()}
    num = summarise(
        collect(exp.root, models, 1, True, seeds),
        1,
        True,
        load_json(exp.step_config("select")),
        splits["test"],
        [meta["manifest"][i].get("group") for i in splits["test"]],
        majority_baseline(read_validation(ds.validation_json), splits, classes),
        classes,
    )
    print("\nall seeds (hierarchical bootstrap over seeds and test units):")
    for a, b in itertools.combinations(models, 2):
        c = paired_comparison(
            a,
            b,
            num["test_stacks"][a],
            num["test_stacks"][b],
            replicates=(num["replicates"][a], num["replicates"][b]),
            n_seeds=len(seeds),
            units=num["uncertainty"]["units"],
        )
        print(" ", c["verdict"])


if __name__ == "__main__":
    main()
