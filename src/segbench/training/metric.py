"""segbench's confusion matrix as a ``torchmetrics.Metric``: one kernel, summed over DDP processes.

The state is an ``int64[C, C]`` matrix (rows = ground truth) declared once with
``add_state(..., dist_reduce_fx="sum")``, so torchmetrics sums it over the processes of a DDP job
when :meth:`compute` is called (each validation image is scored by exactly one process). The counts
come from :func:`segbench.metrics.confusion_matrix`, the kernel evaluation uses, so validation during
training and the evaluation step count pixels the same way.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from ..metrics import confusion_matrix

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix(Metric):
    """Dataset-level confusion matrix, torchmetrics-style: ``update(preds, target)``, then ``compute()``.

    Args:
        num_classes: number of classes ``C``.
        ignore_index: ground-truth label left out (default 255); ``None`` for none.

    ``update(preds, target)``: integer class maps of one shape (``[N, H, W]`` or any), on any device.
    ``compute()``: the accumulated ``int64[C, C]`` tensor (summed over processes under DDP).

    Example:
        >>> cm = ConfusionMatrix(num_classes=2)
        >>> cm.update(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]))
        >>> cm.compute().tolist()
        [[1, 0], [1, 1]]
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(self.num_classes, self.num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        counts = confusion_matrix(target, preds, self.num_classes, self.ignore_index)
        self.confmat += torch.from_numpy(counts).to(self.confmat.device)

    def compute(self) -> torch.Tensor:
        return self.confmat
