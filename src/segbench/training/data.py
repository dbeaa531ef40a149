"""The training and validation data of one fold: a ``LightningDataModule``.

The datasets are built when the module is made (so the random-number draws of a run happen in
the same order every time); the loaders are built once the processes exist, so that with DDP each
process draws its own share: training through a seeded ``DistributedSampler``, validation through
Lightning's unrepeated one (every validation image scored exactly once, then the confusion summed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..data.dataset import ResizedCache, SegmentationDataset, build_transform, seed_worker
from ..records import DatasetMeta, Fold
from .recipe import Placement, TrainRecipe
from .runtime import lightning

__all__ = ["SegmentationDataModule", "RESIZED_CACHE_MB"]

L = lightning()

#: memory budget (MB) of the job's cache of resized images and masks (training and validation share
#: it; :class:`segbench.data.dataset.ResizedCache`)
RESIZED_CACHE_MB = 1024.0


class SegmentationDataModule(L.LightningDataModule):
    """Training and validation loaders of one fold.

    Args:
        root: the canonical dataset folder.
        meta: its ``dataset.json``.
        ids: the fold's ``{"train": [...], "val": [...]}``.
        augment: the augmentation recipe (``config/augment/``).
        recipe: the training recipe (batch size, image size, workers, seed).
        placement: where training runs; its number of processes (DDP when > 1) sets
            :meth:`steps_per_epoch` (None: one process).

    Attributes:
        generator: the training loader's seeded ``torch.Generator`` (its state is part of a resume).
        train_set, val_set: :class:`segbench.data.dataset.SegmentationDataset`.
        cache: the images and masks read so far, resized (:class:`segbench.data.dataset.ResizedCache`,
            :data:`RESIZED_CACHE_MB`): read from disk in the first epoch only.
    """

    def __init__(
        self,
        root: Path,
        meta: DatasetMeta,
        ids: Fold,
        augment: dict[str, Any],
        recipe: TrainRecipe,
        placement: Placement | None = None,
    ):
        super().__init__()
        self.root, self.meta, self.ids, self.augment, self.recipe = Path(root), meta, ids, augment, recipe
        self.world_size = placement.world_size if placement is not None else 1
        # a rescaled copy (recipe.scale) is padded and cropped to the patch by the pipeline, never resized:
        # random patches of larger images (recipe.crop), the whole padded image of one that fits
        self.crop = (
            {"foreground_share": recipe.foreground_share, "background": meta.get("background"),
             "ignore_index": int(meta["ignore_index"])}
            if recipe.scale is not None
            else None
        )  # fmt: skip
        self.cache = ResizedCache(None if self.crop else recipe.image_size, RESIZED_CACHE_MB)
        self.train_set = self._train_set()
        val_transform = build_transform(augment, recipe.image_size, train=False, crop=self.crop)
        self.val_set = SegmentationDataset(self.root, meta["manifest"], ids["val"], val_transform, self.cache)
        self.generator = torch.Generator().manual_seed(recipe.seed)

    def _train_set(self) -> SegmentationDataset:
        transform = build_transform(
            self.augment, self.recipe.image_size, train=True, seed=self.recipe.seed, crop=self.crop
        )
        return SegmentationDataset(self.root, self.meta["manifest"], self.ids["train"], transform, self.cache)

    def restart_augmentation(self) -> None:
        """A fresh training set, its albumentations generators back at their seeded start."""
        self.train_set = self._train_set()

    @property
    def train_transform(self):
        return self.train_set.transform

    @property
    def has_val(self) -> bool:
        return len(self.ids["val"]) > 0

    def _drop_last(self) -> bool:
        return len(self.train_set) > self.recipe.batch_size * self.world_size

    def steps_per_epoch(self) -> int:
        """Optimiser steps of each process per epoch (incomplete last batches dropped when there are more)."""
        n, bs, world = len(self.train_set), self.recipe.batch_size, self.world_size
        per_process = n // world if self._drop_last() else math.ceil(n / world)
        return max(1, per_process // bs if self._drop_last() else math.ceil(per_process / bs))

    def train_dataloader(self) -> DataLoader:
        # workers are restarted every epoch (not persistent): each epoch's worker seeds then follow from the
        # loader generator alone, so a run resumed at an epoch boundary draws the same augmentations
        world, rank = self.trainer.world_size, self.trainer.global_rank
        drop = self._drop_last()
        sampler = None
        if world > 1:
            sampler = DistributedSampler(
                self.train_set,
                num_replicas=world,
                rank=rank,
                shuffle=True,
                seed=self.recipe.seed,
                drop_last=drop,
            )
        workers = self.recipe.num_workers
        return DataLoader(
            self.train_set,
            batch_size=self.recipe.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=drop,
            num_workers=workers,
            generator=self.generator,
            persistent_workers=False,
            worker_init_fn=seed_worker if workers > 0 else None,
        )

    def val_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = None
        if world > 1:
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(self.val_set, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            self.val_set,
            # whole rescaled images of different sizes (patch training) are scored one at a time
            batch_size=1 if self.crop else self.recipe.batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.recipe.num_workers,
        )
