"""The one training protocol as a ``LightningModule``: loss, optimiser, schedule, fine-tuning freeze.

Every backend's model (:class:`segbench.models.SegmentationModel`) is trained by this module with
the same loss, optimiser and schedule. Validation scores the fold's validation images with
segbench's own confusion matrix (:class:`ConfusionMatrix`, summed over DDP processes) and logs
``val_mIoU`` for early stopping and the history.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics import MeanMetric

from ..metrics import mean_iou
from .metric import ConfusionMatrix
from .recipe import TrainRecipe
from .runtime import lightning

__all__ = ["SegmentationModule", "lr_lambda", "set_bn_momentum", "build_optimizer"]

L = lightning()


def lr_lambda(scheduler: str, total_steps: int, steps_per_epoch: int, poly_power: float, warmup_epochs: int):
    """LR multiplier per optimiser step: linear warm-up over ``warmup_epochs``, then poly
    ``(1 - t)^poly_power`` (DeepLab, Chen et al. 2017), cosine (Loshchilov & Hutter 2017) or constant
    (``none``); ``t`` runs from 0 to 1 over the steps after the warm-up."""
    warm = int(warmup_epochs) * steps_per_epoch

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        if scheduler == "poly":
            return (1 - t) ** poly_power
        if scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return f


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


def build_optimizer(model: torch.nn.Module, recipe: TrainRecipe, steps_per_epoch: int) -> dict[str, Any]:
    """The optimiser (two parameter groups: encoder at ``lr x encoder_lr_mult``, the rest at ``lr``) and
    the per-step LR schedule, in Lightning's ``configure_optimizers`` form."""
    lr = float(recipe.lr)
    enc_ids = {id(p) for p in model.encoder.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in enc_ids], "lr": lr * recipe.encoder_lr_mult},
        {"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr": lr},
    ]
    if recipe.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.SGD(
            groups, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=True
        )
    total = recipe.total_steps(steps_per_epoch)
    if recipe.scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total)
    else:
        f = lr_lambda(recipe.scheduler, total, steps_per_epoch, recipe.poly_power, recipe.warmup_epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class SegmentationModule(L.LightningModule):
    """Trains one segmentation model under the recipe.

    Args:
        model: a :class:`segbench.models.SegmentationModel` (``.encoder`` is what freezing and the
            encoder LR apply to).
        loss_fn: ``(logits float32[N, C, H, W], target int64[N, H, W]) -> scalar``.
        recipe: the training recipe.
        num_classes, ignore_index: of the dataset.
        steps_per_epoch: optimiser steps per epoch (for the schedule).
        channels_last: train in PyTorch's channels-last memory format (NHWC strides: the weights of
            every 4-D layer and every input batch; `PyTorch's channels-last tutorial
            <https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html>`_). The values
            are the same; oneDNN's and cuDNN's convolutions run faster on it.

    Under mixed precision (Lightning's ``bf16-mixed`` / ``16-mixed`` plugins, which run each step
    inside ``torch.autocast``), the network runs in the low precision and the loss in float32: the
    logits are cast up and the loss computed with autocast off, so the Dice and Lovasz terms' sums
    over every pixel of the batch keep float32's precision (as mmengine's ``AmpOptimWrapper`` users
    and timm do for losses outside the autocast lists).

    After each validation: ``val_confusion_matrix`` (``int64[C, C]`` NumPy, all processes summed) and
    ``val_loss_mean``; :meth:`epoch_train_loss` is the mean training loss of the epoch (all processes).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: torch.nn.Module,
        recipe: TrainRecipe,
        num_classes: int,
        ignore_index: int,
        steps_per_epoch: int,
        channels_last: bool = False,
    ):
        super().__init__()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.loss_fn = loss_fn
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch
        self.val_confusion = ConfusionMatrix(num_classes, ignore_index)
        # losses of every step, averaged over all processes; a diverged (NaN) loss stays NaN
        self.val_loss = MeanMetric(nan_strategy="disable").set_dtype(torch.float64)
        self.train_loss = MeanMetric(nan_strategy="disable").set_dtype(torch.float64)
        self.val_confusion_matrix = np.zeros((num_classes, num_classes), np.int64)
        self.val_loss_mean = float("nan")
        # a non-finite epoch loss ends the job (on_train_epoch_end); off for the LR range test, which
        # drives the LR up until the loss explodes on purpose
        self.check_finite = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch in the model's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The recipe's loss in float32, outside autocast (see the class docstring)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.loss_fn(logits.float(), target)

    def training_step(self, batch, _):
        x, y = batch
        loss = self._loss(self(self._input(x)), y)
        self.train_loss.update(loss.detach().double())
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self):
        self.train_loss.reset()
        if self.recipe.freeze_epochs:
            self._apply_freeze()

    def on_train_epoch_end(self):
        # the epoch's mean loss for the tracking logger (per-step values are logged every 50 steps)
        loss = self.epoch_train_loss()
        if self.check_finite and self.train_loss.update_count and not math.isfinite(loss):
            # a NaN/inf step poisons the weights (AdamW turns an inf gradient into NaN parameters); going
            # on would score a broken model as if it had learned nothing (bf16 has no loss scaler that
            # skips such steps, as fp16's GradScaler does)
            raise FloatingPointError(
                f"the training loss became {loss} in epoch {self.current_epoch}: the model diverged and "
                f"its weights are no longer numbers (precision {self.trainer.precision}, channels-last "
                f"{self.channels_last}, lr {self.recipe.lr}). Try train.precision=32-true, "
                "train.channels_last=false, a lower train.lr, or train.grad_clip=1.0 (for this model "
                "only: model_overrides.<model>.train)"
            )
        self.log("train_loss_epoch", loss)

    def epoch_train_loss(self) -> float:
        """Mean training loss of this epoch over all processes (a collective call under DDP)."""
        return _computed(self.train_loss)

    def on_validation_epoch_start(self):
        self.val_confusion.reset()
        self.val_loss.reset()

    def validation_step(self, batch, _):
        x, y = batch
        logits = self(self._input(x))
        self.val_loss.update(self._loss(logits, y).detach().double())
        self.val_confusion.update(logits.argmax(1), y)

    def on_validation_epoch_end(self):
        self.val_confusion_matrix = self.val_confusion.compute().cpu().numpy()
        self.val_loss_mean = _computed(self.val_loss)
        # the same value in every process (the confusion is summed over all of them): early stopping agrees
        self.log("val_mIoU", float(np.nan_to_num(mean_iou(self.val_confusion_matrix))), prog_bar=True)
        self.log("val_loss", self.val_loss_mean)  # for the tracking logger (history.csv has it anyway)

    # fastai's fine_tune: the encoder frozen for `freeze_epochs` (no gradient, and its BatchNorm layers in
    # eval mode so their running statistics stay the pretrained ones), then trained at lr x encoder_lr_mult
    def _apply_freeze(self):
        frozen = self.current_epoch < self.recipe.freeze_epochs
        for p in self.model.encoder.parameters():
            p.requires_grad_(not frozen)
        for m in self.model.encoder.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train(self.model.training and not frozen)

    def on_validation_model_train(self):
        super().on_validation_model_train()  # Lightning puts every layer back in train mode here
        if self.recipe.freeze_epochs:
            self._apply_freeze()

    def configure_optimizers(self):
        return build_optimizer(self.model, self.recipe, self.steps_per_epoch)


def _computed(mean: MeanMetric) -> float:
    """A MeanMetric's value over all processes; NaN when nothing was added."""
    if mean.update_count == 0 and not torch.distributed.is_initialized():
        return float("nan")
    value = float(mean.compute())
    return value if math.isfinite(value) else float("nan")
