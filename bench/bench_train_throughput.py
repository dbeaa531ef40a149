"""Training throughput through segbench (Lightning, callbacks, resume checkpoint) against a bare PyTorch
loop, at three settings of memory format and precision, in one run.

Settings: ``fp32-nchw`` (32-true, NCHW: segbench's training before channels-last and bf16),
``fp32-cl`` (32-true, channels-last) and ``bf16-cl`` (bf16-mixed autocast, channels-last); ``default``
is what ``train.precision=auto`` and ``train.channels_last=auto`` pick on this machine (marked ``*``).

Same model (built by segbench's registry from the same config and seed), batch size, data (segbench's
dataset class, its cache of resized images and albumentations pipeline over the same CamVid images, same
DataLoader settings and the same threads/workers plan), loss (segbench's CE + Dice, in float32),
optimiser and LR schedule (AdamW, poly), precision and memory format. The bare loop is what a user would
write by hand: ``zero_grad; autocast(model(x)); loss.backward(); step; sched.step()``, no checkpoint, no
logging. segbench's time is ``trainer.fit`` (``train_meta.json`` ``wall_time_s``): every epoch including
the resume checkpoint and the best-weights copy. No validation set in either, so both time training
only. The two paths alternate ``--repeats`` times per setting.

The default job is the default experiment's training job (``experiment=camvid_quick``: 429 CamVid
images, 3 epochs, batch 8 at 160x224), so segbench's fixed costs (the resume checkpoint after the first
epoch, building the trainer) weigh as much as they do in the job a user runs; a shorter job makes
them weigh more (``--images 128``: one 1.5-2 s checkpoint write in a 22 s job).

The ratio is computed from the fastest run of each path (timeit's convention: on a shared machine the
slower runs measure the other processes more than the code); the medians are printed beside it.

Also printed: the fraction of the machine's matmul peak each path reaches (training FLOPs per image,
counted by ``torch.utils.flop_counter`` on one forward + backward, times images/s, over the GFLOP/s
of a large matmul at the same precision on the same threads).

    .venv/bin/python bench/bench_train_throughput.py                     # Unet-resnet18, 3 settings
    .venv/bin/python bench/bench_train_throughput.py --settings default  # the default setting only
    .venv/bin/python bench/bench_train_throughput.py --model tv_lraspp_mbv3 --images 64 --epochs 2

Goal: segbench / bare >= 0.97 at every setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def processed_camvid(work: Path) -> Path:
    """data/processed/camvid/dataset.json when the main job made it, else a fresh conversion."""
    ready = REPO / "data" / "processed" / "camvid" / "dataset.json"
    if ready.is_file():
        return ready
    from segbench.config import compose
    from segbench.data.convert import convert

    shared = Path(os.environ.get("SEGBENCH_SHARED", REPO.parent / "shared"))
    cfg = compose([f"dataset.root={shared / 'data' / 'camvid'}"])
    convert(cfg["dataset"], work / "camvid")
    return work / "camvid" / "dataset.json"


def bare_loop(
    dataset_json: Path,
    ids: list[str],
    model_cfg: dict,
    train_cfg: dict,
    augment_cfg: dict,
    setting: tuple[str, bool],
    workers: int,
) -> float:
    """A hand-written PyTorch training loop over the same data; returns seconds for all epochs."""
    import lightning
    import torch

    from segbench.data.dataset import ResizedCache, SegmentationDataset, build_transform, seed_worker
    from segbench.losses import build_loss
    from segbench.models import create_model
    from segbench.training import TrainRecipe, lr_lambda, set_bn_momentum
    from segbench.training.data import RESIZED_CACHE_MB

    precision, channels_last = setting
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    meta = json.loads(dataset_json.read_text())
    seed = int(train_cfg["seed"])
    lightning.seed_everything(seed, verbose=False)
    ds = SegmentationDataset(
        dataset_json.parent,
        meta["manifest"],
        ids,
        build_transform(augment_cfg, train_cfg["image_size"], train=True, seed=seed),
        ResizedCache(train_cfg["image_size"], RESIZED_CACHE_MB),  # segbench's data loading, cache included
    )
    bs = int(train_cfg["batch_size"])
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=bs,
        shuffle=True,
        drop_last=len(ds) > bs,
        num_workers=workers,
        worker_init_fn=seed_worker if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
    model = create_model(num_classes=len(meta["classes"]), **model_cfg).to(memory_format=fmt)
    set_bn_momentum(model, train_cfg.get("bn_momentum", 0.1))
    loss_fn = build_loss(train_cfg["loss"], ignore_index=int(meta["ignore_index"]))
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    steps = len(loader)
    recipe = TrainRecipe.from_dict(train_cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lr_lambda(recipe.scheduler, recipe.epochs * steps, steps, recipe.poly_power, recipe.warmup_epochs),
    )
    model.train()
    t0 = time.perf_counter()
    for _ in range(int(train_cfg["epochs"])):
        for x, y in loader:
            x = x.contiguous(memory_format=fmt)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                out = model(x)
            loss = loss_fn(out.float(), y)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - t0


def training_flops_per_image(model_cfg: dict, num_classes: int, image_size: list[int], batch: int) -> float:
    """FLOPs of one forward + backward per image (``torch.utils.flop_counter``: convolutions and
    matmuls, the work a matmul peak bounds)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segbench.models import create_model

    model = create_model(num_classes=num_classes, **model_cfg).train()
    x = torch.randn(batch, 3, *image_size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().mean().backward()
    return counter.get_total_flops() / batch


def matmul_peak_gflops(dtype) -> float:
    """GFLOP/s of a 2048 x 2048 matmul at ``dtype`` (best of 5 after warm-up) on torch's threads."""
    import torch

    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


SETTINGS = {
    "fp32-nchw": ("32-true", False),
    "fp32-cl": ("32-true", True),
    "bf16-cl": ("bf16-mixed", True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smp_unet_r18", help="a config/model name")
    ap.add_argument(
        "--images", type=int, default=429, help="training images per epoch (429: the default experiment's)"
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", nargs=2, type=int, default=[160, 224])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="cores given to the job (default: all usable)")
    ap.add_argument(
        "--settings",
        nargs="+",
        default=list(SETTINGS),
        help=f"any of {', '.join(SETTINGS)}, or default (what auto picks here)",
    )
    a = ap.parse_args()

    import torch

    from segbench._compat import import_torchvision
    from segbench.config import compose, job_configs
    from segbench.device import auto_precision
    from segbench.training import train_model
    from segbench.training.memory_format import channels_last_for
    from segbench.training.threads import cpu_plan

    import_torchvision()
    jobs = job_configs(
        compose(
            [
                f"models=[{a.model}]",
                f"train.epochs={a.epochs}",
                f"train.batch_size={a.batch_size}",
                f"train.image_size=[{a.image_size[0]},{a.image_size[1]}]",
                "device=cpu",
            ]
        )
    )
    model_cfg, train_cfg, augment_cfg = jobs["models"][a.model], jobs["train"], jobs["augment"]
    plan = cpu_plan(a.threads, train_cfg.get("num_workers", 0), "cpu")
    plan.apply()
    default = (auto_precision("cpu"), channels_last_for(train_cfg.get("channels_last", "auto"), model_cfg)[0])
    names = [n for n in SETTINGS if n in a.settings or ("default" in a.settings and SETTINGS[n] == default)]
    if not names:
        sys.exit(f"--settings: none of {a.settings} is one of {', '.join(SETTINGS)} or default")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = processed_camvid(tmp)
        meta = json.loads(ds.read_text())
        ids = sorted(meta["manifest"])[: a.images]
        (tmp / "splits.json").write_text(
            json.dumps({"strategy": "bench", "seed": 0, "test": [], "folds": [{"train": ids, "val": []}]})
        )
        for name in names:
            precision, cl = SETTINGS[name]
            cfg = dict(train_cfg, precision=precision, channels_last=cl, seed=42)
            seg, bare = [], []
            for r in range(a.repeats):  # alternate which path goes first (the first pays the warm-up)
                for path in ("bare", "segbench") if r % 2 == 0 else ("segbench", "bare"):
                    if path == "bare":
                        bare.append(
                            bare_loop(ds, ids, model_cfg, cfg, augment_cfg, SETTINGS[name], plan.num_workers)
                        )
                    else:
                        out = tmp / f"{name}_run{r}"
                        info = train_model(
                            ds, tmp / "splits.json", 0, model_cfg, cfg, augment_cfg, out, threads=plan.cores
                        )
                        seg.append(info["wall_time_s"])
                print(
                    f"{name} repeat {r + 1}: bare {bare[-1]:.1f} s, segbench {seg[-1]:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            results[name] = (bare, seg)
        flops = training_flops_per_image(model_cfg, len(meta["classes"]), a.image_size, 2)
    peaks = {"32-true": matmul_peak_gflops(torch.float32), "bf16-mixed": matmul_peak_gflops(torch.bfloat16)}
    n = len(ids) // a.batch_size * a.batch_size * a.epochs
    print(
        f"model {a.model}, {len(ids)} CamVid images at {a.image_size[0]}x{a.image_size[1]}, batch "
        f"{a.batch_size}, {a.epochs} epochs, {plan.torch_threads} threads, {plan.num_workers} workers, "
        f"{a.repeats} repeats; {flops / 1e9:.1f} GFLOP per training image; matmul peak "
        f"{peaks['32-true']:.0f} GFLOP/s fp32, {peaks['bf16-mixed']:.0f} GFLOP/s bf16 (* = default here)"
    )
    print(
        f"{'setting':11s} {'bare img/s':>10s} {'segbench img/s':>14s} {'ratio':>6s} "
        f"{'% peak (bare, segbench)':>24s}   medians: bare, segbench img/s, ratio"
    )
    for name, (bare, seg) in results.items():
        ips_bare, ips_seg = n / min(bare), n / min(seg)  # the fastest run of each path
        med_bare, med_seg = n / statistics.median(bare), n / statistics.median(seg)
        peak = peaks[SETTINGS[name][0]]
        frac = [100 * ips * flops / 1e9 / peak for ips in (ips_bare, ips_seg)]
        mark = "*" if SETTINGS[name] == default else " "
        print(
            f"{name + mark:11s} {ips_bare:10.2f} {ips_seg:14.2f} {ips_seg / ips_bare:6.3f} "
            f"{frac[0]:11.0f} %, {frac[1]:3.0f} %   {med_bare:.2f}, {med_seg:.2f}, {med_seg / med_bare:.3f}"
        )
        print(
            f"{'':11s} seconds: bare {'/'.join(f'{t:.1f}' for t in bare)}, "
            f"segbench {'/'.join(f'{t:.1f}' for t in seg)}"
        )
    print("goal: ratio segbench / bare >= 0.97 (fastest runs)")


if __name__ == "__main__":
    main()
