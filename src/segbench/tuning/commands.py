"""The tuning steps' subcommands (``segbench tune-ask``, ``tune-trial``, ``tune-best``): what the rules
of ``workflow/rules/tune.smk`` call. Each reads the step config files the workflow writes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_commands"]


def _spec(args):
    from ..config import load_json
    from .steps import spec_for

    model_cfg = load_json(args.model_config)
    tune_cfg = dict(load_json(args.tune), code=args.code)
    if getattr(args, "budget", None):  # tune.trials and tune.budget_hours (only asking and closing read them)
        tune_cfg.update(load_json(args.budget))
    return spec_for(
        tune_cfg,
        model_cfg.get("name") or Path(args.model_config).stem,
        model_cfg,
        load_json(args.train),
        load_json(args.augment),
        args.dataset,
        args.splits,
        args.study_dir,
        load_json(args.evaluate),
    )


def _cmd_ask(args) -> int:
    from ..records import read_json
    from .space import describe_params
    from .study import ask_round

    spec = _spec(args)
    previous = [read_json(p, required=("number", "state")) for p in args.previous or []]
    rec = ask_round(args.study_dir, spec, args.round, previous, args.out)
    if rec["done"]:
        print(f"{spec['model']}: round {args.round}: no more trials ({rec['reason']})")
    for n in rec["trials"]:
        trial = read_json(Path(args.out) / f"trial{n}.json")
        print(f"{spec['model']}: round {args.round}: trial {n}: {describe_params(trial['params'])}")
    return 0


def _cmd_trial(args) -> int:
    from ..config import load_json
    from .trial import run_trial

    rec = run_trial(
        args.trial,
        _spec(args),
        args.dataset,
        args.splits,
        load_json(args.augment),
        load_json(args.evaluate),
        args.study_dir,
        args.out,
        threads=args.threads,
    )
    value = "n/a" if rec.get("value") is None else f"{rec['value']:.4f}"
    extra = f" at epoch {rec['pruned_at_epoch']}" if rec.get("pruned_at_epoch") is not None else ""
    extra += f": {rec['error']}" if rec.get("error") else ""
    print(f"{rec['model']} trial {rec['number']}: {rec['state']}{extra}, validation score {value}")
    return 0


def _cmd_best(args) -> int:
    from ..records import read_json
    from .space import describe_params
    from .steps import finish_study, read_round

    spec = _spec(args)
    results = [read_json(p, required=("number", "state")) for p in args.trials or []]
    rec = finish_study(args.study_dir, spec, read_round(args.last_round), results, args.study_dir)
    print(
        f"{rec['model']}: best of {rec['trials']} trials ({rec['pruned']} pruned, {rec['failed']} failed, "
        f"{rec['compute_s'] / 60:.1f} min): trial {rec['best_trial']}, validation {rec['metric']} "
        f"{rec['value']:.4f}, {describe_params(rec['params'])}"
    )
    print(json.dumps({k: rec[k] for k in ("budget_curve", "estimator")}, indent=1))
    return 0


def _common(s) -> None:
    for a in ("study-dir", "model-config", "tune", "train", "augment", "evaluate", "dataset", "splits"):
        s.add_argument(f"--{a}", required=True)
    s.add_argument(
        "--code", default=None, help="the tuning code's fingerprint (a new one starts a new study)"
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``tune-ask``, ``tune-trial`` and ``tune-best`` on ``segbench``'s subcommand parser."""
    s = sub.add_parser("tune-ask", help="tuning: tell the last round's trials, ask the next round's")
    _common(s)
    s.add_argument("--budget", default=None, help="tune.trials and tune.budget_hours (JSON)")
    s.add_argument("--round", type=int, required=True)
    s.add_argument("--previous", nargs="*", default=[], help="the last round's trial.json files")
    s.add_argument("--out", required=True, help="tune/<model>/round<r>/asked")
    s.set_defaults(fn=_cmd_ask)

    s = sub.add_parser("tune-trial", help="tuning: train one trial and score it on the validation images")
    _common(s)
    s.add_argument("--trial", required=True, help="tune/<model>/round<r>/asked/trial<n>.json")
    s.add_argument("--out", required=True, help="tune/<model>/round<r>/trial<n>")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_trial)

    s = sub.add_parser(
        "tune-best", help="tuning: choose the best trial, write best.json and tuned_model.json"
    )
    _common(s)
    s.add_argument("--budget", default=None, help="tune.trials and tune.budget_hours (JSON)")
    s.add_argument("--last-round", required=True, help="the last round's asked folder (done)")
    s.add_argument("--trials", nargs="*", default=[], help="every trial.json")
    s.set_defaults(fn=_cmd_best)
