"""Which zoo models train faster in channels-last than in NCHW: the measurements behind
``segbench.training.memory_format.CHANNELS_LAST_FASTER`` (``train.channels_last=auto`` uses it).

For every ``config/model/*.yaml`` (or the ones named), one training step (forward, float32 loss,
backward, AdamW step) on random images is timed in NCHW and in channels-last, at ``--precision``
(``bf16-mixed``: bfloat16 autocast as Lightning's plugin runs it; ``32-true``). A model that fails in
channels-last, or is not faster in it by more than ``--tolerance``, keeps NCHW; the others belong in
``CHANNELS_LAST_FASTER``.

    .venv/bin/python bench/bench_memory_format.py                          # every zoo model, bf16
    .venv/bin/python bench/bench_memory_format.py --precision 32-true smp_unet_r18 tv_lraspp_mbv3

Prints one line per model: images/s in each format, the ratio, and the verdict.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def step_rate(
    model_cfg: dict, channels_last: bool, bf16: bool, batch: int, size: list[int], steps: int
) -> float:
    """Images per second of ``steps`` training steps after one warm-up step."""
    import torch

    from segbench.losses import build_loss
    from segbench.models import create_model

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(num_classes=11, **model_cfg).train().to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = build_loss({"ce": 1.0, "dice": 1.0}, ignore_index=255)
    x = torch.randn(batch, 3, *size).contiguous(memory_format=fmt)
    y = torch.randint(0, 11, (batch, *size))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss_fn(out.float(), y).backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="config/model names (default: all)")
    ap.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", nargs=2, type=int, default=[160, 224])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.02, help="channels-last must be this much faster")
    a = ap.parse_args()

    import torch

    from segbench._compat import import_torchvision
    from segbench.config import compose, job_configs
    from segbench.models import model_configs

    import_torchvision()
    names = a.models or sorted(model_configs())
    jobs = job_configs(compose([f"models=[{','.join(names)}]", "device=cpu"]))
    bf16 = a.precision == "bf16-mixed"
    print(
        f"{a.precision}, batch {a.batch_size} at {a.image_size[0]}x{a.image_size[1]}, "
        f"{torch.get_num_threads()} threads"
    )
    for name in names:
        cfg = jobs["models"][name]
        try:
            nchw = step_rate(cfg, False, bf16, a.batch_size, a.image_size, a.steps)
        except Exception as err:  # a model that cannot train at this size/precision at all
            print(f"{name:28s} fails in NCHW too: {type(err).__name__}: {str(err)[:80]}", flush=True)
            continue
        try:
            cl = step_rate(cfg, True, bf16, a.batch_size, a.image_size, a.steps)
        except Exception as err:
            print(
                f"{name:28s} NCHW {nchw:6.1f} img/s; channels-last fails ({type(err).__name__}) -> keeps NCHW"
            )
            continue
        verdict = "channels-last" if cl > (1 + a.tolerance) * nchw else "keeps NCHW"
        print(
            f"{name:28s} NCHW {nchw:6.1f}  channels-last {cl:6.1f} img/s  x{cl / nchw:4.2f}  -> {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
