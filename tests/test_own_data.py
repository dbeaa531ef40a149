"""Your own data, planned (issue 18): ``segbench init`` on folders it has never seen (LabelMe, COCO,
0/255 binary masks, RGB colour masks, all from ../shared/data or made from it), its refusals, the
user's config folder, the fingerprint, the plan's rules, the rescaled copy, patch training, and the
planned workflow end to end."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGBENCH_SHARED", REPO.parent / "shared")).resolve()
TWO_LABEL = SHARED / "data" / "annotations" / "2label" / "datasets"


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _init(capsys, data: Path, cfg_dir: Path, *extra) -> tuple[int, str]:
    code = main(["init", str(data), "--config-dir", str(cfg_dir), *map(str, extra)])
    out = capsys.readouterr()
    return code, out.out + out.err


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------- data that the tests make from ../shared


def _binary_from_grapes(dest: Path) -> Path:
    """The grape photos as images/ + masks/ with 0/255 masks (grape = 255), made by converting the
    LabelMe files (green and black grapes merged)."""
    from segbench.data.convert import convert

    tmp = dest.parent / "grapes_converted"
    cfg = {
        "name": "g",
        "format": "labelme",
        "root": str(TWO_LABEL / "grapes"),
        "label_map": {"green_grape": "grape", "black_grape": "grape"},
        "classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "grape"}],
        "background": 0,
        "ignore_index": 255,
    }
    meta = convert(cfg, tmp)
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    for sid, e in meta["manifest"].items():
        shutil.copyfile(tmp / e["image"], dest / "images" / f"grape{sid}{Path(e['image']).suffix}")
        m = np.asarray(Image.open(tmp / e["mask"]))
        Image.fromarray((m == 1).astype(np.uint8) * 255).save(dest / "masks" / f"grape{sid}_mask.png")
    return dest


def _colour_from_camvid(dest: Path, camvid_subset: Path) -> Path:
    """The CamVid subset with RGB colour masks (CamVid's own class colours; unlabelled black)."""
    from segbench.config import compose

    classes = compose(["experiment=camvid_quick"])["dataset"]["classes"]
    lut = np.zeros((256, 3), np.uint8)
    for c in classes:
        lut[c["id"]] = c["color"]
    for sub in ("train", "val", "test"):
        (dest / sub).mkdir(parents=True)
        (dest / f"{sub}_labels").mkdir()
        for p in sorted((camvid_subset / "CamVid" / sub).glob("*.png")):
            shutil.copyfile(p, dest / sub / p.name)
            m = np.asarray(Image.open(camvid_subset / "CamVid" / f"{sub}annot" / p.name))
            Image.fromarray(lut[np.where(m == 11, 255, m)]).save(dest / f"{sub}_labels" / p.name)
    return dest


# ---------------------------------------------------------------- segbench init


def test_init_on_labelme_photos_writes_configs_outside_the_checkout(tmp_path, capsys):
    data = TWO_LABEL / "grapes"
    before_data, before_cfg = _tree_hash(data), _tree_hash(REPO / "config")
    code, out = _init(capsys, data, tmp_path / "cfg", "--name", "grapes_own")
    assert code == 0, out
    assert "labelme annotations: 11 file(s)" in out and "green_grape" in out and "black_grape" in out
    assert "k-fold" in out and f"segbench run --config-dir {tmp_path / 'cfg'} experiment=grapes_own" in out
    ds = _yaml(tmp_path / "cfg" / "dataset" / "grapes_own.yaml")
    assert ds["format"] == "labelme" and [c["name"] for c in ds["classes"]][:1] == ["background"]
    exp = (tmp_path / "cfg" / "experiment" / "grapes_own.yaml").read_text()
    assert "override /train: planned" in exp and "override /split: kfold" in exp
    assert _tree_hash(data) == before_data and _tree_hash(REPO / "config") == before_cfg
    # the configs compose from the user's folder, and a second init does not overwrite them
    from segbench.config import compose

    cfg = compose(["experiment=grapes_own"], [tmp_path / "cfg"])
    assert cfg["dataset"]["name"] == "grapes_own" and cfg["train"]["image_size"] == "plan"
    code, out = _init(capsys, data, tmp_path / "cfg", "--name", "grapes_own")
    assert code == 2 and "exists; pass --force" in out


def test_init_on_a_coco_export(tmp_path, capsys):
    code, out = _init(capsys, TWO_LABEL / "coco1.0", tmp_path / "cfg")
    assert code == 0, out
    ds = _yaml(tmp_path / "cfg" / "dataset" / "coco1.0.yaml")
    assert ds["format"] == "coco" and len(ds["classes"]) >= 3 and ds["background"] == 0


def test_init_on_binary_masks_reads_255_as_the_foreground_and_asks(tmp_path, capsys):
    data = _binary_from_grapes(tmp_path / "binary")
    code, out = _init(capsys, data, tmp_path / "cfg", "--name", "grapes_bin")
    assert code == 0, out
    assert "0/255 binary masks" in out and "is 255 the foreground class or 'ignore'?" in out
    ds = _yaml(tmp_path / "cfg" / "dataset" / "grapes_bin.yaml")
    assert ds["format"] == "masks" and ds["mask_encoding"] == "binary" and ds["mask_suffix"] == "_mask.png"
    assert ds["image_prefix"] == "" and ds["pairs"] == [
        {"images": "images", "masks": "masks", "subset": None}
    ]
    exp = _yaml(tmp_path / "cfg" / "experiment" / "grapes_bin.yaml")
    assert exp["select"] == {"criterion": "mDice_fg"}  # a binary task is selected on its foreground


def test_init_on_colour_masks_makes_a_palette_and_finds_subsets(tmp_path, capsys, camvid_subset):
    data = _colour_from_camvid(tmp_path / "colour", camvid_subset)
    code, out = _init(capsys, data, tmp_path / "cfg", "--name", "streets")
    assert code == 0, out
    ds = _yaml(tmp_path / "cfg" / "dataset" / "streets.yaml")
    assert ds["format"] == "palette" and len(ds["classes"]) == 12  # 11 colours + black (unlabelled)
    assert {p["subset"] for p in ds["pairs"]} == {"train", "val", "test"}
    assert ds["group_regex"] and "groups by" in out  # CamVid's sequence prefixes (0001TP_006690 ...)


@pytest.mark.parametrize(
    "case, words",
    [
        ("empty", "the folder is empty"),
        ("mixed", "annotation files of 2 formats"),
        ("unpaired", "no masks and no annotation files"),
        ("instance ids", "more than a class table plausibly has"),
        ("no folder", "no such folder"),
    ],
)
def test_init_refuses_what_it_cannot_read_naming_the_file(tmp_path, capsys, case, words):
    data = tmp_path / "data"
    data.mkdir()
    if case == "mixed":
        shutil.copy(TWO_LABEL / "coco1.0" / "annotations" / "instances_default.json", data / "coco.json")
        shutil.copy(TWO_LABEL / "labelme" / "birds.json", data / "birds.json")
    elif case == "unpaired":
        for i in range(3):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                data / f"p{i}.jpg"
            )
    elif case == "instance ids":
        (data / "images").mkdir()
        (data / "masks").mkdir()
        for i in range(3):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                data / "images" / f"p{i}.jpg"
            )
            Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 20 + i).save(
                data / "masks" / f"p{i}.png"
            )
    elif case == "no folder":
        data = tmp_path / "nothing_here"
    code, out = _init(capsys, data, tmp_path / "cfg")
    assert code == 2 and words in out and "Traceback" not in out, out
    assert not (tmp_path / "cfg" / "dataset").exists()


def test_init_never_writes_into_segbench_config(tmp_path, capsys):
    code, out = _init(capsys, TWO_LABEL / "coco1.0", REPO / "config")
    assert code == 2 and "segbench's own config folder" in out
    assert not (REPO / "config" / "dataset" / "coco1.0.yaml").exists()


def test_a_user_config_folder_is_used_by_segbench_run(tmp_path, capsys, camvid_subset):
    cfg = tmp_path / "my_configs"
    (cfg / "dataset").mkdir(parents=True)
    (cfg / "experiment").mkdir()
    ds = _yaml(REPO / "config" / "dataset" / "camvid.yaml")
    ds.update(name="mystreets", root=str(camvid_subset))
    ds.pop("import_from")
    import yaml

    (cfg / "dataset" / "mystreets.yaml").write_text(yaml.safe_dump(ds))
    (cfg / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /dataset: mystreets\n"
        "name: mine\nmodels: [smp_unet_r18]\n"
    )
    before = _tree_hash(REPO / "config")
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    r = subprocess.run(
        [sys.executable, "-m", "segbench.cli", "run", "--config-dir", str(cfg), "experiment=mine",
         "--dry-run",
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    composed = _yaml(tmp_path / "work" / "results" / "mine" / "config.yaml")
    assert composed["dataset"]["name"] == "mystreets" and composed["dataset"]["root"] == str(camvid_subset)
    assert "rule convert" in r.stdout + r.stderr and _tree_hash(REPO / "config") == before


def _resize_candidate_configs(cfg: Path, camvid_subset: Path, model_train: str) -> None:
    """A user config folder: the camvid subset, a planned experiment comparing the planned U-Net with
    the same U-Net trained as today (whole image resized), a model config of the user's own."""
    import yaml

    for d in ("dataset", "experiment", "model"):
        (cfg / d).mkdir(parents=True, exist_ok=True)
    ds = _yaml(REPO / "config" / "dataset" / "camvid.yaml")
    ds.update(name="mystreets", root=str(camvid_subset))
    ds.pop("import_from")
    (cfg / "dataset" / "mystreets.yaml").write_text(yaml.safe_dump(ds))
    (cfg / "model" / "unet_resize.yaml").write_text(
        "library: smp\narch: Unet\nencoder: resnet18\nencoder_weights: null\n" + model_train
    )
    (cfg / "experiment" / "vs.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /dataset: mystreets\n  - override /train: planned\n"
        "name: vs\nmodels: [smp_unet_r18, unet_resize]\n"
    )


def _dry_run(cfg: Path, work: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run(
        [sys.executable, "-m", "segbench.cli", "run", "--config-dir", str(cfg), "experiment=vs", "--dry-run",
         "--workdir", str(work)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_resize_candidate_beside_planned_ones_reads_the_original_images(tmp_path, camvid_subset):
    """Planned patch training and today's whole-image resize compared in one report: the candidate whose
    own train: keys set scale null trains on the converted images, the planned one on the rescaled copy."""
    _resize_candidate_configs(
        tmp_path / "cfg", camvid_subset, "train: {scale: null, crop: false, image_size: [64, 96]}\n"
    )
    r = _dry_run(tmp_path / "cfg", tmp_path / "work")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    jobs = [b.split("rule ")[0] for b in out.split("rule train:")[1:]]
    by_model = {m: [j for j in jobs if f"models/{m}/fold" in j] for m in ("smp_unet_r18", "unet_resize")}
    assert by_model["smp_unet_r18"] and by_model["unet_resize"], out[-3000:]
    for j in by_model["smp_unet_r18"]:
        assert "preprocessed/dataset.json" in j.split("output:")[0]
    for j in by_model["unet_resize"]:
        inputs = j.split("output:")[0]
        assert "preprocessed" not in inputs and "data/processed/mystreets/dataset.json" in inputs

    # a scale of its own (not null, not the experiment's) is refused before anything runs
    _resize_candidate_configs(tmp_path / "cfg2", camvid_subset, "train: {scale: 0.5}\n")
    r = _dry_run(tmp_path / "cfg2", tmp_path / "work2")
    assert r.returncode != 0 and "model unet_resize: train.scale 0.5 differs" in r.stdout + r.stderr
    # a resize without crop: false would crop the unscaled images with the plan's patch
    _resize_candidate_configs(tmp_path / "cfg3", camvid_subset, "train: {scale: null}\n")
    r = _dry_run(tmp_path / "cfg3", tmp_path / "work3")
    assert r.returncode != 0 and "needs train.crop: false" in r.stdout + r.stderr


def test_each_model_is_probed_in_its_own_process_so_its_memory_is_measured():
    """The CPU probe's memory is the growth of the peak RSS: in one process a second model would measure
    nothing (the first one's high-water mark) and pass any batch size as fitting."""
    import re

    from segbench.plan import make_plan

    fp = _fp(p5_area=1e6, h=128, w=128)
    cfg = {"library": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_weights": None}
    plan = make_plan(
        fp, {"budget_hours": 0.001, "max_batch": 4}, {"first": dict(cfg, name="first"),
                                                      "second": dict(cfg, name="second")},
        8, "cpu", "32-true",
    )  # fmt: skip
    mb = {
        m: float(re.search(r"about (\d+) MB per image", p["why"]).group(1)) for m, p in plan["models"].items()
    }
    assert mb["first"] > 5 and mb["second"] > 0.5 * mb["first"], mb


def test_the_plan_probes_a_model_at_its_own_size():
    """A candidate whose own train: keys set image_size is probed there (its batch size and the epochs
    the budget buys are measured at the size it trains at); the others at the plan's patch."""
    import segbench.plan as plan_mod

    seen, batches = {}, []

    def fake_probe(model_cfg, n_classes, patch, *a, **k):
        seen[model_cfg["name"]] = list(patch)
        batches.append(k["max_batch"])
        t = 0.001 * patch[0] * patch[1] / 1000  # a step's time grows with the pixels
        return {"batch_size": 4, "step_time_s": t, "images_per_s": 4 / t, "tried": {}, "why": "probe"}

    fp = _fp(p5_area=100 * 100)
    plan = plan_mod.make_plan(
        fp, {"budget_hours": 0.01, "max_epochs": 1000}, {"a": {"name": "a"}, "b": {"name": "b"}}, 40, "cpu",
        "32-true", train_size={"a": None, "b": [64, 96]}, probe_fn=fake_probe,
    )  # fmt: skip
    assert seen == {"a": plan["patch"], "b": [64, 96]}
    sizes = {m: plan["models"][m]["probe_size"] for m in ("a", "b")}
    assert sizes == {"a": plan["patch"], "b": [64, 96]}
    assert plan["models"]["b"]["epochs"] > plan["models"]["a"]["epochs"]  # same budget, cheaper steps
    # a validation split scored every epoch is part of the budget: fewer epochs, not a longer job
    with_val = plan_mod.make_plan(
        fp, {"budget_hours": 0.01, "max_epochs": 1000}, {"b": {"name": "b"}}, 40, "cpu", "32-true",
        train_size=[64, 96], val_images=120, probe_fn=fake_probe,
    )  # fmt: skip
    assert with_val["models"]["b"]["epochs"] < plan["models"]["b"]["epochs"]
    assert "the validation of 120 images" in with_val["models"]["b"]["epochs_why"]
    # a cap that binds breaks the same compute: said, for the capped model only
    capped = plan_mod.make_plan(
        fp, {"budget_hours": 0.01, "max_epochs": plan["models"]["b"]["epochs"] - 1},
        {"a": {"name": "a"}, "b": {"name": "b"}}, 40, "cpu", "32-true",
        train_size={"a": None, "b": [64, 96]}, probe_fn=fake_probe,
    )  # fmt: skip
    assert capped["models"]["b"]["epochs"] == plan["models"]["b"]["epochs"] - 1
    assert "capped by plan.max_epochs" in capped["models"]["b"]["epochs_why"]
    assert "capped" not in capped["models"]["a"]["epochs_why"]
    # a batch never holds more images than a training fold has
    plan_mod.make_plan(fp, {"max_batch": 16}, {"b": {"name": "b"}}, 3, "cpu", "32-true", probe_fn=fake_probe)
    assert batches[0] == 16 and batches[-1] == 3


# ---------------------------------------------------------------- fingerprint, plan, rescaled copy


def test_fingerprint_measures_sizes_classes_and_objects(tmp_path, processed):
    from segbench.data.fingerprint import fingerprint

    fp = fingerprint(processed, tmp_path / "fingerprint.json")
    meta = json.loads(processed.read_text())
    assert fp["num_images"] == len(meta["manifest"]) and fp["height"]["median"] == 360
    assert abs(sum(c["pixel_share"] for c in fp["classes"]) - 1) < 1e-9
    sky = next(c for c in fp["classes"] if c["name"] == "Sky")
    assert sky["objects"] > 0 and sky["object_area"]["p5"] >= 16 and sky["images"] > 0
    assert json.loads((tmp_path / "fingerprint.json").read_text()) == json.loads(json.dumps(fp))
    # every CamVid frame is 360x480: no image-size spread to relate object sizes to
    assert fp["object_scaling"]["diagonal_ratio"] == 1.0 and fp["object_scaling"]["slope"] is None


def _fp(p5_area: float, h=3000, w=4000, shares=(0.7, 0.3)) -> dict:
    return {
        "dataset": "x",
        "height": {"median": h, "max": h},
        "width": {"median": w, "max": w},
        "background": 0,
        "classes": [
            {"id": 0, "name": "bg", "pixel_share": shares[0], "objects": 5, "object_area": {"p5": 1e6}},
            {
                "id": 1,
                "name": "grape",
                "pixel_share": shares[1],
                "objects": 50,
                "object_area": {"p5": p5_area},
            },
        ],
    }


def test_the_plan_rules_follow_the_data():
    from segbench.plan import loss_rule, patch_size, split_rule, training_scale

    s, why = training_scale(_fp(p5_area=100 * 100))  # grapes 100 px across: keep 32
    assert s == 0.32 and "100 px across" in why
    assert training_scale(_fp(p5_area=10 * 10))[0] == 1.0  # small objects: never shrunk, never enlarged
    patch, crop, _ = patch_size(_fp(1e4), 0.32, max_patch=512)
    assert patch == [512, 512] and crop  # 960x1280 at that scale: crops of 512
    patch, crop, _ = patch_size(_fp(1e4, h=360, w=480), 1.0, max_patch=512)
    assert patch == [384, 480] and not crop  # padded up to a multiple of 32, not cropped
    assert loss_rule(_fp(1e4, shares=(0.999, 0.001)))[0] == "median_frequency"
    assert loss_rule(_fp(1e4))[0] is None
    assert split_rule(11, 11)[0] == {"strategy": "kfold", "n_folds": 5}
    assert split_rule(500, 40)[0] == {"strategy": "holdout"}
    assert split_rule(701, 4)[0] == {"strategy": "kfold", "n_folds": 2}  # the test takes whole groups first
    assert split_rule(12, 2)[0] == {"strategy": "kfold", "n_folds": 3, "group_aware": False}


def test_object_sizes_that_follow_image_sizes_are_measured_and_warned_about():
    """Photos of one kind of scene at resolutions 6x apart (the grape photos: slope 0.94): one scale
    cannot fit them, and the plan says so; objects of one pixel size in larger fields of view do not."""
    from segbench.data.fingerprint import object_scaling
    from segbench.plan import scale_warning

    diagonals = [300.0, 600.0, 900.0, 1200.0, 1800.0]
    grows = [{0: [10**6], 1: [int((d / 10) ** 2), int((d / 12) ** 2)]} for d in diagonals]  # side ~ diagonal
    fixed = [{0: [10**6], 1: [900, 1000, 1100]} for _ in diagonals]  # ~30 px whatever the image
    sc = object_scaling(diagonals, grows, background=0)
    assert sc["images"] == 5 and sc["diagonal_ratio"] == 6.0 and abs(sc["slope"] - 1.0) < 0.02
    assert abs(object_scaling(diagonals, fixed, background=0)["slope"]) < 0.02
    # the background's components are not objects: with only them nothing is measured
    assert object_scaling(diagonals, [{0: [10**6]}] * 5, background=0)["slope"] is None
    assert object_scaling([500.0] * 5, grows, background=0)["slope"] is None  # one image size
    assert object_scaling(diagonals[:4], grows[:4], background=0)["slope"] is None  # too few images
    assert abs(sc["relative_side_p5"] - 1 / 12) < 1e-3  # sides d/10 and d/12: the 5th percentile
    # a second class of small objects (sides d/40) decides: the smallest class percentile, as the scale rule
    two = [{**c, 2: [int((d / 40) ** 2)] * 3} for c, d in zip(grows, diagonals)]
    assert abs(object_scaling(diagonals, two, background=0)["relative_side_p5"] - 1 / 40) < 1e-3
    warn = scale_warning({"object_scaling": sc}, 0.4)
    assert "object sizes grow with image size" in warn and "6.0x" in warn and "normalize_size" in warn
    assert scale_warning({"object_scaling": object_scaling(diagonals, fixed, background=0)}, 0.4) is None
    assert scale_warning({}, 0.4) is None  # a fingerprint from before the measurement


def test_the_plan_rescales_each_image_to_one_diagonal_when_object_sizes_follow_image_sizes():
    """The grape photos' case (object sides ~ image diagonal over diagonals 6x apart): each image is
    rescaled to one diagonal at which the smallest objects (relative to their image) keep
    plan.min_object_px; photos whose objects do not follow their size keep one factor."""
    from segbench.data.fingerprint import object_scaling
    from segbench.plan import make_plan, target_diagonal

    diagonals = [300.0, 600.0, 900.0, 1200.0, 1800.0]
    grows = [{0: [10**6], 1: [int((d / 10) ** 2), int((d / 12) ** 2)]} for d in diagonals]
    fixed = [{0: [10**6], 1: [900, 1000, 1100]} for _ in diagonals]
    fp = dict(
        _fp(p5_area=30**2, h=1080, w=1440),
        object_scaling=object_scaling(diagonals, grows, background=0),
        diagonal={"median": 900.0, "max": 1800.0},
        aspect={"min": 0.5, "median": 0.75, "max": 1.0},
    )
    d, why = target_diagonal(fp, 32)
    assert d == 384.0 and "diagonal of 384 px" in why  # 32 / (1/12)
    assert target_diagonal(fp, 32, mode=False) == (None, None)
    assert target_diagonal(fp, 200)[0] == 1800.0  # never beyond the largest image
    steady = dict(fp, object_scaling=object_scaling(diagonals, fixed, background=0))
    assert target_diagonal(steady, 32)[0] is None and target_diagonal(steady, 32, mode=True)[0] is not None
    with pytest.raises(ValueError, match="normalize_size"):
        target_diagonal(fp, 32, mode="sometimes")

    def probe(mcfg, n, size, device, precision, cl, max_batch):
        return {"batch_size": 4, "step_time_s": 1.0, "images_per_s": 4.0, "tried": {}, "why": "stub"}

    cfg = {"min_object_px": 32, "max_patch": 512, "budget_hours": 0.01}
    plan = make_plan(fp, cfg, {"m": {}}, 20, "cpu", "32-true", probe_fn=probe)
    assert plan["target_diagonal"] == 384.0 and plan["inference"]["target_diagonal"] == 384.0
    assert plan["scale"] == round(384 / 900, 3) and plan["scale_warning"] is None
    # the median image (aspect 0.75) at a diagonal of 384 is 230x307: patch 256x320; the square one
    # (272x272) is taller and the widest (aspect 0.5: 172x343) wider, so training crops
    assert plan["patch"] == [256, 320] and plan["crop"] and plan["inference"]["mode"] == "slide"
    off = make_plan(fp, dict(cfg, normalize_size=False), {"m": {}}, 20, "cpu", "32-true", probe_fn=probe)
    assert off["target_diagonal"] is None and "normalize_size" in off["scale_warning"]


def test_a_resize_candidate_drops_the_plans_diagonal_and_models_cannot_disagree_on_it():
    """Beside a size-normalising plan, a whole-image resize candidate (its own scale null) trains
    without the plan's target diagonal (it would otherwise be refused as a diagonal without a scale);
    a model's own diagonal other than the experiment's is refused (one rescaled copy per experiment);
    a diagonal set in the recipe wins over the plan's rule."""
    from segbench.data.fingerprint import object_scaling
    from segbench.plan import make_plan, resolve_recipe, trains_on_rescaled_copy
    from segbench.training.recipe import TrainRecipe

    recipe = {"epochs": "plan", "batch_size": "plan", "image_size": "plan", "scale": "plan", "crop": "plan",
              "class_weights": "plan", "lr": 0.002, "optimizer": "adamw", "loss": {"ce": 1.0}}  # fmt: skip
    decided = {"image_size": [192, 288], "scale": 0.317, "target_diagonal": 343.0, "crop": True,
               "foreground_share": 0.33, "batch_size": 4, "epochs": 7, "class_weights": None}  # fmt: skip
    resolved = resolve_recipe(recipe, decided)
    resize = {"train": {"scale": None, "crop": False, "image_size": [160, 224]}}
    r = TrainRecipe.for_model(resolved, resize)
    assert r.scale is None and r.target_diagonal is None and r.image_size == (160, 224)
    assert TrainRecipe.for_model(resolved, {}).target_diagonal == 343.0
    assert not trains_on_rescaled_copy("unet_resize", resize, resolved)
    with pytest.raises(ValueError, match="target_diagonal 500 differs"):
        trains_on_rescaled_copy("m", {"train": {"target_diagonal": 500}}, resolved)
    with pytest.raises(ValueError, match="needs a positive value and train.scale"):
        TrainRecipe.for_model(resolved, {"train": {"scale": None, "crop": False, "target_diagonal": 300}})

    def probe(mcfg, n, size, device, precision, cl, max_batch):
        return {"batch_size": 4, "step_time_s": 1.0, "images_per_s": 4.0, "tried": {}, "why": "stub"}

    diagonals = [300.0, 600.0, 900.0, 1200.0, 1800.0]
    fp = dict(
        _fp(p5_area=30**2, h=1080, w=1440),
        object_scaling=object_scaling(diagonals, [{1: [int((d / 10) ** 2)]} for d in diagonals], 0),
        diagonal={"median": 900.0, "max": 1800.0},
        aspect={"min": 0.75, "median": 0.75, "max": 0.75},
    )
    cfg = {"min_object_px": 32, "max_patch": 512, "budget_hours": 0.01}
    plan = make_plan(fp, cfg, {"m": {}}, 20, "cpu", "32-true", probe_fn=probe, fixed_diagonal=500)
    assert plan["target_diagonal"] == 500.0 and "train.target_diagonal" in plan["scale_why"]
    assert plan["patch"] == [320, 416]  # 300x400 at a diagonal of 500, up to multiples of 32


def test_a_planned_recipe_takes_the_plan_and_a_set_value_wins():
    from segbench.plan import resolve_recipe

    recipe = {"epochs": "plan", "batch_size": 4, "image_size": "plan", "scale": "plan", "crop": "plan",
              "class_weights": "plan", "lr": 0.002}  # fmt: skip
    decided = {"image_size": [256, 256], "scale": 0.5, "crop": True, "foreground_share": 0.33,
               "batch_size": 16,
               "epochs": 7, "class_weights": None}  # fmt: skip
    out = resolve_recipe(recipe, decided)
    assert out["epochs"] == 7 and out["batch_size"] == 4 and out["image_size"] == [256, 256] and out["crop"]
    assert out["target_diagonal"] is None  # one factor for every image
    # a size-normalising plan: the diagonal comes with the scale; one the user set wins
    assert resolve_recipe(recipe, dict(decided, target_diagonal=343.0))["target_diagonal"] == 343.0
    own = resolve_recipe(dict(recipe, target_diagonal=500), dict(decided, target_diagonal=343.0))
    assert own["target_diagonal"] == 500
    with pytest.raises(ValueError, match="no plan was given"):
        resolve_recipe(recipe, None)


def test_the_rescaled_copy_keeps_ids_groups_and_class_values(tmp_path, processed):
    from segbench.data.preprocess import preprocess

    out = preprocess(processed, 0.5, tmp_path / "pre")
    meta = json.loads(processed.read_text())
    assert set(out["manifest"]) == set(meta["manifest"]) and out["scale"] == 0.5
    sid = sorted(meta["manifest"])[0]
    img = np.asarray(Image.open(tmp_path / "pre" / out["manifest"][sid]["image"]))
    mask = np.asarray(Image.open(tmp_path / "pre" / out["manifest"][sid]["mask"]))
    full = np.asarray(Image.open(processed.parent / meta["manifest"][sid]["mask"]))
    assert img.shape == (180, 240, 3) and mask.shape == (180, 240)
    assert set(np.unique(mask)) <= set(np.unique(full))  # nearest neighbour: no invented class ids
    assert out["manifest"][sid]["group"] == meta["manifest"][sid]["group"]
    diag = preprocess(processed, 1.0, tmp_path / "diag", target_diagonal=300)  # 360x480: by 0.5
    assert diag["target_diagonal"] == 300 and diag["manifest"][sid]["height"] == 180
    assert diag["manifest"][sid]["image_sha256"] == out["manifest"][sid]["image_sha256"]
    one = preprocess(processed, 1.0, tmp_path / "same")  # scale 1: the originals, linked
    assert one["manifest"][sid]["image_sha256"] == meta["manifest"][sid]["image_sha256"]


def test_patch_training_crops_the_patch_and_prefers_labelled_objects():
    from segbench.data.dataset import build_transform

    image = np.zeros((300, 400, 3), np.uint8)
    mask = np.zeros((300, 400), np.int64)
    mask[250:260, 350:360] = 1  # one small object in a corner
    crop = {"foreground_share": 1.0, "background": 0, "ignore_index": 255}
    t = build_transform({"normalize": {}}, [64, 96], train=True, seed=0, crop=crop)
    for _ in range(5):
        out = t(image=image, mask=mask)
        assert out["image"].shape == (64, 96, 3) and (out["mask"] == 1).any()
    small = build_transform(
        {"normalize": {}}, [64, 96], train=True, seed=0, crop=dict(crop, foreground_share=0)
    )
    assert small(image=image[:40, :50], mask=mask[:40, :50])["mask"].shape == (64, 96)  # padded with ignore
    val = build_transform({"normalize": {}}, [64, 96], train=False, crop=crop)(
        image=image[:50, :70], mask=mask[:50, :70]
    )
    assert val["image"].shape == (64, 96, 3) and (val["mask"][50:] == 255).all()  # whole, padded to 32


# ---------------------------------------------------------------- the planned workflow, end to end


def _run(work: Path, cfg_dir: Path, *overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("SNAKEMAKE_OUTPUT_CACHE", None)
    return subprocess.run(
        [sys.executable, "-m", "segbench.cli", "run", "--config-dir", str(cfg_dir), *overrides,
         "--workdir", str(work), "--cores", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip


SMALL = ["split=holdout", "split.test_fraction=0.3", "split.val_fraction=0.3", "plan.budget_hours=0.002",
         "plan.max_patch=128", "plan.min_epochs=1", "select.onnx=false",
         "select.ensemble_top_k=0", "deploy.variants=[]"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", ["binary", "coco", "colour"])
def test_init_then_run_plans_and_compares_two_libraries(tmp_path, capsys, camvid_subset, case):
    """A new user: segbench init, then segbench run with no hand-written config; two models of two
    libraries, the training planned from the data (a small budget), the report written."""
    data = {
        "binary": lambda: _binary_from_grapes(tmp_path / "binary"),
        "coco": lambda: TWO_LABEL / "coco1.0",
        "colour": lambda: _colour_from_camvid(tmp_path / "colour", camvid_subset),
    }[case]()
    code, out = _init(capsys, data, tmp_path / "cfg", "--name", case)
    assert code == 0, out
    extra = []
    if case == "binary":  # beside the size-normalising plan, today's whole-image resize (docs/plan.md)
        (tmp_path / "cfg" / "model").mkdir(exist_ok=True)
        (tmp_path / "cfg" / "model" / "unet_resize.yaml").write_text(
            "library: smp\narch: Unet\nencoder: resnet18\nencoder_weights: null\n"
            "train: {scale: null, crop: false, image_size: [64, 96]}\n"
        )
        extra = ["models=[smp_unet_r18,tv_lraspp_mbv3,unet_resize]"]
    r = _run(tmp_path / "work", tmp_path / "cfg", f"experiment={case}", *SMALL, *extra)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    exp = tmp_path / "work" / "results" / case
    plan = json.loads((exp / "plan.json").read_text())
    assert (
        0 < plan["scale"] <= 1
        and plan["patch"][0] <= 128
        and set(plan["models"]) - {"unet_resize"} == {"smp_unet_r18", "tv_lraspp_mbv3"}
    )
    for m, p in plan["models"].items():
        if m == "unet_resize":  # whole images resized: no rescaling, no diagonal
            info = json.loads((exp / "models" / m / "fold0" / "seed42" / "model.json").read_text())
            assert info["image_size"] == [64, 96] and "inference" not in info
            continue
        info = json.loads((exp / "models" / m / "fold0" / "seed42" / "model.json").read_text())
        assert info["image_size"] == plan["patch"] and info["inference"]["scale"] == plan["scale"]
        meta = json.loads((exp / "models" / m / "fold0" / "seed42" / "train_meta.json").read_text())
        assert meta["epochs"] == p["epochs"] or meta["stopped_early"]
    summary = json.loads((exp / "summary.json").read_text())
    assert {r["library"] for r in summary["models"]} == {"smp", "torchvision"}
    html = (exp / "report" / "index.html").read_text()
    assert "Training plan" in html and plan["scale_why"].split(" (")[0] in html
    # the grape photos' objects grow with the photos' resolution (one scale cannot fit them: said); the
    # CamVid frames all have one size
    if case == "binary":  # so every photo is rescaled to one diagonal, in training and evaluation
        d = plan["target_diagonal"]
        assert d and plan["scale_warning"] is None and "object sizes grow with image size" in html
        pre = json.loads((exp / "preprocessed" / "dataset.json").read_text())["manifest"].values()
        assert all(abs(math.hypot(e["height"], e["width"]) - d) < 1.5 for e in pre)
        info = json.loads((exp / "models" / "smp_unet_r18" / "fold0" / "seed42" / "model.json").read_text())
        assert info["inference"]["target_diagonal"] == d
    if case == "colour":
        assert plan["scale_warning"] is None and "object sizes grow" not in html
        assert plan["target_diagonal"] is None


def test_predict_writes_a_palette_png_whose_values_are_the_class_ids(tmp_path, capsys):
    from test_no_code_runs import SMP, _model_folder

    from segbench.palette import class_palette

    folder = _model_folder(tmp_path / "best", SMP)
    info = json.loads((folder / "model.json").read_text())
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(image), "--model", str(folder), "-o", str(tmp_path / "a_mask.png")]) == 0
    with Image.open(tmp_path / "a_mask.png") as im:
        assert im.mode == "P"
        values = np.asarray(im)
        pal = np.array(im.getpalette()[: 3 * 2]).reshape(2, 3)
    assert set(np.unique(values)) <= {0, 1}  # the class ids, as model.json numbers them
    assert (pal == class_palette(info["classes"])[:2]).all()  # shown in the classes' colours


def test_a_numbered_label_list_with_an_unlabelled_value_becomes_names_and_ignore(tmp_path, capsys):
    """``0 Sky`` / ``11 Unlabelled (remark)`` lists (CamVid's classes.txt style): names without the ids,
    and the unlabelled value read as ignore_index, said as a question."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(data / "images" / f"f{i}.png")
        m = np.zeros((24, 32), np.uint8)
        m[:8], m[8:16], m[16:] = 0, 1, 2
        Image.fromarray(m).save(data / "labels" / f"f{i}.png")
    (data / "classes.txt").write_text("0 sky\n1 road\n2 Unlabelled (not annotated)\n")
    code, out = _init(capsys, data, tmp_path / "cfg", "--name", "tiny")
    assert code == 0, out
    ds = _yaml(tmp_path / "cfg" / "dataset" / "tiny.yaml")
    assert [c["name"] for c in ds["classes"]] == ["sky", "road"] and ds["mask_value_map"] == {2: 255}
    assert "is 2 (Unlabelled) 'ignore' rather than a class?" in out
