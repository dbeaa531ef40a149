"""Importing Lightning: torchvision's CPU-wheel workaround must run first (see :mod:`segbench._compat`)."""

from __future__ import annotations

from types import ModuleType

from .._compat import import_torchvision

__all__ = ["lightning"]


def lightning() -> ModuleType:
    """The ``lightning`` package, imported after :func:`segbench._compat.import_torchvision`
    (lightning -> torchmetrics -> torchvision)."""
    import_torchvision()
    import lightning as L

    return L
