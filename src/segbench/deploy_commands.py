"""The workflow's deployment steps on the command line: ``segbench deploy`` (one variant of ``best/``,
built and scored) and ``segbench deploy-summary`` (the variants beside the PyTorch model); see
:mod:`segbench.deploy`. Kept apart so that building the CLI parser imports no torch."""

from __future__ import annotations

__all__ = ["add_commands"]

#: :data:`segbench.deploy.VARIANTS` (repeated so the parser needs no torch import; a test checks they agree)
VARIANTS = ("onnx_fp32", "onnx_int8", "onnx_fp16", "torch_bf16")


def _cmd_deploy(args) -> int:
    from .config import load_json
    from .deploy import run_variant

    rec = run_variant(
        args.variant,
        args.best,
        args.dataset,
        args.splits,
        load_json(args.evaluate),
        load_json(args.deploy),
        args.out,
        args.threads,
    )
    if rec["status"] == "ok":
        print(
            f"{args.variant}: test mIoU {rec['test_mIoU']:.4f}"
            + (f", {rec['size_mb']:.1f} MB" if rec["size_mb"] else "")
            + (f", quantization {rec['quantization']['method']}" if rec["quantization"] else "")
        )
    else:
        print(f"{args.variant}: {rec['status']}: {rec['reason']}")
    return 0


def _cmd_deploy_summary(args) -> int:
    from .config import load_json
    from .deploy import summarise_variants
    from .io import atomic_write_json

    sel = load_json(args.select) if args.select else {}
    s = summarise_variants(
        args.experiment,
        args.dataset,
        list(args.variants),
        int(sel.get("n_bootstrap", 2000)),
        int(sel.get("seed", 0)),
        sel.get("block_length", "auto"),
        int(sel.get("min_clusters", 5)),
        {k: sel.get(k) for k in ("max_ms_per_image", "max_memory_mb")},
    )
    atomic_write_json(args.out, s)
    for r in s["rows"]:
        if r.get("status") == "ok":
            print(
                f"{r['variant']:>10}: test mIoU {r['mIoU']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}], "
                f"{r['time_ms_median']:.1f} ms/image" + (f"; {r['verdict']}" if r.get("verdict") else "")
            )
        else:
            print(f"{r['variant']:>10}: {r['status']}: {r['reason']}")
    if s["recommendation"]:
        print(s["recommendation"])
    return 0


def add_commands(sub) -> None:
    """``segbench deploy`` (one variant) and ``segbench deploy-summary`` (the table), the workflow's
    deployment steps."""
    s = sub.add_parser(
        "deploy",
        help="build one deployment variant of best/ (ONNX FP32/INT8/FP16, PyTorch bf16) and score it",
    )
    s.add_argument("--variant", required=True, choices=list(VARIANTS))
    s.add_argument("--best", required=True, help="results/<experiment>/best")
    s.add_argument("--dataset", required=True, help="dataset.json")
    s.add_argument("--splits", required=True, help="splits.json")
    s.add_argument("--evaluate", required=True, help="evaluate config (JSON)")
    s.add_argument("--deploy", required=True, help="deploy config (JSON)")
    s.add_argument("--out", required=True, help="results/<experiment>/deploy/<variant>")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=_cmd_deploy)

    s = sub.add_parser(
        "deploy-summary", help="the deployment variants beside the PyTorch model (summary.json)"
    )
    s.add_argument("--experiment", required=True)
    s.add_argument("--dataset", required=True, help="dataset.json")
    s.add_argument("--variants", nargs="*", default=[])
    s.add_argument("--select", default=None, help="select config (JSON): bootstrap settings")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=_cmd_deploy_summary)
