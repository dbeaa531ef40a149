"""``segbench init``, and the planning steps' subcommands (``fingerprint``, ``plan``, ``preprocess``) that
the rules of ``workflow/rules/plan.smk`` call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_commands", "DEFAULT_MODELS"]

#: the models segbench init compares by default: two libraries, both fast on a CPU
DEFAULT_MODELS = ["smp_unet_r18", "tv_lraspp_mbv3"]


def _cmd_init(args) -> int:
    from .data.init import inspect_folder, write_configs
    from .models import model_configs
    from .plan import split_rule

    name = args.name or Path(args.data_dir).resolve().name.replace(" ", "_")
    models = args.models or DEFAULT_MODELS
    unknown = [m for m in models if m not in model_configs()]
    if unknown:
        from .config import ConfigError

        raise ConfigError(f"--models: unknown model(s) {unknown}; see `segbench models`")
    proposal = inspect_folder(args.data_dir, name, args.format)
    files = write_configs(proposal, args.config_dir, models, force=args.force)
    st = proposal.stats
    split, split_why = split_rule(st["images"], st["groups"])
    out = [f"segbench init: {args.data_dir} (only read)", "", "found:"]
    out += [f"  - {f}" for f in proposal.facts]
    sizes = st["sizes"]
    if sizes:
        hs, ws = [s[1] for s in sizes], [s[0] for s in sizes]
        out.append(
            f"  - {st['images']} images, {min(ws)}x{min(hs)} to {max(ws)}x{max(hs)} px (median "
            f"{int(sorted(ws)[len(ws) // 2])}x{int(sorted(hs)[len(hs) // 2])}), {st['groups']} group(s)"
        )
    out.append(f"  - classes (pixel share, images; from {st['stat_images']} images):")
    for c in st["classes"]:
        out.append(
            f"      {c['id']:>3} {c['name']:<20} {100 * c['pixel_share']:6.2f} %  in {c['images']} image(s)"
        )
    if st.get("ignored_share"):
        out.append(f"      ignored (255): {100 * st['ignored_share']:.2f} % of the pixels")
    out.append(f"  - split: {split_why}")
    for w in st.get("warnings") or []:
        out.append(f"  ! {w}")
    if proposal.questions:
        out += ["", "questions (the default taken, and the key that changes it):"]
        out += [f"  ? {q}\n      default: {d}; to change: {k}" for q, d, k in proposal.questions]
    cfg_dir = Path(args.config_dir)
    out += [
        "",
        "wrote:",
        *[f"  {f}" for f in files],
        "",
        "the training is planned from the data and this machine when the run starts (plan.json: "
        "scale, patch, "
        "batch size, epochs, class weights, each with its reason); models: " + ", ".join(models),
        "",
        "run:",
        f"  segbench run --config-dir {cfg_dir} experiment={name}",
    ]
    print("\n".join(out))
    return 0


def _cmd_fingerprint(args) -> int:
    from .data.fingerprint import fingerprint

    fp = fingerprint(args.dataset, args.out, threads=args.threads or 2)
    print(
        f"{fp['dataset']}: {fp['num_images']} images, {fp['num_groups']} groups, median "
        f"{fp['width']['median']:.0f}x{fp['height']['median']:.0f}; objects measured in "
        f"{fp['object_masks']} masks"
    )
    return 0


def _cmd_plan(args) -> int:
    import torch

    from .config import load_json
    from .device import auto_precision, resolve_device
    from .io import atomic_write_json
    from .layout import ExperimentLayout
    from .plan import decisions, make_plan
    from .records import fold_ids, read_json, read_splits
    from .training.memory_format import channels_last_for
    from .training.recipe import effective_train_config

    if args.threads:
        torch.set_num_threads(int(args.threads))
    fp = read_json(args.fingerprint, required=("classes", "height", "width"))
    train = load_json(args.train)
    models = {}
    for p in args.model_configs:
        cfg = load_json(p)
        models[cfg.get("name") or Path(p).stem] = cfg
    # the folds' mean training and validation sizes: every fold of a model trains the same epochs, and
    # the budget holds for the average job (k-fold folds of whole groups can differ a lot)
    splits = read_splits(args.splits)
    folds = [fold_ids(splits, k, args.splits) for k in range(len(splits["folds"]))]
    n_train = round(sum(len(f["train"]) for f in folds) / len(folds))
    n_val = round(sum(len(f["val"]) for f in folds) / len(folds))
    device, _ = resolve_device(train.get("device", "auto"))
    precision = train.get("precision", "auto")
    if precision == "auto":
        precision = auto_precision(device.split(":")[0])
    cl = {
        n: channels_last_for(effective_train_config(train, m).get("channels_last", "auto"), m)[0]
        for n, m in models.items()
    }
    # the size each model trains at when its recipe (the experiment's, or the model's own train: keys)
    # sets one: its probe runs there, so its batch size and epochs buy the same compute at that size
    own_size = {}
    for n, m in models.items():
        size = effective_train_config(train, m).get("image_size")
        own_size[n] = None if size in (None, "plan") else size
    plan = make_plan(
        fp,
        load_json(args.plan_config),
        models,
        n_train,
        device,
        precision,
        cl,
        own_size,
        val_images=n_val,
        fixed_diagonal=train.get("target_diagonal"),
    )
    exp = ExperimentLayout(Path(args.out).parent)
    for name in models:
        atomic_write_json(exp.plan_decisions(name), decisions(plan, name))
    atomic_write_json(
        exp.root / "plan_scale.json", {"scale": plan["scale"], "target_diagonal": plan.get("target_diagonal")}
    )
    atomic_write_json(args.out, plan)
    print(
        json.dumps({k: plan.get(k) for k in ("scale", "target_diagonal", "patch", "crop", "class_weights")})
    )
    for name, m in plan["models"].items():
        print(f"{name}: batch {m['batch_size']}, {m['epochs']} epochs ({m['images_per_s']:.1f} images/s)")
    return 0


def _cmd_preprocess(args) -> int:
    from .data.preprocess import preprocess
    from .records import read_json

    source = read_json(args.scale_from)
    scale, target = source.get("scale"), source.get("target_diagonal")
    if scale is None:
        print(f"segbench preprocess: {args.scale_from} sets no scale", file=sys.stderr)
        return 2
    meta = preprocess(
        args.dataset,
        float(scale),
        args.out,
        threads=args.threads or 2,
        target_diagonal=None if target is None else float(target),
    )
    how = f"by {scale:g}" if target is None else f"each to a diagonal of {target:g} px"
    print(f"{len(meta['manifest'])} images rescaled {how} into {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``init``, ``fingerprint``, ``plan`` and ``preprocess``."""
    s = sub.add_parser(
        "init",
        help="look at a folder of images and annotations, write the dataset and experiment configs",
        description="Detect the annotation format, pair images and masks, read classes, sizes and groups, "
        "and write dataset/<name>.yaml and experiment/<name>.yaml into your config folder (never into "
        "segbench's config/); DATA_DIR is only read.",
    )
    s.add_argument("data_dir")
    s.add_argument("--name", default=None, help="dataset and experiment name (default: the folder's name)")
    s.add_argument(
        "--config-dir", default="segbench-config", help="your config folder (default: ./segbench-config)"
    )
    s.add_argument("--format", default=None, help="masks | palette | labelme | labelme-xml | coco | cvat")
    s.add_argument("--models", nargs="+", default=None, help=f"models to compare (default: {DEFAULT_MODELS})")
    s.add_argument("--force", action="store_true", help="replace configs of the same name")
    s.set_defaults(fn=_cmd_init)

    s = sub.add_parser("fingerprint", help="fingerprint.json: sizes, intensities, classes, object sizes")
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_fingerprint)

    s = sub.add_parser("plan", help="plan.json: scale, patch, batch size, epochs, loss, each with its reason")
    for a in ("fingerprint", "splits", "train", "plan-config", "out"):
        s.add_argument(f"--{a}", required=True)
    s.add_argument("--model-configs", nargs="+", required=True)
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_plan)

    s = sub.add_parser("preprocess", help="the dataset rescaled to the training scale (preprocessed/)")
    s.add_argument("--dataset", required=True)
    s.add_argument("--scale-from", required=True, help="plan_scale.json, or the training recipe (its scale)")
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_preprocess)
