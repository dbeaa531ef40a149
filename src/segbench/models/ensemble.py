"""The softmax-averaging ensemble as a model: :class:`EnsembleModel`."""

from __future__ import annotations

import torch

__all__ = ["EnsembleModel"]


class EnsembleModel(torch.nn.Module):
    """Average of the members' softmax probabilities, returned as log-probabilities.

    ``log(mean_m softmax(logits_m))``: its argmax is the argmax of the averaged class probabilities
    (the "soft voting" of nnU-Net and Auto3DSeg), and resizing or blending it behaves like logits.

    Input ``float32[N, 3, H, W]``; output ``float32[N, C, H, W]`` (all members must predict the same C
    classes at the input's size, as every segbench backend does).

    Raises:
        ValueError: fewer than 2 members.
    """

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()
