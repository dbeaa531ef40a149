"""Sliding-window inference time and peak memory against image size, through `segbench predict`.

Each size runs in its own process under /usr/bin/time -v, so the peak RSS is the whole command's.
Images are a real CamVid frame resized to the size (so the content is realistic). The model is
`--model DIR` (a trained checkpoint folder) or, by default, an untrained Unet(resnet18) with
segbench's 11 CamVid classes (the weights do not change time or memory).

    .venv/bin/python bench/bench_inference.py                  # 1, 4 and 24 megapixels, slide mode
    .venv/bin/python bench/bench_inference.py --sizes 6000x4000 --mode resize
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_model(d: Path) -> Path:
    from safetensors.torch import save_file

    from segbench.config import compose
    from segbench.io import atomic_write_json
    from segbench.models import create_model

    cfg = compose([])
    mcfg = dict(cfg["model"]["smp_unet_r18"], name="smp_unet_r18")
    model = create_model(num_classes=11, **mcfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    atomic_write_json(
        d / "model.json",
        {
            "model": mcfg,
            "num_classes": 11,
            "classes": cfg["dataset"]["classes"],
            "ignore_index": 255,
            "image_size": cfg["train"]["image_size"],
            "normalize": cfg["augment"]["normalize"],
        },
    )
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--sizes", nargs="+", default=["1224x816", "2448x1632", "6000x4000"], help="WxH")
    ap.add_argument("--mode", default="slide")
    ap.add_argument("--crop", nargs=2, default=["512", "512"])
    ap.add_argument("--overlap", default="0.25")
    a = ap.parse_args()
    shared = Path(os.environ.get("SEGBENCH_SHARED", REPO.parent / "shared"))
    frame = sorted((shared / "data/camvid/CamVid/test").glob("*.png"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(a.model) if a.model else make_model(tmp)
        print(
            f"model {model}, mode {a.mode}"
            + (f", crop {a.crop[0]}x{a.crop[1]}, overlap {a.overlap}" if a.mode == "slide" else "")
        )
        print(f"{'image':>10} {'megapixels':>10} {'seconds':>8} {'peak RSS MiB':>12} {'mask':>12}")
        for size in a.sizes:
            w, h = (int(v) for v in size.split("x"))
            img = tmp / f"img_{w}x{h}.jpg"
            Image.open(frame).convert("RGB").resize((w, h), Image.BILINEAR).save(img, quality=92)
            cmd = [
                "/usr/bin/time",
                "-v",
                sys.executable,
                "-m",
                "segbench.cli",
                "predict",
                "--model",
                str(model),
                str(img),
                "-o",
                str(tmp / f"out_{w}x{h}.png"),
                "--mode",
                a.mode,
                "--device",
                "cpu",
            ]
            if a.mode == "slide":
                cmd += ["--crop", *a.crop, "--overlap", a.overlap]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(r.stderr[-3000:])
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
            ms = float(re.search(r", (\d+) ms\)", r.stdout).group(1))
            mask = np.asarray(Image.open(tmp / f"out_{w}x{h}.png"))
            assert mask.shape == (h, w)
            print(f"{size:>10} {w * h / 1e6:10.1f} {ms / 1000:8.1f} {rss:12.0f} {str(mask.shape):>12}")


if __name__ == "__main__":
    main()
