"""The torch Dataset over a canonical dataset, with albumentations transforms.

Images and masks are read by :mod:`segbench.images` (the reader evaluation and ``segbench predict``
use: RGB, EXIF orientation applied), masks as class indices. The transform pipeline is: resize to the
training size (image: bilinear, mask: nearest) -> the configured
augmentations -> normalisation -> CHW float32 tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch

from ..images import read_image, read_mask

__all__ = ["SegmentationDataset", "build_transform", "read_image", "read_mask", "seed_worker"]


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


def build_transform(
    augment: dict[str, Any], image_size: Sequence[int], train: bool, seed: int | None = None
) -> A.Compose:
    """albumentations pipeline from the ``augment`` config.

    Args:
        augment: ``{"train": [{"name": <albumentations class>, **kwargs}], "normalize": {mean, std, ...}}``.
        image_size: ``[height, width]`` the network sees.
        train: apply the ``train`` augmentations (False for validation/evaluation).
        seed: seed of the pipeline's random state. albumentations 2.x keeps its own RNG, untouched
            by ``random.seed``/``np.random.seed``/``torch.manual_seed``: without it two runs with the
            same experiment seed augment differently and train different models.

    Raises:
        ValueError: an unknown transform name (lists where to look) or bad arguments.
    """
    h, w = int(image_size[0]), int(image_size[1])
    steps: list[Any] = [A.Resize(h, w, interpolation=1, mask_interpolation=0)]
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
    """

    def __init__(self, root: str | Path, manifest: dict[str, Any], ids: Sequence[str], transform: A.Compose):
        self.root = Path(root)
        self.manifest = manifest
        self.ids = list(ids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.manifest[self.ids[i]]
        image = read_image(self.root / entry["image"])
        mask = read_mask(self.root / entry["mask"])
        out = self.transform(image=image, mask=mask)
        x = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))).float()
        y = torch.from_numpy(np.ascontiguousarray(out["mask"])).long()
        return x, y
