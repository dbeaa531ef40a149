"""The torch Dataset over a canonical dataset, with albumentations transforms.

Images and masks are read by :mod:`segbench.images` (the reader evaluation and ``segbench predict``
use: RGB, EXIF orientation applied), masks as class indices. The transform pipeline is: resize to the
training size (image: bilinear, mask: nearest) -> the configured
augmentations -> normalisation -> CHW float32 tensor.

The first step is deterministic, so a :class:`ResizedCache` can keep each image and mask as decoded
and resized, and later epochs skip reading and resizing: the pipeline's own resize then returns the
already-resized arrays unchanged (albumentations' ``resize`` does for an image of the target size), and
it draws no random number, so the augmentations and every value are the same with or without the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch

from ..images import read_image, read_mask

__all__ = [
    "ResizedCache",
    "SegmentationDataset",
    "build_transform",
    "read_image",
    "read_mask",
    "resize_step",
    "seed_worker",
]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's albumentations pipeline its own seed.

    Each worker gets a copy of the dataset, so with ``Compose(seed=...)`` all workers would draw the
    same augmentations. torch's per-worker seed (``get_worker_info().seed``) is distinct per worker
    and epoch and derived from the DataLoader's seeded generator, so runs stay reproducible.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(info.seed % 2**32))


def resize_step(image_size: Sequence[int]) -> A.Resize:
    """The first step of every pipeline: resize to ``image_size = [height, width]``, the image bilinearly
    (OpenCV ``INTER_LINEAR``), the mask by nearest neighbour (``INTER_NEAREST``: no invented class ids)."""
    return A.Resize(int(image_size[0]), int(image_size[1]), interpolation=1, mask_interpolation=0)


class ResizedCache:
    """Images and masks as read and resized to the training size, kept in memory across epochs.

    A training job reads every image once per epoch; decoding a CamVid image and mask (PNG, 960x720) took
    4.6 ms per pair on 2 CPU cores, 2.4 s of every U-Net epoch (profile of the default job). The cache
    holds the image ``uint8[h, w, 3]`` and the mask (as :func:`segbench.images.read_mask` returns it) per
    id until ``max_mb`` megabytes are used (later ids are then read from disk every time), e.g. 530 CamVid
    images at 160x224 take 133 MB. It lives in the process that reads the data: with DataLoader workers
    (restarted every epoch), each worker's copy is discarded after its epoch, so it only saves time when
    the main process loads the data (``num_workers=0``, segbench's choice on 1 or 2 cores).

    Args:
        image_size: ``[height, width]`` to resize to (:func:`resize_step`).
        max_mb: memory budget in megabytes (10**6 bytes); 0 disables the cache.
    """

    def __init__(self, image_size: Sequence[int] | None, max_mb: float = 1024.0):
        # None: images kept as read (a rescaled copy that is cropped, not resized, by the pipeline)
        self.resize = resize_step(image_size) if image_size is not None else None
        self.max_bytes = int(max_mb * 1e6)
        self.bytes = 0
        self._items: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, root: Path, entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(image, mask)`` of a manifest entry, resized; copies, so no later step can change the cache.

        Raises:
            what :func:`segbench.images.read_image` and :func:`segbench.images.read_mask` raise.
        """
        key = (entry["image"], entry["mask"])
        item = self._items.get(key)
        if item is None:
            image, mask = read_image(root / entry["image"]), read_mask(root / entry["mask"])
            if self.resize is not None:
                out = self.resize(image=image, mask=mask)
                image, mask = out["image"], out["mask"]
            item = (image, mask)
            size = item[0].nbytes + item[1].nbytes
            if self.bytes + size <= self.max_bytes:
                self._items[key] = item
                self.bytes += size
        return item[0].copy(), item[1].copy()


def crop_steps(
    image_size: Sequence[int], train: bool, foreground_share: float, background: int | None, ignore_index: int
) -> list[Any]:
    """The first steps of a patch-training pipeline (images already rescaled:
    :mod:`segbench.data.preprocess`).

    Training: pad to at least the patch (image 0, mask ``ignore_index``), then an ``image_size`` crop:
    with probability ``foreground_share`` one containing a labelled non-background pixel
    (albumentations' ``CropNonEmptyMaskIfExists``, which falls back to any crop on a mask without
    one), else a uniform random crop, as nnU-Net oversamples foreground (``oversample_foreground_percent``).
    Validation: the whole image, padded to a multiple of 32 (scored where the mask is not padding).
    """
    h, w = int(image_size[0]), int(image_size[1])
    if not train:
        return [
            A.PadIfNeeded(
                min_height=None, min_width=None, pad_height_divisor=32, pad_width_divisor=32,
                position="top_left", border_mode=0, fill=0, fill_mask=ignore_index,
            )
        ]  # fmt: skip
    ignore = [v for v in (background, ignore_index) if v is not None]
    pad = A.PadIfNeeded(min_height=h, min_width=w, border_mode=0, fill=0, fill_mask=ignore_index)
    if foreground_share <= 0:
        return [pad, A.RandomCrop(h, w)]
    if foreground_share >= 1:
        return [pad, A.CropNonEmptyMaskIfExists(h, w, ignore_values=ignore)]
    return [
        pad,
        A.OneOf(
            [
                A.CropNonEmptyMaskIfExists(h, w, ignore_values=ignore, p=foreground_share),
                A.RandomCrop(h, w, p=1 - foreground_share),
            ],
            p=1.0,
        ),
    ]


def build_transform(
    augment: dict[str, Any],
    image_size: Sequence[int],
    train: bool,
    seed: int | None = None,
    crop: dict[str, Any] | None = None,
) -> A.Compose:
    """albumentations pipeline from the ``augment`` config.

    Args:
        augment: ``{"train": [{"name": <albumentations class>, **kwargs}], "normalize": {mean, std, ...}}``.
        image_size: ``[height, width]`` the network sees.
        train: apply the ``train`` augmentations (False for validation/evaluation).
        seed: seed of the pipeline's random state. albumentations 2.x keeps its own RNG, untouched
            by ``random.seed``/``np.random.seed``/``torch.manual_seed``: without it two runs with the
            same experiment seed augment differently and train different models.
        crop: patch training (:func:`crop_steps`: ``{foreground_share, background, ignore_index}``)
            instead of resizing every image to ``image_size``.

    Raises:
        ValueError: an unknown transform name (lists where to look) or bad arguments.
    """
    steps: list[Any] = (
        crop_steps(image_size, train, float(crop.get("foreground_share", 0.33)), crop.get("background"),
                   int(crop.get("ignore_index", 255)))
        if crop is not None
        else [resize_step(image_size)]
    )  # fmt: skip
    if train:
        for spec in augment.get("train") or []:
            spec = dict(spec)
            name = spec.pop("name")
            cls = getattr(A, name, None)
            if cls is None or not isinstance(cls, type):
                raise ValueError(
                    f"augment.train: '{name}' is not an albumentations transform "
                    f"(see https://albumentations.ai/docs/api-reference/)"
                )
            try:
                steps.append(cls(**spec))
            except TypeError as err:
                raise ValueError(f"augment.train: bad arguments for {name}: {err}") from err
    norm = augment.get("normalize") or {}
    steps.append(
        A.Normalize(
            mean=norm.get("mean", (0.485, 0.456, 0.406)),
            std=norm.get("std", (0.229, 0.224, 0.225)),
            max_pixel_value=norm.get("max_pixel_value", 255.0),
        )
    )
    return A.Compose(steps, seed=seed)


class SegmentationDataset(torch.utils.data.Dataset):
    """Items ``(image float32[3, H, W], mask int64[H, W])`` of the listed ids of a canonical dataset.

    Args:
        root: the canonical dataset folder (holding dataset.json).
        manifest: ``dataset.json['manifest']``.
        ids: which images to use.
        transform: an albumentations pipeline (see :func:`build_transform`).
        cache: a :class:`ResizedCache` at the pipeline's image size (None: read every time).
    """

    def __init__(
        self,
        root: str | Path,
        manifest: dict[str, Any],
        ids: Sequence[str],
        transform: A.Compose,
        cache: ResizedCache | None = None,
    ):
        self.root = Path(root)
        self.manifest = manifest
        self.ids = list(ids)
        self.transform = transform
        self.cache = cache

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.manifest[self.ids[i]]
        if self.cache is not None:
            image, mask = self.cache.get(self.root, entry)
        else:
            image, mask = read_image(self.root / entry["image"]), read_mask(self.root / entry["mask"])
        out = self.transform(image=image, mask=mask)
        x = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))).float()
        y = torch.from_numpy(np.ascontiguousarray(out["mask"])).long()
        return x, y
