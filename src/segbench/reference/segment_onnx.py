#!/usr/bin/env python3
"""Segment images with an exported segbench model (``model.onnx``) as ``segbench predict`` does.

This file runs on its own. Copy it into the model folder (``best/``, which holds ``model.onnx``,
``preprocessing.json``, ``classes.json`` and ``model.json``) and run::

    python segment_onnx.py photo.jpg more_photos/ -o masks/ [--model-dir DIR] [--threads N]

For ``photo.jpg`` it writes ``masks/photo_mask.png``: the class id of every pixel, as a palette PNG that
shows the class colours (16-bit greyscale beyond 256 classes), the file ``segbench predict`` writes.
From Python::

    from segment_onnx import load, read_image, segment
    session, prep = load("best")
    labels = segment(session, read_image("photo.jpg"), prep)  # uint8[H, W] class ids

Dependencies: onnxruntime, numpy and Pillow only (no PyTorch, OpenCV, albumentations or segbench).

What it reproduces (``segbench.images.read_image``, ``segbench.inference.segment``, ``segbench.predict``):

* reading: the EXIF orientation applied (``ImageOps.exif_transpose``), converted to 8-bit RGB;
* settings: ``preprocessing.json`` ``inference`` (mode, scale, target_diagonal, crop, overlap, blend,
  flip); mode ``auto``
  (or none) takes the ``inference`` of ``model.json`` when the folder has one, else ``resize``;
* ``resize``: the image resized to ``preprocessing.json`` ``resize`` as OpenCV's ``INTER_LINEAR`` resizes
  8-bit images (bilinear, half-pixel centres, no antialiasing, OpenCV's 11-bit fixed-point weights and
  rounding, so the same bytes), one forward pass, the logits resized bilinearly to the image size
  (``align_corners=False``, border-clamped, strip by strip, as PyTorch's ``grid_sample``), then the
  first maximal class;
* ``whole``: the image rescaled by ``scale``, or, with ``target_diagonal``, by ``target_diagonal /
  hypot(height, width)`` (every image to one diagonal; ``segbench.data.preprocess.image_scale``), with
  OpenCV's ``INTER_AREA`` below 1 and ``INTER_LINEAR`` above, both reproduced bit for bit, zero-padded after
  normalisation to a multiple of 32, one pass, cropped back, argmax, and the labels resized to the image as
  OpenCV's ``INTER_NEAREST`` does (source index ``floor(i * in / out)``);
* ``slide``: windows of ``crop`` (default: the training size) with stride ``int(crop * (1 - overlap))``,
  the last one flush with the border, each zero-padded to a multiple of 32, batches of 4; their
  logits blended (``mean``, or ``gaussian`` weights with sigma = crop / 8, floored at 1e-3) and the
  argmax taken one row of windows at a time, so memory stays bounded; labels resized as in ``whole``;
* ``flip``: each forward pass averaged with the pass on the mirrored input, mirrored back;
* normalisation: ``(pixel / max_pixel_value - mean) / std`` in float32, computed as albumentations
  computes it (a table of ``(v - mean * max) * (1 / (std * max))`` per channel), NCHW.

Tolerance: the network input is segbench's to the bit (OpenCV's and albumentations' arithmetic
reproduced, as checked by segbench's tests/test_reference_script.py against the OpenCV 5.0 segbench pins;
another OpenCV version may round some pixels 1 grey level apart), and so is the resize of the logits
(PyTorch's x86 CPU kernel, fused multiply-adds included; elsewhere within a float32 rounding), but the
logits themselves are ONNX Runtime's: its float32 kernels round differently from PyTorch's, so
logits differ by about 1e-6 (segbench's export check allows 1e-3 x the largest logit), and a pixel
whose two best classes are that close can take the other one. On real CamVid frames the masks are
identical or differ in a handful of pixels (at worst 4 of 172,800 measured); the test requires
99.99 % of each image's pixels, as segbench's ONNX parity check does. A plain float32 bilinear resize
of the image (instead of OpenCV's fixed point) would already cost about 0.1 % of the pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "load",
    "segment",
    "read_image",
    "inference_settings",
    "normalize",
    "resize_linear",
    "resize_area",
    "resize_nearest",
    "upsample_argmax",
    "window_starts",
    "write_mask",
    "main",
]

#: network input sides are padded to a multiple of this (segbench's ``size_divisor``)
SIZE_DIVISOR = 32
#: windows per forward pass in ``slide`` mode (segbench predict's default ``--batch-size``)
BATCH_SIZE = 4
#: image file types read from a folder given as input
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

# what mode auto takes from model.json
_MODEL_KEYS = ("mode", "scale", "target_diagonal", "crop", "overlap", "blend")
_DEFAULTS = {
    "mode": "resize", "scale": 1.0, "target_diagonal": None, "crop": None, "overlap": 0.5, "blend": "mean",
    "flip": False,
}  # fmt: skip
_NORMALIZE = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "max_pixel_value": 255.0}
# matplotlib's tab20, the colours segbench gives classes that declare none
_TAB20 = [
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44),
    (152, 223, 138), (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213),
    (140, 86, 75), (196, 156, 148), (227, 119, 194), (247, 182, 210), (127, 127, 127),
    (199, 199, 199), (188, 189, 34), (219, 219, 141), (23, 190, 207), (158, 218, 229),
]  # fmt: skip


# ----------------------------------------------------------------------------- settings and model


def inference_settings(prep: dict[str, Any], model_inference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inference settings to use, with every key filled in.

    Args:
        prep: the content of ``preprocessing.json``; its ``inference`` dict holds ``mode`` (``auto``,
            ``resize``, ``whole``, ``slide``), ``scale``, ``target_diagonal`` (pixels), ``crop`` ``[h, w]``,
            ``overlap``, ``blend`` (``mean`` | ``gaussian``) and ``flip``; absent or null keys take segbench's
            defaults.
        model_inference: ``model.json``'s ``inference`` (the model's own evaluation), used when the
            mode is ``auto`` or absent; without it such a mode means ``resize``.

    Returns:
        ``{mode, scale, target_diagonal, crop, overlap, blend, flip}`` (``crop`` may be None: the
        training size; ``target_diagonal`` None: ``scale`` for every image).

    Raises:
        ValueError: an unknown mode or blend, an overlap outside [0, 0.95], a scale or target_diagonal
            <= 0.
    """
    given = {
        k: v
        for k, v in (prep.get("inference") or {}).items()
        if k in (*_MODEL_KEYS, "flip") and v is not None
    }
    if given.get("mode", "auto") == "auto":
        own = {k: v for k, v in (model_inference or {}).items() if k in _MODEL_KEYS and v is not None}
        given = {**{k: v for k, v in given.items() if k not in _MODEL_KEYS}, **own}
        given.setdefault("mode", "resize")
    s = {**_DEFAULTS, **given}
    if s["mode"] not in ("resize", "whole", "slide"):
        raise ValueError(f"inference mode '{s['mode']}' unknown; allowed values: auto, resize, whole, slide")
    if s["blend"] not in ("mean", "gaussian"):
        raise ValueError(f"blend '{s['blend']}' unknown; allowed values: mean, gaussian")
    if not 0 <= float(s["overlap"]) <= 0.95:
        raise ValueError(f"overlap {s['overlap']} must be in [0, 0.95]")
    if float(s["scale"]) <= 0:
        raise ValueError(f"scale {s['scale']} must be > 0")
    if s["target_diagonal"] is not None and float(s["target_diagonal"]) <= 0:
        raise ValueError(f"target_diagonal {s['target_diagonal']} must be > 0")
    return s


def load(model_dir: str | Path, threads: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Open a model folder.

    Args:
        model_dir: folder with ``model.onnx`` and ``preprocessing.json`` (``model.json`` optional: its
            ``inference`` is used when ``preprocessing.json`` says mode ``auto``).
        threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores).

    Returns:
        ``(onnxruntime.InferenceSession on the CPU, preprocessing dict)``; the dict is
        ``preprocessing.json`` with its ``inference`` resolved by :func:`inference_settings`.

    Raises:
        FileNotFoundError: ``model.onnx`` or ``preprocessing.json`` is missing.
        ValueError: invalid inference settings.
    """
    import onnxruntime as ort

    model_dir = Path(model_dir)
    for name in ("model.onnx", "preprocessing.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} not found: give the exported model's folder")
    prep = json.loads((model_dir / "preprocessing.json").read_text(encoding="utf-8"))
    model_json = model_dir / "model.json"
    own = (
        json.loads(model_json.read_text(encoding="utf-8")).get("inference") if model_json.is_file() else None
    )
    prep = {**prep, "inference": inference_settings(prep, own)}
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return session, prep


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as displayed: ``uint8[H, W, 3]`` RGB, its EXIF orientation applied.

    Raises:
        OSError: unreadable file.
        ValueError: a 16/32-bit single-channel image (convert it to 8 bits first, choosing the
            intensity window: the model takes 8-bit RGB).
    """
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise ValueError(f"{path}: {im.mode} single-channel image; the model takes 8-bit RGB")
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


# ----------------------------------------------------------------------------- OpenCV-exact resizes


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """OpenCV's INTER_LINEAR taps for 8-bit images: first/second source index and 11-bit weights."""
    scale = 1.0 / (n_out / n_in)  # OpenCV: 1 / inv_scale, inv_scale = out / in, in double
    f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    i = np.floor(f)
    f = f - i
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int32)  # saturate_cast<short>
    w1 = np.rint(f * np.float32(2048)).astype(np.int32)
    i = i.astype(np.int64)
    return np.clip(i, 0, n_in - 1), np.clip(i + 1, 0, n_in - 1), w0, w1


def resize_linear(image: np.ndarray, height: int, width: int, strip_rows: int = 256) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` for ``uint8`` images.

    Bilinear with half-pixel centres (source ``(i + 0.5) * in / out - 0.5``, edge pixels repeated), no
    antialiasing when shrinking (unlike Pillow's BILINEAR), in OpenCV's fixed point: 11-bit weights, a
    horizontal pass in int32, a vertical pass computed as OpenCV's SIMD code does. Equal to OpenCV's
    bytes on every size tested; processed ``strip_rows`` output rows at a time.

    Args:
        image: ``uint8[H, W, C]`` or ``uint8[H, W]``.
        height, width: output size (>= 1).

    Returns:
        ``uint8[height, width, C]`` (or ``[height, width]``).
    """
    h_in, w_in = image.shape[:2]
    if (h_in, w_in) == (height, width):
        return image.copy()
    src = image.reshape(h_in, w_in, -1)
    x0, x1, a0, a1 = _linear_taps(w_in, width)
    y0, y1, b0, b1 = _linear_taps(h_in, height)
    out = np.empty((height, width, src.shape[2]), np.uint8)
    for r0 in range(0, height, strip_rows):
        r1 = min(height, r0 + strip_rows)
        lo, hi = int(y0[r0:r1].min()), int(y1[r0:r1].max()) + 1
        s = src[lo:hi].astype(np.int32)
        rows = (s[:, x0] * a0[:, None] + s[:, x1] * a1[:, None]) >> 4  # [rows, width, C] <= 32640
        top = (rows[y0[r0:r1] - lo] * b0[r0:r1, None, None]) >> 16
        bottom = (rows[y1[r0:r1] - lo] * b1[r0:r1, None, None]) >> 16
        out[r0:r1] = np.clip((top + bottom + 2) >> 2, 0, 255)
    return out.reshape((height, width, *image.shape[2:]))


def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA (shrinking) taps: ``[n_out, K]`` source indices and float32 weights, in
    increasing source order (unused taps have weight 0)."""
    scale = n_in / n_out
    taps = []
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s2 = min(math.floor(f2), n_in - 1)
        s1 = min(math.ceil(f1), s2)
        t = [(s1 - 1, (s1 - f1) / cell)] if s1 - f1 > 1e-3 else []
        t += [(s, 1.0 / cell) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            t.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        taps.append(t)
    idx = np.zeros((n_out, max(map(len, taps))), np.int64)
    wt = np.zeros(idx.shape, np.float32)
    for d, t in enumerate(taps):
        for j, (s, a) in enumerate(t):
            idx[d, j], wt[d, j] = s, a
    return idx, wt


def resize_area(image: np.ndarray, height: int, width: int, strip_rows: int = 256) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)`` for shrinking ``uint8`` images.

    Each output pixel is the mean of the source area it covers (fractional pixels weighted by their
    share). Integer factors take OpenCV's fast path (2x2: ``(sum + 2) >> 2``; others ``sum * (1 / n)``
    in float32, rounded half to even); other factors accumulate float32 weights in OpenCV's order
    (rows first) and round half to even. Equal to OpenCV's bytes on every size tested.

    Args:
        image: ``uint8[H, W, C]`` or ``uint8[H, W]``.
        height, width: output size, ``1 <= height <= H``, ``1 <= width <= W``.

    Returns:
        ``uint8[height, width, C]`` (or ``[height, width]``).

    Raises:
        ValueError: the output is larger than the input (OpenCV then interpolates; use
            :func:`resize_linear`).
    """
    h_in, w_in = image.shape[:2]
    if height > h_in or width > w_in:
        raise ValueError(f"resize_area shrinks only: {h_in}x{w_in} -> {height}x{width}")
    if (h_in, w_in) == (height, width):
        return image.copy()
    src = image.reshape(h_in, w_in, -1)
    sx, sy = 1.0 / (width / w_in), 1.0 / (height / h_in)
    kx, ky = round(sx), round(sy)
    if abs(sx - kx) < 2.220446049250313e-16 and abs(sy - ky) < 2.220446049250313e-16:  # DBL_EPSILON
        total = src[: height * ky, : width * kx].astype(np.int32)
        total = total.reshape(height, ky, width, kx, -1).sum((1, 3))
        if kx == ky == 2:
            out = (total + 2) >> 2
        else:
            out = np.rint(total.astype(np.float32) * (np.float32(1) / np.float32(kx * ky)))
        return np.clip(out, 0, 255).astype(np.uint8).reshape((height, width, *image.shape[2:]))
    xi, xw = _area_taps(w_in, width)
    yi, yw = _area_taps(h_in, height)
    out = np.empty((height, width, src.shape[2]), np.uint8)
    for r0 in range(0, height, strip_rows):
        r1 = min(height, r0 + strip_rows)
        lo, hi = int(yi[r0:r1].min()), int(yi[r0:r1].max()) + 1
        s = src[lo:hi].astype(np.float32)
        rows = np.zeros((hi - lo, width, src.shape[2]), np.float32)
        for j in range(xi.shape[1]):
            rows += s[:, xi[:, j]] * xw[:, j, None]
        acc = np.zeros((r1 - r0, width, src.shape[2]), np.float32)
        for j in range(yi.shape[1]):
            acc += rows[yi[r0:r1, j] - lo] * yw[r0:r1, j, None, None]
        out[r0:r1] = np.clip(np.rint(acc), 0, 255)
    return out.reshape((height, width, *image.shape[2:]))


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)``: output pixel ``i`` takes
    source pixel ``min(floor(i * in / out), in - 1)`` (not the pixel centre, unlike Pillow's NEAREST).

    Args:
        labels: ``[H, W]`` array of any dtype.

    Returns:
        ``[height, width]``, same dtype.
    """

    def index(n_in: int, n_out: int) -> np.ndarray:
        return np.minimum(np.floor(np.arange(n_out) * (1.0 / (n_out / n_in))).astype(np.int64), n_in - 1)

    if labels.shape[:2] == (height, width):
        return labels
    return labels[index(labels.shape[0], height)[:, None], index(labels.shape[1], width)[None, :]]


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """The image times ``scale`` (whole/slide): OpenCV INTER_AREA below 1, INTER_LINEAR above."""
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return resize_area(image, *size) if scale < 1 else resize_linear(image, *size)


# ----------------------------------------------------------------------------- network


def normalize(image: np.ndarray, norm: dict[str, Any] | None) -> np.ndarray:
    """``(pixel / max_pixel_value - mean) / std`` of ``uint8[H, W, 3]`` as ``float32[H, W, 3]``.

    Computed as albumentations' ``Normalize`` computes it for 8-bit images (a per-channel table of
    ``(v - mean * max) * (1 / (std * max))`` in float32), so the values are the same bits.
    ``norm``: ``{mean, std, max_pixel_value}`` (None: ImageNet's, as segbench)."""
    norm = norm or _NORMALIZE
    mpv = norm.get("max_pixel_value", 255.0)
    mean = np.asarray(norm.get("mean", _NORMALIZE["mean"]), np.float32) * np.float32(mpv)
    den = np.reciprocal(np.asarray(norm.get("std", _NORMALIZE["std"]), np.float32) * np.float32(mpv))
    lut = (np.arange(256, dtype=np.float32)[None, :] - mean[:, None]) * den[:, None]  # [3, 256]
    return np.stack([lut[c][image[..., c]] for c in range(3)], axis=-1)


def _forward(session: Any, x: np.ndarray, flip: bool) -> np.ndarray:
    """Logits ``float32[N, C, h, w]`` of ``float32[N, 3, h, w]``, averaged with the mirrored pass."""
    name = session.get_inputs()[0].name
    out = session.run(None, {name: x})[0].astype(np.float32, copy=False)
    if flip:
        mirrored = session.run(None, {name: np.ascontiguousarray(x[..., ::-1])})[0]
        out = (out + mirrored.astype(np.float32, copy=False)[..., ::-1]) / 2
    return out


def _batch(tiles: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Normalised ``[h, w, 3]`` tiles as ``float32[N, 3, height, width]``, zero-padded bottom/right
    (zero is the mean colour after normalisation)."""
    x = np.zeros((len(tiles), 3, height, width), np.float32)
    for i, t in enumerate(tiles):
        x[i, :, : t.shape[0], : t.shape[1]] = t.transpose(2, 0, 1)
    return x


def _ceil_to(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


def _grid(n_in: int, n_out: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weight of output pixels ``start..stop-1`` as PyTorch's ``grid_sample``
    (align_corners=False, border padding) gets them: the coordinate normalised to [-1, 1] in float64,
    then back in float32 (``((g + 1) * n - 1) / 2``, the multiply-add fused) and clamped."""
    c = np.clip((np.arange(start, stop, dtype=np.float64) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    g = ((c * 2 + 1) / n_in - 1).astype(np.float32)
    c = _fma(g + np.float32(1), np.float32(n_in), np.float32(-1)) / np.float32(2)
    c = np.clip(c, np.float32(0), np.float32(n_in - 1))
    i = np.floor(c)
    return i.astype(np.int64), np.minimum(i.astype(np.int64) + 1, n_in - 1), c - i


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to float32, as a fused multiply-add (float32 products are exact in
    float64)."""
    return (np.asarray(a, np.float64) * b + c).astype(np.float32)


def upsample_argmax(logits: np.ndarray, height: int, width: int, strip_rows: int = 128) -> np.ndarray:
    """The class of each pixel of ``logits [C, h, w]`` resized bilinearly to ``height x width``.

    As segbench's ``upsample_argmax`` (PyTorch's ``grid_sample``, align_corners=False, border-clamped):
    the same float32 coordinates and weights, and the four products summed with fused multiply-adds as
    PyTorch's vectorised x86 CPU kernel does (bit-equal there; elsewhere within a float32 rounding),
    ``strip_rows`` output rows at a time (memory ``C x strip_rows x width``). The argmax is the first
    maximal class.

    Returns:
        ``uint8[height, width]`` (``uint16`` when C > 256).
    """
    c, h, w = logits.shape
    out = np.empty((height, width), np.uint8 if c <= 256 else np.uint16)
    if (h, w) == (height, width):
        out[:] = logits.argmax(0)
        return out
    x0, x1, wx = _grid(w, width, 0, width)
    ex = np.float32(1) - wx
    for r0 in range(0, height, strip_rows):
        r1 = min(height, r0 + strip_rows)
        y0, y1, ny = _grid(h, height, r0, r1)
        sy = (np.float32(1) - ny)[:, None]
        ny = ny[:, None]
        top, bottom = logits[:, y0], logits[:, y1]
        v = top[:, :, x0] * (sy * ex)
        v = _fma(top[:, :, x1], sy * wx, v)
        v = _fma(bottom[:, :, x0], ny * ex, v)
        v = _fma(bottom[:, :, x1], ny * wx, v)
        out[r0:r1] = v.argmax(0)
    return out


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` covering ``[0, length)``, the
    last one ending at ``length`` (``[0]`` when ``length <= window``)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _gaussian(h: int, w: int) -> np.ndarray:
    """``float32[h, w]`` window weights: a Gaussian with sigma = side / 8, peak 1, floored at 1e-3."""

    def g(n: int) -> np.ndarray:
        x = np.arange(n) - (n - 1) / 2
        return np.exp(-(x**2) / (2 * (n / 8) ** 2))

    m = np.outer(g(h), g(w)).astype(np.float32)
    return np.maximum(m / m.max(), 1e-3)


def _slide(session: Any, image: np.ndarray, s: dict[str, Any], crop: tuple[int, int], norm) -> np.ndarray:
    """Labels of ``image`` (already rescaled) by sliding windows, one row of windows at a time."""
    hs, ws = image.shape[:2]
    ch, cw = crop
    ch_in, cw_in = _ceil_to(ch, SIZE_DIVISOR), _ceil_to(cw, SIZE_DIVISOR)
    sh, sw = max(1, int(ch * (1 - s["overlap"]))), max(1, int(cw * (1 - s["overlap"])))
    ys, xs = window_starts(hs, ch, sh), window_starts(ws, cw, sw)
    weight = _gaussian(ch, cw) if s["blend"] == "gaussian" else np.ones((ch, cw), np.float32)
    labels = np.empty((hs, ws), np.uint8)
    acc = None  # [C, ch, ws] weighted logits of rows [y0, y0 + ch), their weights in wacc [ch, ws]
    wacc = np.zeros((ch, max(ws, cw)), np.float32)
    for i, y0 in enumerate(ys):
        for b in range(0, len(xs), BATCH_SIZE):
            bx = xs[b : b + BATCH_SIZE]
            tiles = [normalize(image[y0 : y0 + ch, x0 : x0 + cw], norm) for x0 in bx]
            out = _forward(session, _batch(tiles, ch_in, cw_in), bool(s["flip"]))
            if acc is None:
                acc = np.zeros((out.shape[1], ch, max(ws, cw)), np.float32)
                if out.shape[1] > 256:
                    labels = labels.astype(np.uint16)
            for t, x0 in zip(out, bx):
                vh, vw = min(ch, hs - y0), min(cw, ws - x0)
                acc[:, :vh, x0 : x0 + vw] += t[:, :vh, :vw] * weight[:vh, :vw]
                wacc[:vh, x0 : x0 + vw] += weight[:vh, :vw]
        done = (ys[i + 1] - y0) if i + 1 < len(ys) else min(ch, hs - y0)  # rows no later window touches
        labels[y0 : y0 + done] = (acc[:, :done, :ws] / np.maximum(wacc[:done, :ws], 1e-12)).argmax(0)
        if done < ch:
            acc[:, : ch - done] = acc[:, done:]
            wacc[: ch - done] = wacc[done:]
        acc[:, ch - done :] = 0
        wacc[ch - done :] = 0
    return labels


def segment(session: Any, image: np.ndarray, prep: dict[str, Any]) -> np.ndarray:
    """Class ids of every pixel of one image, as ``segbench predict`` computes them.

    Args:
        session: an ``onnxruntime.InferenceSession`` of ``model.onnx`` (input ``float32[N, 3, h, w]``,
            output logits ``[N, C, h, w]``), e.g. from :func:`load`.
        image: ``uint8[H, W, 3]`` RGB, e.g. from :func:`read_image`.
        prep: ``preprocessing.json`` (``resize``, ``normalize``, ``inference``); from :func:`load`, its
            mode ``auto`` is already resolved with ``model.json``, else ``auto`` means ``resize``.

    Returns:
        ``uint8[H, W]`` class ids (``uint16`` when the model has more than 256 classes).

    Raises:
        ValueError: ``image`` is not ``uint8[H, W, 3]``; invalid inference settings.
        KeyError: ``prep`` has no ``resize`` size.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"segment() takes uint8[H, W, 3] RGB images, got {image.dtype}{list(image.shape)}")
    s = inference_settings(prep)
    norm = prep.get("normalize")
    height, width = image.shape[:2]
    th, tw = int(prep["resize"]["height"]), int(prep["resize"]["width"])
    if s["mode"] == "resize":
        x = _batch([normalize(resize_linear(image, th, tw), norm)], th, tw)
        return upsample_argmax(_forward(session, x, bool(s["flip"]))[0], height, width)
    factor = (
        float(s["scale"])
        if s["target_diagonal"] is None
        else float(s["target_diagonal"]) / math.hypot(height, width)
    )
    scaled = _rescale(image, factor)
    hs, ws = scaled.shape[:2]
    if s["mode"] == "whole":
        x = _batch([normalize(scaled, norm)], _ceil_to(hs, SIZE_DIVISOR), _ceil_to(ws, SIZE_DIVISOR))
        logits = _forward(session, x, bool(s["flip"]))[0, :, :hs, :ws]
        labels = upsample_argmax(logits, hs, ws)
    else:
        crop = tuple(int(v) for v in (s["crop"] or (th, tw)))
        labels = _slide(session, scaled, s, crop, norm)
    return resize_nearest(labels, height, width)


# ----------------------------------------------------------------------------- output and CLI


def _palette(classes: list[dict[str, Any]]) -> list[int]:
    """256 RGB colours, flattened: each class's ``color`` (tab20 when it declares none), then black."""
    pal = [(0, 0, 0)] * max(256, len(classes))
    for i, c in enumerate(classes):
        pal[i] = tuple(c["color"]) if c.get("color") else _TAB20[i % len(_TAB20)]
    return [int(v) for rgb in pal[:256] for v in rgb]


def write_mask(labels: np.ndarray, path: str | Path, classes: list[dict[str, Any]] | None = None) -> None:
    """Write class ids as ``segbench predict`` does: a palette PNG with the class colours (``classes``:
    ``classes.json``'s list of ``{id, name, color}``) for ``uint8`` labels, a 16-bit PNG for ``uint16``."""
    im = Image.fromarray(labels)
    if labels.dtype == np.uint8:
        im = im.convert("P")
        im.putpalette(_palette(classes or []))
    im.save(path, format="PNG")


def _inputs(items: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS and q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring). Returns the exit status: 0, or 2 after an error
    (missing model file, unreadable image), which is printed."""
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description="Segment images with an exported segbench model (ONNX).")
    p.add_argument("images", nargs="+", help="image files and/or folders (non-recursive)")
    p.add_argument("-o", "--output", required=True, help="output folder for <image stem>_mask.png")
    p.add_argument("--model-dir", default=str(here), help="the model folder (default: this script's)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    args = p.parse_args(argv)
    try:
        session, prep = load(args.model_dir, args.threads)
        classes_json = Path(args.model_dir) / "classes.json"
        classes = (
            json.loads(classes_json.read_text(encoding="utf-8")).get("classes")
            if classes_json.is_file()
            else None
        )
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for f in _inputs(args.images):
            labels = segment(session, read_image(f), prep)
            write_mask(labels, out / f"{f.stem}_mask.png", classes)
            print(f"{f} -> {out / f'{f.stem}_mask.png'} ({labels.shape[1]}x{labels.shape[0]})")
    except (OSError, ValueError, KeyError) as err:
        print(f"segment_onnx: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
