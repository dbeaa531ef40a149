"""``train.lr: find``: Lightning's LR range test with fastai's ``valley`` suggestion.

The sweep is Lightning's ``Tuner.lr_find`` (exponential LR increase, smoothed loss, stop at 4x the
best loss; Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017); the choice is
fastai's ``valley`` rule (:func:`lr_valley`). It runs on a copy of the model and every random
generator is put back afterwards, so the training that follows is exactly the run with
``train.lr=<suggestion>``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write_json
from ..records import read_json
from .recipe import Placement, TrainRecipe
from .runtime import lightning

__all__ = ["lr_valley", "find_lr", "find_lr_once"]


def lr_valley(lrs: list[float], losses: list[float]) -> int:
    """Index of the suggested learning rate: fastai's ``valley`` rule for the LR range test.

    Finds the longest run of decreasing losses (a longest decreasing subsequence over the sweep) and
    returns the point two thirds of the way down it: ``start + int(len/3) + int(len/6)``, as
    ``fastai.callback.schedule.valley`` does (fastai 2.x; Smith 2017's range test for the sweep).

    Args:
        lrs: learning rates of the sweep, increasing.
        losses: the (smoothed) training loss at each of them; same length.

    Raises:
        ValueError: fewer than 2 points, or lengths differ.
    """
    n = len(losses)
    if n < 2 or len(lrs) != n:
        raise ValueError(f"lr_valley needs >= 2 (lr, loss) points of equal count; got {len(lrs)} and {n}")
    lds = [1] * n
    max_start, max_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def find_lr(
    module,
    trainer_kwargs: dict[str, Any],
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_training: int = 100,
    datamodule=None,
) -> dict[str, Any]:
    """LR range test (Lightning's ``Tuner.lr_find``) on ``module``, with :func:`lr_valley` for the choice.

    The module is trained for at most ``num_training`` steps by a throw-away Trainer; pass a copy.

    Returns:
        ``{"suggestion": lr, "lr": [...], "loss": [...], "min_lr", "max_lr", "num_training"}``.

    Raises:
        RuntimeError: the sweep stopped before 2 points (loss diverged at once); set ``train.lr`` by hand.
    """
    L = lightning()
    from lightning.pytorch.tuner import Tuner

    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        max_epochs=-1,
        **trainer_kwargs,
    )
    result = Tuner(trainer).lr_find(
        module,
        datamodule=datamodule,
        min_lr=min_lr,
        max_lr=max_lr,
        num_training=num_training,
        update_attr=False,
    )
    lrs = [float(v) for v in result.results["lr"]]
    losses = [float(v) for v in result.results["loss"]]
    keep = [i for i, v in enumerate(losses) if math.isfinite(v)]
    lrs, losses = [lrs[i] for i in keep], [losses[i] for i in keep]
    if len(lrs) < 2:
        raise RuntimeError("train.lr=find: the LR range test diverged at once; set train.lr to a number")
    return {
        "suggestion": lrs[lr_valley(lrs, losses)],
        "lr": lrs,
        "loss": losses,
        "min_lr": min_lr,
        "max_lr": max_lr,
        "num_training": num_training,
    }


def find_lr_once(
    out_dir: Path,
    fingerprint: str,
    model: torch.nn.Module,
    make_module,
    recipe: TrainRecipe,
    datamodule,
    placement: Placement,
) -> dict[str, Any]:
    """Run the range test on a copy of ``model``, or reuse the result of this same job (a resumed run
    must not pick another LR); every random generator is restored afterwards and the training set
    restarts its augmentation, so training proceeds as with a fixed LR. Writes ``lr_find.json``.

    Args:
        make_module: ``(model, recipe) -> SegmentationModule``.

    Returns:
        :func:`find_lr`'s result.
    """
    path = Path(out_dir) / "lr_find.json"
    if path.is_file():
        old = read_json(path)
        if old.get("fingerprint") == fingerprint:
            return {k: v for k, v in old.items() if k != "fingerprint"}
    opts = recipe.lr_find
    rng = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        datamodule.generator.get_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )
    probe = make_module(
        copy.deepcopy(model),
        dataclasses.replace(recipe, lr=opts.min_lr, scheduler="none", warmup_epochs=0, max_steps=None),
    )
    probe.check_finite = False  # the search raises the LR until the loss explodes, on purpose
    kwargs = dict(
        placement.trainer_kwargs(), gradient_clip_val=recipe.grad_clip, default_root_dir=str(out_dir)
    )
    found = find_lr(
        probe,
        kwargs,
        min_lr=opts.min_lr,
        max_lr=opts.max_lr,
        num_training=opts.num_training,
        datamodule=datamodule,
    )
    print(
        f"segbench train: lr=find suggests {found['suggestion']:.3g} (fastai valley over {len(found['lr'])} "
        "steps)",
        flush=True,
    )
    atomic_write_json(path, dict(found, fingerprint=fingerprint))
    random.setstate(rng[0])
    np.random.set_state(rng[1])
    torch.set_rng_state(rng[2])
    datamodule.generator.set_state(rng[3])
    if rng[4] is not None:
        torch.cuda.set_rng_state_all(rng[4])
    datamodule.restart_augmentation()  # albumentations' generators start afresh too
    return found
