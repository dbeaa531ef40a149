"""Class colours shared by the report and `segbench predict`, so an overlay means the same everywhere."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["class_palette"]


def class_palette(classes: list[dict[str, Any]]) -> np.ndarray:
    """``uint8[max(256, C), 3]`` RGB colours: each class's declared ``color``, else matplotlib's tab20
    (cycled). Rows past the classes are black."""
    from matplotlib import colormaps

    tab20 = (np.array(colormaps["tab20"].colors) * 255).round().astype(np.uint8)
    pal = np.zeros((max(256, len(classes)), 3), np.uint8)
    for i, c in enumerate(classes):
        pal[i] = c["color"] if c.get("color") else tab20[i % len(tab20)]
    return pal
