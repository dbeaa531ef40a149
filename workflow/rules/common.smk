# Config: a composed config (from `segbench run`, via --configfile) or Hydra overrides (--config k=v).
# Each step's slice of the config is written to results/<name>/configs/*.json, and rewritten only
# when its content changes, so a job reruns only when what it depends on changed.
import json
import os
from pathlib import Path

from segbench import config as sb_config
from segbench.data.convert import list_sources
from segbench.io import write_if_changed

if "name" in config and "model" in config:
    CFG = json.loads(json.dumps(dict(config)))
    sb_config.validate(CFG)
else:
    CFG = sb_config.compose([f"{k}={v}" for k, v in config.items()])

JOBS = sb_config.job_configs(CFG)
EXP = CFG["name"]
RES = f"results/{EXP}"
CONF = f"{RES}/configs"
DS = f"data/processed/{CFG['dataset']['name']}"
MODELS = list(CFG["models"])
N_FOLDS = int(CFG["split"].get("n_folds", 1)) if CFG["split"]["strategy"] == "kfold" else 1
FOLDS = list(range(N_FOLDS))
REPORT = f"{RES}/report/index.html"
_TOP_K = int(CFG["select"].get("ensemble_top_k", 0) or 0)
ENSEMBLES = [f"ensemble_top{_TOP_K}"] if _TOP_K >= 2 and len(MODELS) >= 2 else []
CANDIDATES = MODELS + ENSEMBLES

for _key in ("dataset", "split", "train", "augment", "evaluate", "report", "select"):
    write_if_changed(f"{CONF}/{_key}.json", sb_config.dump_json(JOBS[_key]))
for _name, _mcfg in JOBS["models"].items():
    write_if_changed(f"{CONF}/models/{_name}.json", sb_config.dump_json(_mcfg))
# The conversion depends on the dataset config only, shared by every experiment on that dataset: one
# file beside the processed dataset, so running a second experiment does not make the first one's
# dataset look stale (a per-experiment copy would be newer than the converted data).
DATASET_CFG = f"data/processed/{CFG['dataset']['name']}.config.json"
write_if_changed(DATASET_CFG, sb_config.dump_json(JOBS["dataset"]))


# Used only with --software-deployment-method conda; the default runs in the current environment.
SEGBENCH_ENV = "../envs/segbench.yaml"


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    fold=r"\d+",
