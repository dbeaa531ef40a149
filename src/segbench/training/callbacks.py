"""Lightning callbacks of a segbench training job: the history and best weights, the random states,
and the resumable checkpoint written after every epoch.

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

__all__ = ["History", "RandomStates", "ResumeCheckpoint", "RESUME_STATE_KEY"]

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
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        if trainer.is_global_zero:
            write_history(self.out_dir, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rows": list(self.rows),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows[:] = state["rows"]
        self.best_score, self.best_epoch, self.best_state = (
            state["best_score"],
            state["best_epoch"],
            state["best_state"],
        )


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
    """Writes Lightning's checkpoint to ``path`` after every epoch (after validation and the history
    row), atomically: a temporary file renamed into place, so a kill during the write leaves the
    previous checkpoint intact. Its state is the job's fingerprint
    (:func:`segbench.training.resume.fingerprint`):
    a checkpoint is resumed only by the same job."""

    state_key = RESUME_STATE_KEY

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint

    def on_train_epoch_end(self, trainer, pl_module):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(str(tmp))  # every process calls it; the first one writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
