"""The tuning steps' work on files: a candidate's spec and fingerprint (:func:`spec_for`), and closing
its study (:func:`finish_study`: the chosen trial, ``trials.csv``, ``tuned_model.json``). See the
package docstring of :mod:`segbench.tuning` for the files."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from ..records import read_json
from . import TUNED_KEY

__all__ = ["spec_for", "finish_study", "read_round"]


def spec_for(
    tune_cfg: dict[str, Any],
    model_name: str,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    augment_cfg: dict[str, Any],
    dataset_json: str | Path,
    splits_json: str | Path,
    study_dir: str | Path | None = None,
    evaluate_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One candidate's tuning spec: ``configs/tune.json`` with the candidate's space
    (:func:`segbench.tuning.space.space_for`), its model config, the recipe and the study's
    fingerprint: everything a trial job's result depends on (the dataset, the tuning fold's ids, the
    model, the training, augmentation and evaluation configs, ``configs/tune.json`` with ``code``, the
    fingerprint of the code a trial runs), but not ``tune.trials`` nor ``tune.budget_hours``, so
    raising them continues the study.

    Raises:
        ValueError: the search space is not valid (names the key).
        IndexError: ``tune.fold`` is not a fold of ``splits.json``.
    """
    from ..records import fold_ids, read_splits
    from .space import distributions, space_for

    spec = copy.deepcopy(dict(tune_cfg))
    spec["model"] = model_name
    spec["model_config"] = copy.deepcopy(model_cfg)
    spec["train"] = {k: v for k, v in train_cfg.items() if k != "seed"}
    spec["space"] = space_for(tune_cfg, model_cfg)
    if not spec["space"]:
        raise ValueError(f"tune.space is empty for {model_name}: nothing to tune")
    distributions(spec["space"])  # checked now, before anything trains
    if study_dir is not None:
        spec["study_dir"] = str(study_dir)
    ids = fold_ids(read_splits(splits_json), int(spec.get("fold", 0)), splits_json)
    search = {k: v for k, v in tune_cfg.items() if k not in ("trials", "budget_hours")}
    spec["fingerprint"] = hashlib.sha256(
        json.dumps(
            {
                "dataset": hashlib.sha256(Path(dataset_json).read_bytes()).hexdigest(),
                "ids": [ids["train"], ids["val"]],
                "model": model_cfg,
                "train": spec["train"],
                "augment": augment_cfg,
                "evaluate": evaluate_cfg,
                "search": search,
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    return spec


def _trial_rows(study, spec: dict[str, Any], results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial: its state, validation score (segbench's evaluation of the trained weights,
    also for a pruned trial: what it reached when it stopped), other objectives, time and params."""
    from .study import objectives_of

    objectives = objectives_of(spec)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {
            "model": spec["model"],
            "number": t.number,
            "round": t.user_attrs.get("round"),
            "state": t.state.name.lower(),
            "value": None,
            "epochs": (results.get(t.number) or {}).get("epochs"),
            "seconds": t.user_attrs.get("seconds"),
            "feasible": all(c <= 0 for c in t.user_attrs.get("constraints", [0.0])),
        }
        res = results.get(t.number) or {}
        if t.state.name == "COMPLETE":
            row["value"] = float(t.values[0])
            for name, v in zip(objectives[1:], t.values[1:]):
                row[name] = float(v)
        elif res.get("value") is not None:  # pruned: segbench's score of the weights it stopped with
            row["value"] = float(res["value"])
        row["time_ms_median"] = (res.get("values") or {}).get("time_ms_median")
        row["pruned_at_epoch"] = res.get("pruned_at_epoch")
        if res.get("error"):
            row["error"] = res["error"]
        row.update({f"param_{k}": v for k, v in sorted(t.params.items())})
        rows.append(row)
    return rows


def finish_study(
    study_dir: str | Path,
    spec: dict[str, Any],
    last_round: dict[str, Any],
    results: list[dict[str, Any]],
    out_dir: str | Path,
) -> dict[str, Any]:
    """Close one candidate's study: choose the best trial and write ``best.json``, ``trials.csv`` and
    ``tuned_model.json`` into ``out_dir`` (``tune/<model>``).

    The chosen trial: the highest validation score (``tune.metric``) among the trials that completed
    and meet the ``select.*`` limits (with several objectives: the same rule, so the choice is a point
    of the Pareto front); ties go to the earlier trial. Pruned and failed trials are never chosen.

    Args:
        last_round: the final round's ``round.json`` (``done``: it told the last results).
        results: every trial's ``trial.json`` (their validation scores and times; the trial
            values the study holds must match them).

    Raises:
        ValueError: no trial completed (every one pruned or failed: widen the space or loosen the
            pruner; the message gives the first error).
    """
    import pandas as pd

    from ..io import atomic_path
    from .budget import ESTIMATOR, expected_max
    from .space import trial_model_config
    from .study import objectives_of, open_study, tell_trial

    if not last_round.get("done"):
        raise ValueError(f"{study_dir}: round {last_round.get('round')} is not the last one (not done)")
    study = open_study(study_dir, spec, int(last_round["round"]))
    for result in sorted(results, key=lambda r: r["number"]):
        tell_trial(study, result, spec)  # a check: the last round told them already
    rows = _trial_rows(study, spec, {int(r["number"]): r for r in results})
    out_dir = Path(out_dir)
    objectives = objectives_of(spec)
    pareto = sorted(t.number for t in study.best_trials) if len(objectives) > 1 else []
    for r in rows:
        if pareto:
            r["pareto"] = r["number"] in pareto
    complete = [r for r in rows if r["state"] == "complete"]
    if not complete:
        errors = [r.get("error") for r in results if r.get("error")]
        # not an output of the step (a failed step's outputs are removed): what to look at
        with atomic_path(out_dir / "trials_so_far.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        raise ValueError(
            f"{spec['model']}: none of its {len(rows)} trials completed ("
            f"{sum(r['state'] == 'pruned' for r in rows)} pruned, {sum(r['state'] == 'fail' for r in rows)} "
            f"failed{'; first error: ' + errors[0] if errors else ''}); widen tune.space or loosen "
            f"tune.pruner (every trial: {out_dir / 'trials_so_far.csv'})"
        )
    # the best validation score among the feasible trials (two objectives: among the Pareto-optimal
    # ones, so the choice is a point of the front); none feasible: the best of all, flagged
    feasible = [r for r in complete if r["feasible"] and (not pareto or r["number"] in pareto)]
    best = max(feasible or complete, key=lambda r: (r["value"], -r["number"]))
    trial = study.get_trials(deepcopy=False)[best["number"]]
    with atomic_path(out_dir / "trials.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    # the budget curve: every trial that produced a validation score (pruned ones at their last score)
    scored = [r["value"] for r in rows if r["state"] in ("complete", "pruned") and r["value"] is not None]
    tuned_cfg = trial_model_config(spec["model_config"], spec["train"], dict(trial.params))
    record = {
        "model": spec["model"],
        "metric": spec["metric"],
        "objectives": objectives,
        "best_trial": best["number"],
        "params": dict(trial.params),
        "value": best["value"],
        "feasible": bool(feasible),
        "trials": len(rows),
        "complete": len(complete),
        "pruned": sum(r["state"] == "pruned" for r in rows),
        "failed": sum(r["state"] == "fail" for r in rows),
        "rounds": int(last_round["round"]),
        "compute_s": float(sum(r["seconds"] or 0.0 for r in rows)),
        "budget_hours": spec.get("budget_hours"),
        "trials_cap": spec.get("trials"),
        "stopped": last_round.get("reason"),
        "sampler": type(study.sampler).__name__,
        "pruner": (spec.get("pruner") or {}).get("name", "none"),
        "max_epochs": spec.get("max_epochs") or spec["train"].get("epochs"),
        "fold": int(spec.get("fold", 0)),
        "seed": int(spec["seed"]),
        "space": spec["space"],
        "pareto": pareto,
        "budget_curve": expected_max(scored),
        "estimator": ESTIMATOR,
    }
    # what the configuration is: nothing that changes when more trials are asked but the choice stays
    # (a trial count, timings), so the candidate's training jobs then stay up to date
    tuned_cfg[TUNED_KEY] = {k: record[k] for k in ("params", "metric", "value", "best_trial")}
    atomic_write_json(out_dir / "tuned_model.json", tuned_cfg)
    atomic_write_json(out_dir / "best.json", record)
    return record


def read_round(asked_dir: str | Path) -> dict[str, Any]:
    """``round.json`` of an asked round folder."""
    return read_json(Path(asked_dir) / "round.json", required=("round", "trials", "done"))
