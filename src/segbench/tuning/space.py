"""The search space of a tuning study: which training-recipe keys a trial samples, and how.

``tune.space`` maps a recipe key to an Optuna distribution spec::

    lr:            {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    weight_decay:  {type: float, low: 1.0e-6, high: 1.0e-1, log: true}
    batch_size:    {type: categorical, choices: [4, 8]}
    loss.dice:     {type: float, low: 0.0, high: 2.0}      # the Dice term's weight in train.loss

``tune.space_by_library.<library>`` changes the space for the models of one library (stated in the
config, as the issue of fairness asks: e.g. a lower learning-rate range for transformers). Each sampled
value goes into the trial's model config as a ``train:`` block (the mechanism a model already has to
change the recipe for itself, :func:`segbench.training.recipe.effective_train_config`), so a trial is an
ordinary training job.

Distributions are Optuna's (``FloatDistribution``, ``IntDistribution``, ``CategoricalDistribution``);
sampling is done by Optuna's samplers, never here.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["TUNABLE", "distributions", "space_for", "trial_model_config", "describe_params"]

#: recipe keys a study may sample (``train.<key>``), plus ``loss.<term>`` (a loss term's weight). The
#: augmentation recipe is shared by every model of a comparison (one ``configs/augment.json``) and is
#: not tuned per candidate.
TUNABLE = (
    "lr",
    "weight_decay",
    "momentum",
    "batch_size",
    "encoder_lr_mult",
    "warmup_epochs",
    "freeze_epochs",
    "optimizer",
    "scheduler",
    "poly_power",
    "grad_clip",
)


def _check_key(key: str) -> None:
    if key in TUNABLE or (key.startswith("loss.") and len(key) > 5):
        return
    raise ValueError(
        f"tune.space: '{key}' cannot be tuned; allowed: {', '.join(TUNABLE)} and loss.<term> (a loss "
        "weight, e.g. loss.dice)"
    )


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Optuna distributions of a space spec (see the module docstring).

    Raises:
        ValueError: an unknown key, type, or bounds that do not make a range (names the key).
    """
    import optuna.distributions as od

    out: dict[str, Any] = {}
    for key, spec in sorted(space.items()):
        _check_key(key)
        kind = str(spec.get("type", "float"))
        try:
            if kind == "float":
                out[key] = od.FloatDistribution(
                    float(spec["low"]),
                    float(spec["high"]),
                    log=bool(spec.get("log", False)),
                    step=spec.get("step"),
                )
            elif kind == "int":
                out[key] = od.IntDistribution(
                    int(spec["low"]),
                    int(spec["high"]),
                    log=bool(spec.get("log", False)),
                    step=int(spec.get("step", 1)),
                )
            elif kind == "categorical":
                out[key] = od.CategoricalDistribution(list(spec["choices"]))
            else:
                raise ValueError(f"type '{kind}' is not float, int or categorical")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"tune.space.{key}: {err}; write it as {{type: float|int, low, high, log}} or "
                "{type: categorical, choices: [...]}"
            ) from None
    return out


def space_for(tune_cfg: dict[str, Any], model_cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The space of one candidate: ``tune.space`` with ``tune.space_by_library[<its library>]`` merged
    on top, key by key (a key set to ``null`` there is not tuned for that library)."""
    space = copy.deepcopy(dict(tune_cfg.get("space") or {}))
    for key, spec in (
        (tune_cfg.get("space_by_library") or {}).get(model_cfg.get("library"), {}) or {}
    ).items():
        if spec is None:
            space.pop(key, None)
        else:
            space[key] = {**space.get(key, {}), **spec}
    return space


def trial_model_config(
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    params: dict[str, Any],
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """The model config of one trial (or of the tuned candidate): ``params`` written into its ``train:``
    block on top of what the model already sets there; ``loss.<term>`` updates a copy of the recipe's
    loss.

    Args:
        model_cfg: the candidate's model config.
        train_cfg: the experiment's training recipe (for the loss being weighted).
        params: sampled values ``{key: value}``.
        max_epochs: the trial's epochs (``tune.max_epochs``); None keeps the recipe's.

    Returns:
        The model config (a new dict).

    Example:
        >>> trial_model_config({"library": "smp"}, {"loss": {"ce": 1.0, "dice": 1.0}},
        ...                    {"lr": 0.01, "loss.dice": 0.5}, max_epochs=2)["train"]
        {'lr': 0.01, 'loss': {'ce': 1.0, 'dice': 0.5}, 'epochs': 2, 'max_steps': None, 'devices': 1}
    """
    cfg = copy.deepcopy(model_cfg)
    train = dict(cfg.get("train") or {})
    for key, value in params.items():
        if key.startswith("loss."):
            loss = copy.deepcopy(train.get("loss") or train_cfg.get("loss") or {})
            term = key[5:]
            if isinstance(loss.get(term), dict):
                loss[term] = {**loss[term], "weight": float(value)}
            else:
                loss[term] = float(value)
            train["loss"] = loss
        else:
            train[key] = value
    if max_epochs:  # a trial (not the tuned candidate): its length, and one process (Optuna's pruning
        # under DDP is broken, optuna#1417, #6043; the candidate's own training may use DDP)
        train["epochs"] = int(max_epochs)
        train["max_steps"] = None
        train["devices"] = 1
    if train:
        cfg["train"] = train
    return cfg


def describe_params(params: dict[str, Any]) -> str:
    """``lr=0.00123, weight_decay=4.5e-05`` (4 significant digits), for tables and the console."""
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )
