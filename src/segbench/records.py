"""The files steps hand to each other: one read/write pair per inter-stage file, typed.

Steps talk through plain files on disk (JSON, CSV, NumPy ``.npy``), as nnU-Net's stages do through
``dataset.json``, ``splits_final.json`` and ``summary.json``. Every reader here raises
:class:`StageOutputMissing` (a ``FileNotFoundError``) naming the file and the step that writes it
("X not found; run the workflow's evaluate step first"), and :class:`RecordError` naming the file
and the fix when a file exists but cannot be read. Every writer is atomic (temporary file + rename,
:mod:`segbench.io`), so a reader never sees half a file.

Arrays are read with ``np.load(allow_pickle=False)``: a record never runs code.
"""

from __future__ import annotations

import io as _io
import json
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .io import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "StageOutputMissing",
    "RecordError",
    "ClassInfo",
    "ManifestEntry",
    "DatasetMeta",
    "Fold",
    "Splits",
    "ModelInfo",
    "read_json",
    "read_dataset",
    "write_dataset",
    "read_validation",
    "write_validation",
    "read_splits",
    "write_splits",
    "fold_ids",
    "read_model_info",
    "write_model_info",
    "read_train_meta",
    "write_train_meta",
    "read_history",
    "write_history",
    "read_ensemble_spec",
    "write_ensemble_spec",
    "read_metrics",
    "write_metrics",
    "read_timing",
    "write_timing",
    "merge_timing",
    "read_array",
    "write_array",
    "read_table",
    "write_table",
    "read_summary",
    "write_summary",
    "read_selection",
    "write_selection",
    "read_parity",
    "write_parity",
    "HISTORY_COLUMNS",
]

#: file name -> the workflow step (and ``segbench`` subcommand) that writes it
WRITTEN_BY = {
    "dataset.json": "convert",
    "validation.json": "validate",
    "splits.json": "split",
    "model.json": "train",
    "model.safetensors": "train",
    "last.safetensors": "train",
    "train_meta.json": "train",
    "history.csv": "train",
    "ensemble.json": "ensemble",
    "metrics.json": "evaluate",
    "timing.json": "evaluate",
    "per_image.csv": "evaluate",
    "confusion.npy": "evaluate",
    "confusion_per_image.npy": "evaluate",
    "val_per_image.csv": "evaluate",
    "val_confusion.npy": "evaluate",
    "val_confusion_per_image.npy": "evaluate",
    "summary.json": "aggregate",
    "summary.csv": "aggregate",
    "selection.json": "aggregate",
    "learning_curves.csv": "aggregate",
    "onnx_parity.json": "best",
}

#: columns of ``history.csv``, one row per epoch
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_mIoU", "lr", "epoch_time_s"]


class StageOutputMissing(FileNotFoundError):
    """An inter-stage file does not exist; the message names it and the step that writes it."""

    def __init__(self, path: str | Path, step: str | None = None):
        path = Path(path)
        step = step or WRITTEN_BY.get(path.name)
        if step == "train":
            how = "train the model first (the workflow's train step: segbench run, or segbench train)"
        elif step:
            how = f"run the workflow's {step} step first (segbench run, or segbench {step})"
        else:
            how = "rerun the workflow"
        super().__init__(f"{path} not found; {how}")
        self.path = path
        self.step = step


class RecordError(ValueError):
    """An inter-stage file exists but cannot be used (not valid JSON, a key missing); names the file and the
    fix."""


def _require(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise StageOutputMissing(path)
    return path


def _broken(path: Path, why: str) -> RecordError:
    step = WRITTEN_BY.get(path.name)
    fix = f"delete it and rerun the {step} step" if step else "delete it and rerun the step that writes it"
    return RecordError(f"{path}: {why}; {fix}")


def read_json(path: str | Path, required: tuple[str, ...] = (), schema: dict[str, Any] | None = None) -> Any:
    """A JSON file written by a segbench step.

    Args:
        path: the file.
        required: top-level keys that must be present (a JSON object is then required).
        schema: a JSON Schema (draft 2020-12) the content must match, checked with ``jsonschema``
            after ``required``.

    Raises:
        StageOutputMissing: no such file.
        RecordError: not valid UTF-8 JSON, a required key is missing (names the key), or the
            content does not match ``schema`` (names the field).
    """
    path = _require(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _broken(path, f"not valid JSON ({err})") from err
    if required:
        if not isinstance(obj, dict):
            raise _broken(
                path, f"expected a JSON object with {', '.join(required)}, got {type(obj).__name__}"
            )
        missing = [k for k in required if k not in obj]
        if missing:
            raise _broken(path, f"key(s) {', '.join(missing)} missing")
    if schema is not None:
        import jsonschema

        err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
        if err is not None:
            where = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err.absolute_path)
            raise _broken(path, f"{where or 'the top level'}: {err.message}")
    return obj


# ---------------------------------------------------------------- dataset, validation, splits


class ClassInfo(TypedDict):
    """One class of ``dataset.json``: ``id`` (the mask value), ``name``, ``color`` (RGB or None)."""

    id: int
    name: str
    color: list[int] | None


class ManifestEntry(TypedDict, total=False):
    """One image of ``dataset.json``'s manifest; paths are relative to the dataset folder."""

    image: str
    mask: str
    image_sha256: str
    mask_sha256: str
    height: int
    width: int
    group: str
    subset: str | None


class DatasetMeta(TypedDict, total=False):
    """``dataset.json`` (written by :func:`segbench.data.convert.convert`)."""

    name: str
    classes: list[ClassInfo]
    ignore_index: int
    background: int | None
    num_images: int
    manifest: dict[str, ManifestEntry]


#: a path inside the dataset folder: relative, no ``..`` segment (a dataset.json pulled from a shared
#: remote cannot make a step read files elsewhere)
_INSIDE = {"type": "string", "minLength": 1, "pattern": r"^(?![/\\])(?![A-Za-z]:)(?!(.*[/\\])?\.\.([/\\]|$))"}
#: the fields of ``dataset.json`` the steps read
DATASET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "ignore_index": {"type": "integer", "minimum": 0, "maximum": 65535},
        "background": {"type": ["integer", "null"], "minimum": 0, "maximum": 65535},
        "classes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 65535},
                    "name": {"type": "string"},
                    "color": {
                        "type": ["array", "null"],
                        "items": {"type": "integer", "minimum": 0, "maximum": 255},
                        "minItems": 3,
                        "maxItems": 3,
                    },
                },
            },
        },
        "manifest": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["image", "mask", "group"],
                "properties": {
                    "image": _INSIDE,
                    "mask": _INSIDE,
                    "image_sha256": {"type": ["string", "null"]},
                    "mask_sha256": {"type": ["string", "null"]},
                    "height": {"type": "integer", "minimum": 1},
                    "width": {"type": "integer", "minimum": 1},
                    "group": {"type": "string"},
                    "subset": {"type": ["string", "null"]},
                },
            },
        },
    },
}


def read_dataset(path: str | Path) -> DatasetMeta:
    """``dataset.json`` of a canonical dataset (``classes``, ``ignore_index``, ``manifest`` ...),
    checked against :data:`DATASET_SCHEMA`.

    Raises:
        StageOutputMissing: no such file.
        RecordError: not JSON, a key missing, or a field of the wrong type or a path leaving the
            dataset folder (names the field).
    """
    return read_json(path, required=("name", "classes", "ignore_index", "manifest"), schema=DATASET_SCHEMA)


def read_validation(path: str | Path) -> dict[str, Any]:
    """``validation.json``: ``per_image`` class pixel counts ``{id: [C ints]}``, ``absent_classes`` ..."""
    return read_json(path, required=("per_image",))


def write_validation(path: str | Path, report: dict[str, Any]) -> None:
    """Write ``validation.json`` compactly (one line: it holds a count vector per image)."""
    atomic_write_json(path, report, indent=None)


def write_dataset(path: str | Path, meta: DatasetMeta) -> None:
    """Write ``dataset.json`` (the conversion writes it last, inside its temporary folder)."""
    atomic_write_json(path, meta)


class Fold(TypedDict):
    train: list[str]
    val: list[str]


class Splits(TypedDict, total=False):
    """``splits.json``: ``{strategy, seed, test: [ids], folds: [{train, val}]}``."""

    strategy: str
    seed: int
    test: list[str]
    folds: list[Fold]


def read_splits(path: str | Path) -> Splits:
    """``splits.json`` (written by :func:`segbench.data.splits.make_splits`)."""
    return read_json(path, required=("test", "folds"))


def write_splits(path: str | Path, splits: Splits) -> None:
    atomic_write_json(path, splits)


def fold_ids(splits: Splits, fold: int, source: str | Path = "splits.json") -> Fold:
    """The training and validation ids of ``fold``.

    Raises:
        IndexError: the fold does not exist (names the file and how many folds it has).
    """
    if not 0 <= fold < len(splits["folds"]):
        raise IndexError(f"{source} has {len(splits['folds'])} fold(s); fold {fold} does not exist")
    f = splits["folds"][fold]
    return {"train": list(f["train"]), "val": list(f.get("val") or [])}


# ---------------------------------------------------------------- training outputs


class ModelInfo(TypedDict, total=False):
    """``model.json``: what rebuilds a trained model (``model`` config, classes, input size, normalisation).

    An ensemble's adds ``ensemble: [{name, path}]`` (member folders relative to it).
    ``memory_format``: ``channels_last`` | ``contiguous`` (NCHW), the format the model trained in,
    which inference uses too (absent: NCHW).
    """

    model: dict[str, Any]
    num_classes: int
    classes: list[ClassInfo]
    ignore_index: int
    image_size: list[int]
    normalize: dict[str, Any] | None
    dataset: str
    fold: int
    seed: int
    memory_format: str
    ensemble: list[dict[str, str]]


_NUMBERS3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
#: the fields of ``model.json`` that rebuild and run a model
MODEL_INFO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {
            "type": "object",
            "required": ["library"],
            "properties": {
                "library": {"type": "string"},
                "arch": {"type": "string"},
                "encoder": {"type": "string"},
                "name": {"type": "string"},
            },
        },
        "num_classes": {"type": "integer", "minimum": 1, "maximum": 65536},
        "classes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {"id": {"type": "integer"}},
            },
        },
        "ignore_index": {"type": "integer", "minimum": 0, "maximum": 65535},
        "image_size": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 1 << 16},
            "minItems": 2,
            "maxItems": 2,
        },
        "normalize": {
            "type": ["object", "null"],
            "properties": {"mean": _NUMBERS3, "std": _NUMBERS3, "max_pixel_value": {"type": "number"}},
        },
        "memory_format": {"enum": ["channels_last", "contiguous"]},
        "inference": {
            "type": "object",
            "properties": {
                "mode": {"enum": ["resize", "whole", "slide"]},
                "scale": {"type": "number", "exclusiveMinimum": 0},
                "target_diagonal": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "crop": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 16},
                    "minItems": 2,
                    "maxItems": 2,
                },
            },
        },
        "ensemble": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "required": ["path"], "properties": {"path": _INSIDE}},
        },
    },
}


def read_model_info(model_dir: str | Path) -> ModelInfo:
    """``<model_dir>/model.json``, checked against :data:`MODEL_INFO_SCHEMA` (an ensemble's member
    paths must stay inside its folder).

    Raises:
        StageOutputMissing: no such file.
        RecordError: not JSON, a key missing or a field of the wrong type (names the field).
    """
    return read_json(
        Path(model_dir) / "model.json",
        required=("model", "num_classes", "image_size"),
        schema=MODEL_INFO_SCHEMA,
    )


def write_model_info(model_dir: str | Path, info: ModelInfo) -> None:
    atomic_write_json(Path(model_dir) / "model.json", info)


def read_train_meta(model_dir: str | Path) -> dict[str, Any]:
    """``<model_dir>/train_meta.json``: parameters, epochs, wall time, device, versions ..."""
    return read_json(Path(model_dir) / "train_meta.json", required=("parameters",))


def write_train_meta(model_dir: str | Path, meta: dict[str, Any]) -> None:
    atomic_write_json(Path(model_dir) / "train_meta.json", meta)


def read_history(model_dir: str | Path):
    """``<model_dir>/history.csv`` as a pandas DataFrame (:data:`HISTORY_COLUMNS`)."""
    return read_table(Path(model_dir) / "history.csv")


def write_history(model_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``history.csv``: floats with 6 significant digits, one row per epoch."""
    import csv

    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(Path(model_dir) / "history.csv", buf.getvalue())


def read_ensemble_spec(model_dir: str | Path) -> dict[str, Any]:
    """``<model_dir>/ensemble.json``: ``{model, members, parameters, member_val_scores, criterion, fold,
    seed, left_out: {model: why it learned nothing}}``."""
    return read_json(Path(model_dir) / "ensemble.json", required=("members", "parameters"))


def write_ensemble_spec(model_dir: str | Path, spec: dict[str, Any]) -> None:
    atomic_write_json(Path(model_dir) / "ensemble.json", spec)


# ---------------------------------------------------------------- evaluation outputs


def read_metrics(eval_dir: str | Path) -> dict[str, Any]:
    """``<eval_dir>/metrics.json``: test metrics (and the fold's validation metrics under ``val``)."""
    return read_json(Path(eval_dir) / "metrics.json", required=("mIoU",))


def write_metrics(eval_dir: str | Path, metrics: dict[str, Any]) -> None:
    atomic_write_json(Path(eval_dir) / "metrics.json", metrics)


def read_timing(eval_dir: str | Path, required: bool = True) -> dict[str, Any] | None:
    """``<eval_dir>/timing.json`` (time per image, peak memory); None when absent and not ``required``."""
    path = Path(eval_dir) / "timing.json"
    if not required and not path.is_file():
        return None
    return read_json(path)


def write_timing(eval_dir: str | Path, timing: dict[str, Any]) -> None:
    atomic_write_json(Path(eval_dir) / "timing.json", timing)


def merge_timing(metrics: dict[str, Any], timing: dict[str, Any] | None) -> dict[str, Any]:
    """``metrics.json`` content with ``timing.json``'s summary added: ``time_ms_median``,
    ``time_ms_p95``, ``peak_memory_mb``, ``peak_gpu_memory_mib`` at the top level and the validation
    ``time_ms_median`` under ``"val"``. Results written before ``timing.json`` existed (``timing`` None)
    carry these keys in ``metrics.json`` itself and are returned as they are. Returns a new dict."""
    out = dict(metrics)
    if timing is None:
        return out
    for k in ("time_ms_median", "time_ms_p95", "peak_memory_mb", "peak_gpu_memory_mib"):
        out[k] = timing.get(k)
    if isinstance(out.get("val"), dict):
        out["val"] = dict(out["val"], time_ms_median=(timing.get("val") or {}).get("time_ms_median"))
    return out


def read_array(path: str | Path, required: bool = True) -> np.ndarray | None:
    """A ``.npy`` record (confusion matrices); None when absent and not ``required``. Never unpickles."""
    path = Path(path)
    if not required and not path.is_file():
        return None
    try:
        return np.load(_require(path), allow_pickle=False)
    except ValueError as err:
        raise _broken(path, f"not a NumPy array file ({err})") from err


def write_array(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def read_table(path: str | Path):
    """A CSV record (``per_image.csv``, ``history.csv``, ``summary.csv`` ...) as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(_require(path))


def write_table(path: str | Path, frame) -> None:
    """Write a DataFrame as CSV, floats with 6 significant digits, no index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


# ---------------------------------------------------------------- aggregation and best/


def read_summary(path: str | Path) -> dict[str, Any]:
    """``summary.json``: ``{experiment, dataset, classes, test_images, models: [rows], per_class_IoU,
    baseline, best}``."""
    return read_json(path, required=("models", "classes", "baseline", "best"))


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    atomic_write_json(path, summary)


def read_selection(path: str | Path) -> dict[str, Any]:
    """``selection.json``: the selected model (``fold``, ``seed``: the run in ``best/``), how it was
    chosen, the paired verdicts and the uncertainty they count."""
    return read_json(path, required=("model", "rule"))


def write_selection(path: str | Path, selection: dict[str, Any]) -> None:
    atomic_write_json(path, selection)


def read_parity(path: str | Path, required: bool = True) -> dict[str, Any]:
    """``best/onnx_parity.json``; ``{}`` when absent and not ``required`` (ONNX export turned off)."""
    if not required and not Path(path).is_file():
        return {}
    return read_json(path)


def write_parity(path: str | Path, parity: dict[str, Any]) -> None:
    atomic_write_json(path, parity)
