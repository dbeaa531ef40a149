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
    "cpu_has_bf16",
    "auto_precision",
    "usable_cpus",
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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX-512 BF16 (Intel Cooper Lake and later, AMD
    Zen 4 and later) or AMX (Intel Sapphire Rapids and later), as PyTorch's CPU dispatcher detects them
    (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``). On a CPU without them,
    bf16 autocast is emulated and slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def auto_precision(accelerator: str) -> str:
    """Lightning precision for ``train.precision=auto`` on ``accelerator`` (``gpu``, ``cpu``, ``mps``).

    * GPU: ``bf16-mixed`` where the GPU supports bfloat16 (compute capability 8.0 and later:
      ``torch.cuda.is_bf16_supported``), else ``16-mixed`` (float16 autocast with a gradient scaler);
    * CPU: ``bf16-mixed`` (bfloat16 autocast, weights and optimiser state stay float32) on CPUs with
      AVX-512 BF16 or AMX (:func:`cpu_has_bf16`), else ``32-true``;
    * anything else: ``32-true``.

    It depends on the machine only, never on the model: every candidate of a comparison trains at
    the same precision. The choice is recorded in each ``train_meta.json`` and in the report.
    """
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator == "cpu":
        return "bf16-mixed" if cpu_has_bf16() else "32-true"
    return "32-true"


def usable_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (what ``taskset``, cgroups' cpusets and
    SLURM's ``--cpus-per-task`` leave it; ``os.sched_getaffinity``), capped by ``SLURM_CPUS_PER_TASK``
    when set; ``os.cpu_count()`` where affinity is unknown (macOS, Windows)."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        n = min(n, int(slurm))
    return max(1, n)


def usable_memory_mb() -> float:
    """Memory (MB) this process can still use: the smaller of the free RAM (``MemAvailable`` of
    ``/proc/meminfo``) and the cgroup's limit minus its usage (a container, a SLURM job); 8000 when
    neither can be read."""
    avail = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) / 1024
    except OSError:
        pass
    for limit_f, usage_f in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = open(limit_f).read().strip()
            if limit != "max" and int(limit) < 1 << 60:
                left = (int(limit) - int(open(usage_f).read().strip())) / 2**20
                avail = left if avail is None else min(avail, left)
            break
        except (OSError, ValueError):
            continue
    return float(avail) if avail is not None else 8000.0
