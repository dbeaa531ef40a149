"""Softmax-averaging ensembles of the top-k models, scored like single models.

The members are the ``k`` best models on the pooled validation criterion (:mod:`segbench.select`;
validation only, never test). For each fold, the fold's member checkpoints are combined into one
:class:`EnsembleModel` whose output is ``log(mean_m softmax(logits_m))``: its argmax is the argmax of
the averaged class probabilities (the usual "soft voting" of nnU-Net and Auto3DSeg), and resizing or
blending it behaves like logits. It is then evaluated by :func:`segbench.evaluate.evaluate_loaded` on
the same validation and test images as every model, so selection treats it as one more candidate:
it wins only if it wins under the same criterion and constraints.

Files: ``models/ensemble_top<k>/fold<f>/model.json`` (``{"ensemble": [{"name", "path"}], ...}``, members
copied beside it so the folder is self-contained) and ``ensemble.json`` (members, parameters), and
the usual ``eval/ensemble_top<k>/fold<f>/`` outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_dir, atomic_write_json

__all__ = ["EnsembleModel", "rank_members", "build_ensemble"]


class EnsembleModel(torch.nn.Module):
    """Average of the members' softmax probabilities, returned as log-probabilities.

    Input ``float32[N, 3, H, W]``; output ``float32[N, C, H, W]`` (all members must predict the same C
    classes at the input's size, as every segbench backend does).
    """

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


def rank_members(experiment_dir: str | Path, models: list[str], n_folds: int, criterion: str = "mIoU",
                 background: int | None = None) -> list[tuple[str, float]]:
    """``[(model, pooled validation score)]`` best first, from ``eval/<model>/fold*/val_confusion.npy``.

    Raises:
        FileNotFoundError: a validation confusion matrix is missing (names it).
    """
    from .select import criterion_score

    exp = Path(experiment_dir)
    scores = []
    for name in models:
        paths = [exp / "eval" / name / f"fold{k}" / "val_confusion.npy" for k in range(n_folds)]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found; evaluate the models first (segbench evaluate)")
        cm = np.sum([np.load(p) for p in paths], axis=0)
        s = criterion_score(cm, criterion, background) if cm.sum() else float("nan")
        scores.append((name, -np.inf if np.isnan(s) else s))
    return sorted(scores, key=lambda t: (-t[1], t[0]))


def build_ensemble(experiment_dir: str | Path, models: list[str], fold: int, n_folds: int, top_k: int,
                   criterion: str = "mIoU", background: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Write ``models/ensemble_top<k>/fold<fold>/`` (members copied in) and return ``(folder, info)``.

    Raises:
        ValueError: fewer than 2 models, or members with different input size or classes.
    """
    exp = Path(experiment_dir)
    if len(models) < 2 or top_k < 2:
        raise ValueError(f"an ensemble needs at least 2 models (top_k={top_k}, models={models})")
    ranked = rank_members(exp, models, n_folds, criterion, background)[:top_k]
    names = [n for n, _ in ranked]
    infos = [json.loads((exp / "models" / n / f"fold{fold}" / "model.json").read_text()) for n in names]
    first = infos[0]
    for n, inf in zip(names[1:], infos[1:]):
        for key in ("image_size", "num_classes", "normalize"):
            if inf.get(key) != first.get(key):
                raise ValueError(f"cannot ensemble {names[0]} and {n}: different {key} ({first.get(key)} vs {inf.get(key)}); "
                                 f"train them with the same recipe")
    params = sum(json.loads((exp / "models" / n / f"fold{fold}" / "train_meta.json").read_text())["parameters"] for n in names)
    name = f"ensemble_top{top_k}"
    out = exp / "models" / name / f"fold{fold}"
    info = {k: first[k] for k in ("num_classes", "classes", "ignore_index", "image_size", "normalize", "dataset") if k in first}
    info.update({"model": {"name": name, "library": "ensemble", "members": names}, "fold": fold,
                 "ensemble": [{"name": n, "path": f"members/{n}"} for n in names]})
    meta = {"model": name, "library": "ensemble", "fold": fold, "parameters": params, "members": names,
            "member_val_scores": {n: s for n, s in ranked}, "criterion": criterion}
    with atomic_dir(out) as tmp:
        for n in names:
            (tmp / "members" / n).mkdir(parents=True)
            for f in ("model.json", "model.safetensors"):
                shutil.copyfile(exp / "models" / n / f"fold{fold}" / f, tmp / "members" / n / f)
        atomic_write_json(tmp / "model.json", info)
        atomic_write_json(tmp / "ensemble.json", meta)
    return out, info
