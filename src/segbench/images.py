"""The one image reader of training, evaluation, the report and ``segbench predict``.

One rule everywhere (convert, validate, training, evaluation, the report, ``segbench predict``):
an image is taken **as displayed**, its EXIF orientation applied (``ImageOps.exif_transpose``), so
masks and annotations must match the displayed image, as LabelMe, CVAT and detectron2 draw and read
them. :func:`displayed_size` is the size every check compares with. Images are converted to 8-bit RGB
(greyscale, palette, RGBA with the alpha dropped, CMYK). 16- and 32-bit single-channel images are
refused with the fix (:func:`check_image_mode`), since the models take 8-bit RGB and a silent
conversion would clip them. Masks are single-channel class indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "ImageInputError",
    "read_image",
    "read_mask",
    "IMAGE_EXTS",
    "LOSSY_MASK_EXTS",
    "exif_orientation",
    "displayed_size",
    "orientation_hint",
    "check_image_mode",
]

#: mask file types whose compression changes pixel values (class ids smeared at edges)
LOSSY_MASK_EXTS = {".jpg", ".jpeg", ".jpe", ".jfif"}

#: EXIF orientations (TIFF tag 274) that turn the image by 90 degrees: width and height swap
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_WORDS = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped upside down",
    5: "mirrored and rotated 90 degrees",
    6: "rotated 90 degrees clockwise",
    7: "mirrored and rotated 90 degrees",
    8: "rotated 90 degrees counter-clockwise",
}

#: image file types segbench reads (lower-case suffixes)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


class ImageInputError(ValueError):
    """An image segbench cannot use; the message names the file and the fix."""


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (TIFF tag 274, 1..8) of an opened image; 1 (as stored) when it has none.

    Reads the tag only, not the pixels."""
    try:
        value = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block: Pillow's exif_transpose ignores it too
        return 1
    return value if 1 <= value <= 8 else 1


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image as displayed: its EXIF orientation applied (an
    orientation of 5..8 swaps the stored width and height), the size :func:`read_image` returns."""
    w, h = im.size
    return (h, w) if exif_orientation(im) in _TRANSPOSED else (w, h)


def orientation_hint(im: Image.Image, other_wh: tuple[int, int]) -> str:
    """A sentence for a size-mismatch message when the image carries an EXIF orientation, else "".

    When ``other_wh`` (the size of the mask or what the annotation states) equals the *stored* size,
    the annotation was made on the unrotated pixels: say so, and how to fix it."""
    o = exif_orientation(im)
    if o == 1:
        return ""
    words = _ORIENTATION_WORDS.get(o, f"orientation {o}")
    stored = im.size
    text = (
        f" The image carries EXIF orientation {o} ({words}): segbench, like LabelMe, CVAT and "
        f"detectron2, uses every image as displayed ({displayed_size(im)[0]}x{displayed_size(im)[1]})"
    )
    if tuple(other_wh) == tuple(stored) and stored != displayed_size(im):
        text += (
            f", but the annotation matches the stored, unrotated {stored[0]}x{stored[1]} pixels: "
            "annotate the image as displayed, or remove the orientation tag from the image if the "
            "annotation is right (e.g. exiftool -Orientation= FILE, on a copy)"
        )
    return text + "."


def check_image_mode(im: Image.Image, path: str | Path) -> None:
    """Refuse a 16- or 32-bit single-channel image (mode I;16, I, F): the models take 8-bit RGB, and
    converting it silently would clip it to white. Refuse a multi-page file (TIFF stack), of which
    only the first page would be read.

    Raises:
        ImageInputError: naming the file; for high-bit images with a one-line conversion that makes the
            user choose the intensity window.
    """
    path = Path(path)
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        raise ImageInputError(
            f"{path}: a multi-page image ({frames} pages, e.g. a TIFF stack); segbench takes one 2-D "
            "image per file: save each page as its own file"
        )
    if im.mode not in _HIGH_BIT_MODES:
        return
    bits = "16" if im.mode.startswith("I;16") else "32"
    raise ImageInputError(
        f"{path}: {im.mode} ({bits}-bit) single-channel image; the models take 8-bit RGB. Convert it "
        f'first, choosing the intensity window yourself, e.g. python -c "from PIL import Image; '
        f"import numpy as np; a=np.asarray(Image.open('{path.name}')).astype(float); "
        f"Image.fromarray((255*(a-a.min())/(np.ptp(a) or 1)).astype('uint8')).convert('RGB')"
        f".save('{path.stem}_8bit.png')\""
    )


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8[H, W, 3]`` RGB with its EXIF orientation applied.

    Raises:
        ImageInputError: unreadable file, or a 16/32-bit single-channel image (the message shows how
            to convert it, choosing the intensity window).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            check_image_mode(im, path)
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except ImageInputError:
        raise
    except Exception as err:
        raise ImageInputError(f"{path}: cannot read the image ({err}); check the file") from err


def read_mask(path: str | Path) -> np.ndarray:
    """Read a canonical mask (single-channel PNG of class indices) as ``int64[H, W]``."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)
