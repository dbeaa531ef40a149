"""Train one model on one fold: load -> recipe -> data -> module -> resume -> fit -> write.

Outputs in ``out_dir`` (``results/<experiment>/models/<model>/fold<k>/seed<s>``;
:data:`segbench.layout.TRAIN_FILES`):

* ``model.safetensors``: the weights of the epoch with the best validation mIoU (the last epoch
  when there is no validation set); ``last.safetensors``: the last epoch's;
* ``model.json``: what inference needs to rebuild the model (model config, number of classes,
  class names, input size, normalisation, ignore_index);
* ``history.csv``: one row per epoch: ``epoch, train_loss, val_loss, val_mIoU, lr, epoch_time_s``;
* ``train_meta.json``: device, threads, wall times, best epoch, parameter count, versions;
* ``lightning/last.ckpt``: Lightning's checkpoint after the last finished epoch. When the same job
  (:func:`segbench.training.resume.fingerprint`) is started again after a crash or kill, training
  resumes from it and ends with the same weights and metrics as an uninterrupted run: weights,
  optimiser, scheduler, history, best weights and every random generator are restored.
"""

from __future__ import annotations

import copy
import dataclasses
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..layout import ExperimentLayout, resume_checkpoint_in
from ..losses import build_loss, resolve_class_weights
from ..models import count_parameters, create_model
from ..models.checkpoint import save_weights
from ..records import DatasetMeta, fold_ids, read_dataset, read_splits, write_model_info, write_train_meta
from .callbacks import AtomicCheckpointIO, History, RandomStates, ResumeCheckpoint
from .data import SegmentationDataModule
from .loggers import build_logger
from .lr_finder import find_lr_once
from .memory_format import channels_last_for
from .module import SegmentationModule, set_bn_momentum
from .recipe import Placement, TrainRecipe, effective_train_config
from .resume import fingerprint, prepare_resume
from .runtime import lightning
from .threads import CpuPlan, cpu_plan

__all__ = ["train_model"]


def train_model(
    dataset_json: str | Path,
    splits_json: str | Path,
    fold: int,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    augment_cfg: dict[str, Any],
    out_dir: str | Path,
    threads: int | None = None,
    logger_cfg: dict[str, Any] | None = None,
    stop_callbacks: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Train one model on one fold and write its checkpoint and history (see the module docstring).

    Args:
        dataset_json: the canonical dataset's ``dataset.json``.
        splits_json: ``splits.json``; fold ``fold`` gives the training and validation ids.
        fold: fold index (0-based).
        model_cfg: the model's config (``library`` + backend keys; an optional ``train:`` block).
        train_cfg: the training recipe (``config/train/`` + the job's training ``seed``, ``device``):
            :class:`.TrainRecipe`.
        augment_cfg: the augmentation recipe (see ``config/augment/``).
        out_dir: ``results/<experiment>/models/<model>/fold<k>/seed<s>``.
        threads: the CPU cores the job is given (default: those this process may run on);
            :func:`segbench.training.threads.cpu_plan` splits them between PyTorch's threads and the
            DataLoader workers.
        logger_cfg: experiment tracking (:mod:`segbench.training.loggers`); None = no logger.
        stop_callbacks: Lightning callbacks that may end training early by setting
            ``trainer.should_stop`` at a validation's end (a tuning trial's pruning,
            :class:`segbench.tuning.trial.PruningCallback`); they run before the resume checkpoint,
            as early stopping does, and the outputs are written as after early stopping.

    Returns:
        The ``train_meta.json`` content (``{"global_rank": k}`` in the other DDP processes).

    Raises:
        IndexError: the fold does not exist in ``splits.json``.
        ValueError: an invalid or refused recipe (names the key and the fix).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # load: the dataset and this fold's ids
    meta, ids = read_dataset(dataset_json), fold_ids(read_splits(splits_json), fold, splits_json)
    # recipe: the experiment's with the model's own keys on top, typed and checked
    recipe_cfg = effective_train_config(train_cfg, model_cfg)
    recipe = TrainRecipe.from_dict(recipe_cfg)
    placement = Placement.of(recipe)
    # cores: PyTorch's threads and the loader's workers from what the job is given
    cpus = cpu_plan(threads, recipe.num_workers, placement.accelerator, placement.world_size)
    cpus.apply()
    recipe = dataclasses.replace(recipe, num_workers=cpus.num_workers)
    lightning().seed_everything(recipe.seed, workers=True, verbose=False)
    data = SegmentationDataModule(Path(dataset_json).parent, meta, ids, augment_cfg, recipe, placement)
    # resume: the checkpoint of the same job, when one was interrupted
    job = fingerprint(dataset_json, ids["train"], ids["val"], model_cfg, recipe_cfg, augment_cfg)
    ckpt = resume_checkpoint_in(out_dir)
    resumed = prepare_resume(ckpt, job)
    resume_from = None if resumed is None else str(ckpt)
    # module: network, loss, lr (found once when lr=find), optimiser and schedule
    run = _training_run(out_dir, fold, model_cfg, augment_cfg, meta, recipe, placement, data, job, resumed)
    run.cpus = cpus
    logger = _logger(logger_cfg, out_dir, fold, model_cfg, run.recipe)
    run.resume_checkpoint = ResumeCheckpoint(ckpt, job, recipe.checkpoint_every_min)
    trainer = _trainer(run, [*stop_callbacks, run.resume_checkpoint], logger)
    t0 = time.perf_counter()
    trainer.fit(run.module, datamodule=data, ckpt_path=resume_from, weights_only=True)  # fit
    run.wall_time_s = time.perf_counter() - t0
    if not trainer.is_global_zero:  # under DDP the first process writes the outputs
        return {"global_rank": trainer.global_rank}
    return _write_outputs(run, trainer)


@dataclass
class TrainingRun:
    """What one training job knows once it has run: the inputs of its output files."""

    out_dir: Path
    fold: int
    model_cfg: dict[str, Any]
    augment_cfg: dict[str, Any]
    meta: DatasetMeta
    recipe: TrainRecipe
    placement: Placement
    data: SegmentationDataModule
    module: SegmentationModule
    history: History
    resumed_after_epoch: int | None
    lr_find: dict[str, Any] | None
    class_weights: np.ndarray | None
    channels_last: bool = False
    channels_last_reason: str = ""
    cpus: CpuPlan | None = None
    resume_checkpoint: ResumeCheckpoint | None = None
    wall_time_s: float = 0.0


def _training_run(
    out_dir, fold, model_cfg, augment_cfg, meta, recipe, placement, data, job, resumed
) -> TrainingRun:
    """Build the network, its loss and the LightningModule (after the LR finder when ``lr=find``)."""
    model = create_model(num_classes=len(meta["classes"]), **model_cfg)
    set_bn_momentum(model, recipe.bn_momentum)
    class_weights = resolve_class_weights(recipe.class_weights, data.root, meta, data.ids["train"])
    loss_fn = build_loss(recipe.loss, ignore_index=int(meta["ignore_index"]), class_weights=class_weights)
    channels_last, cl_reason = channels_last_for(recipe.channels_last, model_cfg)

    def make_module(net: torch.nn.Module, rec: TrainRecipe) -> SegmentationModule:
        n_classes, ignore = len(meta["classes"]), int(meta["ignore_index"])
        return SegmentationModule(net, loss_fn, rec, n_classes, ignore, data.steps_per_epoch(), channels_last)

    lr_found = None
    if recipe.lr == "find":
        lr_found = find_lr_once(out_dir, job, model, make_module, recipe, data, placement)
        recipe = recipe.with_lr(lr_found["suggestion"])
    history = History(out_dir, has_val=data.has_val)
    return TrainingRun(
        out_dir, fold, model_cfg, augment_cfg, meta, recipe, placement, data, make_module(model, recipe),
        history, resumed, lr_found, class_weights, channels_last, cl_reason,
    )  # fmt: skip


def _progress_bar():
    # Lightning picks RichProgressBar when `rich` is installed, which prints nothing into a pipe (the
    # workflow's `| tee` log); tqdm's bar works in both a terminal and a log file.
    return lightning().pytorch.callbacks.TQDMProgressBar(refresh_rate=1 if sys.stdout.isatty() else 10)


def _early_stopping(recipe: TrainRecipe, data: SegmentationDataModule) -> list[Any]:
    """Lightning's EarlyStopping on the validation mIoU, when asked for and there is a validation set
    (its state is in the checkpoint, so a resumed run stops where an uninterrupted one would)."""
    if recipe.early_stopping_patience is None or not data.has_val:
        return []
    es = lightning().pytorch.callbacks.EarlyStopping
    return [
        es(
            monitor="val_mIoU",
            mode="max",
            patience=int(recipe.early_stopping_patience),
            min_delta=float(recipe.early_stopping_min_delta),
        )
    ]


def _logger(
    logger_cfg: dict[str, Any] | None,
    out_dir: Path,
    fold: int,
    model_cfg: dict[str, Any],
    recipe: TrainRecipe,
):
    """The job's tracking logger (:mod:`segbench.training.loggers`), writing beside the results tree."""
    if not logger_cfg or logger_cfg.get("name", "none") == "none":
        return False
    run_name = None
    try:
        layout, name, fold, seed = ExperimentLayout.of_model_dir(out_dir)
        save_dir, store, experiment = layout.tracking_dir(name, fold, seed), layout.mlflow_store, layout.name
        run_name = f"{name}/fold{fold}/seed{seed}"
    except ValueError:  # a folder outside a results tree: logs beside the outputs
        name = model_cfg.get("name") or out_dir.name
        save_dir, store, experiment = (
            out_dir / "logs",
            out_dir / "mlruns",
            logger_cfg.get("experiment") or "segbench",
        )
    return build_logger(
        logger_cfg,
        save_dir,
        store,
        experiment,
        run_name or f"{name}/fold{fold}/seed{recipe.seed}",
        params={"train": recipe.as_dict(), "model": model_cfg},
    )


def _trainer(run: TrainingRun, extra_callbacks: list[Any], logger):
    """Lightning's Trainer for the run: the recipe's length and clipping, the placement, no sanity
    check, no Lightning checkpointing of its own (segbench's callbacks write the outputs)."""
    recipe, data = run.recipe, run.data
    callbacks = [
        run.history,
        _progress_bar(),
        RandomStates(data),
        *_early_stopping(recipe, data),  # before the checkpoint: it knows when an epoch is the last
        *extra_callbacks,
    ]
    if logger:  # the learning rate of each parameter group, per epoch, into the tracking logger
        callbacks.append(lightning().pytorch.callbacks.LearningRateMonitor(logging_interval="epoch"))
    trainer = lightning().Trainer(
        max_epochs=-1 if recipe.max_steps else recipe.epochs,
        max_steps=recipe.max_steps or -1,
        gradient_clip_val=recipe.grad_clip,
        logger=logger,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        enable_checkpointing=False,
        limit_val_batches=1.0 if data.has_val else 0,
        deterministic="warn",
        enable_model_summary=False,
        # the training loss into the tracking logger every 50 steps, at least once an epoch
        log_every_n_steps=max(1, min(50, data.steps_per_epoch())),
        # the resume checkpoint is copied at the epoch's end and written while training goes on
        plugins=[lightning().pytorch.plugins.AsyncCheckpointIO(AtomicCheckpointIO())],
        **run.placement.trainer_kwargs(),
    )
    # deterministic=... turned on torch.use_deterministic_algorithms, which also fills every new
    # tensor's memory with NaN (torch.utils.deterministic.fill_uninitialized_memory), a debugging aid
    # that costs about 6 % of a training step on a CPU (U-Net/ResNet-18, bf16, 2 cores). PyTorch's
    # documentation: a program that never reads uninitialised memory can turn it off "for better
    # performance and still be deterministic"; the bit-identical rerun tests check that ours is one.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return trainer


def _write_outputs(run: TrainingRun, trainer) -> dict[str, Any]:
    """Write the weights (best and last), ``model.json`` and ``train_meta.json``; return the latter."""
    last = {
        k: v.detach().cpu().contiguous()  # channels-last weights in the default layout (safetensors)
        for k, v in run.module.model.state_dict().items()
    }
    # model.safetensors: the best epoch on the validation mIoU (the last one without validation)
    save_weights(run.out_dir / "model.safetensors", run.history.best_state or last)
    save_weights(run.out_dir / "last.safetensors", last)
    write_model_info(
        run.out_dir,
        {
            "model": copy.deepcopy(run.model_cfg),
            "num_classes": len(run.meta["classes"]),
            "classes": run.meta["classes"],
            "ignore_index": int(run.meta["ignore_index"]),
            "image_size": list(run.recipe.image_size),
            "normalize": run.augment_cfg.get("normalize"),
            "dataset": run.meta["name"],
            "fold": run.fold,
            "seed": int(run.recipe.seed),
            "memory_format": "channels_last" if run.channels_last else "contiguous",
            # a model trained on rescaled images is run the same way (InferenceConfig mode auto): whole at
            # its scale, or by a sliding window of its patch (nnU-Net's overlap 0.5, Gaussian weights)
            **(
                {
                    "inference": {
                        "mode": "slide" if run.recipe.crop else "whole",
                        "scale": run.recipe.scale,
                        "target_diagonal": run.recipe.target_diagonal,
                        "crop": list(run.recipe.image_size),
                        "overlap": 0.5,
                        "blend": "gaussian",
                    }
                }
                if run.recipe.scale is not None
                else {}
            ),
        },
    )
    info = _train_meta(run, trainer)
    write_train_meta(run.out_dir, info)
    return info


def _train_meta(run: TrainingRun, trainer) -> dict[str, Any]:
    """``train_meta.json``: what was trained, how long it took, on what."""
    rows, recipe, has_val = run.history.rows, run.recipe, run.data.has_val
    epoch_times = [r["epoch_time_s"] for r in rows]
    return {
        "model": run.model_cfg.get("name"),
        "library": run.model_cfg["library"],
        "fold": run.fold,
        "seed": int(recipe.seed),
        "parameters": count_parameters(run.module.model),
        "epochs": len(rows),
        "best_epoch": run.history.best_epoch,
        "best_val_mIoU": run.history.best_score if has_val else None,
        "train_images": len(run.data.ids["train"]),
        "val_images": len(run.data.ids["val"]),
        "wall_time_s": run.wall_time_s,
        "resumed_after_epoch": run.resumed_after_epoch,
        "stopped_early": bool(
            recipe.early_stopping_patience is not None
            and has_val
            and len(rows) < recipe.epochs
            and not recipe.max_steps
        ),
        "optimizer_steps": int(trainer.global_step),
        "lr": float(recipe.lr),
        "lr_find": run.lr_find,
        "encoder_lr_mult": float(recipe.encoder_lr_mult),
        "freeze_epochs": int(recipe.freeze_epochs),
        "encoder_weights": run.model_cfg.get("encoder_weights"),
        "init_checkpoint": getattr(run.module.model, "init_report", None),
        "class_weights": None if run.class_weights is None else [float(w) for w in run.class_weights],
        "epoch_time_s_median": float(np.median(epoch_times)) if epoch_times else None,
        "device": f"{run.placement.accelerator}:{run.placement.devices}",
        "processes": trainer.world_size,
        "steps_per_epoch": run.data.steps_per_epoch(),  # optimiser steps of each process
        # pixels scored in the last validation (all processes together): each image exactly once
        "val_pixels": int(run.module.val_confusion_matrix.sum()) if has_val else 0,
        "strategy": type(trainer.strategy).__name__,
        "precision": run.placement.precision,
        "channels_last": run.channels_last,
        "channels_last_reason": run.channels_last_reason,
        "threads": torch.get_num_threads(),
        "cpus": run.cpus.as_dict() if run.cpus else None,
        "checkpoint_every_min": float(recipe.checkpoint_every_min),
        "checkpoints_written": run.resume_checkpoint.writes if run.resume_checkpoint else None,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning().__version__,
        },
    }
