"""Trained models on disk: ``model.json`` + ``model.safetensors``, written by training, read by
evaluation, ensembles, ``best/`` and ``segbench predict``.

The weights are plain tensors (safetensors: loading them runs no code); ``model.json`` holds the
model config that rebuilds the architecture (:func:`segbench.models.architecture_config`: without
the start weights or the training recipe, so a trained model loads on a machine that has neither).
An ensemble's ``model.json`` lists its members' folders instead.

Example:
    >>> from segbench.models.checkpoint import load_trained_model            # doctest: +SKIP
    >>> model, info = load_trained_model("results/camvid_quick/best")        # doctest: +SKIP
    >>> model(torch.zeros(1, 3, *info["image_size"])).shape[1] == info["num_classes"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..io import atomic_path
from ..records import ModelInfo, StageOutputMissing, read_model_info

__all__ = ["load_trained_model", "save_weights"]


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors, atomically (tensors made contiguous, on the CPU)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def load_trained_model(ckpt_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ModelInfo]:
    """Rebuild a trained model from ``model.json`` + ``model.safetensors`` in ``ckpt_dir`` (or, for an
    ensemble, from the member folders its ``model.json`` lists).

    Args:
        ckpt_dir: ``results/<experiment>/best``, ``results/<experiment>/models/<model>/fold<k>/seed<s>``,
            or a copy.
        device: torch device string.

    Returns:
        ``(model in eval mode on device, model.json content)``; the model maps ``float32[N, 3, H, W]``
        to logits ``float32[N, C, H, W]``. Its weights are in the memory format it trained in
        (``model.json`` ``memory_format``; channels-last ran U-Net's float32 inference at batch 1 in
        39 ms instead of 70 ms on 2 CPU cores); :func:`segbench.inference.segment` feeds it input in
        the same format. The values, and so the logits up to float rounding, do not depend on it.

    Raises:
        FileNotFoundError: either file is missing (names it and the step that writes it).
        segbench.records.RecordError: ``model.json`` is malformed or names no model segbench can
            build, ``model.safetensors`` is not valid safetensors, or its tensors do not fit the
            architecture ``model.json`` names (names the files).
    """
    from . import architecture_config, create_model
    from .base import read_safetensors

    ckpt_dir = Path(ckpt_dir)
    info = read_model_info(ckpt_dir)
    if info.get("ensemble"):  # a softmax-averaging ensemble: members in sub-folders (see segbench.ensemble)
        from .ensemble import EnsembleModel

        members = [load_trained_model(ckpt_dir / m["path"], device)[0] for m in info["ensemble"]]
        return EnsembleModel(members).to(device).eval(), info
    weights = ckpt_dir / "model.safetensors"
    if not weights.is_file():
        raise StageOutputMissing(weights)
    model_cfg: dict[str, Any] = architecture_config(
        info["model"]
    )  # the trained weights replace any start weights
    try:
        model = create_model(num_classes=info["num_classes"], **model_cfg)
    except (KeyError, ValueError, TypeError) as err:  # an unknown library, architecture or encoder
        from ..records import RecordError

        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise RecordError(
            f"{ckpt_dir / 'model.json'}: its model config does not build a model ({str(msg)[:300]}); "
            "copy model.json and model.safetensors again from the same model folder"
        ) from None
    try:
        model.load_state_dict(read_safetensors(weights))
    except RuntimeError as err:  # missing, unexpected or differently shaped tensors
        from ..records import RecordError

        detail = str(err).strip().splitlines()
        raise RecordError(
            f"{weights} does not fit the model that {ckpt_dir / 'model.json'} describes "
            f"({info['model'].get('name') or info['model'].get('arch') or info['model'].get('library')}): "
            f"{detail[1].strip()[:200] if len(detail) > 1 else detail[0][:200]}; the two files come from "
            "different trainings: copy both from the same model folder"
        ) from None
    if info.get("memory_format") == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model.to(device).eval(), info
