"""One tuning trial: an ordinary training job on the tuning fold, then segbench's evaluation of the
trained model on that fold's validation images (never the test split), summed up in ``trial.json``.

Outputs in ``tune/<model>/round<r>/trial<n>/``: what a training job writes (``model.json``,
``history.csv``, ``train_meta.json``; the weights are deleted after the evaluation unless
``tune.keep_weights``: the tuned configuration is retrained anyway), ``val/`` (the validation
confusion matrices and per-image rows, as :mod:`segbench.evaluate` writes them) and, last,
``trial.json``::

    {"model", "number", "round", "params", "state": "complete" | "pruned" | "fail",
     "values": {"mIoU", "mDice_fg", "time_ms_median", "peak_memory_mb", "parameters"},
     "value": <the tuning metric>, "intermediate": [validation mIoU per epoch], "epochs",
     "pruned_at_epoch", "seconds" (training + evaluation), "error"}

A trial whose training raises (a diverging learning rate, memory) is recorded as ``fail`` with the
error, so one bad configuration does not stop the study; a killed job is not a failure: rerun, it
resumes from its checkpoint like any training job.
"""

from __future__ import annotations

import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_json
from ..records import read_json

__all__ = ["PruningCallback", "run_trial", "TRIAL_FILE"]

#: the file a trial job writes last (its declared output)
TRIAL_FILE = "trial.json"


def _callback_base():
    from ..training.runtime import lightning

    return lightning().pytorch.callbacks.Callback


class PruningCallback(_callback_base()):
    """Reports each epoch's validation mIoU to the trial and stops training when the study's pruner
    says so (``trainer.should_stop``, as early stopping does: the epoch's outputs are still written).

    The equivalent of ``optuna_integration.PyTorchLightningPruningCallback``, which raises
    ``TrialPruned`` from inside ``fit`` instead; stopping keeps the job an ordinary training job that
    writes its outputs. Single-process only (Optuna's pruning under DDP is broken: optuna#1417, #6043).
    """

    #: the trial's system attribute that keeps a pruning decision (a job killed after it, rerun from its
    #: checkpoint, stops where the first run did instead of asking the pruner again)
    PRUNED_KEY = "segbench:pruned_at_epoch"

    def __init__(self, trial, monitor: str = "val_mIoU"):
        super().__init__()
        self.trial, self.monitor = trial, monitor
        self.pruned_at_epoch: int | None = None

    def _decided(self) -> int | None:
        frozen = self.trial.study.get_trials(deepcopy=False)[self.trial.number]
        return frozen.system_attrs.get(self.PRUNED_KEY)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.pruned_at_epoch is not None:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            return
        epoch = int(pl_module.current_epoch)
        decided = self._decided()
        if decided is not None and epoch >= int(decided):
            self.pruned_at_epoch, trainer.should_stop = int(decided), True
            return
        if epoch not in self.trial.study.get_trials(deepcopy=False)[self.trial.number].intermediate_values:
            self.trial.report(float(score), step=epoch)
        if self.trial.should_prune():
            self.trial.storage.set_trial_system_attr(self.trial._trial_id, self.PRUNED_KEY, epoch)
            self.pruned_at_epoch = epoch
            trainer.should_stop = True


def _pruning(spec: dict[str, Any], trial_spec: dict[str, Any], study_dir: Path):
    """The pruning callback of a trial, or None (no pruner, or several objectives)."""
    from .study import objectives_of, open_study

    if (spec.get("pruner") or {}).get("name", "none") in (None, "none") or len(objectives_of(spec)) > 1:
        return None
    import optuna

    study = open_study(study_dir, spec, int(trial_spec["round"]), round_start=int(trial_spec["round_start"]))
    frozen = study.get_trials(deepcopy=False)[int(trial_spec["number"])]
    return PruningCallback(optuna.trial.Trial(study, frozen._trial_id))


def run_trial(
    trial_file: str | Path,
    spec: dict[str, Any],
    dataset_json: str | Path,
    splits_json: str | Path,
    augment_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    study_dir: str | Path,
    out_dir: str | Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train and validate one trial (see the module docstring) and write ``trial.json`` last.

    Args:
        trial_file: ``tune/<model>/round<r>/asked/trial<n>.json`` (written by
            :func:`segbench.tuning.study.ask_round`).
        spec: the candidate's tuning spec (``train``: the recipe; ``fold``, ``seed``, ``metric``,
            ``background``, ``keep_weights`` ...).
        dataset_json, splits_json: the canonical dataset and the experiment's split.
        augment_cfg, eval_cfg: the augmentation and evaluation configs.
        study_dir: ``tune/<model>`` (the journal the pruner reads).
        out_dir: ``tune/<model>/round<r>/trial<n>``.
        threads: the cores the job is given.

    Returns:
        The ``trial.json`` content.
    """
    from ..evaluate import evaluate_validation
    from ..select import criterion_score
    from ..training import train_model

    trial_spec = read_json(trial_file, required=("number", "model_config", "params"))
    out_dir = Path(out_dir)
    train_cfg = dict(spec["train"], seed=int(spec["seed"]))
    pruning = _pruning(spec, trial_spec, Path(study_dir))
    record: dict[str, Any] = {
        "model": spec["model"],
        "number": int(trial_spec["number"]),
        "round": int(trial_spec["round"]),
        "params": trial_spec["params"],
        "fold": int(spec.get("fold", 0)),
        "seed": int(spec["seed"]),
    }
    t0 = time.perf_counter()
    try:
        info = train_model(
            dataset_json,
            splits_json,
            int(spec.get("fold", 0)),
            trial_spec["model_config"],
            train_cfg,
            augment_cfg,
            out_dir,
            threads=threads,
            stop_callbacks=(pruning,) if pruning else (),
        )
        history = read_json_history(out_dir)
        val = evaluate_validation(out_dir, dataset_json, splits_json, eval_cfg, out_dir / "val", threads)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # this configuration cannot train: the study goes on without it
        record.update(
            state="fail",
            error=f"{type(err).__name__}: {err}"[:2000],
            traceback=traceback.format_exc()[-4000:],
            seconds=time.perf_counter() - t0,
            values={},
            value=None,
            intermediate=[],
            epochs=0,
            pruned_at_epoch=None,
        )
        atomic_write_json(out_dir / TRIAL_FILE, record)
        return record
    confusion = np.load(out_dir / "val" / "val_confusion.npy", allow_pickle=False)
    values = {
        "mIoU": criterion_score(confusion, "mIoU"),
        "mDice_fg": (
            criterion_score(confusion, "mDice_fg", spec.get("background"))
            if spec.get("background") is not None
            else None
        ),
        "time_ms_median": val["time_ms_median"],
        "peak_memory_mb": val["peak_memory_mb"],
        "parameters": info.get("parameters"),
    }
    pruned = pruning.pruned_at_epoch if pruning else None
    record.update(
        state="pruned" if pruned is not None else "complete",
        values=values,
        value=values[spec["metric"]],
        intermediate=[None if v != v else float(v) for v in history],
        epochs=int(info.get("epochs", len(history))),
        pruned_at_epoch=pruned,
        seconds=time.perf_counter() - t0,
        train_time_s=float(info.get("wall_time_s", 0.0)),
    )
    if not spec.get("keep_weights"):
        for name in ("model.safetensors", "last.safetensors"):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "lightning", ignore_errors=True)
    atomic_write_json(out_dir / TRIAL_FILE, record)
    return record


def read_json_history(out_dir: Path) -> list[float]:
    """The per-epoch validation mIoU of a training job's ``history.csv``."""
    from ..records import read_history

    h = read_history(out_dir)
    return [float(v) for v in h["val_mIoU"].tolist()] if "val_mIoU" in h else []
