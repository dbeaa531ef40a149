"""ONNX export of a trained model, checked against PyTorch with onnxruntime on real images.

:func:`onnx_export_and_check` exports with ``torch.onnx.export`` (opset 17, dynamic batch, height and
width; input ``image`` float32 NCHW preprocessed as ``preprocessing.json`` says, output ``logits``),
then compares onnxruntime's logits with PyTorch's on real images of the dataset, resized to the
model's input size as in evaluation: the largest absolute logit difference (pass: <= 1e-3 x the
largest logit) and the share of pixels with the same argmax (pass: >= 99.99 %). A second input size
checks that height and width are really dynamic. A model that cannot be exported says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["onnx_export_and_check", "ARGMAX_AGREEMENT_MIN", "LOGIT_RTOL"]

#: ONNX parity: the share of pixels whose argmax must agree with PyTorch, and the largest logit
#: difference allowed, relative to the largest logit magnitude (float32 kernels differ by ~1e-6)
ARGMAX_AGREEMENT_MIN = 0.9999
LOGIT_RTOL = 1e-3


def _inputs(images: list[np.ndarray], size: tuple[int, int], normalize: dict[str, Any]) -> list[np.ndarray]:
    import cv2

    from .inference import _normalize

    out = []
    for img in images:
        x = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out.append(_normalize(x, normalize or {}).transpose(2, 0, 1)[None].copy())
    return out


def onnx_export_and_check(
    model: Any, info: dict[str, Any], images: list[np.ndarray], path: Path
) -> dict[str, Any]:
    """Export ``model`` to ONNX at ``path`` and compare onnxruntime with PyTorch on ``images``.

    Args:
        model: the trained model (eval mode, CPU).
        info: its ``model.json`` (image_size, normalize).
        images: real ``uint8[H, W, 3]`` RGB images, fed resized to the model's input size as in evaluation.
        path: the ``.onnx`` file to write.

    Returns:
        ``{"passed", "opset", "max_abs_logit_diff", "argmax_agreement", "images", "input_size",
        "dynamic_hw": {"size", "max_abs_logit_diff", "argmax_agreement", "ok"} , "error"}``.
    """
    import torch

    size = tuple(int(v) for v in info["image_size"])
    report: dict[str, Any] = {
        "passed": False,
        "opset": 17,
        "images": len(images),
        "input_size": list(size),
        "onnxruntime": None,
        "error": None,
    }
    try:
        import warnings

        import onnxruntime as ort

        report["onnxruntime"] = ort.__version__
        dummy = torch.from_numpy(_inputs(images[:1], size, info.get("normalize"))[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                opset_version=17,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={
                    "image": {0: "batch", 2: "height", 3: "width"},
                    "logits": {0: "batch", 2: "height", 3: "width"},
                },
                dynamo=False,
            )
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def compare(sz: tuple[int, int]) -> tuple[float, float, bool]:
            worst, agree, total, scale = 0.0, 0, 0, 1.0
            for x in _inputs(images, sz, info.get("normalize")):
                with torch.inference_mode():
                    ref = model(torch.from_numpy(x)).float().numpy()
                got = sess.run(None, {"image": x})[0]
                worst = max(worst, float(np.abs(got - ref).max()))
                scale = max(scale, float(np.abs(ref).max()))
                agree += int((got.argmax(1) == ref.argmax(1)).sum())
                total += ref.shape[0] * ref.shape[2] * ref.shape[3]
            return worst, agree / total, agree / total >= ARGMAX_AGREEMENT_MIN and worst <= LOGIT_RTOL * scale

        diff, agreement, ok = compare(size)
        report.update(max_abs_logit_diff=diff, argmax_agreement=agreement, passed=ok)
        other = (int(round(size[0] * 1.5 / 32)) * 32, int(round(size[1] * 1.5 / 32)) * 32)
        try:
            d2, a2, ok2 = compare(other)
            report["dynamic_hw"] = {
                "size": list(other),
                "max_abs_logit_diff": d2,
                "argmax_agreement": a2,
                "ok": ok2,
            }
        except Exception as err:  # traced shapes baked into the graph
            report["dynamic_hw"] = {
                "size": list(other),
                "ok": False,
                "error": f"{type(err).__name__}: {str(err)[:300]}",
            }
    except Exception as err:
        report["error"] = f"{type(err).__name__}: {str(err)[:500]}"
        path.unlink(missing_ok=True)
    return report
