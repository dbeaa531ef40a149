"""Sliding-window inference time and peak memory against image size and engine, through `segbench predict`.

Engines, side by side in one run: PyTorch eager (fp32, and bf16 autocast with --engines pytorch_bf16),
onnxruntime FP32 (the model exported as `segbench best` exports it) and onnxruntime INT8 (quantized as
the deploy step quantizes it: static QDQ, per-channel weights, calibrated on CamVid frames cut into
the bench's windows). Each size x engine runs in its own process under /usr/bin/time -v, so the peak
RSS is the whole command's.
Images are a real CamVid frame resized to the size (so the content is realistic). The model is
`--model DIR` (a trained checkpoint folder) or, by default, an untrained Unet(resnet18) with
segbench's 11 CamVid classes (the weights do not change time or memory).

    .venv/bin/python bench/bench_inference.py                  # 1, 4 and 24 megapixels, slide mode
    .venv/bin/python bench/bench_inference.py --sizes 6000x4000 --mode resize --engines pytorch
    .venv/bin/python bench/bench_inference.py --threads 2 --engines pytorch pytorch_bf16 ort_fp32 ort_int8
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


def export_variants(model_dir: Path, frames: list[Path], crop: tuple[int, int], tmp: Path) -> dict[str, Path]:
    """``model.onnx`` (FP32, parity-checked) and ``model_int8.onnx`` (calibrated on ``frames``)."""
    from segbench.deploy import calibration_inputs, quantize_int8
    from segbench.export import onnx_export_and_check
    from segbench.images import read_image
    from segbench.inference import InferenceConfig
    from segbench.models.checkpoint import load_trained_model

    model, info = load_trained_model(model_dir, "cpu")
    images = [read_image(f) for f in frames]
    fp32 = tmp / "model.onnx"
    parity = onnx_export_and_check(model, info, images[:2], fp32)
    if not parity["passed"]:
        sys.exit(f"ONNX export failed parity: {parity}")
    infer = InferenceConfig(
        image_size=info["image_size"], mode="slide", crop=list(crop), normalize=info["normalize"]
    )
    q = quantize_int8(fp32, tmp / "model_int8.onnx", calibration_inputs(images, infer))
    print(f"INT8: {q['method']} quantization, {q['format']}, {q['calibration_images']} calibration windows")
    return {"ort_fp32": fp32, "ort_int8": tmp / "model_int8.onnx"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--sizes", nargs="+", default=["1224x816", "2448x1632", "6000x4000"], help="WxH")
    ap.add_argument("--mode", default="slide")
    ap.add_argument("--crop", nargs=2, default=["512", "512"])
    ap.add_argument("--overlap", default="0.25")
    ap.add_argument(
        "--engines",
        nargs="+",
        default=["pytorch", "ort_fp32", "ort_int8"],
        choices=["pytorch", "pytorch_bf16", "ort_fp32", "ort_int8"],
    )
    ap.add_argument("--threads", default=None, help="intra-op threads (default: the library's)")
    ap.add_argument("--calibration-frames", type=int, default=16)
    a = ap.parse_args()
    shared = Path(os.environ.get("SEGBENCH_SHARED", REPO.parent / "shared"))
    frame = sorted((shared / "data/camvid/CamVid/test").glob("*.png"))[0]
    train_frames = sorted((shared / "data/camvid/CamVid/train").glob("*.png"))[::20][: a.calibration_frames]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(a.model) if a.model else make_model(tmp)
        onnx = (
            export_variants(model, train_frames, (int(a.crop[0]), int(a.crop[1])), tmp)
            if {"ort_fp32", "ort_int8"} & set(a.engines)
            else {}
        )
        print(
            f"model {model}, mode {a.mode}"
            + (f", crop {a.crop[0]}x{a.crop[1]}, overlap {a.overlap}" if a.mode == "slide" else "")
            + f", threads {a.threads or 'default'}"
        )
        print(
            f"{'image':>10} {'megapixels':>10} {'engine':>13} {'seconds':>8} {'vs pytorch':>10} "
            f"{'peak RSS MiB':>12} {'same labels':>11}"
        )
        for size, engine in [(s_, e) for s_ in a.sizes for e in a.engines]:
            w, h = (int(v) for v in size.split("x"))
            img = tmp / f"img_{w}x{h}.jpg"
            if not img.is_file():
                Image.open(frame).convert("RGB").resize((w, h), Image.BILINEAR).save(img, quality=92)
            out = tmp / f"out_{w}x{h}_{engine}.png"
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
                str(out),
                "--mode",
                a.mode,
                "--device",
                "cpu",
            ]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            if engine == "pytorch_bf16":
                cmd += ["--bf16"]
            if engine.startswith("ort"):
                cmd += ["--engine", "onnxruntime", "--onnx", str(onnx[engine])]
            if a.mode == "slide":
                cmd += ["--crop", *a.crop, "--overlap", a.overlap]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(r.stderr[-3000:])
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
            ms = float(re.search(r", (\d+) ms\)", r.stdout).group(1))
            mask = np.asarray(Image.open(out))
            assert mask.shape == (h, w)
            if engine == a.engines[0]:
                first_ms, first_mask = ms, mask
            print(
                f"{size:>10} {w * h / 1e6:10.1f} {engine:>13} {ms / 1000:8.1f} {first_ms / ms:10.2f} "
                f"{rss:12.0f} {100 * float((mask == first_mask).mean()):10.2f}%"
            )


if __name__ == "__main__":
    main()
