"""The one image reader of training, evaluation, the report and ``segbench predict``.

One rule everywhere: images are read with Pillow, their EXIF orientation applied
(``ImageOps.exif_transpose``), and converted to 8-bit RGB (greyscale, palette, RGBA with the alpha
dropped, CMYK). 16- and 32-bit single-channel images are refused with the fix, since the models
take 8-bit RGB and a silent conversion would clip them. Masks are single-channel class indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageInputError", "read_image", "read_mask", "IMAGE_EXTS"]

#: image file types segbench reads (lower-case suffixes)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


class ImageInputError(ValueError):
    """An image segbench cannot use; the message names the file and the fix."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8[H, W, 3]`` RGB with its EXIF orientation applied.

    Raises:
        ImageInputError: unreadable file, or a 16/32-bit single-channel image (the message shows how
            to convert it, choosing the intensity window).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in _HIGH_BIT_MODES:
                bits = "16" if im.mode.startswith("I;16") else "32"
                raise ImageInputError(
                    f"{path}: {im.mode} ({bits}-bit) single-channel image; the models take 8-bit RGB. "
                    "Convert it "
                    f'first, choosing the intensity window yourself, e.g. python -c "from PIL import Image; '
                    f"import numpy as np; a=np.asarray(Image.open('{path.name}')).astype(float); "
                    f"Image.fromarray((255*(a-a.min())/(np.ptp(a) or 1)).astype('uint8')).convert('RGB')"
                    f".save('{path.stem}_8bit.png')\""
                )
            return np.asarray(im.convert("RGB"))
    except ImageInputError:
        raise
    except Exception as err:
        raise ImageInputError(f"{path}: cannot read the image ({err}); check the file") from err


def read_mask(path: str | Path) -> np.ndarray:
    """Read a canonical mask (single-channel PNG of class indices) as ``int64[H, W]``."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)
