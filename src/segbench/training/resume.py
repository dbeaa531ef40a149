"""Resuming a killed training job: which checkpoint belongs to which job.

A job is its dataset content, fold ids, model config, effective recipe, augmentation and the
content of the files its model starts from; :func:`fingerprint` hashes them, the
:class:`~segbench.training.callbacks.ResumeCheckpoint` callback stores the hash in every checkpoint,
and :func:`resumable_epochs` accepts a checkpoint only when it matches. A checkpoint of any other
job (or a broken one) is removed, never resumed.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain Python values only. A
checkpoint that holds anything else (a pickled object, which could run code when loaded) is refused
as unreadable, and training starts over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from ..io import sha256_file
from ..models.weights import start_weight_files
from .callbacks import RESUME_STATE_KEY

__all__ = ["fingerprint", "resumable_epochs", "prepare_resume"]


def fingerprint(
    dataset_json: str | Path,
    train_ids: list[str],
    val_ids: list[str],
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    augment_cfg: dict[str, Any],
) -> str:
    """Hex SHA-256 of what a checkpoint must match to be resumed: the bytes of ``dataset.json`` (which
    lists the SHA-256 of every image and mask), the fold's ids, the model config, the effective
    training recipe, the augmentation recipe, and the content of the start-weight files
    (:func:`segbench.models.weights.start_weight_files`: a replaced ``init_checkpoint`` is another job)."""
    h = hashlib.sha256(Path(dataset_json).read_bytes())
    h.update(
        json.dumps(
            [train_ids, val_ids, model_cfg, train_cfg, augment_cfg], sort_keys=True, default=str
        ).encode()
    )
    for path in start_weight_files(model_cfg):
        if Path(path).is_file():
            h.update(sha256_file(path).encode())
    return h.hexdigest()


def resumable_epochs(ckpt: Path, expected: str) -> int | None:
    """The number of finished epochs in ``ckpt`` when it belongs to the job ``expected``, else None.

    Loads only tensors and plain values (``weights_only=True``); an unreadable, foreign or unsafe
    file gives None and a note on stderr.
    """
    if not ckpt.is_file():
        return None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        own = next((v for k, v in state.get("callbacks", {}).items() if RESUME_STATE_KEY in str(k)), None)
        if own and own.get("fingerprint") == expected:
            return int(state.get("epoch", -1)) + 1
    except Exception as err:  # truncated, foreign, or holding objects weights_only refuses: start over
        print(
            f"segbench train: ignoring unreadable checkpoint {ckpt} ({type(err).__name__}: {str(err)[:200]})",
            file=sys.stderr,
        )
    return None


def prepare_resume(ckpt: Path, expected: str) -> int | None:
    """:func:`resumable_epochs`, and remove the checkpoint folder when it is not this job's."""
    epochs = resumable_epochs(ckpt, expected)
    if epochs is None and ckpt.parent.exists():
        shutil.rmtree(ckpt.parent)  # another job's (or a broken) checkpoint: never resume from it
    elif epochs is not None:
        print(
            f"segbench train: resuming from {ckpt} after epoch {epochs} (same data, fold and recipe)",
            flush=True,
        )
    return epochs
