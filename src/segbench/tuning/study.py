"""One candidate's tuning study: Optuna in ask-and-tell form over a journal file, in rounds.

The study of model ``m`` lives in ``results/<experiment>/tune/<m>/study.journal``, an Optuna
``JournalStorage`` over a ``JournalFileBackend`` (an append-only log with a file lock: parallel
trial jobs, also as separate SLURM jobs on a shared file system, can report to it at once; SQLite
locks under parallel writers, optuna#820, #6036). The workflow drives it in **rounds**:

* round ``r`` (:func:`ask_round`, the workflow's ``tune_ask`` checkpoint) first *tells* the study
  the results of round ``r - 1`` (:func:`tell_trial`), then *asks* the sampler for the next batch of
  ``tune.batch`` trials (fewer when the trial count or the compute budget runs out; none ends the
  study) and writes each trial's model config as a file;
* each trial is an ordinary training job plus an evaluation on the validation images
  (:mod:`segbench.tuning.trial`), which may report every epoch's validation score to the study for
  pruning.

Reproducibility: the same experiment with the same seed asks the same trials in the same order.
The sampler is re-created in every round with a seed derived from ``tune.sampler.seed`` and the round
(a sampler seeded alike in every round would draw the same random start-up trials again); a pruner
only sees the trials of earlier rounds (:class:`RoundPruner`: trials running in parallel never
influence each other, so the decisions do not depend on which job was faster); and asking is
idempotent: a round already asked (the journal holds its trials) is written out again, not asked
twice. A study whose inputs changed (data, split, model, recipes, space; not the trial count or
budget) is set aside and a new one started (:func:`open_study`).

Optuna documentation: ask-and-tell interface, ``JournalStorage``, ``TPESampler(constant_liar=True)``
for batches, ``NSGAIISampler`` for several objectives (no pruning there), ``Trial.set_constraint``
(Optuna 5) for the ``select.*`` limits.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import optuna

from ..io import atomic_write_json
from .space import distributions

__all__ = [
    "JOURNAL",
    "OBJECTIVE_DIRECTIONS",
    "open_storage",
    "open_study",
    "make_sampler",
    "make_pruner",
    "RoundPruner",
    "study_fingerprint",
    "tell_trial",
    "ask_round",
    "objectives_of",
]

#: the journal file of a study, in ``tune/<model>/``
JOURNAL = "study.journal"
#: what each objective name means and which way is better
OBJECTIVE_DIRECTIONS = {
    "mIoU": "maximize",
    "mDice_fg": "maximize",
    "latency": "minimize",  # median ms per validation image, batch 1
}


def objectives_of(spec: dict[str, Any]) -> list[str]:
    """The study's objectives: ``tune.objectives``, or ``[tune.metric]`` (one)."""
    objs = list(spec.get("objectives") or [spec["metric"]])
    unknown = [o for o in objs if o not in OBJECTIVE_DIRECTIONS]
    if unknown or objs[0] not in ("mIoU", "mDice_fg"):
        raise ValueError(
            f"tune.objectives {objs}: the first must be the validation criterion (mIoU or mDice_fg), "
            f"the other one latency"
        )
    return objs


def open_storage(study_dir: str | Path):
    """Optuna's ``JournalStorage`` over ``<study_dir>/study.journal`` (created when missing)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(study_dir).mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(study_dir) / JOURNAL)))


def _round_seed(seed: int, round_: int) -> int:
    """A seed for round ``round_`` of a study seeded ``seed`` (distinct per round, the same every run)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{round_}".encode()).digest()[:4], "little")


def make_sampler(spec: dict[str, Any], round_: int):
    """The sampler of ``tune.sampler`` for round ``round_``.

    ``tpe`` (default; Optuna's TPESampler with ``constant_liar``, so the trials of one batch spread
    out; ``n_startup_trials`` random trials first, Optuna's default 10), ``random``
    (RandomSampler: trials are independent draws, what the budget curve's estimator assumes), or
    ``nsga2`` (NSGAIISampler; what ``auto``, the default, picks with several objectives;
    ``population_size`` by default twice ``tune.batch``, at least 4, since the trial budgets of a
    comparison are small). The ``select.*`` limits reach both as trial constraints
    (:func:`tell_trial`).
    """
    cfg = dict(spec.get("sampler") or {})
    name = cfg.get("name") or "auto"
    if name == "auto":
        name = "nsga2" if len(objectives_of(spec)) > 1 else "tpe"
    seed = _round_seed(int(cfg.get("seed", spec.get("seed", 0))), round_)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=int(cfg.get("n_startup_trials", 10)),
            multivariate=bool(cfg.get("multivariate", False)),
            constant_liar=True,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=int(cfg.get("population_size", max(4, 2 * int(spec.get("batch", 2)))))
        )
    raise ValueError(f"tune.sampler.name '{name}' is unknown; allowed values: tpe, random, nsga2")


class RoundPruner(optuna.pruners.BasePruner):
    """A pruner that sees only the trials of earlier rounds (and the trial itself).

    Trials of one round run in parallel; Optuna's pruners compare a trial with the others' intermediate
    values, so without this the decision would depend on which job reached an epoch first. Wraps any
    Optuna pruner (``median``, ``percentile``, ``successive_halving``, ``threshold``).
    """

    def __init__(self, inner, round_start: int):
        self.inner = inner
        self.round_start = int(round_start)

    def prune(self, study, trial) -> bool:
        return bool(self.inner.prune(_EarlierTrials(study, self.round_start, trial.number), trial))


class _EarlierTrials:
    """A read-mostly view of a study whose ``get_trials`` lists the trials numbered below ``before``,
    plus trial ``own``; everything else is the study's."""

    def __init__(self, study, before: int, own: int):
        self._study, self._before, self._own = study, before, own

    def get_trials(self, deepcopy: bool = True, states=None):
        return [
            t
            for t in self._study.get_trials(deepcopy=deepcopy, states=states)
            if t.number < self._before or t.number == self._own
        ]

    @property
    def trials(self):
        return self.get_trials()

    def __getattr__(self, name: str):
        return getattr(self._study, name)


def make_pruner(spec: dict[str, Any], round_start: int = 0):
    """The pruner of ``tune.pruner`` (on the per-epoch validation mIoU), wrapped in
    :class:`RoundPruner`; Optuna's ``NopPruner`` for ``none`` and with several objectives (Optuna does
    not prune multi-objective studies).

    ``median`` (MedianPruner: below the median of earlier trials at the same epoch, after
    ``n_warmup_steps`` epochs and ``n_startup_trials`` finished trials), ``percentile``
    (``percentile``), ``successive_halving`` (asynchronous successive halving: ``min_resource``,
    ``reduction_factor``) or ``threshold`` (``lower``: stop a trial whose score is below it after
    ``n_warmup_steps`` epochs).
    """
    cfg = dict(spec.get("pruner") or {})
    name = cfg.pop("name", "none") or "none"
    if name == "none" or len(objectives_of(spec)) > 1:
        return optuna.pruners.NopPruner()
    makers = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "threshold": optuna.pruners.ThresholdPruner,
    }
    if name not in makers:
        raise ValueError(f"tune.pruner.name '{name}' is unknown; allowed values: none, {', '.join(makers)}")
    try:
        inner = makers[name](**cfg)
    except TypeError as err:
        raise ValueError(f"tune.pruner ({name}): {err}") from None
    return RoundPruner(inner, round_start)


def study_fingerprint(parts: dict[str, Any]) -> str:
    """SHA-256 of what a study's results depend on (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def open_study(
    study_dir: str | Path, spec: dict[str, Any], round_: int, round_start: int = 0, start: bool = False
):
    """Load (or, with ``start``, create) the study of one candidate for round ``round_``.

    With ``start`` (round 0), a journal holding a study of another fingerprint (``spec["fingerprint"]``:
    the data, split, model, recipes or space changed) is renamed ``study.journal.stale-<k>`` and a new
    study begins; the same fingerprint continues the study already there.

    Raises:
        FileNotFoundError: no journal (and not ``start``): round 0 has not run.
    """
    study_dir = Path(study_dir)
    journal = study_dir / JOURNAL
    name = spec["model"]
    directions = [OBJECTIVE_DIRECTIONS[o] for o in objectives_of(spec)]
    if start and journal.exists():
        old = optuna.load_study(study_name=name, storage=open_storage(study_dir))
        if old.user_attrs.get("fingerprint") != spec["fingerprint"]:
            k = 1
            while journal.with_name(f"{JOURNAL}.stale-{k}").exists():
                k += 1
            journal.rename(journal.with_name(f"{JOURNAL}.stale-{k}"))
    if not start and not journal.exists():
        raise FileNotFoundError(f"{journal} not found; run the workflow's tune_ask step for round 0 first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=open_storage(study_dir),
        sampler=make_sampler(spec, round_),
        pruner=make_pruner(spec, round_start),
        study_name=name,
        directions=directions,
        load_if_exists=True,
    )
    if "fingerprint" not in study.user_attrs:
        study.set_user_attr("fingerprint", spec["fingerprint"])
    return study


def _values(result: dict[str, Any], objectives: list[str]) -> list[float]:
    """The objective values of a trial's result (NaN where a value is missing)."""
    keys = {"latency": "time_ms_median"}
    vals = [(result.get("values") or {}).get(keys.get(o, o)) for o in objectives]
    return [float("nan") if v is None else float(v) for v in vals]


def tell_trial(study, result: dict[str, Any], spec: dict[str, Any]) -> None:
    """Tell the study one trial's result (``trial.json`` of :func:`segbench.tuning.trial.run_trial`):
    its per-epoch validation scores (those the job could not report), the constraint values, then
    COMPLETE with its objective values, PRUNED or FAIL. A trial told before is checked, not told again.

    Raises:
        ValueError: the trial was told another value before (its job ran again with other inputs or
            code): the study no longer describes the trials; delete ``tune/<model>/`` to start over.
    """
    from optuna.trial import Trial, TrialState

    number = int(result["number"])
    frozen = study.get_trials(deepcopy=False)[number]
    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}[
        result["state"]
    ]
    objectives = objectives_of(spec)
    values = _values(result, objectives) if result["state"] == "complete" else None
    if values is not None and not all(math.isfinite(v) for v in values):
        state, values = TrialState.FAIL, None  # e.g. mDice_fg with no foreground: not a score Optuna takes
    if frozen.state.is_finished():
        if frozen.state != state or (values and not all(_close(a, b) for a, b in zip(frozen.values, values))):
            raise ValueError(
                f"trial {number} of {spec['model']} was told {frozen.state.name} {frozen.values} before, "
                f"its job now gives {result['state']} {values}: the study no longer matches its trials; "
                f"delete {spec.get('study_dir', 'tune/<model>')} to tune again"
            )
        return
    trial = Trial(study, frozen._trial_id)
    for epoch, v in enumerate(result.get("intermediate") or []):
        if v is not None and epoch not in frozen.intermediate_values and len(objectives) == 1:
            trial.report(float(v), step=epoch)
    study._storage.set_trial_user_attr(frozen._trial_id, "seconds", float(result.get("seconds", 0.0)))
    for key, value in _constraint_values(result, spec).items():
        if f"constraints:{key}" not in frozen.system_attrs:
            trial.set_constraint(key, value)
    study.tell(number, values=values, state=state, skip_if_finished=True)


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _constraint_values(result: dict[str, Any], spec: dict[str, Any]) -> dict[str, float]:
    """``select.*`` limits as Optuna constraints (value - limit; <= 0 is feasible): the latency and
    parameter limits. ``max_memory_mb`` is not one: a trial's evaluation runs in the process that
    trained, so its peak memory is training's."""
    lim = spec.get("constraints") or {}
    v = result.get("values") or {}
    out = {}
    for key, field in (("max_ms_per_image", "time_ms_median"), ("max_params", "parameters")):
        if lim.get(key) is not None and v.get(field) is not None:
            out[key] = float(v[field]) - float(lim[key])
    return out


def _spent_seconds(study) -> float:
    return float(
        sum(
            t.user_attrs.get("seconds", 0.0)
            for t in study.get_trials(deepcopy=False)
            if t.state.is_finished()
        )
    )


def ask_round(
    study_dir: str | Path,
    spec: dict[str, Any],
    round_: int,
    previous: list[dict[str, Any]],
    out_dir: str | Path,
) -> dict[str, Any]:
    """Round ``round_`` of one candidate's study: tell ``previous`` (the last round's ``trial.json``
    contents), then ask the next batch and write it to ``out_dir`` (``round.json`` + ``trial<n>.json``,
    each the trial's model config; see :func:`segbench.tuning.space.trial_model_config`).

    Args:
        study_dir: ``tune/<model>``.
        spec: the candidate's tuning spec (:func:`segbench.tuning.spec_for`): ``model``, ``model_config``,
            ``train`` (the recipe), ``space``, ``sampler``, ``pruner``, ``metric``, ``objectives``,
            ``trials`` (the most trials), ``budget_hours`` (the most compute), ``batch``,
            ``max_epochs``, ``fingerprint``, ``constraints``.
        round_: the round (0 starts the study).
        previous: results of round ``round_ - 1``.
        out_dir: ``tune/<model>/round<r>/asked`` (written whole, atomically).

    Returns:
        The ``round.json`` content: ``{round, trials: [numbers], done, reason, spent_s, asked_total}``.
    """
    from ..io import atomic_dir
    from .space import trial_model_config

    study = open_study(study_dir, spec, round_, start=round_ == 0)
    for result in sorted(previous, key=lambda r: r["number"]):
        tell_trial(study, result, spec)
    dists = distributions(spec["space"])
    trials = study.get_trials(deepcopy=False)
    spent = _spent_seconds(study)
    pending = study.user_attrs.get("asking")  # [round, k]: an ask this step began and did not finish
    mine = [t for t in trials if t.user_attrs.get("round") == round_]
    reason = ""
    if pending and pending[0] == round_:
        k = int(pending[1])
        for t in trials:  # asked by the killed run but not yet labelled: this round's
            if "round" not in t.user_attrs and not t.state.is_finished():
                study._storage.set_trial_user_attr(t._trial_id, "round", round_)
        mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("round") == round_]
    elif mine:  # asked before: the same trials again
        k = len(mine)
    else:
        k, reason = _how_many(spec, trials, spent)
    if len(mine) < k:
        study.set_user_attr("asking", [round_, k])
        for _ in range(k - len(mine)):
            t = study.ask(fixed_distributions=dists)
            t.set_user_attr("round", round_)
            mine.append(study.get_trials(deepcopy=False)[t.number])
        study.set_user_attr("asking", None)
    record = {
        "model": spec["model"],
        "round": round_,
        "trials": [t.number for t in mine],
        "done": not mine,
        "reason": reason or f"asked {len(mine)} trial(s)",
        "spent_s": spent,
        "asked_total": len(study.get_trials(deepcopy=False)),
    }
    with atomic_dir(out_dir) as tmp:
        for t in mine:
            atomic_write_json(
                tmp / f"trial{t.number}.json",
                {
                    "model": spec["model"],
                    "number": t.number,
                    "round": round_,
                    "round_start": min(x.number for x in mine),
                    "params": dict(t.params),
                    "model_config": trial_model_config(
                        spec["model_config"],
                        spec["train"],
                        dict(t.params),
                        spec.get("max_epochs") or spec["train"].get("epochs") or 1,
                    ),
                },
            )
        atomic_write_json(tmp / "round.json", record)
    return record


def _how_many(spec: dict[str, Any], trials: list, spent: float) -> tuple[int, str]:
    """How many trials the next round asks, and why it asks fewer than ``tune.batch`` (or none)."""
    batch = max(1, int(spec.get("batch", 1)))
    finished = [t for t in trials if t.state.is_finished()]
    if len(finished) >= 2 * batch and all(t.state.name == "FAIL" for t in finished[-2 * batch :]):
        return 0, f"the last {2 * batch} trials failed (see trials.csv); fix the recipe or the space"
    cap = int(spec.get("trials") or 0) or None  # 0 with a compute budget: as many as the budget buys
    left = batch if cap is None else max(0, int(cap) - len(trials))
    if left == 0:
        return 0, f"all {cap} trials asked"
    budget = spec.get("budget_hours")
    if budget:
        budget_s = float(budget) * 3600.0
        if spent >= budget_s:
            return (
                0,
                f"compute budget of {float(budget):g} h spent ({_duration(spent)} of {_duration(budget_s)})",
            )
        done = [t.user_attrs.get("seconds", 0.0) for t in trials if t.state.is_finished()]
        if done:
            mean = sum(done) / len(done)
            left = min(left, max(1, math.ceil((budget_s - spent) / max(mean, 1e-9))))
    return min(batch, left), ""


def _duration(seconds: float) -> str:
    """``45 s``, ``12.5 min``, ``3.20 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"
