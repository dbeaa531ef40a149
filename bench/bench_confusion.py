"""Confusion-matrix accumulation throughput: segbench.metrics.confusion_matrix against torchmetrics'
MulticlassConfusionMatrix on the same tensors (CPU). Prints pixels/s and the ratio (>1: segbench faster).

    .venv/bin/python bench/bench_confusion.py [--classes 19] [--batch 8] [--size 512] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from segbench._compat import import_torchvision

import_torchvision()
from torchmetrics.classification import MulticlassConfusionMatrix  # noqa: E402

from segbench.metrics import confusion_matrix  # noqa: E402


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, a.classes, (a.batch, a.size, a.size), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.05] = 255
    pred = torch.randint(0, a.classes, (a.batch, a.size, a.size), generator=g)
    tm = MulticlassConfusionMatrix(a.classes, ignore_index=255, validate_args=True)
    tm_fast = MulticlassConfusionMatrix(a.classes, ignore_index=255, validate_args=False)

    def run_tm(m):
        m.reset()
        m.update(pred, target)
        return m.compute()

    assert np.array_equal(confusion_matrix(target, pred, a.classes), run_tm(tm).numpy())
    pixels = target.numel()
    ours = timeit(lambda: confusion_matrix(target, pred, a.classes), a.repeats)
    theirs = timeit(lambda: run_tm(tm), a.repeats)
    theirs_fast = timeit(lambda: run_tm(tm_fast), a.repeats)
    print(f"{a.batch}x{a.size}x{a.size} int64, {a.classes} classes, 5% ignored, median of {a.repeats}")
    print(f"segbench confusion_matrix            {pixels / ours / 1e6:8.1f} Mpixel/s  ({ours * 1e3:7.1f} ms)")
    print(
        f"torchmetrics (validate_args=True)    {pixels / theirs / 1e6:8.1f} Mpixel/s  ({theirs * 1e3:7.1f} "
        f"ms)  ratio {theirs / ours:.2f}x"
    )
    print(
        f"torchmetrics (validate_args=False)   {pixels / theirs_fast / 1e6:8.1f} Mpixel/s  "
        f"({theirs_fast * 1e3:7.1f} ms)  ratio {theirs_fast / ours:.2f}x"
    )


if __name__ == "__main__":
    main()
