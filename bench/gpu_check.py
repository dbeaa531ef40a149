"""The prepared GPU check: one command, under 8 minutes on one GPU, for the default experiment's models.

For each model (default: the three of ``experiment=camvid_quick``):

* **training throughput**: segbench's training job (Lightning, callbacks, resume checkpoint) against a
  bare PyTorch loop on the same model, batch, data and precision (``train.precision=auto``: bf16
  autocast on GPUs with bfloat16, fp16 on older ones), images/s and their ratio;
* **GPU busy share** over segbench's training: ``nvidia-smi``'s utilisation sampled every 100 ms
  (the share of samples in which a kernel ran, averaged), so a data-loading or checkpoint bottleneck
  shows as a low share;
* **peak GPU memory** of segbench's training job (``torch.cuda.max_memory_allocated``);
* **a 6000x4000 photo** through ``segbench predict --mode slide`` (512x512 windows, overlap 0.25,
  batches of windows), wall time against the 3 s per image our users' framework reviews ask for.

It needs segbench's pure-Python dependencies beside a preinstalled CUDA torch; install them without
replacing that torch (pip would otherwise pull a CPU wheel or another CUDA build)::

    python -c "import torch; print(f'torch=={torch.__version__}')" > /tmp/keep.txt
    python -c "import torchvision; print(f'torchvision=={torchvision.__version__}')" >> /tmp/keep.txt
    pip install -c /tmp/keep.txt -e .
    python bench/gpu_check.py                        # everything, about 3-6 minutes on one H100
    python bench/gpu_check.py --models smp_unet_r18 --epochs 1
    python bench/gpu_check.py --device cpu --quick   # the script's own smoke test, on a CPU

Prints one table and writes ``--out`` (JSON, default ``gpu_check.json``). CI never runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class GpuSampler:
    """``nvidia-smi`` utilisation (percent) sampled every ``interval_ms`` in a background thread."""

    def __init__(self, interval_ms: int = 100):
        self.samples: list[float] = []
        self.interval_ms = interval_ms
        self._proc = None
        self._thread = None

    def __enter__(self) -> GpuSampler:
        try:
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"-lms={self.interval_ms}",
                    "-i",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except FileNotFoundError:
            return self

        def read():
            for line in self._proc.stdout:
                if line.strip().isdigit():
                    self.samples.append(float(line))

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(5)

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def bare_loop(
    dataset_json, ids, model_cfg, train_cfg, augment_cfg, device: str, precision: str, workers: int, cl: bool
) -> float:
    """A hand-written training loop on ``device`` over segbench's data, at segbench's precision and
    memory format (``cl``: channels-last); returns seconds for all epochs."""
    import lightning
    import torch

    from segbench.data.dataset import ResizedCache, SegmentationDataset, build_transform, seed_worker
    from segbench.losses import build_loss
    from segbench.models import create_model
    from segbench.training.data import RESIZED_CACHE_MB

    meta = json.loads(Path(dataset_json).read_text())
    seed = int(train_cfg["seed"])
    lightning.seed_everything(seed, verbose=False)
    ds = SegmentationDataset(
        Path(dataset_json).parent,
        meta["manifest"],
        ids,
        build_transform(augment_cfg, train_cfg["image_size"], train=True, seed=seed),
        ResizedCache(train_cfg["image_size"], RESIZED_CACHE_MB),
    )
    bs = int(train_cfg["batch_size"])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers, pin_memory=device != "cpu",
        worker_init_fn=seed_worker if workers else None, generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )  # fmt: skip
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = create_model(num_classes=len(meta["classes"]), **model_cfg).to(device, memory_format=fmt)
    loss_fn = build_loss(train_cfg["loss"], ignore_index=int(meta["ignore_index"]))
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    scaler = torch.amp.GradScaler(enabled=precision == "16-mixed")
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    model.train()
    if dev_type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(int(train_cfg["epochs"])):
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
            y = y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev_type, dtype=dtype, enabled=precision != "32-true"):
                out = model(x)
            loss = loss_fn(out.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    if dev_type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def predict_large(model_dir: Path, frame: Path, size: tuple[int, int], device: str, tmp: Path) -> dict:
    """``segbench predict --mode slide`` on ``frame`` resized to ``size`` (W, H); seconds and peak RSS."""
    from PIL import Image

    w, h = size
    img = tmp / f"photo_{w}x{h}.jpg"
    if not img.is_file():
        Image.open(frame).convert("RGB").resize((w, h), Image.BILINEAR).save(img, quality=92)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "segbench.cli", "predict", "--model", str(model_dir),
           str(img), "-o", str(tmp / "mask.png"), "--mode", "slide", "--crop", "512", "512",
           "--overlap", "0.25", "--batch-size", "8", "--device", device]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-800:]}
    ms = float(re.search(r", (\d+) ms\)", r.stdout).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
    return {"seconds": ms / 1000, "peak_rss_mib": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smp_unet_r18", "tv_lraspp_mbv3", "mmseg_segformer_b0"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--image-size", nargs=2, type=int, default=[360, 480])
    ap.add_argument("--images", type=int, default=429)
    ap.add_argument(
        "--quick", action="store_true", help="a smoke test: 16 images, 1 epoch, 64x96, 1200x800 photo"
    )
    ap.add_argument("--out", default="gpu_check.json")
    a = ap.parse_args()
    if a.quick:
        a.images, a.epochs, a.image_size, a.batch_size = 16, 1, [64, 96], 4
    photo = (1200, 800) if a.quick else (6000, 4000)

    import torch
    from bench_train_throughput import processed_camvid

    from segbench._compat import import_torchvision
    from segbench.config import compose, job_configs
    from segbench.device import auto_precision
    from segbench.training import train_model
    from segbench.training.memory_format import channels_last_for

    import_torchvision()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch: install a CUDA torch, or run --device cpu --quick")
    accel = "gpu" if a.device.startswith("cuda") else "cpu"
    precision = auto_precision(accel)
    gpu = torch.cuda.get_device_name(0) if accel == "gpu" else "none"
    shared = Path(os.environ.get("SEGBENCH_SHARED", REPO.parent / "shared"))
    frame = sorted((shared / "data/camvid/CamVid/test").glob("*.png"))[0]
    results = {
        "device": a.device,
        "gpu": gpu,
        "precision": precision,
        "torch": torch.__version__,
        "models": {},
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = processed_camvid(tmp)
        meta = json.loads(ds.read_text())
        ids = sorted(meta["manifest"])[: a.images]
        (tmp / "splits.json").write_text(
            json.dumps({"strategy": "bench", "seed": 0, "test": [], "folds": [{"train": ids, "val": []}]})
        )
        for name in a.models:
            jobs = job_configs(
                compose([f"models=[{name}]", f"train.epochs={a.epochs}", f"train.batch_size={a.batch_size}",
                         f"train.image_size=[{a.image_size[0]},{a.image_size[1]}]", f"device={a.device}"])
            )  # fmt: skip
            mcfg, tcfg, acfg = jobs["models"][name], dict(jobs["train"], seed=42), jobs["augment"]
            workers = min(8, os.cpu_count() or 1)
            cl = channels_last_for(tcfg.get("channels_last", "auto"), mcfg)[0]
            warm = dict(tcfg, epochs=1)
            bare_loop(ds, ids[: 2 * a.batch_size], mcfg, warm, acfg, a.device, precision, 0, cl)
            bare = bare_loop(ds, ids, mcfg, tcfg, acfg, a.device, precision, workers, cl)
            if accel == "gpu":
                torch.cuda.reset_peak_memory_stats()
            with GpuSampler() as sampler:
                info = train_model(
                    ds, tmp / "splits.json", 0, mcfg, tcfg, acfg, tmp / name, threads=os.cpu_count()
                )
            peak = torch.cuda.max_memory_allocated() / 2**20 if accel == "gpu" else None
            n = len(ids) // a.batch_size * a.batch_size * a.epochs
            pred = predict_large(tmp / name, frame, photo, a.device, tmp)
            results["models"][name] = {
                "bare_img_s": n / bare,
                "segbench_img_s": n / info["wall_time_s"],
                "ratio": bare / info["wall_time_s"],
                "gpu_busy_pct": sampler.mean,
                "peak_gpu_mib": peak,
                "photo": f"{photo[0]}x{photo[1]}",
                "photo_s": pred.get("seconds"),
                "photo_peak_rss_mib": pred.get("peak_rss_mib"),
                "photo_error": pred.get("error"),
            }
            print(f"{name}: {json.dumps(results['models'][name])}", file=sys.stderr, flush=True)
    results["wall_s"] = time.perf_counter() - t_start
    Path(a.out).write_text(json.dumps(results, indent=2))
    size = f"{a.image_size[0]}x{a.image_size[1]}"
    print(f"{gpu}, torch {torch.__version__}, precision {precision}, {a.images} images at {size}, "
          f"batch {a.batch_size}, {a.epochs} epochs; {results['wall_s']:.0f} s")  # fmt: skip
    print(f"{'model':20s} {'bare img/s':>10s} {'segbench':>9s} {'ratio':>6s} {'GPU busy':>9s} "
          f"{'peak MiB':>9s} {'photo s':>8s} {'<= 3 s':>6s}")  # fmt: skip
    for name, r in results["models"].items():
        busy = f"{r['gpu_busy_pct']:.0f} %" if r["gpu_busy_pct"] is not None else "n/a"
        peak = f"{r['peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] is not None else "n/a"
        ps = f"{r['photo_s']:.1f}" if r["photo_s"] is not None else "error"
        ok = "yes" if r["photo_s"] is not None and r["photo_s"] <= 3 else "no"
        print(f"{name:20s} {r['bare_img_s']:10.1f} {r['segbench_img_s']:9.1f} {r['ratio']:6.3f} {busy:>9s} "
              f"{peak:>9s} {ps:>8s} {ok:>6s}")  # fmt: skip


if __name__ == "__main__":
    main()
