"""Training throughput through segbench (Lightning, callbacks, per-epoch checkpoint) against a bare PyTorch
loop.

Same model (built by segbench's registry from the same config and seed), same batch size, same data
(segbench's dataset class and albumentations pipeline over the same CamVid images, same DataLoader
settings), same loss (segbench's CE + Dice), same optimiser and LR schedule (AdamW, poly). The bare
loop is what a user would write by hand: ``zero_grad; loss.backward(); step; sched.step()``, no
checkpoint, no logging. segbench's time is ``trainer.fit`` (train_meta.json ``wall_time_s``): every
epoch including its resumable checkpoint (``lightning/last.ckpt``) and the best-weights copy. No
validation set in either, so both time training only. The two paths alternate ``--repeats`` times
and the medians are compared.

    .venv/bin/python bench/bench_train_throughput.py                      # Unet(resnet18), 128 images, 3
    epochs
    .venv/bin/python bench/bench_train_throughput.py --model smp_fpn_mbv3s --images 64 --epochs 2

Prints images per second of each and the ratio segbench / bare (goal: >= 0.97).
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
    dataset_json: Path, ids: list[str], model_cfg: dict, train_cfg: dict, augment_cfg: dict
) -> float:
    """A hand-written PyTorch training loop over the same data; returns seconds for all epochs."""
    import lightning
    import torch

    from segbench.data.dataset import SegmentationDataset, build_transform
    from segbench.losses import build_loss
    from segbench.models import create_model
    from segbench.training import TrainRecipe, lr_lambda, set_bn_momentum

    meta = json.loads(dataset_json.read_text())
    seed = int(train_cfg["seed"])
    lightning.seed_everything(seed, verbose=False)
    ds = SegmentationDataset(
        dataset_json.parent,
        meta["manifest"],
        ids,
        build_transform(augment_cfg, train_cfg["image_size"], train=True, seed=seed),
    )
    bs = int(train_cfg["batch_size"])
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=bs,
        shuffle=True,
        drop_last=len(ds) > bs,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )
    model = create_model(num_classes=len(meta["classes"]), **model_cfg)
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
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smp_unet_r18", help="a config/model name")
    ap.add_argument("--images", type=int, default=128, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", nargs=2, type=int, default=[160, 224])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    import torch

    from segbench._compat import import_torchvision
    from segbench.config import compose, job_configs
    from segbench.training import train_model

    import_torchvision()
    if a.threads:
        torch.set_num_threads(a.threads)
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
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = processed_camvid(tmp)
        ids = sorted(json.loads(ds.read_text())["manifest"])[: a.images]
        (tmp / "splits.json").write_text(
            json.dumps({"strategy": "bench", "seed": 0, "test": [], "folds": [{"train": ids, "val": []}]})
        )
        seg, bare = [], []
        for r in range(a.repeats):  # alternate which path goes first (the first pays the process warm-up)
            for path in ("bare", "segbench") if r % 2 == 0 else ("segbench", "bare"):
                if path == "bare":
                    bare.append(bare_loop(ds, ids, model_cfg, train_cfg, augment_cfg))
                else:
                    info = train_model(
                        ds,
                        tmp / "splits.json",
                        0,
                        model_cfg,
                        train_cfg,
                        augment_cfg,
                        tmp / f"run{r}",
                        threads=a.threads,
                    )
                    seg.append(info["wall_time_s"])
            print(
                f"repeat {r + 1}: bare {bare[-1]:.1f} s, segbench {seg[-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    n = len(ids) // a.batch_size * a.batch_size * a.epochs
    ips_bare, ips_seg = n / statistics.median(bare), n / statistics.median(seg)
    print(
        f"model {a.model}, {len(ids)} CamVid images at {a.image_size[0]}x{a.image_size[1]}, batch "
        f"{a.batch_size}, "
        f"{a.epochs} epochs, {torch.get_num_threads()} threads, {a.repeats} repeats (median)"
    )
    print(f"bare PyTorch loop : {ips_bare:7.2f} images/s   ({', '.join(f'{t:.1f}' for t in bare)} s)")
    print(f"segbench (Lightning): {ips_seg:7.2f} images/s   ({', '.join(f'{t:.1f}' for t in seg)} s)")
    print(f"ratio segbench / bare: {ips_seg / ips_bare:.3f}  (goal >= 0.97)")


if __name__ == "__main__":
    main()
