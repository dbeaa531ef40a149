"""The ``segbench`` command. ``segbench run`` starts the whole workflow; the other subcommands are the
workflow's steps, each runnable alone (the Snakemake rules call them).

    segbench run experiment=camvid_quick [Hydra overrides ...] [--cores N] [--dry-run]
    segbench config experiment=camvid_quick ...      print the composed, validated config
    segbench models                                  list the model configs (library, name, parameters)
    segbench predict --model results/<exp>/best photo.jpg -o photo_mask.png    segment images
    segbench convert | validate | split | train | evaluate | ensemble | aggregate | best | report   (workflow
    steps)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from . import config, paths
    from .io import write_if_changed
    from .layout import ExperimentLayout

    cfg = config.compose(args.overrides, args.config_dir)
    workdir = Path(args.workdir).resolve()
    exp = ExperimentLayout.named(cfg["name"], workdir / "results")
    cfg_path = exp.config_yaml
    write_if_changed(
        cfg_path,
        "# composed by segbench from config/ with overrides: "
        + json.dumps(args.overrides)
        + "\n"
        + yaml.safe_dump(cfg, sort_keys=False),
    )
    root = paths.project_root()
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(paths.snakefile()),
        "--directory",
        str(workdir),
        "--profile",
        str(root / "workflow" / "profiles" / args.profile),
        "--configfile",
        str(cfg_path),
    ]
    if args.cores:
        cmd += ["--cores", str(args.cores)]
    if args.dry_run:
        cmd += ["--dry-run"]
    cmd += args.snakemake_args
    print("segbench: " + " ".join(cmd), file=sys.stderr, flush=True)
    # the rules call `segbench`: make this interpreter's scripts folder (the venv's bin/) visible to them
    env = dict(os.environ, SEGBENCH_ROOT=str(root))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    _unlock_if_stale(workdir, cmd, env)
    rc = subprocess.call(cmd, env=env)
    report = exp.report_html
    if rc == 0 and not args.dry_run and report.is_file():
        print(f"segbench: report at {report}", file=sys.stderr)
    return rc


def _snakemake_running_in(workdir: Path) -> bool:
    """Whether a Snakemake process on this machine works in ``workdir`` (names it on its command line,
    or runs in it). True when this cannot be known (no /proc), so nothing is unlocked then."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return True
    target, me = str(workdir), str(os.getpid())
    for proc in proc_root.glob("[0-9]*"):
        if proc.name == me:
            continue
        try:
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
            if not any("snakemake" in a for a in argv[:3]):
                continue
            if target in argv or os.path.realpath(proc / "cwd") == target:
                return True
        except OSError:
            continue
    return False


def _unlock_if_stale(workdir: Path, cmd: list[str], env: dict[str, str]) -> None:
    """A run killed hard (SIGKILL, power loss) leaves Snakemake's lock behind, and the next run would
    refuse to start. Remove it when no Snakemake process on this machine works in ``workdir``. (On a
    file system shared between machines, make sure no run is live elsewhere; Snakemake's own
    ``--unlock`` is what this calls.)"""
    locks = workdir / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()) or _snakemake_running_in(workdir):
        return
    print(
        "segbench: removing the lock an interrupted run left in "
        f"{locks} (no Snakemake process is working in this folder)",
        file=sys.stderr,
        flush=True,
    )
    subprocess.call([c for c in cmd if c != "--dry-run"] + ["--unlock"], env=env, stdout=subprocess.DEVNULL)


def _cmd_config(args: argparse.Namespace) -> int:
    from . import config

    print(yaml.safe_dump(config.compose(args.overrides, args.config_dir), sort_keys=False), end="")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    """One line per model config that builds here: library, name, parameters, what it is. A config that
    does not build (a compiled mmcv op, a missing package) goes to stderr with the reason."""
    import warnings

    from .models import architecture_config, count_parameters, create_model, model_configs

    warnings.filterwarnings("ignore")
    broken = 0
    for name, cfg in model_configs().items():
        if args.library and cfg.get("library") not in args.library:
            continue
        what = cfg.get("config") or " / ".join(str(cfg[k]) for k in ("arch", "encoder") if cfg.get(k))
        start = []
        if cfg.get("encoder_weights"):
            start.append(f"encoder_weights={cfg['encoder_weights']}")
        if (cfg.get("train") or {}).get("freeze_epochs"):
            start.append(f"freeze_epochs={cfg['train']['freeze_epochs']}")
        try:
            n = count_parameters(create_model(num_classes=args.num_classes, **architecture_config(cfg)))
        except Exception as err:  # one broken config must not hide the others
            broken += 1
            print(
                f"{cfg.get('library', '?'):<12} {name:<26} unavailable: {type(err).__name__}: {err}",
                file=sys.stderr,
            )
            continue
        print(
            f"{cfg['library']:<12} {name:<26} {n / 1e6:7.2f}M  "
            f"{what}{'  (' + ', '.join(start) + ')' if start else ''}",
            flush=True,
        )
    return 1 if broken and args.strict else 0


def _cmd_import_raw(args):
    from .data.convert import import_raw

    import_raw(args.src, args.out)
    print(f"copied {args.src} to {args.out} (DVC tracks it as a stage output)")
    return 0


def _cmd_convert(args):
    from .config import ConfigError, load_json
    from .data.convert import classes_from_file, convert

    out = args.out or args.out_pos
    if args.config:
        cfg = load_json(args.config)
    elif args.src and args.format:
        cfg = {"root": args.src, "format": args.format, "ignore_index": 255}
    else:
        raise ConfigError("segbench convert needs either --format FORMAT SRC OUT or --config FILE --out OUT")
    if not out:
        raise ConfigError("segbench convert: give the output folder (OUT or --out)")
    if args.format and args.config:
        cfg["format"] = args.format
    if args.classes:
        cfg.update(classes_from_file(args.classes, cfg.get("format")))
    if args.mask_encoding:
        cfg["mask_encoding"] = args.mask_encoding
    cfg.setdefault("name", args.name or Path(out).name)
    meta = convert(cfg, out, force=args.force)
    print(
        f"converted {meta['num_images']} images ({len(meta['classes'])} classes: "
        + ", ".join(f"{c['id']}={c['name']}" for c in meta["classes"])
        + f") to {out}"
    )
    if meta.get("warnings"):
        print(f"{len(meta['warnings'])} warning(s), listed in {Path(out) / 'dataset.json'}")
    return 0


def _cmd_validate(args):
    from .data.validate import validate_dataset

    rep = validate_dataset(args.dataset, args.report, args.max_ignore_share, args.allow_absent_classes)
    print(f"{rep['num_images']} images valid; classes never present: {rep['absent_classes'] or 'none'}")
    return 0


def _cmd_split(args):
    from .config import load_json
    from .data.splits import make_splits

    s = make_splits(args.dataset, load_json(args.config), args.out)
    print(
        f"{s['strategy']}: test {len(s['test'])}, folds "
        + ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in s["folds"])
    )
    return 0


def _cmd_train(args):
    from .config import load_json

    logger = load_json(args.logger) if args.logger else None
    recipe = load_json(args.train)
    if args.seed is not None:  # the job's training seed (models/<m>/fold<k>/seed<s>/)
        recipe["seed"] = args.seed
    if args.plan:  # the recipe's `plan` keys, as the plan decided them for this model (segbench.plan)
        from .plan import resolve_recipe

        recipe = resolve_recipe(recipe, load_json(args.plan))
    try:
        info = _train(args, recipe, logger)
    except FloatingPointError as err:  # the model diverged (segbench.training.module): say so, no traceback
        name = load_json(args.model).get("name", args.model)
        print(f"segbench train: error: {name}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


def _train(args, recipe, logger):
    from .config import load_json
    from .training import train_model

    return train_model(
        args.dataset,
        args.splits,
        args.fold,
        load_json(args.model),
        recipe,
        load_json(args.augment),
        args.out,
        threads=args.threads,
        logger_cfg=logger,
    )


def _cmd_evaluate(args):
    from .config import load_json
    from .evaluate import evaluate_model

    m = evaluate_model(
        args.checkpoint, args.dataset, args.splits, load_json(args.config), args.out, threads=args.threads
    )
    print(
        f"{m['model']} fold {m['fold']}: mIoU {m['mIoU']:.4f} mDice {m['mDice']:.4f} aAcc {m['aAcc']:.4f} "
        f"({m['num_images']} images, {m['time_ms_median']:.0f} ms/image)"
    )
    return 0


def _cmd_aggregate(args):
    from .aggregate import aggregate, format_summary
    from .config import load_json

    models = {}
    for p in args.model_configs:  # configs/models/<m>.json, or tune/<m>/tuned_model.json
        cfg = load_json(p)
        models[cfg.get("name") or Path(p).stem] = cfg
    for name in args.ensembles or []:
        models[name] = {"library": "ensemble", "arch": "softmax average"}
    sel_cfg = load_json(args.select) if args.select else None
    t0 = time.perf_counter()
    s = aggregate(
        args.experiment, models, args.folds, args.dataset_dir, sel_cfg, seeds=args.seeds, tuned=args.tuned
    )
    dt = time.perf_counter() - t0
    from .provenance import write_record

    write_record(args.experiment, args.dataset_dir)
    print(format_summary(s))
    print(f"aggregation and statistics took {dt:.2f} s")
    return 0


def _cmd_ensemble(args):
    import torch

    from .config import load_json
    from .ensemble import run_ensemble

    if args.threads:
        torch.set_num_threads(int(args.threads))
    m = run_ensemble(
        args.experiment,
        args.models,
        args.fold,
        args.folds,
        load_json(args.select),
        load_json(args.config),
        args.dataset,
        args.splits,
        args.out,
        seed=args.seed,
        seeds=args.seeds,
        validation_json=args.validation,
    )
    print(f"{m['model']} = {' + '.join(m['members'])}: validation mIoU {m['val']['mIoU']:.4f}")
    return 0


def _cmd_check_report(args):
    from .report.check import check_report

    r = check_report(args.report, screenshot=args.screenshot)
    print(
        f"{args.report}: {r['images']} pictures, all displayed by Chromium, none empty"
        + (f"; screenshot {args.screenshot}" if args.screenshot else "")
    )
    return 0


def _cmd_best(args):
    from .best import package_best
    from .config import load_json

    parity = package_best(args.experiment, args.dataset_dir, load_json(args.select), load_json(args.evaluate))
    if parity.get("error"):
        print(f"best/: {parity['error']}")
    elif parity:
        print(
            f"best/model.onnx: parity {'passed' if parity['passed'] else 'FAILED'}: max |logit diff| "
            f"{parity.get('max_abs_logit_diff', float('nan')):.2e}, argmax agreement "
            f"{100 * parity.get('argmax_agreement', 0):.4f} %; dynamic H/W "
            f"{parity.get('dynamic_hw', {}).get('ok')}"
        )
    return 0


def _cmd_report(args):
    from .config import load_json
    from .report.render import render_report

    render_report(
        args.experiment,
        args.dataset_dir,
        load_json(args.config),
        args.out,
        select_cfg=load_json(args.select) if args.select else None,
        plan_json=args.plan,
        deploy_json=args.deploy,
    )
    print(f"report written to {args.out}")
    return 0


def _cmd_predict(args):
    from .predict import ImageInputError, predict_files

    inference = {
        "mode": args.mode,
        "scale": args.scale,
        "target_diagonal": args.target_diagonal,
        "overlap": args.overlap,
        "blend": args.blend,
        "flip": args.flip,
        "crop": args.crop,
        "batch_size": args.batch_size,
    }
    try:
        recs = predict_files(
            args.model,
            args.images,
            args.output,
            inference,
            device=args.device,
            engine=args.engine,
            onnx=args.onnx,
            threads=args.threads,
            bf16=args.bf16,
        )
    except ImageInputError as err:
        print(f"segbench predict: error: {err}", file=sys.stderr)
        return 2
    for r in recs:
        print(f"{r['image']} -> {r['mask']} ({r['width']}x{r['height']}, {r['time_ms']:.0f} ms)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``segbench`` command line: the user commands here, the workflow steps in
    :func:`_add_step_commands`."""
    p = argparse.ArgumentParser(
        prog="segbench", description="Compare semantic-segmentation models fairly on your data."
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the whole workflow (Snakemake) for an experiment")
    r.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. experiment=camvid_quick train.epochs=3"
    )
    r.add_argument("--workdir", default=".", help="where data/ and results/ go (default: current folder)")
    r.add_argument(
        "--config-dir",
        action="append",
        default=[],
        help="a folder of your own configs (dataset/, experiment/, model/ ...), searched before segbench's "
        "config/ (repeatable; also $SEGBENCH_CONFIG_PATH); segbench init writes one",
    )
    r.add_argument("--cores", type=int, default=None, help="CPU cores for Snakemake (default: the profile's)")
    r.add_argument("--profile", default="default", help="profile in workflow/profiles/ (default, slurm ...)")
    r.add_argument("--dry-run", action="store_true", help="show the jobs without running them")
    r.add_argument(
        "--snakemake-args", nargs=argparse.REMAINDER, default=[], help="passed to snakemake as they are"
    )
    r.set_defaults(fn=_cmd_run)

    c = sub.add_parser("config", help="print the composed, validated config")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--config-dir", action="append", default=[], help="a folder of your own configs (see run)")
    c.set_defaults(fn=_cmd_config)

    m = sub.add_parser(
        "models", help="list the model configs (config/model/): library, name, parameter count"
    )
    m.add_argument("--num-classes", type=int, default=11, help="output classes the parameter count assumes")
    m.add_argument(
        "--library", nargs="+", choices=["smp", "torchvision", "mmseg"], help="only these libraries"
    )
    m.add_argument("--strict", action="store_true", help="exit 1 when a config does not build")
    m.set_defaults(fn=_cmd_models)

    s = sub.add_parser("predict", help="segment images with a trained model: index masks and overlays")
    s.add_argument("images", nargs="+", help="image files and/or folders")
    s.add_argument(
        "--model", required=True, help="results/<experiment>/best, or models/<model>/fold<k>/seed<s>"
    )
    s.add_argument(
        "-o", "--output", required=True, help="output folder (or, for one image, the mask's .png path)"
    )
    s.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "resize", "whole", "slide"],
        help="auto (as the model was evaluated; default), resize, whole image, or sliding window "
        "(large images)",
    )
    s.add_argument("--scale", type=float, default=1.0, help="whole/slide: rescale the image first")
    s.add_argument(
        "--target-diagonal",
        type=float,
        default=None,
        help="whole/slide: rescale each image to this diagonal (pixels) instead of --scale",
    )
    s.add_argument(
        "--crop",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="slide: window size (default: training size)",
    )
    s.add_argument("--overlap", type=float, default=0.5, help="slide: overlap fraction (default 0.5)")
    s.add_argument("--blend", default="mean", choices=["mean", "gaussian"])
    s.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--device", default="auto")
    s.add_argument(
        "--engine",
        default="pytorch",
        choices=["pytorch", "onnxruntime"],
        help="pytorch (default) or onnxruntime on the CPU (the model folder's model.onnx, or --onnx)",
    )
    s.add_argument(
        "--onnx", default=None, help="onnxruntime: the .onnx file (e.g. deploy/onnx_int8/model.onnx)"
    )
    s.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the library's)")
    s.add_argument(
        "--bf16", action="store_true", help="pytorch: bfloat16 autocast (CPUs with AVX-512 BF16/AMX)"
    )
    s.set_defaults(fn=_cmd_predict)

    _add_dataset_commands(sub)
    _add_step_commands(sub)
    from .deploy_commands import add_commands as _add_deploy_commands
    from .plan_commands import add_commands as _add_plan_commands
    from .tuning.commands import add_commands as _add_tune_commands

    _add_tune_commands(sub)
    _add_plan_commands(sub)
    _add_deploy_commands(sub)
    return p


def _add_dataset_commands(sub) -> None:
    """Getting data in: ``import-raw``, and the workflow's ``convert``, ``validate``, ``split`` steps."""
    s = sub.add_parser("import-raw", help="copy a raw dataset into the project (DVC's raw-data stage)")
    s.add_argument("--src", default=None, help="raw dataset folder (default: $SEGBENCH_SHARED/data/camvid)")
    s.add_argument("--out", required=True, help="e.g. data/raw/camvid")
    s.set_defaults(fn=_cmd_import_raw)

    s = sub.add_parser(
        "convert",
        help="raw annotations -> canonical dataset",
        description="Convert annotations into the canonical dataset (images/, masks/, dataset.json). "
        "Either SRC OUT with --format, or --config dataset.json --out OUT (the workflow's form).",
    )
    s.add_argument("src", nargs="?", help="the annotation folder (or COCO JSON / CVAT XML file)")
    s.add_argument(
        "out_pos", nargs="?", metavar="out", help="output folder, replaced only when conversion succeeds"
    )
    s.add_argument("--format", default=None, help="masks | palette | labelme | labelme-xml | coco | cvat")
    s.add_argument(
        "--classes",
        default=None,
        help="label list fixing class ids: one name per line (labelme's labels.txt: __ignore__, "
        "_background_) or YAML/JSON",
    )
    s.add_argument(
        "--mask-encoding",
        choices=("auto", "index", "binary"),
        default=None,
        help="masks format: 'binary' reads 0/255 masks (JPEG ones too) thresholded at 128 as classes 0 "
        "and 1; 'index' keeps values as class ids (255 = ignore); 'auto' (default) reads masks holding "
        "only 0 and 255 of a two-class dataset as binary",
    )
    s.add_argument("--name", default=None, help="dataset name (default: OUT's folder name)")
    s.add_argument("--config", default=None, help="dataset config (JSON), as the workflow writes it")
    s.add_argument("--out", default=None, help="data/processed/<dataset>")
    s.add_argument(
        "--force", action="store_true", help="replace an existing output folder that holds other files"
    )
    s.set_defaults(fn=_cmd_convert)

    s = sub.add_parser("validate", help="check a canonical dataset")
    s.add_argument("--dataset", required=True, help="dataset.json")
    s.add_argument("--report", required=True, help="validation.json to write")
    s.add_argument(
        "--max-ignore-share",
        type=float,
        default=0.5,
        help="largest share of ignore_index pixels over all masks (dataset.max_ignore_share, default 0.5)",
    )
    s.add_argument(
        "--allow-absent-classes",
        action="store_true",
        help="accept declared classes that no mask holds (dataset.allow_absent_classes)",
    )
    s.set_defaults(fn=_cmd_validate)

    s = sub.add_parser("split", help="make splits.json")
    s.add_argument("--dataset", required=True)
    s.add_argument("--config", required=True, help="split config (JSON)")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=_cmd_split)


def _add_step_commands(sub) -> None:
    """The workflow's model steps, one subcommand each (what the rules in ``workflow/rules/`` call)."""
    s = sub.add_parser("train", help="train one model on one fold with one training seed")
    for a in ("dataset", "splits", "model", "train", "augment", "out"):
        s.add_argument(f"--{a}", required=True)
    s.add_argument("--fold", type=int, required=True)
    s.add_argument("--seed", type=int, default=None, help="training seed (default: the recipe's seed)")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--logger", default=None, help="logger config (JSON): csv | tensorboard | mlflow | none")
    s.add_argument("--plan", default=None, help="plan/<model>.json: what the plan decided for this model")
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser("evaluate", help="evaluate one trained model on the test split")
    for a in ("checkpoint", "dataset", "splits", "config", "out"):
        s.add_argument(f"--{a}", required=True)
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_evaluate)

    s = sub.add_parser(
        "aggregate", help="summary.csv/json, selection.json (selection on validation, paired tests)"
    )
    s.add_argument("--experiment", required=True)
    s.add_argument("--dataset-dir", required=True)
    s.add_argument("--folds", type=int, required=True)
    s.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds (train.seeds)")
    s.add_argument("--model-configs", nargs="+", required=True)
    s.add_argument("--select", default=None, help="select config (JSON)")
    s.add_argument(
        "--ensembles", nargs="*", default=[], help="ensemble candidates evaluated by segbench ensemble"
    )
    s.add_argument("--tuned", action="store_true", help="the candidates were tuned (tune/<model>/best.json)")
    s.set_defaults(fn=_cmd_aggregate)

    s = sub.add_parser(
        "ensemble", help="softmax-average the top-k models (on validation) of one fold x seed and evaluate it"
    )
    for a in ("experiment", "dataset", "splits", "select", "config", "out"):
        s.add_argument(f"--{a}", required=True)
    s.add_argument("--fold", type=int, required=True)
    s.add_argument("--seed", type=int, required=True, help="the training seed whose members are combined")
    s.add_argument("--folds", type=int, required=True)
    s.add_argument("--seeds", type=int, nargs="+", required=True, help="every training seed (ranking)")
    s.add_argument("--models", nargs="+", required=True)
    s.add_argument(
        "--validation", default=None, help="validation.json (the baseline: models that learned nothing)"
    )
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_ensemble)

    s = sub.add_parser(
        "best", help="package the selected model in best/ (weights, config, ONNX + parity, model card)"
    )
    s.add_argument("--experiment", required=True)
    s.add_argument("--dataset-dir", required=True)
    s.add_argument("--select", required=True, help="select config (JSON)")
    s.add_argument("--evaluate", required=True, help="evaluate config (JSON)")
    s.set_defaults(fn=_cmd_best)

    s = sub.add_parser(
        "check-report", help="check a report in headless Chromium: every picture shows, none is empty"
    )
    s.add_argument("report", help="results/<experiment>/report/index.html")
    s.add_argument("--screenshot", default=None, help="keep the full-page screenshot here (PNG)")
    s.set_defaults(fn=_cmd_check_report)

    s = sub.add_parser("report", help="render report/index.html")
    s.add_argument("--experiment", required=True)
    s.add_argument("--dataset-dir", required=True)
    s.add_argument("--config", required=True)
    s.add_argument(
        "--select", default=None, help="select config (JSON): the bootstrap resamples stated on the page"
    )
    s.add_argument("--plan", default=None, help="plan.json, when the recipe left keys to the plan")
    s.add_argument("--deploy", default=None, help="deploy/summary.json, when deployment variants were built")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=_cmd_report)


def _terminate(signum, frame):  # noqa: ARG001 (signal handler signature)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segbench`` console script; returns the exit code.

    Known user errors (bad config, bad data) print one clear message and exit with code 2.
    """
    from .config import ConfigError
    from .data.convert import DatasetError
    from .records import RecordError
    from .report.check import ReportCheckError

    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler's kill, Ctrl-C of a parent) unwinds like an exception, so every atomic
    # writer removes its temporary folder or file instead of leaving it behind
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    # progress bars and logs reach a piped log (Snakemake's `| tee`) as they happen
    sys.stdout.reconfigure(line_buffering=True)
    if args.command == "import-raw" and args.src is None:
        from .paths import shared_dir

        args.src = str(shared_dir() / "data" / "camvid")
    try:
        return int(args.fn(args) or 0)
    except (
        ConfigError,
        DatasetError,
        FileNotFoundError,
        PermissionError,
        RecordError,
        ReportCheckError,
    ) as err:
        print(f"segbench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
