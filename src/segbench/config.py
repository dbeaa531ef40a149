"""Compose, resolve and validate an experiment's config (Hydra + JSON schema).

An experiment is composed by Hydra from the groups in ``config/`` (dataset, split, train, augment,
evaluate, report, select, logger, experiment). ``models`` is a list of names of ``config/model/*.yaml``
files; each is
composed from that group and merged with ``model_overrides.<name>``, giving ``cfg.model[<name>]``.
The result is a plain dict, validated against ``workflow/schemas/config.schema.yaml``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from omegaconf import OmegaConf

from . import paths

__all__ = [
    "CONFIG_PATH_ENV",
    "user_config_dirs",
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


#: environment variable: folders of the user's own configs (os.pathsep-separated), searched before
#: segbench's config/ (Hydra's search path), so an update of segbench never touches them
CONFIG_PATH_ENV = "SEGBENCH_CONFIG_PATH"


def user_config_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """The user's config folders: ``extra`` (``segbench run --config-dir DIR``) then
    ``$SEGBENCH_CONFIG_PATH``; each holds the same groups as ``config/`` (``dataset/``,
    ``experiment/``, ``model/`` ...), and a file there wins over segbench's of the same name.

    Raises:
        ConfigError: a folder that does not exist (names it).
    """
    import os

    dirs = [Path(d) for d in extra]
    dirs += [Path(d) for d in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if d.strip()]
    out = []
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(
                f"{d}: config folder not found (from --config-dir or ${CONFIG_PATH_ENV}); create it "
                "(segbench init writes one) or fix the path"
            )
        if d.resolve() not in out:
            out.append(d.resolve())
    return out


def available(group: str, config_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Names of the options of a config group (``config/<group>/*.yaml`` and the user's
    ``<dir>/<group>/*.yaml``, :func:`user_config_dirs`), sorted."""
    folders = [*user_config_dirs(config_dirs), paths.config_dir()]
    return sorted({p.stem for d in folders for p in (d / group).glob("*.yaml")})


@contextlib.contextmanager
def _search(config_dirs: Sequence[str | Path]):
    """``(primary config folder, searchpath override)`` for Hydra, the user's folders first so a file
    there wins over segbench's of the same name. Hydra searches the primary folder, then
    ``hydra.searchpath`` in order, and needs the root ``config.yaml`` in the primary folder: with user
    folders, the primary is a temporary folder holding a copy of segbench's ``config.yaml``, and the
    search path is the user's folders, then segbench's ``config/``."""
    import shutil
    import tempfile

    user = user_config_dirs(config_dirs)
    if not user:
        yield paths.config_dir(), []
        return
    with tempfile.TemporaryDirectory(prefix="segbench-config-") as tmp:
        shutil.copyfile(paths.config_dir() / "config.yaml", Path(tmp) / "config.yaml")
        dirs = [*user, paths.config_dir().resolve()]
        yield Path(tmp), [f"hydra.searchpath=[{','.join('file://' + d.as_posix() for d in dirs)}]"]


def _model_file(name: str, config_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """``model/<name>.yaml`` from the first config folder holding it (the user's first, then segbench's),
    resolved (``${shared:...}``)."""
    for d in [*user_config_dirs(config_dirs), paths.config_dir()]:
        f = d / "model" / f"{name}.yaml"
        if f.is_file():
            return OmegaConf.to_container(OmegaConf.load(f), resolve=True)
    raise ConfigError(f"models: no model/{name}.yaml in the config folders")


def compose(overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Compose the experiment config from ``config/`` with Hydra overrides; resolve and validate it.

    Args:
        overrides: Hydra command-line overrides, e.g. ``["experiment=camvid_quick", "train.epochs=3"]``.
        config_dirs: the user's config folders (:func:`user_config_dirs`), searched first.

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
        with (
            _search(config_dirs) as (primary, search),
            initialize_config_dir(config_dir=str(primary), version_base="1.3"),
        ):
            cfg = hydra_compose(config_name="config", overrides=[*search, *overrides])
            raw = OmegaConf.to_container(cfg, resolve=True)
            models = {}
            for name in raw.get("models") or []:
                if name not in available("model", config_dirs):
                    raise ConfigError(
                        f"models: unknown model '{name}'; allowed values: "
                        f"{', '.join(available('model', config_dirs))} (files in "
                        f"{paths.config_dir() / 'model'} and model/ of your config folders)"
                    )
                models[name] = _model_file(name, config_dirs)
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
        "select": ..., "logger": ..., "tune": ..., "plan": ..., "deploy": ...,
        "models": {name: ...}}``; ``split`` carries the
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
        "plan": dict(cfg.get("plan") or {}),
        "deploy": dict(cfg.get("deploy") or {"variants": []}),
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
    if (int(tune.get("trials") or 0) > 0 or tune.get("budget_hours")) and any(
        cfg["train"].get(k) == "plan"
        for k in ("epochs", "batch_size", "image_size", "scale", "crop", "class_weights")
    ):
        raise ConfigError(
            "tune.trials with a planned recipe (train keys set to plan) is not supported yet: tune with a "
            "recipe of values (e.g. train=quick), or plan without tuning (tune.trials=0)"
        )
    tuning = int(tune.get("trials") or 0) > 0 or tune.get("budget_hours")
    if tuning and cfg["train"].get("scale") is not None:
        raise ConfigError(
            f"tune.trials with train.scale={cfg['train']['scale']} is not supported yet (the trials "
            "would train and score on images of another scale than the candidates): set "
            "train.scale=null, or tune.trials=0"
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
