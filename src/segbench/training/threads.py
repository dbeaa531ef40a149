"""Threads and DataLoader workers of one training job, from the cores it is given.

A training job is given ``C`` cores: ``--threads`` (the workflow passes Snakemake's ``threads`` of the
rule: all cores of a workstation, one job at a time; ``--cpus-per-task`` on SLURM, see
``workflow/profiles/slurm``), else the cores this process may run on
(:func:`segbench.device.usable_cpus`: its affinity mask and ``SLURM_CPUS_PER_TASK``, never the whole
node); with ``train.devices=N`` CPU processes (DDP), each plans for ``C // N``. The job then never runs
more busy threads than ``C``, so two jobs sharing a node do not
oversubscribe it:

* DataLoader workers (``train.num_workers=auto``): on the CPU, 0 with 1 or 2 cores (a worker would
  take a core from the convolutions, which are most of the work: decoding and augmenting a CamVid
  frame costs about 6 ms, a training step of U-Net/ResNet-18 about 50 ms per image on 2 cores), else
  ``C // 4`` (at most 8); on a GPU ``min(8, C - 1)`` (the GPU computes; the cores decode);
* PyTorch's intra-op threads: ``C`` minus the ``auto`` workers (at least 1), each worker running one
  (PyTorch's DataLoader sets it); with a number of workers set by hand, ``C`` (the workers share the
  job's cores, as the user chose). Inter-op threads: 1 (the models run their layers one after another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CpuPlan", "cpu_plan"]


@dataclass(frozen=True)
class CpuPlan:
    """The cores of one job and how they are used (recorded in ``train_meta.json``)."""

    cores: int
    torch_threads: int
    num_workers: int
    source: str  # where ``cores`` came from: "--threads" or "affinity"

    def apply(self) -> None:
        """Set PyTorch's intra-op threads (and inter-op threads, when still possible)."""
        import torch

        torch.set_num_threads(self.torch_threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or parallel work has started: leave it
            pass

    def as_dict(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "torch_threads": self.torch_threads,
            "num_workers": self.num_workers,
            "cores_from": self.source,
        }


def cpu_plan(threads: int | None, num_workers: int | str, accelerator: str, processes: int = 1) -> CpuPlan:
    """The plan for one process of a job given ``threads`` cores (None: :func:`segbench.device.usable_cpus`).

    Args:
        threads: the cores the job is given (``segbench train --threads``), or None.
        processes: the job's processes on this machine (DDP on the CPU: ``train.devices``); each
            process plans for its share of the cores.
        num_workers: ``train.num_workers``: a number (kept as it is) or ``"auto"`` (module docstring).
        accelerator: Lightning's accelerator of the job (``cpu``, ``gpu``, ``mps``).

    Raises:
        ValueError: ``num_workers`` is neither a non-negative number nor ``auto``.
    """
    from ..device import usable_cpus

    cores, source = (int(threads), "--threads") if threads else (usable_cpus(), "affinity")
    cores = max(1, cores // max(1, processes) if accelerator == "cpu" else cores)
    if num_workers == "auto":
        if accelerator == "cpu":
            workers = 0 if cores <= 2 else min(8, cores // 4)
        else:
            workers = min(8, max(0, cores - 1))
    else:
        try:
            workers = int(num_workers)
        except (TypeError, ValueError):
            raise ValueError(f"train.num_workers={num_workers!r}; give a number of workers or auto") from None
        if workers < 0:
            raise ValueError(f"train.num_workers={workers}; give 0 or more workers, or auto")
        return CpuPlan(cores, cores, workers, source)  # the user's workers share the job's cores
    return CpuPlan(cores, max(1, cores - workers), workers, source)
