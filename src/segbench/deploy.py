"""Deployment variants of the selected model, scored like candidates: ``results/<experiment>/deploy/``.

What a user deploys is rarely the PyTorch model the comparison scored: it is an ONNX export, often
quantized to INT8 for a CPU or an edge device. Each variant here is one workflow job that builds the
artifact from ``best/`` and runs **segbench's own evaluation** on it
(:func:`segbench.evaluate.evaluate_loaded`: the same inference mode, the same confusion matrices, the
same test and validation images), so its test mIoU, its confidence interval and its paired difference
to the PyTorch model come from the same code as every other number of the report.

Variants (``deploy.variants``):

* ``onnx_fp32``: ``best/model.onnx`` (:func:`segbench.export.onnx_export_and_check`) run by
  onnxruntime's CPU execution provider;
* ``onnx_int8``: onnxruntime's static quantization (``quantize_static``: QDQ format, signed 8-bit
  per-channel weights, unsigned 8-bit activations, ranges calibrated on ``deploy.calibration_images``
  images of the selected fold's **training** split, preprocessed exactly as in evaluation; onnxruntime's
  ``quant_pre_process`` first, as its quantization guide prescribes). Where static quantization fails,
  dynamic quantization (``quantize_dynamic``, weights only) is tried and the reason recorded;
* ``onnx_fp16``: float16 weights and activations (``onnxruntime.transformers.float16``); onnxruntime's
  CPU provider has no float16 convolution kernels on x86, so it runs only where the CUDA provider is
  available and is recorded as skipped otherwise;
* ``torch_bf16``: the PyTorch model under bfloat16 autocast, on CPUs with AVX-512 BF16 or AMX and on
  GPUs with bfloat16 (:func:`segbench.device.cpu_has_bf16`); skipped elsewhere.

Every variant writes ``deploy/<variant>/variant.json`` (``status``: ok | failed | skipped, the reason,
engine, precision, threads, file size, quantization settings) and, when it ran, the evaluation files
of :mod:`segbench.evaluate`. A variant that fails is recorded and never stops the run.
:func:`summarise_variants` puts them beside the PyTorch model (``deploy/summary.json``): test mIoU
with its bootstrap interval over the experiment's test units, the paired difference to the PyTorch
model with its interval and a verdict, median and p95 ms per image, peak memory and size.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .engines import Bf16Model, OrtModel

__all__ = [
    "VARIANTS",
    "OrtModel",
    "Bf16Model",
    "calibration_inputs",
    "quantize_int8",
    "run_variant",
    "summarise_variants",
]

#: the variants segbench knows, in the order the report lists them
VARIANTS = ("onnx_fp32", "onnx_int8", "onnx_fp16", "torch_bf16")


def calibration_inputs(images: list[np.ndarray], infer: Any, seed: int = 0) -> list[np.ndarray]:
    """Network inputs for INT8 calibration, preprocessed as evaluation preprocesses them.

    Args:
        images: ``uint8[H, W, 3]`` RGB training images.
        infer: the :class:`segbench.inference.InferenceConfig` the model is evaluated with: ``resize``
            gives the image resized to the training size; ``whole`` the image at ``scale`` (or at
            ``target_diagonal``), padded to ``size_divisor``; ``slide`` one window of ``crop`` at that
            size per image at a seeded random position.
        seed: the window positions' seed.

    Returns:
        ``float32[1, 3, h, w]`` arrays, one per image.
    """
    import cv2

    from .data.preprocess import image_scale
    from .inference import _ceil_to, _normalize, _pad_to, _resize_image

    rng = np.random.default_rng(seed)
    out = []
    th, tw = (int(v) for v in infer.image_size)
    for img in images:
        if infer.mode == "resize":
            x = _normalize(cv2.resize(img, (tw, th), interpolation=cv2.INTER_LINEAR), infer.normalize)
            out.append(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
            continue
        scaled = _resize_image(img, image_scale(*img.shape[:2], infer.scale, infer.target_diagonal))
        if infer.mode == "slide":
            ch, cw = (int(v) for v in (infer.crop or infer.image_size))
            y0 = int(rng.integers(0, max(1, scaled.shape[0] - ch + 1)))
            x0 = int(rng.integers(0, max(1, scaled.shape[1] - cw + 1)))
            scaled = scaled[y0 : y0 + ch, x0 : x0 + cw]
            h, w = _ceil_to(ch, infer.size_divisor), _ceil_to(cw, infer.size_divisor)
        else:
            h, w = (_ceil_to(v, infer.size_divisor) for v in scaled.shape[:2])
        x = torch.from_numpy(
            np.ascontiguousarray(_normalize(scaled, infer.normalize).transpose(2, 0, 1)[None])
        )
        out.append(_pad_to(x, h, w).numpy())
    return out


def quantize_int8(
    fp32_path: str | Path, out_path: str | Path, calibration: list[np.ndarray], method: str = "minmax"
) -> dict[str, Any]:
    """Quantize an ONNX model to INT8 with onnxruntime; static first, dynamic as the fallback.

    Static: ``quant_pre_process`` (shape inference and graph optimisation, onnxruntime's recommended
    first step), then ``quantize_static`` in QDQ format with per-channel signed 8-bit weights and
    unsigned 8-bit activations whose ranges come from ``calibration`` (``method``: minmax | entropy |
    percentile, onnxruntime's ``CalibrationMethod``). Dynamic (``quantize_dynamic``, signed 8-bit
    weights, activations quantized at run time) only when the static path raises.

    Args:
        fp32_path: the float32 ONNX model.
        out_path: the INT8 model to write (atomically).
        calibration: ``float32[1, 3, h, w]`` inputs (:func:`calibration_inputs`).
        method: the calibration method.

    Returns:
        ``{"method": "static" | "dynamic", "format", "per_channel", "weight_type", "activation_type",
        "calibration_method", "calibration_images", "static_error"}``.

    Raises:
        ValueError: an unknown calibration method, or no calibration inputs.
        RuntimeError: both static and dynamic quantization failed (the message holds both reasons).
    """
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(
            f"deploy.calibration_method '{method}' unknown; allowed values: {', '.join(methods)}"
        )
    if not calibration:
        raise ValueError("INT8 static quantization needs calibration images (deploy.calibration_images > 0)")

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"image": x}

    out_path = Path(out_path)
    record: dict[str, Any] = {
        "format": "QDQ",
        "per_channel": True,
        "weight_type": "int8",
        "activation_type": "uint8",
        "calibration_method": method,
        "calibration_images": len(calibration),
        "static_error": None,
    }
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(q),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=methods[method],
            )
            record["method"] = "static"
        except Exception as err:  # onnxruntime raises many types; the reason is recorded
            record["static_error"] = f"{type(err).__name__}: {str(err)[:400]}"
            try:
                quantize_dynamic(str(fp32_path), str(q), weight_type=QuantType.QInt8)
            except Exception as err2:
                raise RuntimeError(
                    f"static quantization failed ({record['static_error']}) and dynamic quantization "
                    f"failed ({type(err2).__name__}: {str(err2)[:400]})"
                ) from err2
            record.update(method="dynamic", format="QOperator", per_channel=False, activation_type="dynamic")
        q.replace(out_path)
    return record


def _fp16(fp32_path: Path, out_path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    tmp = out_path.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(out_path)


def _why_no_onnx(best_dir: Path) -> str:
    """Why ``best/`` holds no ``model.onnx``: the export's error from ``onnx_parity.json``, if any."""
    import json

    try:
        err = json.loads((best_dir / "onnx_parity.json").read_text()).get("error")
    except (OSError, ValueError):
        return "select.onnx is off, or the export failed: best/onnx_parity.json says why"
    return f"the export failed: {str(err)[:300]}" if err else "select.onnx is off"


def _skip_reason(variant: str, device: str) -> str | None:
    """Why ``variant`` cannot run on this machine (None: it can)."""
    import onnxruntime as ort

    from .device import cpu_has_bf16

    if variant == "onnx_fp16" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return (
            "onnxruntime's CPU execution provider has no float16 convolution kernels on x86, so an FP16 "
            "model would run slower than FP32 or not at all; FP16 runs where onnxruntime-gpu's CUDA "
            "provider is installed"
        )
    if variant == "torch_bf16":
        if device.startswith("cuda"):
            return None if torch.cuda.is_bf16_supported() else "this GPU has no bfloat16 support"
        if not cpu_has_bf16():
            return (
                "this CPU has neither AVX-512 BF16 nor AMX: bfloat16 would be emulated, slower than float32"
            )
    return None


def _calibration_images(
    ds_root: Path, meta: dict[str, Any], splits: dict[str, Any], fold: int, n: int, seed: int
):
    from .images import read_image

    train = sorted(splits["folds"][fold]["train"])
    rng = np.random.default_rng(seed)
    ids = [train[i] for i in sorted(rng.permutation(len(train))[: max(0, int(n))])]
    return [read_image(ds_root / meta["manifest"][i]["image"]) for i in ids], ids


def _calibrate_and_quantize(fp32, path, dataset_json, splits_json, eval_cfg, deploy_cfg, info, threads):
    """``onnx_int8``'s build: calibration inputs from the training split, then :func:`quantize_int8`;
    returns the quantization record with the calibration ids."""
    from .inference import InferenceConfig
    from .records import read_dataset, read_splits

    if threads:
        torch.set_num_threads(int(threads))
    meta, splits = read_dataset(dataset_json), read_splits(splits_json)
    infer = InferenceConfig.from_dict(
        eval_cfg, info["image_size"], info.get("normalize"), info.get("inference")
    )
    seed = int(deploy_cfg.get("seed", 0))
    images, ids = _calibration_images(
        Path(dataset_json).parent,
        meta,
        splits,
        int(info.get("fold") or 0),
        int(deploy_cfg.get("calibration_images", 32)),
        seed,
    )
    q = quantize_int8(
        fp32,
        path,
        calibration_inputs(images, infer, seed),
        str(deploy_cfg.get("calibration_method", "minmax")),
    )
    return dict(q, calibration_ids=ids)


def run_variant(
    variant: str,
    best_dir: str | Path,
    dataset_json: str | Path,
    splits_json: str | Path,
    eval_cfg: dict[str, Any],
    deploy_cfg: dict[str, Any],
    out_dir: str | Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """Build one deployment variant of ``best/`` and evaluate it with segbench's evaluation.

    Args:
        variant: one of :data:`VARIANTS`.
        best_dir: ``results/<experiment>/best`` (``model.json``, weights, ``model.onnx``).
        dataset_json, splits_json: the experiment's dataset and splits.
        eval_cfg: the experiment's evaluate config (inference mode, ...), as for the PyTorch model.
        deploy_cfg: ``{"calibration_images", "calibration_method"}``.
        out_dir: ``results/<experiment>/deploy/<variant>``; written as a whole (a temporary folder
            renamed), so a killed job leaves no half variant.
        threads: intra-op threads for onnxruntime and torch (the job's cores).

    Returns:
        The ``variant.json`` record: ``{"variant", "status": ok | failed | skipped, "reason", "engine",
        "precision", "threads", "file", "size_mb", "quantization", "build_s", "test_mIoU"}``.

    Raises:
        ValueError: an unknown variant name (a config error, not a failed variant).
    """
    from .device import device_of
    from .evaluate import evaluate_loaded
    from .io import atomic_dir, atomic_write_json
    from .models.checkpoint import load_trained_model
    from .records import read_model_info

    if variant not in VARIANTS:
        raise ValueError(f"deploy.variants: '{variant}' unknown; allowed values: {', '.join(VARIANTS)}")
    if threads:
        torch.set_num_threads(int(threads))
    best_dir, out_dir = Path(best_dir), Path(out_dir)
    engine = "pytorch" if variant.startswith("torch") else "onnxruntime"
    precision = {"onnx_fp32": "fp32", "onnx_int8": "int8", "onnx_fp16": "fp16", "torch_bf16": "bf16"}[variant]
    device = device_of(eval_cfg.get("device", "auto")) if engine == "pytorch" else "cpu"
    record: dict[str, Any] = {
        "variant": variant,
        "status": "ok",
        "reason": None,
        "engine": engine,
        "precision": precision,
        "device": device,
        "threads": threads,
        "file": None,
        "size_mb": None,
        "quantization": None,
        "build_s": None,
        "test_mIoU": None,
    }
    with atomic_dir(out_dir) as tmp:
        try:
            record["reason"] = _skip_reason(variant, device)
            if record["reason"]:
                record["status"] = "skipped"
            else:
                info = read_model_info(best_dir)
                t0 = time.perf_counter()
                if engine == "pytorch":
                    base, info = load_trained_model(best_dir, device)
                    model: Any = Bf16Model(base, device).eval()
                else:
                    fp32 = best_dir / "model.onnx"
                    if not fp32.is_file():
                        raise FileNotFoundError(f"{fp32}: no ONNX export in best/ ({_why_no_onnx(best_dir)})")
                    path = tmp / "model.onnx"
                    if variant == "onnx_fp32":
                        shutil.copyfile(fp32, path)
                    elif variant == "onnx_fp16":
                        _fp16(fp32, path)
                    else:
                        # in a child process, so the peak memory the evaluation reports is the
                        # deployed model's, not the calibration's
                        import multiprocessing
                        from concurrent.futures import ProcessPoolExecutor

                        spawn = multiprocessing.get_context("spawn")
                        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                            args = (
                                fp32,
                                path,
                                dataset_json,
                                splits_json,
                                eval_cfg,
                                deploy_cfg,
                                info,
                                threads,
                            )
                            record["quantization"] = pool.submit(_calibrate_and_quantize, *args).result()
                    providers = ["CUDAExecutionProvider"] if variant == "onnx_fp16" else None
                    model = OrtModel(path, threads, providers)
                    record["file"] = "model.onnx"
                    record["size_mb"] = path.stat().st_size / 2**20
                record["build_s"] = time.perf_counter() - t0
                result = evaluate_loaded(model, info, device, dataset_json, splits_json, eval_cfg, tmp)
                record["test_mIoU"] = float(result["mIoU"])
        except Exception as err:  # a variant that fails is recorded; the run goes on
            record.update(status="failed", reason=f"{type(err).__name__}: {str(err)[:600]}")
            for p in list(tmp.iterdir()):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        atomic_write_json(tmp / "variant.json", record)
    return record


def _verdict(name: str, ref: str, diff: float, low: float, high: float, n_units: int) -> str:
    from .select import MIN_UNITS

    numbers = f"difference {diff:+.4f} mIoU, 95 % CI {low:+.4f} to {high:+.4f} over {n_units} test units"
    if n_units < MIN_UNITS:
        return (
            f"{name} vs {ref}: cannot be told apart reliably ({numbers}): fewer than {MIN_UNITS} independent "
            "test units"
        )
    if low <= 0 <= high:
        return f"{name} vs {ref}: indistinguishable on this data ({numbers})"
    return f"{name} vs {ref}: {'loses' if high < 0 else 'gains'} accuracy ({numbers})"


def summarise_variants(
    experiment_dir: str | Path,
    dataset_json: str | Path,
    variants: list[str],
    n_bootstrap: int = 2000,
    seed: int = 0,
    block_length: int | str = "auto",
    min_clusters: int = 5,
    constraints: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The deployment table: the selected PyTorch model and each variant, on the same test images.

    The interval of each test mIoU and of each paired difference to the PyTorch model is a bootstrap
    over the experiment's test units (:func:`segbench.uncertainty.resampling_units`: independent
    images, whole groups, or moving blocks, as for the model comparison), with the same resamples for
    every row. A variant is a function of the same trained weights, so training-seed noise does not
    enter the difference: the question is only how much the conversion changes the masks.

    Args:
        experiment_dir: ``results/<experiment>`` (``selection.json``, ``eval/``, ``deploy/<variant>/``).
        dataset_json: the dataset (image groups).
        variants: the variant names of the experiment (``deploy.variants``).
        n_bootstrap, seed, block_length, min_clusters: as ``select.*``.
        constraints: ``select.max_ms_per_image`` / ``select.max_memory_mb`` (None or absent: no limit);
            each row records what it violates, and :func:`recommend` says which file to ship.

    Returns:
        ``{"reference": {...}, "rows": [{"variant", "status", "reason", "engine", "precision", "device",
        "threads", "mIoU", "ci_low", "ci_high", "difference", "diff_low", "diff_high", "verdict",
        "time_ms_median", "time_ms_p95", "peak_memory_mb", "size_mb", "speedup",
        "violations"}], "units": {...}, "constraints", "recommendation": str}``
        (the first row is the PyTorch model; rows of variants that did not run carry their reason).

    Raises:
        FileNotFoundError: ``selection.json`` or the selected model's evaluation is missing.
    """
    from . import uncertainty as unc
    from .layout import ExperimentLayout
    from .metrics import metrics_from_confusion
    from .records import read_array, read_dataset, read_json, read_metrics, read_selection, read_timing

    exp = ExperimentLayout(experiment_dir)
    sel = read_selection(exp.selection)
    if sel.get("model") is None:
        return {"reference": None, "rows": [], "units": None}
    ref_dir = exp.eval_dir(sel["model"], sel["fold"], sel["seed"])
    ref_metrics = read_metrics(ref_dir)
    ref_cms = read_array(ref_dir / "confusion_per_image.npy")
    ref_timing = read_timing(ref_dir) or {}
    meta = read_dataset(dataset_json)
    test_ids = sorted(read_json(exp.splits)["test"])
    groups = [meta["manifest"][i].get("group") for i in test_ids]
    # the test units of the model comparison (aggregate's choice, e.g. its automatic block length), so
    # the variants' intervals count the same independent units as the candidates'
    chosen = (
        ((read_json(exp.summary_json).get("uncertainty") or {}).get("units") or {})
        if exp.summary_json.is_file()
        else {}
    )
    if block_length == "auto" and chosen.get("method") == "blocks" and chosen.get("block_length"):
        block_length = int(chosen["block_length"])
    units = unc.resampling_units(test_ids, groups, block_length, min_clusters)
    if chosen.get("block_rule") and units.block_length == chosen.get("block_length"):
        units = dataclasses.replace(units, block_rule=chosen["block_rule"])
    weights = unc.resample_weights(units, n_bootstrap, np.random.default_rng(seed))
    ref_boot = unc.run_scores(ref_cms, weights)
    ref_size = None
    best = exp.best_dir
    if (best / "model.safetensors").is_file():
        ref_size = (best / "model.safetensors").stat().st_size / 2**20

    def row(name, rec, cms, timing, m):
        boot = unc.run_scores(cms, weights)
        lo, hi = unc.percentile_interval(boot)
        r = {
            "variant": name,
            "status": rec.get("status", "ok"),
            "reason": rec.get("reason"),
            "engine": rec.get("engine"),
            "precision": rec.get("precision"),
            "device": rec.get("device") or timing.get("device"),
            "threads": rec.get("threads"),
            "mIoU": float(metrics_from_confusion(cms.sum(0))["mIoU"]),
            "ci_low": lo,
            "ci_high": hi,
            "time_ms_median": timing.get("time_ms_median"),
            "time_ms_p95": timing.get("time_ms_p95"),
            "peak_memory_mb": timing.get("peak_memory_mb"),
            "size_mb": rec.get("size_mb"),
            "quantization": (rec.get("quantization") or {}).get("method"),
            "difference": None,
            "diff_low": None,
            "diff_high": None,
            "verdict": None,
            "speedup": None,
        }
        if name != "pytorch":
            d = boot - ref_boot
            dlo, dhi = unc.percentile_interval(d)
            r.update(difference=r["mIoU"] - float(ref_metrics["mIoU"]), diff_low=dlo, diff_high=dhi)
            r["verdict"] = _verdict(name, "pytorch", r["difference"], dlo, dhi, units.n_units)
            if r["time_ms_median"] and ref_timing.get("time_ms_median"):
                r["speedup"] = float(ref_timing["time_ms_median"]) / float(r["time_ms_median"])
        return r

    rows = [
        row(
            "pytorch",
            {"engine": "pytorch", "precision": "fp32", "size_mb": ref_size},
            ref_cms,
            ref_timing,
            ref_metrics,
        )
    ]
    for v in variants:
        vdir = exp.root / "deploy" / v
        rec = read_json(vdir / "variant.json")
        if rec.get("status") != "ok":
            rows.append(
                {
                    "variant": v,
                    "status": rec.get("status"),
                    "reason": rec.get("reason"),
                    "engine": rec.get("engine"),
                    "precision": rec.get("precision"),
                }
            )
            continue
        cms = read_array(vdir / "confusion_per_image.npy")
        if cms.shape != ref_cms.shape:
            raise ValueError(f"{vdir}: evaluated on other test images than {ref_dir}; rerun the deploy step")
        rows.append(row(v, rec, cms, read_timing(vdir) or {}, read_metrics(vdir)))
    limits = {k: v for k, v in (constraints or {}).items() if v is not None}
    for r in rows:
        if r.get("status") == "ok":
            r["violations"] = _violations(r, limits)
    return {
        "reference": {"model": sel["model"], "fold": sel["fold"], "seed": sel["seed"]},
        "rows": rows,
        "units": units.as_dict(),
        "n_bootstrap": int(n_bootstrap),
        "constraints": limits,
        "recommendation": recommend(rows, limits),
    }


_LIMITS = {"max_ms_per_image": ("time_ms_median", "ms per image"), "max_memory_mb": ("peak_memory_mb", "MB")}


def _violations(row: dict[str, Any], limits: dict[str, Any]) -> list[str]:
    out = []
    for key, (col, unit) in _LIMITS.items():
        if key in limits and row.get(col) is not None and float(row[col]) > float(limits[key]):
            out.append(f"select.{key} ({float(row[col]):.1f} {unit} > {float(limits[key]):g})")
    return out


def recommend(rows: list[dict[str, Any]], limits: dict[str, Any]) -> str:
    """Which file to ship, in one sentence, from the rows of :func:`summarise_variants`.

    A variant is acceptable when the paired interval of its difference to the PyTorch model does not
    lie wholly below 0 (it is not shown to lose accuracy). With ``select.*`` limits the PyTorch model
    misses, the fastest acceptable variant that meets them; without, the fastest acceptable variant
    that is faster than the PyTorch model (by the median time per image); else the PyTorch model.

    Args:
        rows: the PyTorch model first, then the variants (``status``, ``time_ms_median``,
            ``peak_memory_mb``, ``difference``, ``diff_low``, ``diff_high``, ``speedup``, ``size_mb``,
            ``violations``, ``engine``).
        limits: ``{"max_ms_per_image", "max_memory_mb"}`` (absent: no limit).
    """
    ref = rows[0]
    ok = [r for r in rows[1:] if r.get("status") == "ok" and r.get("diff_high") is not None]
    acceptable = sorted(
        (r for r in ok if r["diff_high"] >= 0), key=lambda r: r.get("time_ms_median") or float("inf")
    )

    def how(r):
        target = (
            f"deploy/{r['variant']}/model.onnx"
            if r.get("engine") == "onnxruntime"
            else "best/ under bfloat16 autocast (segbench predict --bf16)"
        )
        return (
            f"{r['variant']} ({r['time_ms_median']:.1f} ms per image, "
            + (
                f"{r['speedup']:.2f}x the PyTorch model"
                if r.get("speedup")
                else "the PyTorch model's time unknown"
            )
            + (f", {r['size_mb']:.1f} MB" if r.get("size_mb") else "")
            + f") at {r['difference']:+.4f} mIoU (95 % CI {r['diff_low']:+.4f} to {r['diff_high']:+.4f}): "
            f"ship {target}"
        )

    missed = _violations(ref, limits)
    if missed:
        fits = [r for r in acceptable if not r.get("violations")]
        if fits:
            return f"The PyTorch model misses {', '.join(missed)}; its variant {how(fits[0])}."
        return (
            f"The PyTorch model misses {', '.join(missed)} and no variant meets the limits without a "
            "measurable loss of accuracy: relax them, or select among the candidates that meet them."
        )
    faster = [r for r in acceptable if r.get("speedup") and r["speedup"] > 1]
    if faster:
        return f"Fastest without a measurable loss of accuracy: {how(faster[0])}."
    return "No variant is faster without a measurable loss of accuracy: ship the PyTorch model (best/)."
