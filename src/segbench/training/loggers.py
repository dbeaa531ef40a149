"""Experiment tracking through Lightning's own loggers (``config/logger/``).

``logger.name``:

* ``csv`` (default): Lightning's ``CSVLogger``, per-step training loss and per-epoch validation
  numbers in ``results/<experiment>/logs/lightning/<model>/fold<k>/seed<s>/metrics.csv``;
* ``tensorboard``: ``TensorBoardLogger`` into the same folder (``tensorboard --logdir
  results/<experiment>/logs/lightning``; needs ``tensorboard`` or ``tensorboardX``);
* ``mlflow``: ``MLFlowLogger``, one MLflow experiment per segbench experiment and one run per
  model x fold, into a local file store ``results/<experiment>/mlruns`` (``mlflow ui
  --backend-store-uri results/<experiment>/mlruns``), or to the tracking server ``logger.uri``
  (``http://...``, ``databricks``, ``sqlite:///...``). The file store is used rather than SQLite
  because several training jobs write at once and SQLite locks under parallel writers; MLflow 3
  asks to opt in to it (``MLFLOW_ALLOW_FILE_STORE``), which segbench does for this store only.
  Needs ``mlflow`` or ``mlflow-skinny``;
* ``none``: no logger.

The logger is not part of what a training job depends on: changing it retrains nothing, and a
model restored from Snakemake's cache has no tracking log of its own run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["build_logger", "LOGGERS"]

LOGGERS = ("none", "csv", "tensorboard", "mlflow")


def build_logger(
    cfg: dict[str, Any] | None,
    save_dir: Path,
    mlflow_store: Path,
    experiment: str,
    run_name: str,
    params: dict[str, Any] | None = None,
):
    """A Lightning logger for one training job, or ``False`` (no logger).

    Args:
        cfg: ``{"name": csv | tensorboard | mlflow | none, "uri": tracking server or None}``; None = no
            logger.
        save_dir: the job's folder for CSV / TensorBoard logs.
        mlflow_store: the local MLflow file store (used when ``uri`` is not set).
        experiment: the segbench experiment (MLflow experiment name).
        run_name: ``<model>/fold<k>/seed<s>`` (MLflow run name).
        params: hyper-parameters to record (the recipe and the model config).

    Raises:
        ValueError: an unknown logger name (lists the allowed ones).
        ImportError: the logger's package is not installed (names it).
    """
    name = (cfg or {}).get("name") or "none"
    if name not in LOGGERS:
        raise ValueError(f"logger.name '{name}' unknown; allowed values: {', '.join(LOGGERS)}")
    if name == "none":
        return False
    from lightning.pytorch import loggers

    if name == "csv":
        logger = loggers.CSVLogger(str(save_dir), name="", version="")
    elif name == "tensorboard":
        logger = loggers.TensorBoardLogger(str(save_dir), name="", version="", default_hp_metric=False)
    else:
        uri = cfg.get("uri")
        if not uri:
            mlflow_store.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path(mlflow_store).resolve().as_uri()
        try:
            logger = loggers.MLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=uri)
        except ModuleNotFoundError as err:
            raise ImportError(
                "logger=mlflow needs MLflow: pip install -c constraints.txt mlflow-skinny"
            ) from err
    if params:
        logger.log_hyperparams(_flat(params))
    return logger


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``: loggers store flat, scalar hyper-parameters."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out
