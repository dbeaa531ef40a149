"""The training recipe as one typed object: :class:`TrainRecipe`.

``config/train/*.yaml`` (validated by ``workflow/schemas/config.schema.yaml``) is read into a frozen
dataclass once; the training code reads attributes, never ``cfg.get(key, default)``, so each default
is written here and nowhere else. A model changes the recipe for itself only through a ``train:``
block in its config (``model_overrides.<name>.train``): :meth:`TrainRecipe.for_model` merges it.
The combinations that cannot work are refused here, before anything trains, with the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainRecipe", "LRFindOptions", "Placement", "effective_train_config"]


@dataclass(frozen=True)
class LRFindOptions:
    """``train.lr_find``: the LR range test's sweep (Lightning's ``Tuner.lr_find``)."""

    min_lr: float = 1e-7
    max_lr: float = 1.0
    num_training: int = 100


@dataclass(frozen=True)
class TrainRecipe:
    """One training protocol (``config/train/``), the same for every model of a comparison.

    Attributes:
        epochs: training epochs (ignored when ``max_steps`` is set).
        batch_size: images per optimiser step and process (with DDP the effective batch is
            ``batch_size x devices``).
        image_size: ``(height, width)`` the network sees, multiples of 32 (with ``crop``: the patch).
        scale: None: every image is resized whole to ``image_size`` (the default); a factor: images and
            masks are rescaled by it (the experiment's ``preprocessed/`` copy,
            :mod:`segbench.data.preprocess`),
            and trained whole or, with ``crop``, on ``image_size`` crops (``segbench.plan`` chooses it).
        target_diagonal: None, or pixels: instead of the one factor ``scale``, each image is rescaled so
            that its diagonal is this long (:func:`segbench.data.preprocess.image_scale`; the plan sets it
            when object sizes follow image sizes). Needs ``scale`` set (the rescaled copy is used).
        crop: train on random ``image_size`` crops of the rescaled images (``foreground_share`` of
            them on a labelled non-background pixel); validation then scores whole rescaled images.
        foreground_share: nnU-Net's ``oversample_foreground_percent``.
        optimizer: ``adamw`` | ``adam`` | ``sgd`` (SGD with Nesterov momentum).
        lr: learning rate of the decoder; the string ``"find"`` runs the LR range test first.
        loss: loss name -> weight or ``{weight, **options}`` (:func:`segbench.losses.build_loss`).
        scheduler: ``poly`` | ``cosine`` | ``onecycle`` | ``none`` (per optimiser step).
        poly_power: exponent of the poly schedule ``(1 - t)^power`` (DeepLab's 0.9).
        warmup_epochs: linear warm-up epochs (poly, cosine, none).
        weight_decay: decoupled (AdamW) or L2 (Adam, SGD) weight decay.
        momentum: SGD momentum.
        max_steps: train by optimiser steps instead of epochs.
        early_stopping_patience: stop after this many validations without a better val mIoU.
        early_stopping_min_delta: the improvement that counts.
        freeze_epochs: fastai ``fine_tune``: epochs with the encoder frozen (weights and BatchNorm
            statistics).
        encoder_lr_mult: encoder LR = ``lr x encoder_lr_mult``.
        class_weights: None, ``median_frequency`` or C numbers (cross-entropy term).
        grad_clip: gradient-norm clipping, or None.
        bn_momentum: every BatchNorm layer's momentum (None keeps each library's own).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``); ``auto`` picks it
            from the machine alone (:func:`segbench.device.auto_precision`: ``bf16-mixed`` on CPUs
            with AVX-512 BF16 or AMX and on GPUs with bfloat16, ``16-mixed`` on older GPUs,
            ``32-true`` otherwise), so every candidate of a comparison gets the same.
        channels_last: ``auto`` | True | False: the memory format
            (:func:`segbench.training.memory_format.channels_last_for`).
        checkpoint_every_min: minutes between resume checkpoints (after the first epoch, then at the
            first epoch end this long after the last write; 0 = every epoch):
            :class:`segbench.training.callbacks.ResumeCheckpoint`.
        devices: processes of one training job (DDP when > 1).
        num_workers: DataLoader worker processes, or ``auto``
            (:func:`segbench.training.threads.cpu_plan`: from the cores the job is given).
        seed: the training seed (weights init, data order, augmentation); one job per seed of ``train.seeds``.
        device: segbench's device setting (:func:`segbench.device.resolve_device`).
        lr_find: the range test's options.
    """

    epochs: int
    batch_size: int
    image_size: tuple[int, int]
    optimizer: str
    lr: float | str
    loss: dict[str, Any]
    scheduler: str = "poly"
    poly_power: float = 0.9
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    momentum: float = 0.9
    max_steps: int | None = None
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    freeze_epochs: int = 0
    encoder_lr_mult: float = 1.0
    class_weights: str | list[float] | None = None
    scale: float | None = None
    target_diagonal: float | None = None
    crop: bool = False
    foreground_share: float = 0.33
    grad_clip: float | None = None
    bn_momentum: float | None = 0.1
    precision: str = "auto"
    channels_last: bool | str = "auto"
    checkpoint_every_min: float = 10.0
    devices: int = 1
    num_workers: int | str = 0
    seed: int = 0
    device: str = "auto"
    lr_find: LRFindOptions = field(default_factory=LRFindOptions)

    def __post_init__(self):
        if self.devices > 1 and self.lr == "find":
            raise ValueError(
                "train.lr=find with train.devices > 1 is not supported: find the LR with devices=1 "
                "(its lr_find.json / train_meta.json give it) and set train.lr to that number"
            )
        for key in ("epochs", "batch_size", "image_size", "scale", "crop", "class_weights"):
            if getattr(self, key) == "plan":
                raise ValueError(
                    f"train.{key} is 'plan' but no plan was applied: the workflow's plan step decides it "
                    "(segbench run), or set a value"
                )
        if self.target_diagonal is not None and (self.scale is None or not self.target_diagonal > 0):
            raise ValueError(
                f"train.target_diagonal {self.target_diagonal} needs a positive value and train.scale set "
                "(images are rescaled once into the experiment's preprocessed/ copy): set train.scale=1, "
                "or train.target_diagonal=null"
            )
        if self.crop and self.scale is None:
            raise ValueError(
                "train.crop needs train.scale (the factor images are rescaled by before cropping)"
            )
        if self.devices > 1 and self.freeze_epochs:
            raise ValueError(
                "train.freeze_epochs with train.devices > 1 is not supported (DDP fixes the trained "
                "parameters when it starts); train the frozen-encoder model on one device"
            )

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TrainRecipe:
        """Build from a ``train`` config (``configs/train.json``); ``None`` values take the default.

        Raises:
            ValueError: a key that is not part of the recipe (names it and the allowed keys), or a
                refused combination (see the class docstring).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"train: unknown key(s) {unknown}; allowed: {', '.join(sorted(names))}")
        kw = {k: v for k, v in cfg.items() if v is not None or k in _NULLABLE}
        if "image_size" in kw and kw["image_size"] != "plan":
            kw["image_size"] = tuple(int(v) for v in kw["image_size"])
        if "lr_find" in kw:
            kw["lr_find"] = LRFindOptions(**(kw["lr_find"] or {}))
        for k in ("epochs", "batch_size", "warmup_epochs", "freeze_epochs", "devices", "num_workers", "seed"):
            if k in kw and kw[k] not in ("auto", "plan"):
                kw[k] = int(kw[k])
        for k in ("scale", "target_diagonal"):
            if isinstance(kw.get(k), (int, float)):
                kw[k] = float(kw[k])
        if "checkpoint_every_min" in kw:
            kw["checkpoint_every_min"] = float(kw["checkpoint_every_min"])
        if isinstance(kw.get("lr"), (int, float)):
            kw["lr"] = float(kw["lr"])
        return cls(**kw)

    @classmethod
    def for_model(cls, train_cfg: dict[str, Any], model_cfg: dict[str, Any]) -> TrainRecipe:
        """The recipe one model trains with: the experiment's ``train`` with its own ``train:`` keys on
        top."""
        return cls.from_dict(effective_train_config(train_cfg, model_cfg))

    def with_lr(self, lr: float) -> TrainRecipe:
        """The same recipe with a fixed learning rate (after ``lr: find``)."""
        return dataclasses.replace(self, lr=float(lr))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (``image_size`` as a list), e.g. for a fingerprint or a logger."""
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimiser steps of the whole run: ``max_steps`` or ``epochs x steps_per_epoch``."""
        return int(self.max_steps) if self.max_steps else self.epochs * steps_per_epoch


#: keys whose None means "off", not "use the default"
_NULLABLE = {
    "max_steps",
    "early_stopping_patience",
    "class_weights",
    "grad_clip",
    "bn_momentum",
    "scale",
    "target_diagonal",
}


def effective_train_config(train_cfg: dict[str, Any], model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The recipe dict one model trains with: the experiment's ``train`` with the model's own ``train:`` keys
    on top.

    One protocol for every model, unless a model config (or ``model_overrides.<name>.train``) changes
    it for that model, e.g. ``train: {freeze_epochs: 2, encoder_lr_mult: 0.1}`` for a frozen-encoder
    fine-tune, so fine-tuning modes can be compared as separate models in one report.

    A model whose own keys turn the rescaling off (``scale: null``, a whole-image resize candidate
    beside planned ones) also drops the experiment's ``target_diagonal`` (the plan's size
    normalisation belongs to the rescaled copy it no longer reads), unless it sets one itself.
    """
    own = model_cfg.get("train") or {}
    out = {**train_cfg, **own}
    if "scale" in own and own["scale"] is None and "target_diagonal" not in own:
        out["target_diagonal"] = None
    return out


@dataclass(frozen=True)
class Placement:
    """Where and how one training job runs: Lightning's accelerator, devices, precision and strategy.

    Build it with :meth:`of`; ``world_size`` is the number of processes (DDP when > 1).
    """

    accelerator: str
    devices: Any
    world_size: int
    precision: str

    @classmethod
    def of(cls, recipe: TrainRecipe) -> Placement:
        """Resolve ``recipe.device`` / ``devices`` / ``precision`` (``auto``:
        :func:`segbench.device.auto_precision`).

        Raises:
            ValueError: DDP asked for on one named GPU (``device=cuda:K`` with ``devices > 1``).
        """
        import os

        from ..device import resolve_device

        accelerator, devices = resolve_device(recipe.device)
        if accelerator == "gpu":  # deterministic cuBLAS (PyTorch's reproducibility notes), before first use
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        world = 1
        if recipe.devices > 1:  # DDP: one process per GPU, or n CPU processes (gloo)
            if isinstance(devices, list):
                raise ValueError(
                    f"train.devices={recipe.devices} with device={recipe.device}: pick the GPUs with "
                    "CUDA_VISIBLE_DEVICES and set device=cuda (or auto)"
                )
            devices = world = recipe.devices
        precision = recipe.precision
        if precision == "auto":
            from ..device import auto_precision

            precision = auto_precision(accelerator)
        return cls(accelerator, devices, world, precision)

    def trainer_kwargs(self) -> dict[str, Any]:
        """``lightning.Trainer`` keyword arguments for this placement.

        Several processes: DDP (Lightning launches the other processes by rerunning the command; on
        CPU they talk through gloo) with segbench's own samplers (:class:`SegmentationDataModule`).
        """
        ddp = self.world_size > 1
        return {
            "accelerator": self.accelerator,
            "devices": self.devices,
            "precision": self.precision,
            "strategy": "ddp" if ddp else "auto",
            "use_distributed_sampler": False,
            "sync_batchnorm": ddp and self.accelerator == "gpu",
        }
