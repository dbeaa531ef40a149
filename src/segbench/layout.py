"""Where every file of an experiment lives: the one place that builds results and dataset paths.

The workflow's rules (``workflow/rules/*.smk``) and every step build their paths here, after
nnU-Net's ``get_output_folder``: a step never joins ``"models"``, ``"eval"`` or ``f"fold{k}"`` itself.
Paths may hold Snakemake wildcards (``"{model}"``, ``"{fold}"``, ``"{seed}"``), so the rules and the
steps share one definition::

    results/<experiment>/
      config.yaml                 the composed config, as run
      configs/<step>.json         each step's slice of it; configs/models/<model>.json
      splits.json
      models/<model>/fold<k>/seed<s>/   TRAIN_FILES, lightning/last.ckpt (resume), lr_find.json
      eval/<model>/fold<k>/seed<s>/     EVAL_FILES, predictions/<id>.png
      tune/<model>/                study.journal, round<r>/, best.json, trials.csv, tuned_model.json
      plan.json, plan/<model>.json, preprocessed/   the training plan and the rescaled dataset
      summary.csv, summary.json, selection.json, learning_curves.csv, provenance.json
      best/                       the selected model, ready to use
      report/index.html
      logs/                       one log per job; logs/lightning/<model>/fold<k>/seed<s>/ (loggers)

One training run is a model x fold x training seed (``train.seeds``; the split's ``seed`` is apart):
every run has its own folder, so adding a seed adds folders and leaves the others as they are.

    data/processed/<dataset>/     dataset.json, validation.json, images/, masks/
    data/processed/<dataset>.config.json   the dataset config the conversion ran with

Example:
    >>> exp = ExperimentLayout("results/camvid_quick")
    >>> exp.model_file("smp_unet_r18", 0, 42, "model.safetensors").as_posix()
    'results/camvid_quick/models/smp_unet_r18/fold0/seed42/model.safetensors'
    >>> exp.eval_file("{model}", "{fold}", "{seed}", "metrics.json").as_posix()
    'results/camvid_quick/eval/{model}/fold{fold}/seed{seed}/metrics.json'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ExperimentLayout",
    "DatasetLayout",
    "TRAIN_FILES",
    "EVAL_FILES",
    "ENSEMBLE_PREFIX",
    "ensemble_name",
    "named_files",
    "resume_checkpoint_in",
]

#: what a training job writes into ``models/<model>/fold<k>/seed<s>/`` (its declared outputs)
TRAIN_FILES = ("model.safetensors", "last.safetensors", "model.json", "history.csv", "train_meta.json")
#: what an evaluation job writes into ``eval/<model>/fold<k>/seed<s>/`` (besides ``predictions/``)
EVAL_FILES = (
    "metrics.json",
    "per_image.csv",
    "confusion.npy",
    "confusion_per_image.npy",
    "val_per_image.csv",
    "val_confusion.npy",
    "val_confusion_per_image.npy",
    "timing.json",
)
#: ensembles are candidates named ``ensemble_top<k>``
ENSEMBLE_PREFIX = "ensemble_top"


def ensemble_name(top_k: int) -> str:
    """The candidate name of the top-``k`` softmax ensemble: ``ensemble_top<k>``."""
    return f"{ENSEMBLE_PREFIX}{top_k}"


def resume_checkpoint_in(model_dir: str | os.PathLike) -> Path:
    """``<model_dir>/lightning/last.ckpt``: where a training job keeps its resumable checkpoint (also
    for a model folder outside a results tree)."""
    return Path(model_dir) / "lightning" / "last.ckpt"


def named_files(folder: str | os.PathLike, names: tuple[str, ...]) -> dict[str, str]:
    """Snakemake named outputs for the files ``names`` in ``folder``: ``model.json`` -> key ``model_json``.

    >>> named_files("eval/{model}/fold{fold}", ("metrics.json",))
    {'metrics_json': 'eval/{model}/fold{fold}/metrics.json'}
    """
    return {n.replace(".", "_"): (Path(folder) / n).as_posix() for n in names}


@dataclass(frozen=True)
class ExperimentLayout:
    """The files of one experiment, under ``root`` (``results/<experiment>``).

    Every method returns a :class:`pathlib.Path`; ``model`` and ``fold`` may be Snakemake wildcards.
    """

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def named(cls, name: str, base: str | os.PathLike = "results") -> ExperimentLayout:
        """The experiment ``name`` under ``base`` (``results/<name>``)."""
        return cls(Path(base) / name)

    @property
    def name(self) -> str:
        """The experiment's name (the folder name)."""
        return self.root.name

    # ---- configs
    @property
    def config_yaml(self) -> Path:
        return self.root / "config.yaml"

    def step_config(self, step: str) -> Path:
        """``configs/<step>.json``: the slice of the config one step reads."""
        return self.root / "configs" / f"{step}.json"

    def model_config(self, model: str) -> Path:
        """``configs/models/<model>.json``."""
        return self.root / "configs" / "models" / f"{model}.json"

    # ---- per model x fold x training seed (a "run")
    def model_dir(self, model: str, fold: int | str, seed: int | str) -> Path:
        """``models/<model>/fold<k>/seed<s>``: one training job's folder (an ensemble's too)."""
        return self.root / "models" / str(model) / f"fold{fold}" / f"seed{seed}"

    def model_file(self, model: str, fold: int | str, seed: int | str, name: str) -> Path:
        return self.model_dir(model, fold, seed) / name

    def resume_checkpoint(self, model: str, fold: int | str, seed: int | str) -> Path:
        """Lightning's checkpoint of the last finished epoch, for resuming a killed job."""
        return resume_checkpoint_in(self.model_dir(model, fold, seed))

    def model_files(self, name: str, models: list[str], folds: list[int], seeds: list[int]) -> list[str]:
        """``models/<model>/fold<k>/seed<s>/<name>`` of every model x fold x seed (a rule's input list)."""
        return [self.model_file(m, k, s, name).as_posix() for m in models for k in folds for s in seeds]

    def eval_dir(self, model: str, fold: int | str, seed: int | str) -> Path:
        """``eval/<model>/fold<k>/seed<s>``: one evaluation job's folder."""
        return self.root / "eval" / str(model) / f"fold{fold}" / f"seed{seed}"

    def eval_file(self, model: str, fold: int | str, seed: int | str, name: str) -> Path:
        return self.eval_dir(model, fold, seed) / name

    def eval_files(self, name: str, models: list[str], folds: list[int], seeds: list[int]) -> list[str]:
        """``eval/<model>/fold<k>/seed<s>/<name>`` of every model x fold x seed (a rule's input list)."""
        return [self.eval_file(m, k, s, name).as_posix() for m in models for k in folds for s in seeds]

    def predictions_dir(self, model: str, fold: int | str, seed: int | str) -> Path:
        return self.eval_dir(model, fold, seed) / "predictions"

    def prediction(self, model: str, fold: int | str, seed: int | str, image_id: str) -> Path:
        return self.predictions_dir(model, fold, seed) / f"{image_id}.png"

    # ---- tuning (segbench.tuning): one study per candidate
    def tune_dir(self, model: str) -> Path:
        """``tune/<model>``: the candidate's study (``study.journal``), rounds and results."""
        return self.root / "tune" / str(model)

    def tune_asked_dir(self, model: str, round_: int | str) -> Path:
        """``tune/<model>/round<r>/asked``: what round r asked (``round.json``, ``trial<n>.json``)."""
        return self.tune_dir(model) / f"round{round_}" / "asked"

    def tune_trial_spec(self, model: str, round_: int | str, trial: int | str) -> Path:
        """``tune/<model>/round<r>/asked/trial<n>.json``: trial n's params and model config."""
        return self.tune_asked_dir(model, round_) / f"trial{trial}.json"

    def tune_trial_dir(self, model: str, round_: int | str, trial: int | str) -> Path:
        """``tune/<model>/round<r>/trial<n>``: trial n's training and validation files."""
        return self.tune_dir(model) / f"round{round_}" / f"trial{trial}"

    def tune_trial_result(self, model: str, round_: int | str, trial: int | str) -> Path:
        """``tune/<model>/round<r>/trial<n>/trial.json``: trial n's result (its job's last file)."""
        return self.tune_trial_dir(model, round_, trial) / "trial.json"

    def tune_best(self, model: str) -> Path:
        """``tune/<model>/best.json``: the chosen trial, the counts, the budget curve."""
        return self.tune_dir(model) / "best.json"

    def tune_trials_csv(self, model: str) -> Path:
        """``tune/<model>/trials.csv``: every trial's params, state and scores."""
        return self.tune_dir(model) / "trials.csv"

    def tuned_model_config(self, model: str) -> Path:
        """``tune/<model>/tuned_model.json``: the model config with the chosen params (what trains)."""
        return self.tune_dir(model) / "tuned_model.json"

    # ---- experiment-level outputs
    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def learning_curves(self) -> Path:
        return self.root / "learning_curves.csv"

    # ---- the plan (segbench.plan) and the rescaled copy of the dataset it trains on
    @property
    def plan_json(self) -> Path:
        """``plan.json``: the training plan, every decision with its reason and the probes' timings."""
        return self.root / "plan.json"

    def plan_decisions(self, model: str) -> Path:
        """``plan/<model>.json``: only what the plan decided for one model (what its training reads, so
        a new probe that decides the same retrains nothing)."""
        return self.root / "plan" / f"{model}.json"

    @property
    def preprocessed_json(self) -> Path:
        """``preprocessed/dataset.json``: the dataset rescaled to the training scale."""
        return self.root / "preprocessed" / "dataset.json"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    def best_file(self, name: str) -> Path:
        return self.best_dir / name

    @property
    def report_html(self) -> Path:
        return self.root / "report" / "index.html"

    # ---- logs
    def log(self, *parts: str) -> Path:
        """``logs/<parts...>``, e.g. ``log("train", "m_fold0.log")``."""
        return self.root.joinpath("logs", *parts)

    def job_log(self, step: str, model: str, fold: int | str, seed: int | str) -> Path:
        """``logs/<step>/<model>_fold<k>_seed<s>.log``: the log of one model x fold x seed job."""
        return self.log(step, f"{model}_fold{fold}_seed{seed}.log")

    def tracking_dir(self, model: str, fold: int | str, seed: int | str) -> Path:
        """``logs/lightning/<model>/fold<k>/seed<s>``: where the CSV and TensorBoard loggers write."""
        return self.root / "logs" / "lightning" / str(model) / f"fold{fold}" / f"seed{seed}"

    @property
    def mlflow_store(self) -> Path:
        """``mlruns/``: MLflow's local file store when ``logger.uri`` is not set."""
        return self.root / "mlruns"

    @classmethod
    def of_model_dir(cls, model_dir: str | os.PathLike) -> tuple[ExperimentLayout, str, int, int]:
        """``(layout, model, fold, seed)`` from a ``models/<model>/fold<k>/seed<s>`` folder.

        Raises:
            ValueError: the folder does not follow the layout.
        """
        p = Path(model_dir)
        fold, seed = p.parent.name, p.name
        if not (
            fold.startswith("fold")
            and fold[4:].isdigit()
            and seed.startswith("seed")
            and seed[4:].isdigit()
            and p.parents[2].name == "models"
        ):
            raise ValueError(f"{p} is not a results/<experiment>/models/<model>/fold<k>/seed<s> folder")
        return cls(p.parents[3]), p.parents[1].name, int(fold[4:]), int(seed[4:])


@dataclass(frozen=True)
class DatasetLayout:
    """The canonical dataset of one dataset config: ``data/processed/<name>/``."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def named(cls, name: str, base: str | os.PathLike = "data/processed") -> DatasetLayout:
        return cls(Path(base) / name)

    @property
    def dataset_json(self) -> Path:
        return self.root / "dataset.json"

    @property
    def validation_json(self) -> Path:
        return self.root / "validation.json"

    @property
    def fingerprint_json(self) -> Path:
        """``fingerprint.json``: what the dataset is, in numbers (:mod:`segbench.data.fingerprint`)."""
        return self.root / "fingerprint.json"

    @property
    def config_json(self) -> Path:
        """``<name>.config.json`` beside the folder: the dataset config, shared by every experiment on it."""
        return self.root.with_name(f"{self.root.name}.config.json")

    def file(self, relative: str) -> Path:
        """A manifest path (``images/<id>.png``, ``masks/<id>.png``) inside the dataset."""
        return self.root / relative
