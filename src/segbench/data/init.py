"""``segbench init DATA_DIR``: look at a folder of images and annotations, say what it holds, and write
the dataset and experiment configs that compare models on it (issue 18).

What it infers, in order:

1. **The format** (:func:`detect_format`): COCO instances JSON, CVAT for images 1.1 XML, LabelMe JSON,
   LabelMe XML, or folders of masks beside folders of images (index masks, 0/255 binary masks, RGB
   colour masks, palette PNGs). Files of two annotation formats in one folder are an error that names
   them: which one is meant is not a guess segbench makes.
2. **Images and masks paired** (mask folders: :func:`pair_folders`): the folder holding the masks (single
   channel, or few colours) and the one holding the photos, and the prefix/suffix that turns a photo's
   name into its mask's (``a.jpg`` <-> ``a_mask.png``).
3. **The classes**: the labels the annotation files name, or a label list in the folder
   (``labels.txt``, ``classes.txt``, ``labels.yaml``), or the mask values; with their pixel share and the
   number of images each appears in, read through the same importer the conversion uses.
4. **Image sizes**, from the files' headers.
5. **Groups** (:func:`suggest_groups`): a file-name prefix shared by related images (a video's
   frames, a patient's slices, a field plot), so a split never puts related images on both sides.
6. **The split**: k-fold when there are few images or groups (:func:`segbench.plan.split_rule`).

What it cannot tell is printed as a question with the default it took and the key to change
(is 255 a class or "ignore"? are these groups real?). It writes ``dataset/<name>.yaml`` and
``experiment/<name>.yaml`` into the user's config folder (default ``./segbench-config``; never
segbench's own ``config/``) and prints the one command to run. ``DATA_DIR`` is only read.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..images import IMAGE_EXTS
from .errors import DatasetError

__all__ = [
    "Proposal",
    "detect_format",
    "pair_folders",
    "suggest_groups",
    "inspect_folder",
    "write_configs",
    "LABEL_FILES",
]

#: label lists init looks for in the data folder (labelme's labels.txt convention, or YAML/JSON)
LABEL_FILES = ("labels.txt", "classes.txt", "class_names.txt", "labels.yaml", "classes.yaml", "labels.json")
#: images read for the class statistics (evenly spread over the dataset; all when fewer)
MAX_STAT_IMAGES = 400
#: more distinct values than this in single-channel masks: not a class table (instance ids, depth)
MAX_MASK_VALUES = 64


@dataclass
class Proposal:
    """What init found in a folder: the dataset config it proposes and what it says about it.

    Attributes:
        dataset: the dataset config (``config/dataset/<name>.yaml`` keys).
        facts: one line per thing inferred (printed).
        questions: ``(question, the default taken, the key to change)``.
        stats: numbers for the experiment's choices and the console (images, groups, sizes, classes).
    """

    dataset: dict[str, Any]
    facts: list[str] = field(default_factory=list)
    questions: list[tuple[str, str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def _visible_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _xml_root_tag(path: Path) -> str | None:
    import xml.etree.ElementTree as ET

    try:
        for _, el in ET.iterparse(path, events=("start",)):
            return el.tag
    except ET.ParseError:
        return None
    return None


def detect_format(root: Path) -> tuple[str, dict[str, list[Path]]]:
    """The annotation format of a folder, and the files of each format found.

    Returns:
        ``(format, {format: [files]})``; ``masks`` when no annotation file is found (the mask folders
        are then paired by :func:`pair_folders`).

    Raises:
        DatasetError: an empty folder, or files of two annotation formats (names some of each).
    """
    from .importers.coco import is_coco
    from .importers.labelme import is_labelme

    files = _visible_files(root)
    if not files:
        raise DatasetError(
            [f"{root}: the folder is empty (hidden files aside); point segbench init at your data"]
        )
    found: dict[str, list[Path]] = {}
    for p in files:
        suffix = p.suffix.lower()
        if suffix == ".json" and p.name not in LABEL_FILES:
            data = _read_json(p)
            kind = "coco" if is_coco(data) else "labelme" if is_labelme(data) else None
        elif suffix == ".xml":
            tag = _xml_root_tag(p)
            kind = "cvat" if tag == "annotations" else "labelme-xml" if tag == "annotation" else None
        else:
            kind = None
        if kind:
            found.setdefault(kind, []).append(p)
    if len(found) > 1:
        listed = "; ".join(
            f"{k}: {', '.join(str(f.relative_to(root)) for f in v[:3])}{' ...' if len(v) > 3 else ''}"
            for k, v in sorted(found.items())
        )
        raise DatasetError(
            [
                f"{root}: annotation files of {len(found)} formats ({listed}); keep one format in the "
                "folder, "
                f"or pass --format {' | '.join(sorted(found))} to choose"
            ]
        )
    if not found and not any(p.suffix.lower() in IMAGE_EXTS for p in files):
        raise DatasetError(
            [
                f"{root}: no images ({', '.join(sorted(IMAGE_EXTS))}) and no annotation files (COCO, CVAT, "
                "LabelMe JSON/XML); point segbench init at the folder holding them"
            ]
        )
    return (next(iter(found)) if found else "masks"), found


# ---------------------------------------------------------------- mask folders


def _mask_kind(path: Path) -> str | None:
    """``index`` (single channel), ``colour`` (RGB with few colours: a colour mask), ``photo``, or None
    (unreadable)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("L", "P", "I", "I;16", "I;16B", "1") and path.suffix.lower() != ".jpg":
                return "index"
            if im.mode in ("RGB", "RGBA") and path.suffix.lower() in (".png", ".bmp", ".tif", ".tiff"):
                small = im.convert("RGB").resize((64, 64), Image.NEAREST)
                colours = len(np.unique(np.asarray(small).reshape(-1, 3), axis=0))
                return "colour" if colours <= 32 else "photo"
            return "photo"
    except Exception:
        return None


def _folder_kinds(files: list[Path]) -> dict[Path, Counter]:
    kinds: dict[Path, Counter] = {}
    for p in files:
        if p.suffix.lower() in IMAGE_EXTS:
            kinds.setdefault(p.parent, Counter())
    for folder in kinds:
        sample = sorted(q for q in folder.iterdir() if q.suffix.lower() in IMAGE_EXTS)[:12]
        kinds[folder] = Counter(k for k in map(_mask_kind, sample) if k)
    return kinds


def _affix(photo_stems: list[str], mask_stems: list[str]) -> tuple[str, str] | None:
    """The (prefix, suffix) that turns most photo names into mask names (``a`` -> ``a_mask``)."""
    photos = set(photo_stems)
    votes: Counter = Counter()
    for t in mask_stems[:200]:
        if t in photos:
            votes[("", "")] += 1
            continue
        best = max((s for s in photos if s and s in t), key=len, default=None)
        if best is not None:
            i = t.index(best)
            votes[(t[:i], t[i + len(best) :])] += 1
    return votes.most_common(1)[0][0] if votes else None


def pair_folders(root: Path) -> tuple[dict[str, Any], list[str]]:
    """The ``masks``/``palette`` dataset keys that pair the photos and masks under ``root``.

    Returns:
        ``(config keys: format, pairs, image/mask prefix and suffix, mask kind, facts)``.

    Raises:
        DatasetError: no folder of masks, no pairing, or unpaired files (names them and the fix).
    """
    kinds = _folder_kinds(_visible_files(root))
    mask_dirs = [d for d, c in kinds.items() if c and (c["index"] + c["colour"]) > c["photo"]]
    photo_dirs = [d for d, c in kinds.items() if c and c["photo"] >= (c["index"] + c["colour"])]
    if not mask_dirs:
        raise DatasetError(
            [
                f"{root}: images but no masks and no annotation files; put the masks (one single-channel PNG "
                "of class ids, or a colour PNG, per image) in a folder beside the images, or export the "
                "annotations from your tool as COCO, CVAT 1.1 or LabelMe"
            ]
        )
    pairs, affixes, facts, problems = [], set(), [], []
    for m in sorted(mask_dirs):
        mstems = [p.stem for p in sorted(m.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
        cands = photo_dirs or [m]
        scored = []
        for d in cands:
            pstems = [p.stem for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
            affix = _affix(pstems, mstems) if d != m else _affix(pstems, mstems)
            if affix is None or (d == m and affix == ("", "")):
                continue
            matched = sum(
                1
                for t in mstems
                if t.startswith(affix[0])
                and t.endswith(affix[1])
                and t[len(affix[0]) : len(t) - len(affix[1]) or None] in set(pstems)
            )
            scored.append((matched, d, affix))
        if not scored:
            problems.append(f"{m}: masks whose names match no image; name each mask after its image")
            continue
        matched, d, affix = max(scored, key=lambda x: x[0])
        if matched == 0:
            problems.append(f"{m}: masks whose names match no image in {d}; name each mask after its image")
            continue
        subset = _subset_name(d, m)
        pairs.append(
            {
                "images": d.relative_to(root).as_posix() or ".",
                "masks": m.relative_to(root).as_posix(),
                "subset": subset,
            }
        )
        affixes.add(affix)
        facts.append(
            f"masks in {m.relative_to(root) or '.'} pair with images in {d.relative_to(root) or '.'} "
            f"({matched} pairs)"
        )
    if not pairs:
        raise DatasetError(problems or [f"{root}: could not pair images with masks; see docs/annotations.md"])
    # a folder of mask-like pictures that pairs with nothing beside folders that do (a colour legend, a
    # preview): left out, and said
    facts += [f"left out: {p.split(': ', 1)[0]} ({p.split(': ', 1)[1].split(';')[0]})" for p in problems]
    if len(affixes) > 1:
        raise DatasetError(
            [f"{root}: the mask folders name their files differently ({sorted(affixes)}); use one naming"]
        )
    prefix, suffix = affixes.pop()
    colour = sum(kinds[Path(root / p["masks"])]["colour"] for p in pairs)
    index = sum(kinds[Path(root / p["masks"])]["index"] for p in pairs)
    cfg = {
        "format": "palette" if colour > index else "masks",
        "pairs": pairs,
        "image_prefix": "",
        "image_suffix": "",
        "mask_prefix": prefix,
        "mask_suffix": "",
    }
    if suffix:  # the masks' suffix without extension: masks named <prefix><id><suffix>.<ext>
        cfg["mask_suffix"] = suffix + _common_ext(root / pairs[0]["masks"])
    return cfg, facts


def _common_ext(folder: Path) -> str:
    exts = Counter(p.suffix.lower() for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    return exts.most_common(1)[0][0] if exts else ".png"


def _subset_name(images: Path, masks: Path) -> str | None:
    for name in ("train", "val", "valid", "validation", "test"):
        if name in (images.name.lower(), masks.name.lower()) or images.name.lower().startswith(name):
            return {"valid": "val", "validation": "val"}.get(name, name)
    return None


# ---------------------------------------------------------------- groups


_GROUP_PATTERNS = (
    (r"^(.+?)[_\-. ]?\d+$", "the name without its trailing number (video frames, slices, tiles)"),
    (r"^([^_\-. ]+)[_\-. ]", "the first word of the name (patient, plot, site)"),
)


def suggest_groups(ids: list[str]) -> tuple[str | None, dict[str, int], str]:
    """A ``group_regex`` that gathers related images, with the group sizes, or None.

    A pattern is kept when it matches every id and makes at least 2 groups, at most half as many as
    images (so that some images share a group). Returns ``(regex, {group: images}, why)``.
    """
    n = len(ids)
    for rx, why in _GROUP_PATTERNS:
        groups: Counter = Counter()
        for sid in ids:
            m = re.search(rx, sid)
            if not m:
                break
            groups[m.group(1)] += 1
        else:
            if 2 <= len(groups) <= n // 2:
                return rx, dict(groups), why
    return None, {}, ""


# ---------------------------------------------------------------- classes and statistics


def _label_file(root: Path) -> Path | None:
    return next((root / n for n in LABEL_FILES if (root / n).is_file()), None)


#: class names that mean "no label": init reads their mask value as ignore_index
VOID_NAMES = ("unlabelled", "unlabeled", "void", "ignore", "__ignore__", "dontcare", "don't care", "unknown")


def _label_names(path: Path) -> list[str]:
    """The class names of a label list, one per id. Lines like ``3 Road`` or ``3: Road`` (the id first,
    in order 0, 1, 2 ...) give ``Road``; a trailing remark in parentheses is dropped
    (``Unlabelled (ignore_label in ...)`` -> ``Unlabelled``)."""
    from .importers.common import read_class_file

    names, _ = read_class_file(path)
    numbered = [re.match(r"^(\d+)\s*[:,=\-]?\s+(.+)$", n) for n in names]
    if names and all(numbered) and [int(m.group(1)) for m in numbered] == list(range(len(names))):
        names = [m.group(2) for m in numbered]
    return [re.sub(r"\s*\(.*\)\s*$", "", n).strip() or n for n in names]


def _mask_values(cfg: dict[str, Any], root: Path) -> tuple[list[int], dict[int, list[int]]]:
    """The values of the single-channel masks (a sample) and the palette colours of mode-P masks."""
    from .importers.masks import pair_mask_folder

    items, _ = pair_mask_folder(cfg)
    values: set[int] = set()
    palettes: dict[int, list[int]] = {}
    for it in items[:: max(1, len(items) // 60)]:
        with Image.open(it["mask"]) as im:
            if im.mode == "P":
                pal = im.getpalette() or []
                for i in range(len(pal) // 3):
                    palettes.setdefault(i, pal[3 * i : 3 * i + 3])
            values |= set(np.unique(np.asarray(im)).tolist())
    return sorted(values), palettes


def _colour_classes(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    from .importers.masks import pair_mask_folder

    items, _ = pair_mask_folder(cfg)
    colours: Counter = Counter()
    for it in items[:: max(1, len(items) // 40)]:
        with Image.open(it["mask"]) as im:
            rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
        u, c = np.unique(rgb, axis=0, return_counts=True)
        for col, k in zip(map(tuple, u.tolist()), c.tolist()):
            colours[col] += k
    if len(colours) > MAX_MASK_VALUES:
        raise DatasetError(
            [
                f"{items[0]['mask']}: the colour masks hold {len(colours)} colours, more than any class "
                "table: they were saved with smoothing (anti-aliasing) or are photos; export the masks "
                "without smoothing"
            ]
        )
    ordered = sorted(colours, key=lambda col: (col != (0, 0, 0), -colours[col]))  # black first
    return [{"id": i, "name": f"class_{i}", "color": list(col)} for i, col in enumerate(ordered)]


def _mask_classes(cfg: dict[str, Any], root: Path, proposal: Proposal) -> None:
    """Fill the class table of a mask dataset (and the ambiguity about 255)."""
    from .importers.common import read_class_file

    labels = _label_file(root)
    if cfg["format"] == "palette":
        cfg["classes"] = _colour_classes(cfg)
        proposal.facts.append(f"RGB colour masks: {len(cfg['classes'])} colours, one class each")
        if labels:
            names, _ = read_class_file(labels)
            for c, n in zip(cfg["classes"], names):
                c["name"] = n
        else:
            proposal.questions.append(
                (
                    "what are the classes called? they are named class_0, class_1 ... in colour order",
                    "class_<k>",
                    f"dataset.classes[*].name in dataset/{cfg['name']}.yaml, or a labels.txt in the "
                    "data folder",
                )
            )
        return
    values, palettes = _mask_values(cfg, root)
    if not values:
        raise DatasetError([f"{root}: the masks could not be read"])
    if max(values) > 1000 or len([v for v in values if v != 255]) > MAX_MASK_VALUES:
        raise DatasetError(
            [
                f"{root / cfg['pairs'][0]['masks']}: the masks hold {len(values)} distinct values up to "
                f"{max(values)}, more than a class table plausibly has: these look like instance ids, depth "
                "or intensity images, "
                "not class masks; export one class id per pixel (0, 1, 2 ...)"
            ]
        )
    names = _label_names(labels) if labels else None
    if set(values) <= {0, 255} and 255 in values:
        cfg["classes"] = [
            {"id": 0, "name": (names or ["background"])[0]},
            {"id": 1, "name": (names or [0, "foreground"])[1]},
        ]
        cfg["mask_encoding"] = "binary"
        cfg["background"] = 0
        proposal.facts.append(
            "0/255 binary masks: 0 = background, 255 = foreground (read as classes 0 and 1)"
        )
        proposal.questions.append(
            ("is 255 the foreground class or 'ignore'?", "a class (foreground)",
             "dataset.mask_encoding: index (255 is then ignore_index)")
        )  # fmt: skip
        return
    classes = [v for v in values if v != 255]
    n = max(classes) + 1 if classes else 1
    if 255 in values:
        proposal.questions.append(
            ("is 255 a class or 'ignore' (unlabelled pixels)?", "ignore (never trained on, never scored)",
             "dataset.ignore_index, or dataset.mask_value_map: {255: <class id>}")
        )  # fmt: skip
    gaps = sorted(set(range(n)) - set(classes))
    if gaps:
        proposal.questions.append(
            (f"mask values {gaps} appear in no mask sampled: real classes that are rare, or unused ids?",
             "kept as classes (validation refuses classes no mask holds)",
             "dataset.classes, or dataset.mask_value_map to renumber")
        )  # fmt: skip
    cfg["classes"] = [
        {"id": i, "name": (names[i] if names and i < len(names) else f"class_{i}")} for i in range(max(n, 2))
    ]
    # a value named "unlabelled" / "void" / "ignore" is the ignore label, not a class
    void = [c for c in cfg["classes"] if c["name"].strip().lower() in VOID_NAMES]
    if void and len(cfg["classes"]) - len(void) >= 2:
        ignore = int(cfg.get("ignore_index", 255))
        cfg["mask_value_map"] = {int(c["id"]): ignore for c in void}
        kept = [c for c in cfg["classes"] if c not in void]
        if [c["id"] for c in kept] != list(range(len(kept))):  # the ids after it move down
            cfg["mask_value_map"].update({int(c["id"]): i for i, c in enumerate(kept) if c["id"] != i})
            kept = [dict(c, id=i) for i, c in enumerate(kept)]
        cfg["classes"] = kept
        listed = ", ".join(f"{c['id']} ({c['name']})" for c in void)
        proposal.facts.append(
            f"value {listed} read as ignore_index {ignore} (never trained on, never scored)"
        )
        proposal.questions.append(
            (f"is {listed} 'ignore' rather than a class?", "ignore",
             "dataset.mask_value_map (remove the entry) and dataset.classes")
        )  # fmt: skip
    for c in cfg["classes"]:
        if c["id"] in palettes:
            c["color"] = palettes[c["id"]]
    if names is None:
        proposal.questions.append(
            (
                "what are the classes called?",
                "class_0, class_1 ...",
                "dataset.classes[*].name, or a labels.txt",
            )
        )
    bg = next((c["id"] for c in cfg["classes"] if c["name"].lower() in ("background", "_background_")), None)
    cfg["background"] = bg
    proposal.facts.append(f"index masks: values {values[:12]}{' ...' if len(values) > 12 else ''}")


def _statistics(cfg: dict[str, Any], proposal: Proposal) -> None:
    """Per-class pixel share and image presence, image sizes and groups, read through the importer."""
    from .importers import get_importer
    from .importers.common import ClassTable, Problems

    importer = get_importer(cfg["format"])
    table = ClassTable.build(cfg, None if cfg.get("classes") else importer.labels(cfg))
    cfg.setdefault("classes", [{k: c[k] for k in ("id", "name")} for c in table.classes])
    if cfg.get("background") is None and cfg["format"] not in ("masks", "palette"):
        cfg["background"] = table.background
    problems = Problems()
    n_cls = len(table.classes)
    pixels = np.zeros(max(n_cls, 256), np.int64)
    presence = np.zeros(max(n_cls, 256), np.int64)
    ids, sizes, n = [], [], 0
    for s in importer.samples(dict(cfg), table, problems):
        ids.append(s.id)
        if n < MAX_STAT_IMAGES:
            counts = np.bincount(np.asarray(s.mask, np.int64).reshape(-1), minlength=pixels.size)[
                : pixels.size
            ]
            pixels += counts
            presence += counts > 0
            n += 1
        sizes.append((int(s.mask.shape[1]), int(s.mask.shape[0])))  # (width, height) as displayed
    if problems.errors:
        raise DatasetError(
            problems.errors[:10], header=f"segbench init: the annotations under {cfg['root']} have problems"
        )
    total = max(1, int(pixels[:n_cls].sum()))
    proposal.stats.update(
        images=len(ids),
        ids=ids,
        sizes=sizes,
        classes=[
            {
                "id": int(c["id"]),
                "name": c["name"],
                "pixel_share": float(pixels[int(c["id"])] / total),
                "images": int(presence[int(c["id"])]),
            }
            for c in cfg["classes"]
        ],
        ignored_share=float(pixels[int(cfg.get("ignore_index", 255))] / max(1, pixels.sum())),
        stat_images=n,
        warnings=problems.warnings[:5],
    )


def _drop_absent(cfg: dict[str, Any], proposal: Proposal) -> None:
    """Labels no mask holds (declared but unused, or only boxes and lines a format drops): left out of
    the classes of a shape format (``label_map: {label: null}``, ids renumbered), kept and allowed for
    a mask format (its pixel values are the ids), and said either way: validation refuses a declared
    class that no mask holds."""
    absent = [c for c in proposal.stats["classes"] if c["images"] == 0 and c["id"] != cfg.get("background")]
    if not absent:
        return
    names = ", ".join(repr(c["name"]) for c in absent)
    if cfg["format"] in ("masks", "palette"):
        cfg["allow_absent_classes"] = True
        proposal.questions.append(
            (f"class(es) {names} appear in no mask read: keep them?", "kept (dataset.allow_absent_classes)",
             "dataset.allow_absent_classes: false, and renumber with dataset.mask_value_map")
        )  # fmt: skip
        return
    gone = {c["name"] for c in absent}
    kept = [c for c in cfg["classes"] if c["name"] not in gone]
    remap = {int(c["id"]): i for i, c in enumerate(kept)}
    cfg["classes"] = [dict(c, id=remap[int(c["id"])]) for c in kept]
    if cfg.get("background") is not None:
        cfg["background"] = remap.get(int(cfg["background"]), cfg["background"])
    cfg["label_map"] = {**(cfg.get("label_map") or {}), **{n: None for n in sorted(gone)}}
    proposal.stats["classes"] = [
        dict(c, id=remap[c["id"]]) for c in proposal.stats["classes"] if c["name"] not in gone
    ]
    proposal.facts.append(
        f"label(s) {names} have no pixels (unused, or only boxes or lines this format leaves out): left out "
        "(dataset.label_map: <label>: null)"
    )


def inspect_folder(data_dir: str | Path, name: str, fmt: str | None = None) -> Proposal:
    """Everything init infers about ``data_dir`` (see the module docstring); nothing is written.

    Raises:
        DatasetError: an empty folder, mixed formats, unpaired files, masks that are no class table,
            annotations that do not convert (each problem with its file and the fix).
    """
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise DatasetError(
            [f"{data_dir}: no such folder; give segbench init the folder of your images and annotations"]
        )
    detected, found = detect_format(root) if fmt is None else (fmt, {})
    cfg: dict[str, Any] = {"name": name, "format": detected, "root": str(root), "ignore_index": 255}
    proposal = Proposal(cfg)
    if detected in ("masks", "palette"):
        keys, facts = pair_folders(root)
        cfg.update(keys)
        proposal.facts += facts
        _mask_classes(cfg, root, proposal)
    else:
        files = found.get(detected, [])
        proposal.facts.append(
            f"{detected} annotations: {len(files)} file(s), e.g. "
            f"{files[0].relative_to(root) if files else '?'}"
        )
        if detected == "coco" and files and files[0].parent != root and files[0].parent.name != "annotations":
            cfg["annotations"] = [f.relative_to(root).as_posix() for f in files]
        labels = _label_file(root)
        if labels:
            from ..data.convert import classes_from_file

            cfg.update(classes_from_file(labels, detected))
            proposal.facts.append(f"class list from {labels.name}")
    _statistics(cfg, proposal)
    _drop_absent(cfg, proposal)
    ids = proposal.stats["ids"]
    rx, groups, why = suggest_groups(ids)
    cfg["group_regex"] = rx
    if rx:
        sizes = sorted(groups.values(), reverse=True)
        proposal.facts.append(
            f"{len(groups)} groups by {why} ({sizes[0]} to {sizes[-1]} images each): related images stay "
            "on one "
            "side of every split"
        )
        proposal.questions.append(
            (f"are the images of one group related (e.g. {', '.join(list(groups)[:3])})?",
             "yes: kept together",
             "dataset.group_regex: null (every image on its own)")
        )  # fmt: skip
    else:
        proposal.facts.append("no groups in the file names: every image is its own group")
        proposal.questions.append(
            ("are some images related (frames of one video, slices of one patient)?", "no",
             "dataset.group_regex: a regex whose first group names the group")
        )  # fmt: skip
    proposal.stats["groups"] = len(groups) if rx else len(ids)
    return proposal


# ---------------------------------------------------------------- writing the configs


def write_configs(
    proposal: Proposal, config_dir: str | Path, models: list[str], force: bool = False
) -> list[Path]:
    """Write ``dataset/<name>.yaml`` and ``experiment/<name>.yaml`` into ``config_dir``.

    Raises:
        DatasetError: ``config_dir`` is segbench's own ``config/`` (an update would overwrite it), or the
            files exist and ``force`` is not given.
    """
    import yaml

    from .. import paths
    from ..plan import split_rule

    config_dir = Path(config_dir).resolve()
    own = paths.config_dir().resolve()
    if config_dir == own or own in config_dir.parents:
        raise DatasetError(
            [
                f"{config_dir}: segbench's own config folder; keep your configs outside the checkout "
                "(--config-dir)"
            ]
        )
    cfg, name = proposal.dataset, proposal.dataset["name"]
    ds_file, exp_file = config_dir / "dataset" / f"{name}.yaml", config_dir / "experiment" / f"{name}.yaml"
    existing = [p for p in (ds_file, exp_file) if p.exists()]
    if existing and not force:
        raise DatasetError([f"{existing[0]}: exists; pass --force to replace it, or --name another_name"])
    split, why = split_rule(proposal.stats["images"], proposal.stats["groups"])
    binary = len(cfg["classes"]) == 2 and cfg.get("background") is not None
    experiment = {
        "defaults": [
            {"override /dataset": name},
            {"override /split": split["strategy"]},
            {"override /train": "planned"},
        ],
        "name": name,
        "models": models,
        "split": {k: v for k, v in split.items() if k != "strategy"},
        "select": {"criterion": "mDice_fg"} if binary else {},
    }
    from ..io import atomic_write_text

    header = (
        f"# written by segbench init from {cfg['root']}; edit freely (segbench init --force rewrites it)\n"
    )
    atomic_write_text(ds_file, header + yaml.safe_dump(_clean(cfg), sort_keys=False))
    atomic_write_text(
        exp_file,
        "# @package _global_\n" + header + f"# split: {why}\n" + yaml.safe_dump(experiment, sort_keys=False),
    )
    return [ds_file, exp_file]


def _clean(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if v is not None or k in ("background", "group_regex")}
