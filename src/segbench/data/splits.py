"""Split generation: ``splits.json`` (after nnU-Net's splits_final.json; docs/design.md, "Splits").

Schema::

    {"strategy": "holdout"|"kfold"|"predefined"|"file", "seed": int, "group_aware": bool,
     "test": [ids], "folds": [{"train": [ids], "val": [ids]}, ...], "groups": {"test": [...], ...}}

Group-aware splits never put one group (video sequence, patient, field plot; ``manifest[id].group``)
on two sides. Groups are shuffled with the seed, then assigned largest first to the side whose
target size is furthest from reached, which keeps the sides near their requested fractions even
when groups differ a lot in size. Every model of an experiment uses the same file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..records import read_dataset, write_splits
from .convert import DatasetError

__all__ = ["make_splits", "check_splits", "n_folds_of"]


def _assign(
    groups: dict[str, list[str]], targets: dict[str, float], rng: np.random.Generator
) -> dict[str, list[str]]:
    """Assign whole groups to sides so each side's image count approaches its target."""
    names = sorted(groups)
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda g: -len(groups[g]))  # stable: ties keep the seeded order
    sides: dict[str, list[str]] = {s: [] for s in targets}
    counts = {s: 0 for s in targets}
    for g in order:
        side = max(targets, key=lambda s: (targets[s] - counts[s], targets[s]))
        sides[side].append(g)
        counts[side] += len(groups[g])
    return sides


def _read_user_splits(path: str | Path) -> dict[str, Any]:
    """A user-supplied ``splits.json`` (``split.strategy=file``).

    Raises:
        DatasetError: missing, not JSON, or without ``folds`` (names the file and the fix).
    """
    path = Path(path)
    try:
        user = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DatasetError([f"split.file {path}: not found; give the path of your splits.json"]) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError([f"split.file {path}: not valid JSON ({err}); fix the file"]) from err
    if not isinstance(user, dict) or not isinstance(user.get("folds"), list):
        raise DatasetError(
            [
                f'split.file {path}: needs {{"test": [ids], "folds": [{{"train": [...], '
                f'"val": [...]}}]}}; fix the file'
            ]
        )
    return user


def n_folds_of(cfg: dict[str, Any]) -> int:
    """How many folds (training jobs per model and seed) a ``split`` config makes: ``n_folds`` for
    k-fold, the number of folds in the file for ``strategy=file``, else 1.

    Raises:
        DatasetError: ``strategy=file`` and the file is missing, not JSON or has no ``folds``.
    """
    if cfg.get("strategy") == "kfold":
        return int(cfg.get("n_folds", 5))
    if cfg.get("strategy") == "file" and cfg.get("file"):
        return max(1, len(_read_user_splits(cfg["file"])["folds"]))
    return 1


def _predefined(dataset_json: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``test`` and one fold from the images' ``subset`` (train, val, test) as the dataset declares it."""
    subsets = defaultdict(list)
    for sid in sorted(manifest):
        subsets[manifest[sid].get("subset")].append(sid)
    if not subsets.get("train") or not subsets.get("test"):
        raise DatasetError(
            [
                f"{dataset_json}: split.strategy=predefined needs images with subset 'train' and 'test' "
                f"(found subsets {sorted(map(str, subsets))}); set dataset.pairs[].subset or use "
                "strategy=holdout"
            ]
        )
    return {"test": subsets["test"], "folds": [{"train": subsets["train"], "val": subsets.get("val", [])}]}


def _holdout(dataset_json, groups: dict[str, list[str]], n: int, tf: float, vf: float, rng) -> dict[str, Any]:
    """One train / val / test split of whole groups, sized by the fractions (``_assign``)."""
    targets = {"train": n * (1 - tf - vf), "test": n * tf, "val": n * vf}
    targets = {k: v for k, v in targets.items() if v > 0}
    if len(groups) < len(targets):
        raise DatasetError(
            [
                f"{dataset_json}: {len(groups)} group(s) cannot fill {len(targets)} group-aware sides "
                f"({', '.join(targets)}); set split.group_aware=false or lower the fractions"
            ]
        )
    sides = _assign(groups, targets, rng)
    empty = [s for s in targets if not sides[s]]
    if empty:
        raise DatasetError(
            [
                f"{dataset_json}: side(s) {empty} got no group; lower "
                "split.test_fraction/val_fraction or set split.group_aware=false"
            ]
        )

    def side(s: str) -> list[str]:
        return sorted(i for g in sides.get(s, []) for i in groups[g])

    return {
        "test": side("test"),
        "folds": [{"train": side("train"), "val": side("val")}],
        "groups": {s: sorted(v) for s, v in sides.items()},
    }


def _kfold(dataset_json, groups: dict[str, list[str]], n: int, tf: float, k: int, rng) -> dict[str, Any]:
    """A held-out test set of whole groups, then ``k`` folds of the rest (each fold's val is one part)."""
    test_groups: list[str] = []
    if tf > 0:
        sides = _assign(groups, {"rest": n * (1 - tf), "test": n * tf}, rng)
        test_groups = sides["test"]
    rest = {g: v for g, v in groups.items() if g not in set(test_groups)}
    if len(rest) < k:
        raise DatasetError(
            [
                f"{dataset_json}: {len(rest)} group(s) outside the test set cannot make {k} folds; "
                f"lower split.n_folds or set split.group_aware=false"
            ]
        )
    m = sum(len(v) for v in rest.values())
    fold_sides = _assign(rest, {f"f{i}": m / k for i in range(k)}, rng)
    parts = [sorted(i for g in fold_sides[f"f{j}"] for i in rest[g]) for j in range(k)]
    return {
        "test": sorted(i for g in test_groups for i in groups[g]),
        "folds": [
            {"train": sorted(i for j in range(k) if j != f for i in parts[j]), "val": parts[f]}
            for f in range(k)
        ],
        "groups": {
            "test": sorted(test_groups),
            **{f"fold{f}": sorted(fold_sides[f"f{f}"]) for f in range(k)},
        },
    }


def make_splits(
    dataset_json: str | Path, cfg: dict[str, Any], out_path: str | Path | None = None
) -> dict[str, Any]:
    """Make the splits of a canonical dataset.

    Args:
        dataset_json: ``data/processed/<dataset>/dataset.json``.
        cfg: the ``split`` config: ``strategy`` (holdout | kfold | predefined | file), ``seed``,
            ``test_fraction``, ``val_fraction``, ``n_folds``, ``group_aware``, ``file``.
        out_path: where to write ``splits.json`` (atomically); None to only return it.

    Returns:
        The splits dict (schema in the module docstring).

    Raises:
        DatasetError: too few groups for the requested sides or folds, a user split file that names
            unknown ids or overlaps, or a predefined split without subsets.
    """
    meta = read_dataset(dataset_json)
    manifest = meta["manifest"]
    ids = sorted(manifest)
    strategy = cfg["strategy"]
    seed = int(cfg.get("seed", 0))
    group_aware = bool(cfg.get("group_aware", True))
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for sid in ids:
        groups[manifest[sid]["group"] if group_aware else sid].append(sid)
    n = len(ids)
    out: dict[str, Any] = {"strategy": strategy, "seed": seed, "group_aware": group_aware}

    if strategy == "file":
        if not cfg.get("file"):
            raise DatasetError(["split.file: strategy=file needs split.file=<path to splits.json>"])
        user = _read_user_splits(cfg["file"])
        out.update(
            test=sorted(user.get("test", [])),
            folds=[{"train": sorted(f["train"]), "val": sorted(f.get("val", []))} for f in user["folds"]],
        )
    elif strategy == "predefined":
        out.update(_predefined(dataset_json, manifest))
    elif strategy == "holdout":
        tf, vf = float(cfg.get("test_fraction", 0.2)), float(cfg.get("val_fraction", 0.1))
        out.update(_holdout(dataset_json, groups, n, tf, vf, rng))
    elif strategy == "kfold":
        tf, k = float(cfg.get("test_fraction", 0.2)), int(cfg.get("n_folds", 5))
        out.update(_kfold(dataset_json, groups, n, tf, k, rng))
    else:
        raise DatasetError(
            [f"split.strategy '{strategy}' unknown; allowed values: holdout, kfold, predefined, file"]
        )
    check_splits(out, manifest, group_aware, source=str(cfg.get("file") or dataset_json))
    if out_path is not None:
        write_splits(out_path, out)
    return out


def check_splits(
    splits: dict[str, Any], manifest: dict[str, Any], group_aware: bool, source: str = "splits"
) -> None:
    """Check a splits dict: known ids, no id (or group, when group-aware) on two sides of a fold.

    Raises:
        DatasetError: each problem with the fix.
    """
    problems = []
    known = set(manifest)
    test = set(splits["test"])
    if not splits.get("folds"):
        problems.append(f"{source}: no folds; a splits file needs folds: [{{train: [...], val: [...]}}]")
    for k, fold in enumerate(splits.get("folds", [])):
        tr, va = set(fold["train"]), set(fold["val"])
        unknown = sorted((tr | va | test) - known)
        if unknown:
            problems.append(
                f"{source}: fold {k} names ids not in the dataset: {unknown[:5]}; fix the split file"
            )
        if not tr:
            problems.append(f"{source}: fold {k} has an empty training set")
        for a, b, name in ((tr, va, "train/val"), (tr, test, "train/test"), (va, test, "val/test")):
            both = sorted(a & b)
            if both:
                problems.append(f"{source}: fold {k}: ids on both sides of {name}: {both[:5]}")
        if group_aware:
            gset = lambda s: {manifest[i]["group"] for i in s if i in manifest}  # noqa: E731
            for a, b, name in ((tr, va, "train/val"), (tr, test, "train/test"), (va, test, "val/test")):
                both = sorted(gset(a) & gset(b))
                if both:
                    problems.append(
                        f"{source}: fold {k}: groups on both sides of {name}: {both[:5]}; "
                        f"keep each group on one side or set split.group_aware=false"
                    )
    if problems:
        raise DatasetError(problems, header="invalid splits")
