"""Where segbench finds its own files (config/, workflow/) and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "shared_dir", "config_dir", "snakefile"]


def project_root() -> Path:
    """The segbench checkout holding config/ and workflow/.

    ``$SEGBENCH_ROOT`` if set, else the folder two levels above this package (``src/segbench``), which
    is the checkout for the editable install the README uses.

    Raises:
        FileNotFoundError: neither place holds ``workflow/Snakefile``.
    """
    env = os.environ.get("SEGBENCH_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (root / "workflow" / "Snakefile").is_file():
        raise FileNotFoundError(
            f"no workflow/Snakefile under {root}: install segbench from its checkout with "
            f"'pip install -e .' or set SEGBENCH_ROOT to the checkout"
        )
    return root


def shared_dir() -> Path:
    """The shared data folder: ``$SEGBENCH_SHARED``, default ``../shared`` beside the checkout."""
    env = os.environ.get("SEGBENCH_SHARED")
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()


def config_dir() -> Path:
    """The Hydra config folder (``<root>/config``)."""
    return project_root() / "config"


def snakefile() -> Path:
    """The workflow's Snakefile (``<root>/workflow/Snakefile``)."""
    return project_root() / "workflow" / "Snakefile"
