"""Benchmark: convert N LabelMe polygon files of 1920x1080 (the annotation-conversion issue's target:
1,000 files in under 1 minute on a 2-core CPU).

Makes a synthetic LabelMe folder (one JPEG per JSON, ``--shapes`` random polygons each), then times
``segbench.data.convert.convert`` on it (the code ``segbench convert`` and the workflow run).

    .venv/bin/python bench/bench_convert.py --n 1000
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(
    dest: Path, n: int, shapes: int, vertices: int, width: int = 1920, height: int = 1080, seed: int = 0
) -> None:
    """Write ``n`` JPEGs and LabelMe 5 JSON files with ``shapes`` polygons of ``vertices`` points."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = ((xx * 255 // width)[..., None] + np.array([0, 60, 120])) % 256
    buf = io.BytesIO()
    Image.fromarray(base.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    labels = ["crop", "weed", "soil"]
    for i in range(n):
        (dest / f"img_{i:05d}.jpg").write_bytes(jpeg)
        shp = []
        for _ in range(shapes):
            cx, cy = rng.uniform(100, width - 100), rng.uniform(100, height - 100)
            r = rng.uniform(30, 250, vertices)
            t = np.sort(rng.uniform(0, 2 * np.pi, vertices))
            pts = np.stack(
                [np.clip(cx + r * np.cos(t), 0, width - 1), np.clip(cy + r * np.sin(t), 0, height - 1)], 1
            )
            shp.append(
                {
                    "label": labels[int(rng.integers(3))],
                    "points": pts.round(2).tolist(),
                    "group_id": None,
                    "description": "",
                    "shape_type": "polygon",
                    "flags": {},
                    "mask": None,
                }
            )
        doc = {
            "version": "5.3.1",
            "flags": {},
            "shapes": shp,
            "imagePath": f"img_{i:05d}.jpg",
            "imageData": None,
            "imageHeight": height,
            "imageWidth": width,
        }
        (dest / f"img_{i:05d}.json").write_text(json.dumps(doc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--shapes", type=int, default=5, help="polygons per file")
    ap.add_argument("--vertices", type=int, default=30, help="points per polygon")
    ap.add_argument(
        "--workdir", default=None, help="where to build the data (default: a temp folder, removed)"
    )
    args = ap.parse_args()

    from segbench.data.convert import convert

    work = Path(args.workdir or tempfile.mkdtemp(prefix="segbench_bench_convert_"))
    src, out = work / "labelme", work / "out"
    src.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_folder(src, args.n, args.shapes, args.vertices)
    t_make = time.perf_counter() - t0
    cfg = {
        "name": "bench",
        "format": "labelme",
        "root": str(src),
        "ignore_index": 255,
        "classes": [
            {"id": 0, "name": "background"},
            {"id": 1, "name": "crop"},
            {"id": 2, "name": "weed"},
            {"id": 3, "name": "soil"},
        ],
    }
    t0 = time.perf_counter()
    meta = convert(cfg, out)
    dt = time.perf_counter() - t0
    assert meta["num_images"] == args.n
    print(f"made {args.n} files in {t_make:.1f} s")
    print(
        f"converted {args.n} LabelMe files of 1920x1080 ({args.shapes} polygons x {args.vertices} points "
        "each) "
        f"in {dt:.1f} s ({1000 * dt / args.n:.1f} ms/file)"
    )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
