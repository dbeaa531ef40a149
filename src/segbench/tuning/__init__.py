"""Hyper-parameter search inside the DAG: every candidate tuned with the same declared budget.

A fair comparison tunes every candidate under the same budget (Melis et al., ICLR 2018; Dodge et al.,
EMNLP 2019): one shared recipe partly measures how well each model suits it. With ``tune.trials > 0``
(or ``tune.budget_hours``), each candidate gets its own Optuna study (:mod:`.study`), run in rounds
of ordinary workflow jobs (:mod:`.trial`): ask a batch of configurations, train each on the tuning
fold and score it on that fold's validation images, tell the results, ask again, until the trial
count or the compute budget is spent. Then the best trial's configuration
(:func:`segbench.tuning.steps.finish_study`)
is what the candidate's ordinary training jobs train, with the experiment's folds and training seeds,
and only those are evaluated on the test split, once.

Files, in ``results/<experiment>/tune/<model>/``::

    study.journal                  the Optuna study (JournalStorage)
    round<r>/asked/round.json      what round r asked (trial numbers; "done" ends the study)
    round<r>/asked/trial<n>.json   trial n's sampled params and model config
    round<r>/trial<n>/trial.json   trial n's result (and its training and validation files)
    best.json, trials.csv          the chosen trial, every trial's params and scores, the budget curve
    tuned_model.json               the candidate's model config with the chosen params (a train: block)
"""

from __future__ import annotations

from typing import Any

__all__ = ["tune_enabled", "TUNED_KEY"]

#: the key of a tuned model config that records how it was tuned (a training key: inference ignores it)
TUNED_KEY = "tuned"


def tune_enabled(tune_cfg: dict[str, Any] | None) -> bool:
    """Whether an experiment tunes: ``tune.trials > 0`` or ``tune.budget_hours > 0``."""
    t = tune_cfg or {}
    return bool(int(t.get("trials") or 0) > 0 or float(t.get("budget_hours") or 0) > 0)
