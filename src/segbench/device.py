"""Devices: segbench's ``device`` setting, torch device strings, timing and peak memory.

``device`` (the experiment's top-level key) is one of ``auto`` (a CUDA GPU when one is visible, else
the CPU), ``cpu``, ``cuda``, ``cuda:K`` or ``mps``. Training maps it to Lightning's
``(accelerator, devices)``; evaluation and prediction to a torch device string.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "resolve_device",
    "device_of",
    "synchronize",
    "reset_peak_memory",
    "peak_memory_mb",
    "peak_gpu_memory_mib",
]


def resolve_device(device: str) -> tuple[str, Any]:
    """Map segbench's ``device`` to Lightning's ``(accelerator, devices)``.

    Returns:
        ``("gpu", 1)``, ``("gpu", [K])``, ``("cpu", 1)`` or ``("mps", 1)``.

    Raises:
        RuntimeError: a CUDA device is asked for and none is visible.
        ValueError: an unknown setting (lists the allowed ones).
    """
    if device == "auto":
        return ("gpu", 1) if torch.cuda.is_available() else ("cpu", 1)
    if device == "cpu":
        return "cpu", 1
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device} but no CUDA GPU is visible; use device=auto or device=cpu")
        return "gpu", [int(device.split(":")[1])] if ":" in device else 1
    if device == "mps":
        return "mps", 1
    raise ValueError(f"device '{device}' unknown; allowed values: auto, cpu, cuda, cuda:K, mps")


def device_of(device_cfg: str) -> str:
    """torch device string (``cpu``, ``cuda``, ``cuda:K``, ``mps``) for segbench's ``device`` setting."""
    accel, devices = resolve_device(device_cfg)
    if accel == "gpu":
        return f"cuda:{devices[0]}" if isinstance(devices, list) else "cuda"
    return accel


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (so a wall-clock time covers it); nothing on other devices."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    """Start measuring peak GPU memory afresh (no-op on CPU, where the process's peak RSS is used)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_memory_mib(device: str) -> float | None:
    """Peak GPU memory allocated by torch since the last reset (MiB); None off the GPU."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else None


def peak_memory_mb(device: str) -> float:
    """Peak memory: GPU memory allocated by torch on a GPU (MiB), else the process's peak RSS (MB, Linux)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
