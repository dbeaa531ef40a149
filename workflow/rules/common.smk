# Config: a composed config (from `segbench run`, via --configfile) or Hydra overrides (--config k=v).
# Each step's slice of the config is written to results/<name>/configs/*.json, and rewritten only
# when its content changes, so a job reruns only when what it depends on changed.
#
# What decides that a job is stale (docs/reproducibility.md): Snakemake's rerun triggers. An input
# whose mtime moved but whose bytes did not is not a change (Snakemake compares the checksum it
# recorded; the profiles raise --max-checksum-file-size so that covers images and checkpoints); the
# `code=` param of every rule is a fingerprint of the segbench modules the step runs and, for the
# steps that compute with them, of the installed library versions (segbench.provenance). The train
# rule is also in Snakemake's between-workflow output cache (`cache: True`, keyed by a hash of its
# shell command, params, and the content/provenance of its inputs): a model x fold x dataset x
# recipe trained by any experiment sharing the cache is trained once.
import json
import os
from pathlib import Path

from segbench import config as sb_config
from segbench.data.convert import ensure_raw, list_sources
from segbench.data.splits import n_folds_of
from segbench.io import write_if_changed
from segbench.layout import (
    EVAL_FILES,
    TRAIN_FILES,
    DatasetLayout,
    ExperimentLayout,
    ensemble_name,
    named_files,
)
from segbench.models.weights import start_weight_files
from segbench.provenance import STEPS, code_fingerprint, default_output_cache
from segbench.plan import is_planned, trains_on_rescaled_copy
from segbench.tuning import tune_enabled
from segbench.tuning.workflow import TuneInputs

if "name" in config and "model" in config:
    CFG = json.loads(json.dumps(dict(config)))
    sb_config.validate(CFG)
else:
    CFG = sb_config.compose([f"{k}={v}" for k, v in config.items()])

JOBS = sb_config.job_configs(CFG)
# a dataset that lives inside the project (data/raw/<name>, versioned by DVC) is copied there once
# from `import_from`; where it came from is not part of what the conversion depends on
ensure_raw(JOBS["dataset"])
JOBS["dataset"].pop("import_from", None)
# the validation limits are the validate step's params, not the conversion's input: changing them
# re-validates without reconverting
VALIDATE_ARGS = " ".join(
    [f"--max-ignore-share {float(JOBS['dataset'].pop('max_ignore_share', 0.5))}"]
    + (["--allow-absent-classes"] if JOBS["dataset"].pop("allow_absent_classes", False) else [])
)
EXP = CFG["name"]
# every path below comes from segbench.layout, the one definition the steps use too
LAYOUT = ExperimentLayout(f"results/{EXP}")
DATA = DatasetLayout.named(CFG["dataset"]["name"])
DATASET_JSON = DATA.dataset_json.as_posix()
VALIDATION_JSON = DATA.validation_json.as_posix()
SPLITS = LAYOUT.splits.as_posix()
# a rule's model x fold x training seed (wildcards)
MODEL_DIR = LAYOUT.model_dir("{model}", "{fold}", "{seed}").as_posix()
EVAL_DIR = LAYOUT.eval_dir("{model}", "{fold}", "{seed}").as_posix()
ENSEMBLE_EVAL_DIR = LAYOUT.eval_dir(ensemble_name("{k}"), "{fold}", "{seed}").as_posix()
MODELS = list(CFG["models"])
# k-fold's n_folds, or the folds of a user's split file (split.strategy=file)
N_FOLDS = n_folds_of(CFG["split"])
# a user's split file is the split step's input: editing it remakes the splits
SPLIT_FILE = [CFG["split"]["file"]] if CFG["split"]["strategy"] == "file" and CFG["split"].get("file") else []
FOLDS = list(range(N_FOLDS))
# training seeds (train.seeds / train.repeats; the split keeps `seed`): one training job per model x
# fold x seed, so adding a seed adds only that seed's jobs
SEEDS = sb_config.training_seeds(CFG)
REPORT = LAYOUT.report_html.as_posix()
# deployment variants of the selected model (deploy.variants; rules/deploy.smk)
DEPLOY_VARIANTS = list((CFG.get("deploy") or {}).get("variants") or [])
DEPLOY_SUMMARY = (LAYOUT.root / "deploy" / "summary.json").as_posix()
# training/evaluation jobs ask for one GPU (a SLURM --gpus, a local --resources gpu=N slot) unless the
# experiment runs on the CPU (device=cpu)
GPU = 0 if str(CFG.get("device", "auto")).lower() == "cpu" else 1
# a training job with train.devices > 1 runs DDP over that many GPUs (or CPU processes)
TRAIN_GPUS = GPU * int(CFG["train"].get("devices", 1) or 1)
_TOP_K = int(CFG["select"].get("ensemble_top_k", 0) or 0)
ENSEMBLES = [ensemble_name(_TOP_K)] if _TOP_K >= 2 and len(MODELS) >= 2 else []
CANDIDATES = MODELS + ENSEMBLES

# `logger` is written too but is no job's input: where training logs to never retrains a model (the
# train rule finds it beside configs/train.json)
# tuning (tune.trials > 0 or tune.budget_hours): each candidate trains the configuration its study chose
TUNE = tune_enabled(CFG.get("tune"))
TUNE_BATCH = int(JOBS["tune"].get("batch") or 1)
# a trial's cores: all of them when trials run one at a time (the gpu resource of the default profile
# runs GPU-capable jobs one by one), else a share, so a round's trials run side by side
TUNE_THREADS = workflow.cores if GPU else max(1, workflow.cores // TUNE_BATCH)


# tune/ always exists (a DVC output of the compare stage): what it holds, or that nothing was tuned
write_if_changed(
    (LAYOUT.root / "tune" / "README.md").as_posix(),
    (
        f"Tuning studies of {EXP}: one folder per candidate (docs/tuning.md).\n"
        if TUNE
        else f"{EXP} is not tuned (tune.trials = 0): every model trained with the shared recipe.\n"
    ),
)


# the model config each candidate's training jobs train: the tuned one when the experiment tunes
MODEL_CONFIGS = {
    m: (LAYOUT.tuned_model_config(m) if TUNE else LAYOUT.model_config(m)).as_posix() for m in MODELS
}
# the training plan (segbench.plan): recipe keys set to `plan` are decided by the plan step; a recipe
# with a scale (the plan's or its own) trains on the dataset rescaled once (preprocessed/)
PLANNED = is_planned(JOBS["train"])
SCALED = JOBS["train"].get("scale") is not None
FINGERPRINT_JSON = DATA.fingerprint_json.as_posix()
SCALE_SOURCE = (
    (LAYOUT.root / "plan_scale.json").as_posix()
    if JOBS["train"].get("scale") == "plan"
    else LAYOUT.step_config("train").as_posix()
)
TRAIN_DATASET = LAYOUT.preprocessed_json.as_posix() if SCALED else DATASET_JSON


# the dataset each model's training jobs read: the rescaled copy when its recipe (the experiment's train
# with the model's own train: keys on top) has a scale, else the converted one (a whole-image resize
# candidate beside planned ones); checked for every model before anything runs
TRAIN_DATASETS = {
    m: (
        LAYOUT.preprocessed_json.as_posix()
        if trains_on_rescaled_copy(m, CFG["model"].get(m) or {}, JOBS["train"])
        else DATASET_JSON
    )
    for m in MODELS
}


# the tuning rules' input functions (rounds found through the tune_ask checkpoint)
TUNE_INPUTS = TuneInputs(checkpoints, LAYOUT)


# the budget (tune.trials, tune.budget_hours) is read by tune_ask and tune_best only, so raising it
# asks more trials and leaves the finished ones up to date
JOBS["tune_budget"] = {k: JOBS["tune"].pop(k, None) for k in ("trials", "budget_hours")}
for _key in (
    "dataset",
    "split",
    "train",
    "augment",
    "evaluate",
    "report",
    "select",
    "logger",
    "tune",
    "tune_budget",
    "plan",
    "deploy",
):
    write_if_changed(LAYOUT.step_config(_key), sb_config.dump_json(JOBS[_key]))
for _name, _mcfg in JOBS["models"].items():
    write_if_changed(LAYOUT.model_config(_name), sb_config.dump_json(_mcfg))
# The conversion depends on the dataset config only, shared by every experiment on that dataset: one
# file beside the processed dataset, so running a second experiment does not make the first one's
# dataset look stale (a per-experiment copy would be newer than the converted data).
DATASET_CFG = DATA.config_json.as_posix()
write_if_changed(DATASET_CFG, sb_config.dump_json(JOBS["dataset"]))

# the code each step runs (segbench modules + library versions): a `params` entry of every rule
CODE = {step: code_fingerprint(step) for step in STEPS}
# Snakemake's between-workflow output cache (for `cache: True` rules, with --cache): one per project
# by default; point SNAKEMAKE_OUTPUT_CACHE at a shared folder to share trained models between
# projects or users. The variable is read when the DAG is built, after this file is parsed.
OUTPUT_CACHE = default_output_cache()


# Used only with --software-deployment-method conda; the default runs in the current environment.
SEGBENCH_ENV = "../envs/segbench.yaml"


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    fold=r"\d+",
    seed=r"\d+",
    round=r"\d+",
    trial=r"\d+",
