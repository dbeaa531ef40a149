"""One training protocol for every backend, on Lightning.

Same loss, optimiser, schedule, augmentation, epochs and seed for every model (DESIGN.md section 5).
Lightning runs the loop (devices, mixed precision, progress bar, checkpoint/resume); segbench adds
the validation mIoU from its own confusion matrix (:mod:`segbench.metrics`), ``history.csv`` and
the final weights as ``model.safetensors`` (plain tensors: loading them runs no code).

Outputs in ``out_dir``:

* ``model.safetensors``: the weights of the epoch with the best validation mIoU (the last epoch
  when there is no validation set);
* ``model.json``: what inference needs to rebuild the model (model config, number of classes,
  class names, input size, normalisation, ignore_index);
* ``history.csv``: one row per epoch: ``epoch, train_loss, val_loss, val_mIoU, lr, epoch_time_s``;
* ``train_meta.json``: device, threads, wall times, best epoch, parameter count, versions;
* ``lightning/last.ckpt``: Lightning's checkpoint after the last finished epoch. When the same job
  (same dataset content, fold ids, model and recipe: a fingerprint stored in it) is started again
  after a crash or kill, training resumes from it and ends with the same weights and metrics as an
  uninterrupted run: weights, optimiser, scheduler, history, best weights and every RNG (Python,
  NumPy, torch, the DataLoader's generator, albumentations') are restored. A checkpoint of any other
  job is deleted, never resumed.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._compat import import_torchvision
from .data.dataset import SegmentationDataset, build_transform, seed_worker
from .io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from .losses import build_loss, resolve_class_weights
from .metrics import confusion_matrix, metrics_from_confusion
from .models import count_parameters, create_model

__all__ = ["train_model", "resolve_device", "lr_lambda", "set_bn_momentum", "effective_train_config",
           "lr_valley", "find_lr"]

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_mIoU", "lr", "epoch_time_s"]


def resolve_device(device: str) -> tuple[str, Any]:
    """Map segbench's ``device`` (auto | cpu | cuda | cuda:K | mps) to Lightning's (accelerator, devices)."""
    if device == "auto":
        return ("gpu", 1) if torch.cuda.is_available() else ("cpu", 1)
    if device == "cpu":
        return "cpu", 1
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device} but no CUDA GPU is visible; use device=auto or device=cpu")
        return "gpu", [int(device.split(":")[1])] if ":" in device else 1
    if device == "mps":
        return "mps", 1
    raise ValueError(f"device '{device}' unknown; allowed values: auto, cpu, cuda, cuda:K, mps")


def set_bn_momentum(model: torch.nn.Module, momentum: float | None) -> int:
    """Set the running-statistics momentum of every BatchNorm layer; returns how many were changed.

    Part of the one protocol: libraries ship different values (torchvision's MobileNetV3 uses 0.01,
    tuned for hundreds of ImageNet epochs; SMP's and mmseg's layers use PyTorch's default 0.1). With
    a few hundred steps, 0.01 leaves the running mean/variance far from the data, and the model
    predicts a single class in eval mode (seen on CamVid: val mIoU 0.01 in eval mode, 0.19 with
    batch statistics, same weights). ``None`` keeps each library's own value.
    """
    if momentum is None:
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = float(momentum)
            n += 1
    return n


def lr_lambda(cfg: dict[str, Any], total_steps: int, steps_per_epoch: int):
    """LR multiplier per optimiser step: linear warm-up, then poly ``(1 - t)^power``, cosine or constant."""
    warm = int(cfg.get("warmup_epochs", 0)) * steps_per_epoch
    kind = cfg.get("scheduler", "poly")
    power = float(cfg.get("poly_power", 0.9))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        if kind == "poly":
            return (1 - t) ** power
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return f


def _lightning():
    import_torchvision()  # lightning -> torchmetrics -> torchvision; see segbench/_compat.py
    import lightning

    return lightning


def _lightning_module(model, loss_fn, cfg: dict[str, Any], num_classes: int, ignore_index: int, steps_per_epoch: int,
                      loaders=None):
    L = _lightning()
    freeze_epochs = int(cfg.get("freeze_epochs") or 0)

    class SegModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.loss_fn = loss_fn
            self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)
            self.val_losses: list[float] = []
            self.train_losses: list[float] = []

        # The loaders are built here, once the processes exist, so that with several (DDP) each one
        # draws its own share: training through a seeded DistributedSampler, validation through an
        # unrepeated one (every validation image scored exactly once, then the confusion summed).
        def train_dataloader(self):
            return loaders("train", self.trainer.world_size, self.trainer.global_rank)

        def val_dataloader(self):
            return loaders("val", self.trainer.world_size, self.trainer.global_rank)

        def gathered(self) -> tuple[np.ndarray, list[float], list[float]]:
            """This epoch's validation confusion and losses of all processes (a collective call under DDP)."""
            if self.trainer.world_size == 1:
                return self.cm, self.val_losses, self.train_losses
            cm = self.all_gather(torch.as_tensor(self.cm)).sum(0).cpu().numpy()
            pad = lambda v: torch.tensor([float(np.sum(v)), float(len(v))], dtype=torch.float64)  # noqa: E731
            vl, tl = self.all_gather(pad(self.val_losses)).sum(0), self.all_gather(pad(self.train_losses)).sum(0)
            mean = lambda t: [float(t[0] / t[1])] if t[1] > 0 else []  # noqa: E731
            return cm, mean(vl), mean(tl)

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, _):
            x, y = batch
            loss = self.loss_fn(self(x), y)
            self.train_losses.append(float(loss.detach()))
            self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            logits = self(x)
            self.val_losses.append(float(self.loss_fn(logits, y)))
            self.cm += confusion_matrix(y, logits.argmax(1), num_classes, ignore_index)

        def on_validation_epoch_end(self):
            self.cm_all, self.val_losses_all, _ = self.gathered()
            # the same value in every process (the confusion is summed over all of them): early stopping agrees
            self.log("val_mIoU", float(np.nan_to_num(metrics_from_confusion(self.cm_all)["mIoU"])), prog_bar=True)

        # fastai's fine_tune: the encoder frozen for `freeze_epochs` (no gradient, and its BatchNorm layers
        # in eval mode so their running statistics stay the pretrained ones), then trained at lr x encoder_lr_mult
        def apply_freeze(self):
            frozen = self.current_epoch < freeze_epochs
            for p in self.model.encoder.parameters():
                p.requires_grad_(not frozen)
            for m in self.model.encoder.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.train(self.model.training and not frozen)

        def on_train_epoch_start(self):
            if freeze_epochs:
                self.apply_freeze()

        def on_validation_model_train(self):
            super().on_validation_model_train()
            if freeze_epochs:
                self.apply_freeze()

        def configure_optimizers(self):
            enc_ids = {id(p) for p in self.model.encoder.parameters()}
            rest = [p for p in self.model.parameters() if id(p) not in enc_ids]
            mult = float(cfg.get("encoder_lr_mult", 1.0))
            params = [{"params": [p for p in self.model.parameters() if id(p) in enc_ids], "lr": cfg["lr"] * mult},
                      {"params": rest, "lr": cfg["lr"]}]
            name = cfg["optimizer"]
            if name == "adamw":
                opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
            elif name == "adam":
                opt = torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
            else:
                opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                                      weight_decay=cfg.get("weight_decay", 0.0), nesterov=True)
            total = int(cfg["max_steps"]) if cfg.get("max_steps") else cfg["epochs"] * steps_per_epoch
            if cfg.get("scheduler") == "onecycle":
                sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in params], total_steps=total)
            else:
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total, steps_per_epoch))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return SegModule()


def _history_callback(out_dir: Path, rows: list[dict[str, Any]], best: dict[str, Any], has_val: bool):
    L = _lightning()

    class History(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()
            pl_module.train_losses.clear()

        def on_validation_epoch_start(self, trainer, pl_module):
            pl_module.cm[...] = 0
            pl_module.val_losses.clear()

        def on_train_epoch_end(self, trainer, pl_module):
            # Lightning runs validation before on_train_epoch_end, so the val metrics are ready here
            # (summed over processes under DDP; every process keeps the same history and best weights)
            cm = getattr(pl_module, "cm_all", pl_module.cm)
            val_losses = getattr(pl_module, "val_losses_all", pl_module.val_losses)
            train_losses = pl_module.gathered()[2] if trainer.world_size > 1 else pl_module.train_losses
            miou = float(metrics_from_confusion(cm)["mIoU"]) if has_val else float("nan")
            row = {
                "epoch": trainer.current_epoch + 1,
                "train_loss": float(np.mean(train_losses)) if train_losses else float("nan"),
                "val_loss": float(np.mean(val_losses)) if has_val and val_losses else float("nan"),
                "val_mIoU": miou,
                "lr": trainer.optimizers[0].param_groups[-1]["lr"],  # the decoder's (base) LR
                "epoch_time_s": time.perf_counter() - self.t0,
            }
            rows.append(row)
            score = miou if has_val else row["epoch"]
            if best.get("score") is None or (not math.isnan(score) and score > best["score"]):
                best.update(score=score, epoch=row["epoch"],
                            state={k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()})
            if not trainer.is_global_zero:
                return
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
            atomic_write_text(out_dir / "history.csv", buf.getvalue())

    return History()


def _augment_states(transform: Any) -> list[Any]:
    """RNG states of an albumentations pipeline and every transform in it (each keeps its own)."""
    out = []
    stack = [transform]
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


def _np_state() -> tuple:
    """NumPy's legacy global RNG state with plain Python values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return name, keys.tolist(), int(pos), int(has_gauss), float(gauss)


def _resume_callback(fingerprint: str, rows: list[dict[str, Any]], best: dict[str, Any], gen: torch.Generator,
                     transform: Any, ckpt: Path):
    """Keeps in Lightning's checkpoint what an exact resume needs beyond weights/optimizer/scheduler:
    the history, the best weights so far, and every RNG (Python, NumPy, torch, CUDA, the DataLoader's
    generator, albumentations' own generators), so a resumed run continues as if never stopped."""
    L = _lightning()

    class Resume(L.Callback):
        state_key = "segbench_resume"

        def on_train_epoch_end(self, trainer, pl_module):
            # after validation and the history row of this epoch; written atomically (temp + rename), so a
            # kill during the write leaves the previous checkpoint intact
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_name(f".{ckpt.name}.tmp")
            trainer.save_checkpoint(str(tmp))  # every process calls it; the first one writes
            if trainer.is_global_zero:
                os.replace(tmp, ckpt)

        def state_dict(self):
            return {"fingerprint": fingerprint, "rows": list(rows), "best_score": best.get("score"),
                    "best_epoch": best.get("epoch"), "best_state": best.get("state"),
                    "rng": {"python": random.getstate(), "numpy": _np_state(), "torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                            "loader": gen.get_state(), "augment": _augment_states(transform)}}

        def load_state_dict(self, sd):
            rows[:] = sd["rows"]
            best.clear()
            if sd.get("best_score") is not None:
                best.update(score=sd["best_score"], epoch=sd["best_epoch"], state=sd["best_state"])
            rng = sd["rng"]
            random.setstate(rng["python"])
            name, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            gen.set_state(rng["loader"])
            _set_augment_states(transform, rng["augment"])

    return Resume()


def _fingerprint(dataset_json: str | Path, train_ids: list[str], val_ids: list[str], model_cfg: dict[str, Any],
                 train_cfg: dict[str, Any], augment_cfg: dict[str, Any]) -> str:
    """What a checkpoint must match to be resumed: dataset content, fold ids, model and recipe, and the
    content of the files the model starts from (a changed init_checkpoint must not resume the old run)."""
    from .config import start_weight_files

    h = hashlib.sha256(Path(dataset_json).read_bytes())
    h.update(json.dumps([train_ids, val_ids, model_cfg, train_cfg, augment_cfg], sort_keys=True, default=str).encode())
    for path in start_weight_files(model_cfg):
        if Path(path).is_file():
            h.update(sha256_file(path).encode())
    return h.hexdigest()


def _resumable(ckpt: Path, fingerprint: str) -> int | None:
    """The epoch count of ``ckpt`` when it belongs to this exact job, else None."""
    if not ckpt.is_file():
        return None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        own = next((v for k, v in state.get("callbacks", {}).items() if "segbench_resume" in str(k)), None)
        if own and own.get("fingerprint") == fingerprint:
            return int(state.get("epoch", -1)) + 1
    except Exception as err:  # a truncated or foreign file: start over
        print(f"segbench train: ignoring unreadable checkpoint {ckpt} ({err})", file=sys.stderr)
    return None


def effective_train_config(train_cfg: dict[str, Any], model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The recipe one model trains with: the experiment's ``train`` with the model's own ``train:`` keys on top.

    One protocol for every model, unless a model config (or ``model_overrides.<name>.train``) changes
    it for that model, e.g. ``train: {freeze_epochs: 2, encoder_lr_mult: 0.1}`` for a frozen-encoder
    fine-tune, so fine-tuning modes can be compared as separate models in one report.
    """
    return {**train_cfg, **(model_cfg.get("train") or {})}


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


def find_lr(module, trainer_kwargs: dict[str, Any], min_lr: float = 1e-7, max_lr: float = 1.0,
            num_training: int = 100) -> dict[str, Any]:
    """LR range test (Lightning's ``Tuner.lr_find``: exponential sweep, smoothed loss, stops when the
    loss exceeds 4x its best) on ``module``, with fastai's valley rule (:func:`lr_valley`) for the choice.

    The module is trained for at most ``num_training`` steps by a throw-away Trainer; pass a copy.

    Returns:
        ``{"suggestion": lr, "lr": [...], "loss": [...], "min_lr", "max_lr", "num_training"}``.

    Raises:
        RuntimeError: the sweep stopped before 2 points (loss diverged at once); set ``train.lr`` by hand.
    """
    L = _lightning()
    from lightning.pytorch.tuner import Tuner

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, max_epochs=-1, **trainer_kwargs)
    result = Tuner(trainer).lr_find(module, min_lr=min_lr, max_lr=max_lr, num_training=num_training, update_attr=False)
    lrs = [float(v) for v in result.results["lr"]]
    losses = [float(v) for v in result.results["loss"]]
    keep = [i for i, v in enumerate(losses) if math.isfinite(v)]
    lrs, losses = [lrs[i] for i in keep], [losses[i] for i in keep]
    if len(lrs) < 2:
        raise RuntimeError("train.lr=find: the LR range test diverged at once; set train.lr to a number")
    return {"suggestion": lrs[lr_valley(lrs, losses)], "lr": lrs, "loss": losses, "min_lr": min_lr, "max_lr": max_lr,
            "num_training": num_training}


def _find_lr_once(out_dir: Path, fingerprint: str, model, loss_fn, train_cfg, num_classes, ignore_index, steps_per_epoch,
                  loaders, accelerator, devices, precision) -> dict[str, Any]:
    """``train.lr: find``: run the range test on a copy of the model, or reuse the result of this same
    job (a resumed run must not pick another LR). Writes ``lr_find.json`` (sweep and suggestion)."""
    path = out_dir / "lr_find.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("fingerprint") == fingerprint:
            return {k: v for k, v in old.items() if k != "fingerprint"}
    opts = dict(train_cfg.get("lr_find") or {})
    probe_cfg = dict(train_cfg, lr=float(opts.get("min_lr", 1e-7)), scheduler="none", warmup_epochs=0, max_steps=None)
    probe = _lightning_module(copy.deepcopy(model), loss_fn, probe_cfg, num_classes, ignore_index, steps_per_epoch, loaders)
    found = find_lr(probe, dict(accelerator=accelerator, devices=devices, precision=precision,
                                gradient_clip_val=train_cfg.get("grad_clip"), default_root_dir=str(out_dir)),
                    min_lr=float(opts.get("min_lr", 1e-7)), max_lr=float(opts.get("max_lr", 1.0)),
                    num_training=int(opts.get("num_training", 100)))
    print(f"segbench train: lr=find suggests {found['suggestion']:.3g} (fastai valley over {len(found['lr'])} steps)",
          flush=True)
    atomic_write_json(path, dict(found, fingerprint=fingerprint))
    return found


def train_model(dataset_json: str | Path, splits_json: str | Path, fold: int, model_cfg: dict[str, Any],
                train_cfg: dict[str, Any], augment_cfg: dict[str, Any], out_dir: str | Path,
                threads: int | None = None) -> dict[str, Any]:
    """Train one model on one fold and write its checkpoint and history.

    Args:
        dataset_json: the canonical dataset's ``dataset.json``.
        splits_json: ``splits.json``; fold ``fold`` gives the training and validation ids.
        fold: fold index (0-based).
        model_cfg: the model's config (``library`` + backend keys).
        train_cfg: the training recipe (epochs, batch_size, image_size, optimizer, lr, scheduler,
            loss, seed, device ...; see ``config/train/``).
        augment_cfg: the augmentation recipe (see ``config/augment/``).
        out_dir: ``results/<experiment>/models/<model>/fold<k>``.
        threads: CPU threads for torch (default: torch's own choice).

    Returns:
        The ``train_meta.json`` content.

    Raises:
        IndexError: the fold does not exist in ``splits.json``.
    """
    L = _lightning()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    meta = json.loads(Path(dataset_json).read_text())
    splits = json.loads(Path(splits_json).read_text())
    if not 0 <= fold < len(splits["folds"]):
        raise IndexError(f"{splits_json} has {len(splits['folds'])} fold(s); fold {fold} does not exist")
    train_ids, val_ids = splits["folds"][fold]["train"], splits["folds"][fold]["val"]
    train_cfg = effective_train_config(train_cfg, model_cfg)
    num_classes = len(meta["classes"])
    ignore_index = int(meta["ignore_index"])
    seed = int(train_cfg.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)

    root = Path(dataset_json).parent
    size = train_cfg["image_size"]
    make_train_ds = lambda: SegmentationDataset(  # noqa: E731
        root, meta["manifest"], train_ids, build_transform(augment_cfg, size, train=True, seed=seed))
    train_ds = make_train_ds()
    val_ds = SegmentationDataset(root, meta["manifest"], val_ids, build_transform(augment_cfg, size, train=False))
    bs = int(train_cfg["batch_size"])  # per process: with DDP the effective batch is batch_size x devices
    workers = int(train_cfg.get("num_workers", 0))
    gen = torch.Generator().manual_seed(seed)
    accelerator, devices = resolve_device(train_cfg.get("device", "auto"))
    if accelerator == "gpu":  # deterministic cuBLAS (PyTorch's reproducibility notes); must precede its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    n_proc = int(train_cfg.get("devices", 1) or 1)
    if n_proc > 1:  # DDP: one process per GPU, or n CPU processes (gloo)
        if isinstance(devices, list):
            raise ValueError(f"train.devices={n_proc} with device={train_cfg.get('device')}: pick the GPUs with "
                             "CUDA_VISIBLE_DEVICES and set device=cuda (or auto)")
        devices = n_proc
        if train_cfg["lr"] == "find":
            raise ValueError("train.lr=find with train.devices > 1 is not supported: find the LR with devices=1 "
                             "(its lr_find.json / train_meta.json give it) and set train.lr to that number")
        if int(train_cfg.get("freeze_epochs") or 0):
            raise ValueError("train.freeze_epochs with train.devices > 1 is not supported (DDP fixes the trained "
                             "parameters when it starts); train the frozen-encoder model on one device")

    datasets = {"train": train_ds, "val": val_ds}

    def loaders(kind: str, world: int, rank: int):
        from torch.utils.data import DistributedSampler

        if kind == "val":
            sampler = None
            if world > 1:
                from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

                sampler = UnrepeatedDistributedSampler(datasets["val"], num_replicas=world, rank=rank, shuffle=False)
            return torch.utils.data.DataLoader(datasets["val"], batch_size=bs, shuffle=False, sampler=sampler, num_workers=workers)
        # workers are restarted every epoch (not persistent): each epoch's worker seeds then follow from the
        # loader generator alone, so a run resumed at an epoch boundary draws the same augmentations
        drop_last = len(train_ds) > bs * world  # as `drop` below, for the number of steps
        sampler = DistributedSampler(datasets["train"], num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                     drop_last=drop_last) if world > 1 else None
        return torch.utils.data.DataLoader(datasets["train"], batch_size=bs, shuffle=sampler is None, sampler=sampler,
                                           drop_last=drop_last, num_workers=workers, generator=gen,
                                           persistent_workers=False, worker_init_fn=seed_worker if workers > 0 else None)

    world = devices if n_proc > 1 else 1
    drop = len(train_ds) > bs * world
    per_process = len(train_ds) // world if drop else math.ceil(len(train_ds) / world)
    steps_per_epoch = max(1, per_process // bs if drop else math.ceil(per_process / bs))

    model = create_model(num_classes=num_classes, **model_cfg)
    set_bn_momentum(model, train_cfg.get("bn_momentum", 0.1))
    class_weights = resolve_class_weights(train_cfg.get("class_weights"), root, meta, train_ids)
    loss_fn = build_loss(train_cfg["loss"], ignore_index=ignore_index, class_weights=class_weights)
    precision = train_cfg.get("precision", "auto")
    if precision == "auto":
        precision = "16-mixed" if accelerator == "gpu" else "32-true"
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    ckpt_dir = out_dir / "lightning"
    fingerprint = _fingerprint(dataset_json, train_ids, val_ids, model_cfg, train_cfg, augment_cfg)
    resume_epochs = _resumable(ckpt_dir / "last.ckpt", fingerprint)
    if resume_epochs is None and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # another job's (or a broken) checkpoint: never resume from it
    elif resume_epochs is not None:
        print(f"segbench train: resuming from {ckpt_dir / 'last.ckpt'} after epoch {resume_epochs} "
              f"(same data, fold and recipe)", flush=True)
    # Lightning picks RichProgressBar when `rich` is installed, which prints nothing into a pipe (the
    # workflow's `| tee` log); tqdm's bar works in both a terminal and a log file.
    progress = L.pytorch.callbacks.TQDMProgressBar(refresh_rate=1 if sys.stdout.isatty() else 10)
    lr_found = None
    if train_cfg["lr"] == "find":
        # the range test draws batches, augmentations and dropout: put every RNG back afterwards, so training
        # is exactly the run with train.lr=<the suggestion>
        rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(), gen.get_state(),
               torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        lr_found = _find_lr_once(out_dir, fingerprint, model, loss_fn, train_cfg, num_classes, ignore_index,
                                 steps_per_epoch, loaders, accelerator, devices, precision)
        train_cfg = dict(train_cfg, lr=lr_found["suggestion"])
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        gen.set_state(rng[3])
        if rng[4] is not None:
            torch.cuda.set_rng_state_all(rng[4])
        train_ds = datasets["train"] = make_train_ds()  # albumentations' generators start afresh too
    module = _lightning_module(model, loss_fn, train_cfg, num_classes, ignore_index, steps_per_epoch, loaders)
    max_steps = int(train_cfg.get("max_steps") or 0)
    callbacks = [_history_callback(out_dir, rows, best, has_val=len(val_ids) > 0), progress,
                 _resume_callback(fingerprint, rows, best, gen, train_ds.transform, ckpt_dir / "last.ckpt")]
    patience = train_cfg.get("early_stopping_patience")
    if patience is not None and val_ids:
        # stop when the validation mIoU has not improved for `patience` validations (Lightning's EarlyStopping;
        # its state is in last.ckpt, so a resumed run stops where an uninterrupted one would)
        callbacks.append(L.pytorch.callbacks.EarlyStopping(monitor="val_mIoU", mode="max", patience=int(patience),
                                                           min_delta=float(train_cfg.get("early_stopping_min_delta", 0.0))))
    trainer = L.Trainer(
        max_epochs=-1 if max_steps else int(train_cfg["epochs"]), max_steps=max_steps or -1, accelerator=accelerator, devices=devices, precision=precision,
        gradient_clip_val=train_cfg.get("grad_clip"), logger=False, num_sanity_val_steps=0,
        callbacks=callbacks, enable_checkpointing=False,
        limit_val_batches=1.0 if val_ids else 0, deterministic="warn", enable_model_summary=False,
        # several processes: DDP (Lightning launches the other processes by rerunning this command; on
        # CPU they talk through gloo); segbench's own samplers are used (see the module's loaders)
        strategy="ddp" if n_proc > 1 else "auto", use_distributed_sampler=False,
        sync_batchnorm=n_proc > 1 and accelerator == "gpu",
    )
    t0 = time.perf_counter()
    trainer.fit(module, ckpt_path=str(ckpt_dir / "last.ckpt") if resume_epochs is not None else None)
    wall = time.perf_counter() - t0
    if not trainer.is_global_zero:  # the other DDP processes: the first one writes the outputs
        return {"global_rank": trainer.global_rank}

    from safetensors.torch import save_file

    last = {k: v.detach().cpu() for k, v in module.model.state_dict().items()}
    state = best.get("state") or last
    with atomic_path(out_dir / "model.safetensors") as tmp:  # the best epoch on validation mIoU
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    with atomic_path(out_dir / "last.safetensors") as tmp:  # the last epoch
        save_file({k: v.contiguous() for k, v in last.items()}, str(tmp))
    atomic_write_json(out_dir / "model.json", {
        "model": copy.deepcopy(model_cfg),
        "num_classes": num_classes,
        "classes": meta["classes"],
        "ignore_index": ignore_index,
        "image_size": list(size),
        "normalize": augment_cfg.get("normalize"),
        "dataset": meta["name"],
        "fold": fold,
    })
    epoch_times = [r["epoch_time_s"] for r in rows]
    info = {
        "model": model_cfg.get("name"),
        "library": model_cfg["library"],
        "fold": fold,
        "parameters": count_parameters(model),
        "epochs": len(rows),
        "best_epoch": best.get("epoch"),
        "best_val_mIoU": best.get("score") if val_ids else None,
        "train_images": len(train_ids),
        "val_images": len(val_ids),
        "wall_time_s": wall,
        "resumed_after_epoch": resume_epochs,
        "stopped_early": bool(patience is not None and val_ids and len(rows) < int(train_cfg["epochs"]) and not max_steps),
        "optimizer_steps": int(trainer.global_step),
        "lr": float(train_cfg["lr"]),
        "lr_find": lr_found,
        "encoder_lr_mult": float(train_cfg.get("encoder_lr_mult", 1.0)),
        "freeze_epochs": int(train_cfg.get("freeze_epochs") or 0),
        "encoder_weights": model_cfg.get("encoder_weights"),
        "init_checkpoint": getattr(model, "init_report", None),
        "class_weights": None if class_weights is None else [float(w) for w in class_weights],
        "epoch_time_s_median": float(np.median(epoch_times)) if epoch_times else None,
        "device": f"{accelerator}:{devices}",
        "processes": trainer.world_size,
        "steps_per_epoch": steps_per_epoch,  # optimiser steps of each process
        # pixels scored in the last validation (all processes together): each image exactly once
        "val_pixels": int(getattr(module, "cm_all", module.cm).sum()) if val_ids else 0,
        "strategy": type(trainer.strategy).__name__,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__},
    }
    atomic_write_json(out_dir / "train_meta.json", info)
    return info
