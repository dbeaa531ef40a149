"""Compose, resolve and validate an experiment's config (Hydra + JSON schema).

An experiment is composed by Hydra from the groups in ``config/`` (dataset, split, train, augment,
evaluate, report, select, logger, experiment). ``models`` is a list of names of ``config/model/*.yaml``
files; each is
composed from that group and merged with ``model_overrides.<name>``, giving ``cfg.model[<name>]``.
The result is a plain dict, validated against ``workflow/schemas/config.schema.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from omegaconf import OmegaConf

from . import paths

__all__ = [
    "ConfigError",
    "compose",
    "resolve",
    "validate",
    "job_configs",
    "tune_config",
    "training_seeds",
    "available",
]


class ConfigError(ValueError):
    """The composed config is invalid; the message names the key and the allowed values."""


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("shared"):
        # ${shared:data/camvid} -> $SEGBENCH_SHARED/data/camvid (default ../shared beside the checkout)
        OmegaConf.register_new_resolver("shared", lambda rel="": str(paths.shared_dir() / rel))


def available(group: str) -> list[str]:
    """Names of the options of a config group (``config/<group>/*.yaml``), sorted."""
    return sorted(p.stem for p in (paths.config_dir() / group).glob("*.yaml"))


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose the experiment config from ``config/`` with Hydra overrides; resolve and validate it.

    Args:
        overrides: Hydra command-line overrides, e.g. ``["experiment=camvid_quick", "train.epochs=3"]``.

    Returns:
        The resolved config as a plain dict (see :func:`resolve`).

    Raises:
        ConfigError: an unknown group option or key, a model name without config, or a schema violation.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(paths.config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
            raw = OmegaConf.to_container(cfg, resolve=True)
            models = {}
            for name in raw.get("models") or []:
                if name not in available("model"):
                    raise ConfigError(
                        f"models: unknown model '{name}'; allowed values: {', '.join(available('model'))} "
                        f"(files in {paths.config_dir() / 'model'})"
                    )
                mcfg = hydra_compose(config_name=f"model/{name}")
                models[name] = OmegaConf.to_container(mcfg, resolve=True)["model"]
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"could not compose the config: {err}") from err
    return resolve(raw, models)


def resolve(raw: dict[str, Any], model_configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Attach the per-model configs (with ``model_overrides`` merged in) as ``cfg['model']`` and validate.

    Raises:
        ConfigError: ``model_overrides`` names a model that is not in ``models``, or the schema fails.
    """
    cfg = json.loads(json.dumps(raw))  # deep copy, plain types
    overrides = cfg.get("model_overrides") or {}
    unknown = sorted(set(overrides) - set(cfg.get("models") or []))
    if unknown:
        raise ConfigError(
            f"model_overrides: {unknown} not in models; allowed values: {', '.join(cfg.get('models') or [])}"
        )
    cfg["model"] = {}
    for name, mcfg in model_configs.items():
        merged = OmegaConf.merge(OmegaConf.create(mcfg), OmegaConf.create(overrides.get(name, {})))
        cfg["model"][name] = OmegaConf.to_container(merged, resolve=True)
    validate(cfg)
    for name, mcfg in cfg[
        "model"
    ].items():  # a model's own training changes: the merged recipe must be valid too
        if mcfg.get("train"):
            try:
                validate(dict(cfg, train={**cfg["train"], **mcfg["train"]}))
            except ConfigError as err:
                raise ConfigError(str(err).replace("\n  train.", f"\n  model.{name}.train.")) from None
    return cfg


def _schema() -> dict[str, Any]:
    path = paths.project_root() / "workflow" / "schemas" / "config.schema.yaml"
    return yaml.safe_load(path.read_text())


def validate(cfg: dict[str, Any]) -> None:
    """Validate a composed config against ``workflow/schemas/config.schema.yaml``.

    Raises:
        ConfigError: one line per problem: the dotted key, what is wrong, and the allowed values.
    """
    validator = jsonschema.Draft202012Validator(_schema())
    problems = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        allowed = ""
        if err.validator == "enum":
            allowed = f"; allowed values: {', '.join(map(str, err.validator_value))}"
        elif err.validator == "propertyNames" and isinstance(err.validator_value, dict):
            allowed = f"; allowed keys: {', '.join(map(str, err.validator_value.get('enum', [])))}"
        problems.append(f"{key}: {err.message}{allowed}")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def job_configs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Split a resolved config into what each workflow step depends on (written as JSON files).

    Each training job reads only its model's config plus the training and augmentation recipe, so
    changing one model retrains that model only and a report option retrains nothing.

    Returns:
        ``{"dataset": ..., "split": ..., "train": ..., "augment": ..., "evaluate": ..., "report": ...,
        "select": ..., "logger": ..., "tune": ..., "models": {name: ...}}``; ``split`` carries the
        experiment's seed, ``train`` and ``evaluate`` its device and the training image size. ``train``
        holds no seed: each training job gets its own (:func:`training_seeds`).
        ``logger`` is read by training jobs but is not one of their inputs (tracking is not what a
        model depends on).
    """
    # the training seed is each job's own (a wildcard: models/<m>/fold<k>/seed<s>/); the list of seeds is
    # not in train.json, so adding a seed adds jobs and leaves the trained ones up to date
    train = {k: v for k, v in cfg["train"].items() if k not in ("seeds", "repeats")}
    train["device"] = cfg["device"]
    return {
        "dataset": cfg["dataset"],
        "split": dict(cfg["split"], seed=cfg["seed"]),
        "train": train,
        "augment": cfg["augment"],
        "evaluate": dict(
            cfg["evaluate"],
            device=cfg["device"],
            image_size=cfg["train"]["image_size"],
            normalize=cfg["augment"]["normalize"],
        ),
        "report": dict(cfg["report"], name=cfg["name"]),
        "select": dict(cfg["select"], seed=cfg["seed"]),
        "logger": dict(cfg.get("logger") or {"name": "none"}, experiment=cfg["name"]),
        "tune": tune_config(cfg),
        "models": {name: dict(m, name=name) for name, m in cfg["model"].items()},
    }


def tune_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The tuning steps' config (``configs/tune.json``): ``tune`` with its defaults resolved: the
    metric (``select.criterion``), the trials' training seed (the first training seed), the sampler's
    seed (the experiment's), the dataset's background class (for ``mDice_fg``) and the ``select.*``
    limits (constraints of a multi-objective search)."""
    tune = json.loads(json.dumps(cfg.get("tune") or {"trials": 0}))
    objectives = tune.get("objectives") or []
    if objectives and tune.get("metric") and tune["metric"] != objectives[0]:
        raise ConfigError(
            f"tune.metric ({tune['metric']}) and the first of tune.objectives ({objectives[0]}) differ: "
            "the first objective is the validation score the search maximises; make them the same"
        )
    tune["metric"] = (objectives[:1] or [tune.get("metric") or cfg["select"].get("criterion", "mIoU")])[0]
    if tune["metric"] == "mDice_fg" and cfg["dataset"].get("background") is None:
        raise ConfigError(
            "tune.metric mDice_fg needs dataset.background (the class left out of the foreground mean); "
            "set it or tune on mIoU"
        )
    tune["seed"] = int(tune["seed"]) if tune.get("seed") is not None else training_seeds(cfg)[0]
    sampler = dict(tune.get("sampler") or {})
    sampler["seed"] = int(sampler["seed"]) if sampler.get("seed") is not None else int(cfg["seed"])
    tune["sampler"] = sampler
    tune["background"] = cfg["dataset"].get("background")
    limits = {k: cfg["select"].get(k) for k in ("max_ms_per_image", "max_memory_mb", "max_params")}
    tune["constraints"] = {k: v for k, v in limits.items() if v is not None} or None
    return tune


def training_seeds(cfg: dict[str, Any]) -> list[int]:
    """The training seeds of an experiment: one training job per model x fold x seed.

    ``train.seeds`` (a list) wins; else ``train.repeats: N`` gives ``[seed, seed + 1, ..., seed + N - 1]``;
    else ``[seed]`` (one seed: the experiment seed, as before seeds were separate). The split always
    uses ``seed``, so every training seed sees the same ``splits.json``.

    Raises:
        ConfigError: both ``train.seeds`` and ``train.repeats`` set, disagreeing on the count.
    """
    train = cfg["train"]
    seeds, repeats = train.get("seeds"), train.get("repeats")
    if seeds:
        if repeats is not None and int(repeats) != len(seeds):
            raise ConfigError(
                f"train.seeds has {len(seeds)} seeds but train.repeats is {repeats}: set one of them "
                "(train.repeats=null or train.seeds=null)"
            )
        return [int(s) for s in seeds]
    return [int(cfg["seed"]) + i for i in range(int(repeats or 1))]


def dump_json(obj: Any) -> str:
    """Canonical JSON text (sorted keys) so equal configs give byte-equal files."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON file written by segbench (a step's config slice); the error names the file.

    Raises:
        FileNotFoundError: no such file (names it).
        ConfigError: not valid JSON (names the file and the fix).
    """
    from .records import RecordError, read_json

    try:
        return read_json(path)
    except RecordError as err:
        raise ConfigError(str(err)) from err
