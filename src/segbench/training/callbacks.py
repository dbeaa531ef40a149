"""Lightning callbacks of a segbench training job: the history and best weights, the random states,
and the resumable checkpoint (after the first epoch, then every ``train.checkpoint_every_min``).

Each keeps its own state through Lightning's ``Callback.state_dict`` / ``load_state_dict``, so one
``trainer.save_checkpoint`` holds everything an exact resume needs, and ``trainer.fit(ckpt_path=...)``
restores it. The checkpoint holds tensors and plain Python values only (the NumPy RNG state is
stored as lists), so it loads with ``torch.load(weights_only=True)``: a checkpoint never runs code.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics import mean_iou
from ..records import write_history
from .runtime import lightning

__all__ = ["History", "RandomStates", "ResumeCheckpoint", "AtomicCheckpointIO", "RESUME_STATE_KEY"]

L = lightning()

#: the callback state key under which the checkpoint's fingerprint is stored
RESUME_STATE_KEY = "segbench_resume"


class History(L.Callback):
    """One row per epoch (:data:`segbench.records.HISTORY_COLUMNS`), written to ``history.csv`` after
    every epoch by the first process, and the weights of the epoch with the best validation mIoU
    (the last epoch when there is no validation set).

    Attributes:
        rows: the history so far.
        best_score, best_epoch, best_state: the best epoch's validation mIoU, number and weights (CPU).
    """

    state_key = "segbench_history"

    def __init__(self, out_dir: Path, has_val: bool):
        self.out_dir, self.has_val = Path(out_dir), has_val
        self.rows: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        # Lightning runs validation before on_train_epoch_end, so the validation numbers are ready
        # (summed over processes under DDP; every process keeps the same history and best weights)
        train_loss = pl_module.epoch_train_loss()
        miou = float(mean_iou(pl_module.val_confusion_matrix)) if self.has_val else float("nan")
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": train_loss,
            "val_loss": pl_module.val_loss_mean if self.has_val else float("nan"),
            "val_mIoU": miou,
            "lr": trainer.optimizers[0].param_groups[-1]["lr"],  # the decoder's (base) LR
            "epoch_time_s": time.perf_counter() - self._t0,
        }
        self.rows.append(row)
        score = miou if self.has_val else row["epoch"]
        if self.best_score is None or (not math.isnan(score) and score > self.best_score):
            self.best_score, self.best_epoch = score, row["epoch"]
            self.best_state = _contiguous_copy(pl_module.model)
        if trainer.is_global_zero:
            write_history(self.out_dir, self.rows)

    def state_dict(self) -> dict[str, Any]:
        # When the epoch just ended is the best so far (always after the first epoch, and whenever the
        # score still rises), its weights are the model's own, which the checkpoint already holds:
        # they are stored once (a quarter less to write: U-Net/ResNet-18's checkpoint 230 -> 173 MB)
        # and rebuilt from the restored model in on_train_start.
        best_is_current = bool(self.rows) and self.best_epoch == self.rows[-1]["epoch"]
        return {
            "rows": list(self.rows),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": None if best_is_current else self.best_state,
            "best_is_current": best_is_current,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows[:] = state["rows"]
        self.best_score, self.best_epoch, self.best_state = (
            state["best_score"],
            state["best_epoch"],
            state["best_state"],
        )
        self._best_from_model = bool(state.get("best_is_current"))

    def on_train_start(self, trainer, pl_module):
        # Lightning restores the model's weights and the callbacks' states before this hook
        if getattr(self, "_best_from_model", False):
            self.best_state = _contiguous_copy(pl_module.model)
            self._best_from_model = False


def _contiguous_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict copied to the CPU, a channels-last weight in PyTorch's default layout
    (safetensors needs it)."""
    fmt = torch.contiguous_format
    return {k: v.detach().cpu().clone(memory_format=fmt) for k, v in model.state_dict().items()}


def _augment_states(transform: Any) -> list[Any]:
    """RNG states of an albumentations pipeline and every transform in it (each keeps its own)."""
    out, stack = [], [transform]
    while stack:
        t = stack.pop(0)
        if hasattr(t, "random_generator"):
            out.append((t.random_generator.bit_generator.state, t.py_random.getstate()))
        stack.extend(getattr(t, "transforms", []) or [])
    return out


def _set_augment_states(transform: Any, states: list[Any]) -> None:
    stack, i = [transform], 0
    while stack:
        t = stack.pop(0)
        if hasattr(t, "random_generator"):
            t.random_generator.bit_generator.state, py = states[i]
            t.py_random.setstate(py)
            i += 1
        stack.extend(getattr(t, "transforms", []) or [])


class RandomStates(L.Callback):
    """Every random-number generator a training run draws from: Python's, NumPy's, torch's (CPU and
    CUDA), the training loader's generator and albumentations' own generators, so a resumed run draws
    exactly what the uninterrupted one would have.

    Args:
        datamodule: the :class:`~segbench.training.data.SegmentationDataModule` (its loader generator
            and training transform).
    """

    state_key = "segbench_rng"

    def __init__(self, datamodule):
        self.datamodule = datamodule

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(gauss)),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": self.datamodule.generator.get_state(),
            "augment": _augment_states(self.datamodule.train_transform),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self.datamodule.generator.set_state(state["loader"])
        _set_augment_states(self.datamodule.train_transform, state["augment"])


class ResumeCheckpoint(L.Callback):
    """Writes Lightning's checkpoint to ``path`` (every state an exact resume needs: weights, optimiser,
    schedule, loops, the callbacks' own states) after the first epoch, then after every epoch that ends
    ``every_min`` minutes or more after the last write, and never after the last epoch (the job's outputs
    are written then). A kill therefore costs at most ``every_min`` minutes of training plus the epoch
    running; the first epoch's write shows early that the folder is writable. ``every_min=0`` writes
    after every epoch.

    The write goes through the trainer's checkpoint IO (:class:`AtomicCheckpointIO`, wrapped in
    Lightning's ``AsyncCheckpointIO`` by :func:`segbench.training.run.train_model`): the tensors are
    copied at the end of the epoch, written by a background thread to a temporary file and renamed
    into place, so training goes on during the write and a kill never leaves a half-written checkpoint.
    Its state is the job's fingerprint (:func:`segbench.training.resume.fingerprint`): a checkpoint is
    resumed only by the same job.

    Args:
        path: ``lightning/last.ckpt`` of the job's folder.
        fingerprint: the job's fingerprint.
        every_min: minutes between writes (``train.checkpoint_every_min``).

    Attributes:
        writes: checkpoints written by this run (recorded in ``train_meta.json``).
    """

    state_key = RESUME_STATE_KEY

    def __init__(self, path: Path, fingerprint: str, every_min: float = 0.0):
        self.path, self.fingerprint, self.every_min = Path(path), fingerprint, float(every_min)
        self.writes = 0
        self._last_write: float | None = None

    def on_train_epoch_end(self, trainer, pl_module):
        now = time.monotonic()
        due = self._last_write is None or now - self._last_write >= 60.0 * self.every_min
        # under DDP every process must take the same decision (saving is a collective call): the first
        # process's clock decides
        due = trainer.strategy.broadcast(due, src=0)
        if not due or _is_last_epoch(trainer):
            return
        # a diverged epoch (the module then ends the job) must not become the point a retry resumes from;
        # the same value in every process (the loss is averaged over all of them)
        loss = pl_module.epoch_train_loss() if hasattr(pl_module, "epoch_train_loss") else 0.0
        if not math.isfinite(loss):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # every process calls it (a collective under DDP); the first one writes
        trainer.save_checkpoint(str(self.path), weights_only=not _SAVE_FULL_STATE)
        self._last_write, self.writes = now, self.writes + 1

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


#: ``Trainer.save_checkpoint(weights_only=...)`` is about *saving*: the resume checkpoint holds the
#: optimiser, loops and callbacks too (loading it is always ``torch.load(weights_only=True)``)
_SAVE_FULL_STATE = True


def _is_last_epoch(trainer) -> bool:
    """Whether the epoch ending now is the run's last: ``max_epochs`` or ``max_steps`` reached, or
    early stopping has decided to stop (EarlyStopping runs before this callback)."""
    if trainer.should_stop:
        return True
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return True
    return trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs


class AtomicCheckpointIO(L.pytorch.plugins.TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` that writes to a temporary file beside the target and renames
    it into place (``os.replace``, atomic on POSIX file systems): a reader, or a run killed during the
    write, sees the previous complete checkpoint or the new one, never part of one. Loading is
    Lightning's (``torch.load``; segbench passes ``weights_only=True``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
