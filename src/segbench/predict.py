"""``segbench predict``: a trained model + images -> index masks and colour overlays.

The model is a folder holding ``model.json`` and ``model.safetensors``: an experiment's ``best/``, or
any ``models/<model>/fold<k>/``. Images are read with PIL, EXIF orientation applied. Greyscale,
palette, RGBA (alpha dropped) and CMYK images are converted to RGB; 16- and 32-bit single-channel
images are refused with the fix, since the models were trained on 8-bit RGB.

Outputs, for ``photo.jpg``: ``photo_mask.png`` (class indices, uint8; uint16 when > 256 classes) and
``photo_overlay.jpg`` (the class colours over the image). With one input and ``-o x.png`` the mask
is written to ``x.png`` and the overlay beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .data.convert import IMAGE_EXTS
from .evaluate import device_of, load_trained_model
from .inference import InferenceConfig, segment
from .io import atomic_path
from .palette import class_palette

__all__ = ["ImageInputError", "load_rgb", "predict_files", "list_images"]


class ImageInputError(ValueError):
    """An input image segbench cannot segment; the message names the file and the fix."""


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8[H, W, 3]`` RGB with its EXIF orientation applied.

    Raises:
        ImageInputError: unreadable file, or a 16/32-bit single-channel image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise ImageInputError(
                    f"{path}: {im.mode} ({'16' if im.mode.startswith('I;16') else '32'}-bit) single-channel image; the models "
                    f"take 8-bit RGB. Convert it first, choosing the intensity window yourself, e.g. "
                    f"python -c \"from PIL import Image; import numpy as np; a=np.asarray(Image.open('{path.name}')).astype(float); "
                    f"Image.fromarray((255*(a-a.min())/(np.ptp(a) or 1)).astype('uint8')).convert('RGB').save('{path.stem}_8bit.png')\"")
            return np.asarray(im.convert("RGB"))
    except ImageInputError:
        raise
    except Exception as err:
        raise ImageInputError(f"{path}: cannot read the image ({err}); check the file") from err


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive) into a sorted list of image files.

    Raises:
        ImageInputError: a path does not exist, or no image is found.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS and q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise ImageInputError(f"{p}: no such file or folder")
    if not files:
        raise ImageInputError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {', '.join(map(str, inputs))}")
    return files


def predict_files(model_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, inference: dict[str, Any] | None = None,
                  device: str = "auto", alpha: float = 0.5, progress: bool = True) -> list[dict[str, Any]]:
    """Segment images with a trained model and write masks and overlays.

    Args:
        model_dir: folder with ``model.json`` and ``model.safetensors``.
        inputs: image files and/or folders.
        out: output folder, or with a single input a ``.png`` path for the mask.
        inference: :class:`segbench.inference.InferenceConfig` keys (mode, scale, overlap, blend, flip ...).
        device: auto | cpu | cuda | cuda:K.
        alpha: overlay opacity of the class colours.
        progress: show a tqdm progress bar.

    Returns:
        One record per image: ``{image, mask, overlay, height, width, time_ms}``.

    Raises:
        FileNotFoundError: the model folder lacks its files.
        ImageInputError: unusable inputs (the message names the file); earlier outputs stay written.
    """
    import cv2
    from tqdm import tqdm

    files = list_images(inputs)
    out = Path(out)
    single = len(files) == 1 and out.suffix.lower() == ".png"
    dev = device_of(device)
    model, info = load_trained_model(model_dir, dev)
    cfg = InferenceConfig.from_dict(inference or {}, info["image_size"], info.get("normalize"))
    pal = class_palette(info["classes"])
    records = []
    for f in tqdm(files, desc="segbench predict", unit="image", disable=not progress):
        image = load_rgb(f)
        t0 = time.perf_counter()
        labels = segment(model, image, cfg, dev)
        dt = (time.perf_counter() - t0) * 1000
        mask_path = out if single else out / f"{f.stem}_mask.png"
        overlay_path = mask_path.with_name(f"{mask_path.stem}_overlay.jpg") if single else out / f"{f.stem}_overlay.jpg"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(mask_path) as tmp:
            Image.fromarray(labels).save(tmp, format="PNG")
        colours = pal[np.minimum(labels, len(pal) - 1)]
        overlay = cv2.addWeighted(image, 1 - alpha, colours, alpha, 0)  # uint8 throughout: no float copies
        del colours
        with atomic_path(overlay_path) as tmp:
            Image.fromarray(overlay).save(tmp, format="JPEG", quality=90)
        records.append({"image": str(f), "mask": str(mask_path), "overlay": str(overlay_path),
                        "height": int(image.shape[0]), "width": int(image.shape[1]), "time_ms": dt})
    return records
