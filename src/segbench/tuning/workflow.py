"""The tuning rules' input functions (``workflow/rules/tune.smk``): which round's results each step
needs, found through Snakemake's checkpoints. Kept here, not in the Snakefile, as Snakemake's linter
asks (functions in a module, rules in the rule files)."""

from __future__ import annotations

import json
import os
from typing import Any

from ..layout import ExperimentLayout

__all__ = ["TuneInputs"]


class TuneInputs:
    """Input functions of the tuning rules, bound to the workflow's ``checkpoints`` and layout.

    Args:
        checkpoints: Snakemake's ``checkpoints`` object (its ``tune_ask`` checkpoint).
        layout: the experiment's :class:`segbench.layout.ExperimentLayout`.
    """

    def __init__(self, checkpoints: Any, layout: ExperimentLayout):
        self.checkpoints, self.layout = checkpoints, layout

    def round_record(self, model: str, round_: int) -> dict[str, Any]:
        """``round.json`` of round ``round_`` (Snakemake's IncompleteCheckpointException until it ran)."""
        asked = self.checkpoints.tune_ask.get(model=model, round=round_).output[0]
        with open(os.path.join(asked, "round.json")) as f:
            return json.load(f)

    def results(self, model: str, round_: int, record: dict[str, Any]) -> list[str]:
        return [self.layout.tune_trial_result(model, round_, n).as_posix() for n in record["trials"]]

    def previous_round(self, wildcards) -> list[str]:
        """``tune_ask``'s input: the results of the round before (none for round 0)."""
        r = int(wildcards.round)
        if r == 0:
            return []
        return self.results(wildcards.model, r - 1, self.round_record(wildcards.model, r - 1))

    def all_rounds(self, wildcards) -> dict[str, Any]:
        """``tune_best``'s input: every trial's result and the last (done) round, round after round."""
        out: list[str] = []
        r = 0
        while True:
            record = self.round_record(wildcards.model, r)
            if record["done"]:
                return {"last": self.layout.tune_asked_dir(wildcards.model, r).as_posix(), "trials": out}
            out += self.results(wildcards.model, r, record)
            r += 1
