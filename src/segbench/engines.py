"""Inference engines behind :func:`segbench.inference.segment`: an onnxruntime session and PyTorch under
bfloat16 autocast, each callable like the PyTorch model (``float32[N, 3, H, W]`` in, float32 logits out).

Used by evaluation (``evaluate.engine=onnxruntime``), ``segbench predict --engine onnxruntime`` /
``--bf16`` and the deployment variants (:mod:`segbench.deploy`). Kept in a module of their own so that a
change of the deployment step does not change the evaluation step's code fingerprint
(:mod:`segbench.provenance`), which would re-evaluate every model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["OrtModel", "Bf16Model"]


class OrtModel:
    """An onnxruntime session that :func:`segbench.inference.segment` can call like a PyTorch model.

    Args:
        path: the ``.onnx`` file (input ``image`` float32 NCHW, output ``logits`` [N, C, H, W]).
        threads: onnxruntime's intra-op threads (None: onnxruntime's default, one per core).
        providers: execution providers (default: CUDA when onnxruntime has it and ``cuda`` is asked,
            else the CPU provider).

    Calling it with ``float32[N, 3, H, W]`` (a torch tensor) returns the logits as a float32 torch
    tensor on the CPU. It has no parameters (the memory format of :mod:`segbench.inference` is NCHW).

    Raises:
        onnxruntime's errors for a file that is not a valid model.
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.threads = threads
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
        self.providers = self.session.get_providers()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(
            self.session.run(["logits"], {"image": arr})[0].astype(np.float32, copy=False)
        )

    def parameters(self):
        """No torch parameters (an empty iterator)."""
        return iter(())

    def eval(self) -> OrtModel:
        return self


class Bf16Model(torch.nn.Module):
    """A trained PyTorch model run under bfloat16 autocast (``torch.autocast``); logits as float32.

    Args:
        model: the model (eval mode) on ``device``.
        device: ``cpu`` or ``cuda[:k]``.
    """

    def __init__(self, model: torch.nn.Module, device: str):
        super().__init__()
        self.model = model
        self.device_type = "cuda" if str(device).startswith("cuda") else "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x).float()
