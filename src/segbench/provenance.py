"""What a workflow step's result depends on besides its input files and config: its code.

Snakemake decides staleness from input content (mtime, then the recorded checksum when the mtime
moved but the bytes did not), from ``params`` and from the rule's own shell command; its
between-workflow output cache keys a job by the same things (see ``workflow/rules/common.smk``).
Neither sees the Python code a shell command runs, nor the installed libraries. This module turns
both into one string per step that the rules pass as a ``params`` entry (``code=``), so a change of
segbench's code that a step runs, or of a library it trains or evaluates with, reruns that step
(and misses the cache), while a change of, say, the report code retrains nothing.

A step's code is the closure of segbench modules its entry modules (those its ``segbench``
subcommand imports) import: static analysis of ``import``/``from`` statements, including imports
inside functions; a module that imports by name (``importlib.import_module``, as the model registry
does for its backends) pulls in every module of its package. ``cli.py``, which parses the step's
arguments, is always included. Sources: Snakemake docs, "Between workflow caching" and "Rerun triggers"
(https://snakemake.readthedocs.io/en/stable/executing/caching.html).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
from pathlib import Path

__all__ = [
    "STEPS",
    "module_closure",
    "code_fingerprint",
    "package_versions",
    "write_record",
    "default_output_cache",
    "LIBRARIES",
]

PACKAGE_DIR = Path(__file__).resolve().parent

# workflow step -> the modules its `segbench` subcommand imports (relative to the package, no .py)
STEPS = {
    "convert": ("data/convert",),
    "validate": ("data/validate",),
    "split": ("data/splits",),
    "fingerprint": ("data/fingerprint",),
    "plan": ("plan", "plan_commands"),
    "preprocess": ("data/preprocess",),
    "train": ("training",),
    "tune": ("tuning/commands",),
    "evaluate": ("evaluate",),
    "ensemble": ("ensemble", "evaluate"),
    "aggregate": ("aggregate", "provenance"),
    "best": ("best",),
    "deploy": ("deploy", "deploy_commands"),
    "report": ("report/render",),
}

# libraries whose version can change trained weights or predictions (installed versions are not part
# of Snakemake's cache key: docs/reproducibility.md)
LIBRARIES = (
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "timm",
    "mmsegmentation",
    "mmengine",
    "mmcv",
    "mmcv-lite",
    "lightning",
    "albumentations",
    "numpy",
    "pillow",
    "opencv-python",
    "opencv-python-headless",
    "safetensors",
    "onnx",
    "onnxruntime",
    "pycocotools",
    "scipy",
    "pandas",
    "optuna",
)
_USES_LIBRARIES = {
    "train",
    "tune",
    "plan",
    "preprocess",
    "evaluate",
    "ensemble",
    "best",
    "deploy",
    "convert",
    "aggregate",
}


def _module_file(parts: list[str]) -> Path | None:
    base = PACKAGE_DIR.joinpath(*parts) if parts else PACKAGE_DIR
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


@functools.cache
def _imports(path: Path) -> frozenset[Path]:
    """segbench modules imported anywhere in ``path`` (absolute ``segbench.x`` or relative ``.x``)."""
    rel = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    pkg = list(rel[:-1])
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[list[str]] = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".j2"):
            template = PACKAGE_DIR / "report" / "templates" / node.value
            if template.is_file():  # a template this module renders: its text is part of the step
                found.add(template)
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and not isinstance(node.args[0], ast.Constant)
        ):
            # a module chosen at run time (the model registry's backends): every module of its package
            found.update(p for p in path.parent.glob("*.py") if p != path)
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "segbench"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else list(pkg)
            elif node.module and node.module.split(".")[0] == "segbench":
                base = []
            else:
                continue
            mod = base + (node.module.split(".")[0 if node.level else 1 :] if node.module else [])
            targets = [mod] + [mod + [a.name] for a in node.names]  # `from . import x` may name a module
        for t in targets:
            f = _module_file(t)
            if f is not None:
                found.add(f)
            # a submodule import also runs its packages' __init__
            for i in range(len(t)):
                init = _module_file(t[:i])
                if init is not None and init.name == "__init__.py":
                    found.add(init)
    found.discard(path)
    return frozenset(found)


def module_closure(*entries: str) -> list[Path]:
    """Every segbench source file that the ``entries`` (e.g. ``"training"``, ``"data/convert"``) import,
    directly or through other segbench modules, themselves and ``cli.py`` included, plus the Jinja2
    templates they render (a ``"<name>.j2"`` string in a module names ``report/templates/<name>.j2``); sorted.

    Raises:
        ValueError: an entry is not a module of the package.
    """
    todo = [PACKAGE_DIR / "cli.py", PACKAGE_DIR / "__init__.py"]
    for entry in entries:
        start = _module_file(entry.split("/"))
        if start is None:
            raise ValueError(f"segbench has no module {entry!r} (looked in {PACKAGE_DIR})")
        todo.append(start)
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        if f.suffix == ".py" and f.name != "cli.py":  # cli imports every step lazily
            todo.extend(_imports(f) - seen)
    return sorted(seen)


@functools.cache
def package_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """``{distribution: version}`` of the installed ones among ``names`` (absent ones are left out)."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def code_fingerprint(step: str) -> str:
    """``"<sha256 prefix>"`` of the step's segbench source files (path and bytes) and, for steps that
    compute with the libraries, their installed versions. 16 hex characters.

    Raises:
        KeyError: ``step`` is not one of :data:`STEPS` (the message lists them).
    """
    if step not in STEPS:
        raise KeyError(f"unknown workflow step {step!r}; steps: {', '.join(STEPS)}")
    h = hashlib.sha256()
    for f in module_closure(*STEPS[step]):
        h.update(f.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    if step in _USES_LIBRARIES:
        for name, version in sorted(package_versions().items()):
            h.update(f"{name}=={version}\n".encode())
    return h.hexdigest()[:16]


def write_record(experiment_dir: str | Path, dataset_dir: str | Path) -> dict:
    """Write ``<experiment_dir>/provenance.json``: what this experiment's results were computed from.

    Holds the Python and package versions (:func:`package_versions`), the platform, the code
    fingerprint of every step (:func:`code_fingerprint`), and SHA-256 digests of the composed config
    (``config.yaml``), of ``splits.json`` and of the canonical ``dataset.json`` (which itself lists the
    SHA-256 of every image and mask), with the dataset's name and image count. The composed config is
    ``config.yaml`` beside it; each training job also records its versions in ``train_meta.json``.
    Written atomically; returns the record.
    """
    import platform
    import sys

    from . import __version__
    from .io import atomic_write_json, sha256_file
    from .layout import DatasetLayout, ExperimentLayout
    from .records import read_dataset

    exp, ds = ExperimentLayout(experiment_dir), DatasetLayout(dataset_dir)
    meta = read_dataset(ds.dataset_json)
    record = {
        "segbench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "code": {step: code_fingerprint(step) for step in STEPS},
        "config_sha256": sha256_file(exp.config_yaml) if exp.config_yaml.is_file() else None,
        "splits_sha256": sha256_file(exp.splits),
        "dataset": {
            "name": meta.get("name"),
            "num_images": meta.get("num_images"),
            "dataset_json_sha256": sha256_file(ds.dataset_json),
            "files_sha256": hashlib.sha256(
                "".join(
                    f"{sid}:{e.get('image_sha256')}:{e.get('mask_sha256')}\n"
                    for sid, e in sorted(meta["manifest"].items())
                ).encode()
            ).hexdigest(),
        },
    }
    atomic_write_json(exp.provenance, record)
    return record


def default_output_cache(workdir: str | Path = ".") -> Path:
    """The folder of Snakemake's between-workflow output cache: ``$SNAKEMAKE_OUTPUT_CACHE`` when set,
    else ``<workdir>/.snakemake/output-cache`` (and the variable is set to it, for Snakemake to read
    when it builds the DAG). Created if missing; returned as an absolute path."""
    import os

    path = Path(
        os.environ.setdefault(
            "SNAKEMAKE_OUTPUT_CACHE", str(Path(workdir, ".snakemake", "output-cache").resolve())
        )
    )
    path.mkdir(parents=True, exist_ok=True)
    return path
