"""Benchmarks of the planning steps (issue 18):

* ``fingerprint``: ``segbench.data.fingerprint.fingerprint`` on a synthetic canonical dataset of
  ``--n`` images (default 10,000 of 640x480: JPEG photos, PNG masks of 5 classes with round objects);
  the target is under a minute on a 2-core CPU.
* ``loader``: the training data pipeline reading the plan's rescaled copy (decode + pad/crop + the
  default augmentations + normalisation, the in-memory cache off, one process) against what training
  consumes (the probed images per second of a U-Net/ResNet-18 step at the same patch): the target is
  at least 2x, so the data never waits on the disk. On a real dataset folder (``--dataset``, a
  canonical ``dataset.json``) at ``--scale`` and ``--patch``.

    .venv/bin/python bench/bench_plan.py fingerprint --n 10000
    .venv/bin/python bench/bench_plan.py loader --dataset data/processed/camvid/dataset.json \
        --scale 1 --patch 384 480
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def make_dataset(dest: Path, n: int, h: int = 480, w: int = 640, seed: int = 0) -> Path:
    """A canonical dataset of ``n`` images (a few distinct JPEG photos, reused) and masks with round
    objects of 4 classes on a background, plus its ``validation.json``."""
    rng = np.random.default_rng(seed)
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    photos, masks = [], []
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(8):
        img = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).resize((w, h)).save(buf, format="JPEG", quality=85)
        photos.append(buf.getvalue())
        m = np.zeros((h, w), np.uint8)
        for _ in range(12):
            cx, cy, r, c = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 60), rng.integers(1, 5)
            m[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = c
        buf = io.BytesIO()
        Image.fromarray(m).save(buf, format="PNG")
        masks.append((buf.getvalue(), np.bincount(m.reshape(-1), minlength=5)))
    manifest, per_image, total = {}, {}, np.zeros(5, np.int64)
    for i in range(n):
        sid = f"img{i:05d}"
        (dest / "images" / f"{sid}.jpg").write_bytes(photos[i % 8])
        (dest / "masks" / f"{sid}.png").write_bytes(masks[i % 8][0])
        manifest[sid] = {"image": f"images/{sid}.jpg", "mask": f"masks/{sid}.png", "height": h, "width": w,
                         "group": sid[:6]}  # fmt: skip
        per_image[sid] = masks[i % 8][1].tolist()
        total += masks[i % 8][1]
    meta = {"name": "synthetic", "classes": [{"id": c, "name": f"c{c}"} for c in range(5)],
            "ignore_index": 255,
            "background": 0, "manifest": manifest}  # fmt: skip
    (dest / "dataset.json").write_text(json.dumps(meta))
    (dest / "validation.json").write_text(
        json.dumps({"per_image": per_image, "class_pixels": total.tolist()})
    )
    return dest / "dataset.json"


def bench_fingerprint(n: int, threads: int) -> None:
    from segbench.data.fingerprint import fingerprint

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = make_dataset(Path(tmp) / "ds", n)
        t1 = time.perf_counter()
        fp = fingerprint(ds, threads=threads)
        t2 = time.perf_counter()
    print(f"made {n} images in {t1 - t0:.1f} s; fingerprint: {t2 - t1:.1f} s ({threads} threads)")
    print(
        f"  objects measured in {fp['object_masks']} masks, intensities in {fp['intensity']['images']} images"
    )
    print(f"  target: under 60 s -> {'met' if t2 - t1 < 60 else 'NOT met'}")


def bench_loader(dataset: Path, scale: float, patch: list[int], seconds: float) -> None:
    import torch

    from segbench._compat import import_torchvision

    import_torchvision()
    from segbench.config import compose
    from segbench.data.dataset import SegmentationDataset, build_transform
    from segbench.data.preprocess import preprocess
    from segbench.device import auto_precision
    from segbench.plan import probe

    cfg = compose([])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = preprocess(dataset, scale, Path(tmp) / "pre")
        print(
            f"preprocess (scale {scale:g}): {len(meta['manifest'])} images in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        crop = {
            "foreground_share": 0.33,
            "background": meta.get("background"),
            "ignore_index": meta["ignore_index"],
        }
        t = build_transform(cfg["augment"], patch, train=True, seed=0, crop=crop)
        ds = SegmentationDataset(Path(tmp) / "pre", meta["manifest"], sorted(meta["manifest"]), t, cache=None)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ds[n % len(ds)]
            n += 1
        loader_ips = n / (time.perf_counter() - t0)
    torch.set_num_threads(2)
    p = probe(dict(cfg["model"]["smp_unet_r18"], name="u"), len(meta["classes"]), patch, "cpu",
              auto_precision("cpu"), True)  # fmt: skip
    print(f"loader: {loader_ips:.1f} images/s (decode + crop + augment, one process, no cache)")
    print(
        f"training: {p['images_per_s']:.1f} images/s (U-Net/ResNet-18, batch {p['batch_size']}, "
        f"{patch[0]}x{patch[1]})"
    )
    ratio = loader_ips / p["images_per_s"]
    print(f"ratio {ratio:.1f}x (target >= 2x) -> {'met' if ratio >= 2 else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fingerprint")
    f.add_argument("--n", type=int, default=10000)
    f.add_argument("--threads", type=int, default=2)
    lo = sub.add_parser("loader")
    lo.add_argument("--dataset", required=True)
    lo.add_argument("--scale", type=float, default=1.0)
    lo.add_argument("--patch", type=int, nargs=2, default=[384, 480])
    lo.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    if a.what == "fingerprint":
        bench_fingerprint(a.n, a.threads)
    else:
        bench_loader(Path(a.dataset), a.scale, a.patch, a.seconds)


if __name__ == "__main__":
    main()
