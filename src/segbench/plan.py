"""The training plan: what a dataset's fingerprint and the machine say the training should be
(``plan.json``), rule by rule, each with its reason (issue 18).

nnU-Net's central result is that most of a model's score comes from a configuration derived from
the data (Isensee et al., Nature Methods 2021: dataset fingerprint -> rule-based plan); segbench
derives the same kind of plan for 2D images, the same for every candidate except what each model's
speed decides (batch size, epochs for a fixed compute budget):

* **scale** (:func:`training_scale`): the largest downscale that keeps the smallest relevant objects (the
  5th percentile connected-component area of the foreground classes, from the fingerprint) at least
  ``plan.min_object_px`` pixels across; never an upscale. A 4000x3000 field photo of small grapes
  keeps its grapes; a 6000x4000 street scene of large objects is shrunk.
* **size normalisation** (:func:`target_diagonal`): when the objects' pixel size follows the image
  size (the same kind of scene photographed at resolutions far apart: fingerprint ``object_scaling``),
  one factor cannot fit every image; each image is then rescaled to one diagonal instead, chosen so
  that the smallest relevant objects (relative to their image) keep ``plan.min_object_px`` pixels, as
  nnU-Net resamples every case to one voxel spacing (``plan.normalize_size``: auto | true | false).
  Images whose diagonal is smaller are enlarged to it (as a resampling to one spacing does).
* **patch** (:func:`patch_size`): the training crop, the median image at that scale, at most
  ``plan.max_patch`` pixels a side, a multiple of 32. Images larger than the patch are trained on
  random crops, ``plan.foreground_share`` of them centred on a labelled non-background pixel (as
  nnU-Net's ``oversample_foreground_percent``, 0.33), and evaluated by a sliding window of the same
  patch at the same scale; images that fit are trained and evaluated whole at that scale.
* **batch size** per model (:func:`probe`): measured with forward/backward steps on the real device:
  on a GPU the largest power of two up to ``plan.max_batch`` that fits in memory; on a CPU the one
  with the most images per second among those whose measured memory fits the free RAM.
* **epochs** per model: as many as ``plan.budget_hours`` of training buys at the probed step time (the
  same compute for every candidate), between ``plan.min_epochs`` and ``plan.max_epochs``.
* **loss**: cross-entropy + Dice; median-frequency class weights on the cross-entropy when the most
  frequent class covers more than ``plan.imbalance_ratio`` times the pixels of the rarest.
* **split** (:func:`split_rule`): k-fold (5 folds, fewer when there are fewer groups) when there are
  fewer than 100 images or 20 groups, else a holdout; ``segbench init`` writes it into the experiment.

Every decision can be overridden: a recipe key set to a value instead of ``plan`` wins
(``train.image_size=[256,256]``), and the report shows the plan and why.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

__all__ = [
    "PLANNED",
    "split_rule",
    "training_scale",
    "target_diagonal",
    "patch_size",
    "loss_rule",
    "probe",
    "make_plan",
    "decisions",
    "resolve_recipe",
    "is_planned",
]

#: the value of a recipe key that the plan decides
PLANNED = "plan"
#: a validation image's time as a share of a training image's (batch size / step time): forward only,
#: but whole images one at a time; measured on CamVid at 384x480 on 2 CPU cores: 0.4 for U-Net/ResNet-18,
#: 0.6 to 0.9 for LRASPP/MobileNetV3 (the validation loop's rate against the probed step)
VAL_IMAGE_COST = 0.6
#: recipe keys the plan can decide
PLAN_KEYS = ("image_size", "scale", "crop", "batch_size", "epochs", "class_weights")
#: decided together with ``scale`` (a recipe whose scale is ``plan`` takes it too)
WITH_SCALE = ("target_diagonal",)


def is_planned(train_cfg: dict[str, Any]) -> bool:
    """Whether a training recipe leaves any key to the plan (``image_size: plan`` ...)."""
    return any(train_cfg.get(k) == PLANNED for k in PLAN_KEYS)


def split_rule(n_images: int, n_groups: int) -> tuple[dict[str, Any], str]:
    """The split for a dataset of ``n_images`` images in ``n_groups`` groups, and why.

    k-fold (cross-validation on the non-test images, a fixed group-aware test split) when there are
    fewer than 100 images or 20 independent groups: a single validation split of a few images would
    make the selection a coin toss. The folds are at most 5 and at most half the groups, since the
    test split takes whole groups first (4 groups: 2 folds). With fewer than 3 groups no group-aware
    split can hold a test, a validation and a training part: the groups are then split apart (said).
    Otherwise a holdout, cheaper by k."""
    if n_groups < 3:
        k = max(2, min(5, n_images // 4))
        return (
            {"strategy": "kfold", "n_folds": k, "group_aware": False},
            f"k-fold ({k} folds) without keeping groups together: {n_groups} group(s) cannot fill a test, "
            "a validation and a training part (related images may then be on both sides: add images or "
            "groups)",
        )
    if n_images < 100 or n_groups < 20:
        k = max(2, min(5, n_groups // 2))
        return (
            {"strategy": "kfold", "n_folds": k},
            f"k-fold ({k} folds): {n_images} images in {n_groups} groups are too few for one validation "
            "split to decide (fewer than 100 images or 20 groups); folds at most half the groups, as the "
            "test split takes whole groups first",
        )
    return {
        "strategy": "holdout"
    }, f"holdout: {n_images} images in {n_groups} groups are enough for one split"


def training_scale(
    fp: dict[str, Any], min_object_px: float = 32.0, min_scale: float = 1 / 16
) -> tuple[float, str]:
    """The downscale factor of training and evaluation (see the module docstring), and why.

    The smallest relevant object: the 5th percentile of the connected-component areas of every
    foreground class (not the background class, not classes with no object), as a side length
    ``sqrt(area)``; the scale keeps it ``min_object_px`` across: ``min(1, max(min_scale,
    min_object_px / side))``."""
    bg = fp.get("background")
    p5 = [
        c["object_area"]["p5"]
        for c in fp["classes"]
        if c["id"] != bg and c.get("object_area") and c["objects"] > 0
    ]
    if not p5:
        return 1.0, "no foreground objects measured: native resolution"
    side = math.sqrt(max(1.0, min(p5)))
    s = min(1.0, max(min_scale, min_object_px / side))
    s = round(s, 3)
    why = (
        f"the smallest relevant objects (5th percentile component area {min(p5):.0f} px, about {side:.0f} px "
        f"across) keep {side * s:.0f} px at scale {s:g} (plan.min_object_px {min_object_px:g})"
    )
    return s, why


#: object sizes follow image sizes when the fingerprint's slope is at least this (1: proportional)
SCALING_SLOPE = 0.5
#: ... over images whose diagonals differ at least this much
SCALING_RATIO = 1.5


def _sizes_follow(fp: dict[str, Any]) -> bool:
    sc = fp.get("object_scaling") or {}
    slope, ratio = sc.get("slope"), float(sc.get("diagonal_ratio") or 1.0)
    return slope is not None and slope >= SCALING_SLOPE and ratio >= SCALING_RATIO


def target_diagonal(
    fp: dict[str, Any], min_object_px: float = 32.0, mode: bool | str = "auto"
) -> tuple[float | None, str | None]:
    """The diagonal (pixels) every image is rescaled to, or None for one factor for all (see the module
    docstring), and why.

    ``mode``: ``auto`` normalises when object sizes follow image sizes (``object_scaling`` slope >=
    :data:`SCALING_SLOPE` over diagonals >= :data:`SCALING_RATIO` x apart); ``true`` always (when
    objects were measured), ``false`` never. The diagonal keeps the 5th percentile of the objects'
    sides relative to their image's diagonal (``relative_side_p5``) ``min_object_px`` across:
    ``min_object_px / relative_side_p5``, at most the largest image's diagonal (no dataset-wide
    upscale), rounded to whole pixels.

    Raises:
        ValueError: ``mode`` is not auto, true or false.
    """
    if mode not in ("auto", True, False):
        raise ValueError(f"plan.normalize_size {mode!r} unknown; allowed: auto, true, false")
    sc = fp.get("object_scaling") or {}
    rel = sc.get("relative_side_p5")
    if mode is False or (mode == "auto" and not _sizes_follow(fp)) or not rel:
        return None, None
    largest = float(
        (fp.get("diagonal") or {}).get("max") or math.hypot(fp["height"]["max"], fp["width"]["max"])
    )
    d = float(round(min(largest, min_object_px / rel)))
    why = (
        (
            f"object sizes grow with image size (slope {sc['slope']:.2f} of log object size on log image "
            f"size over {sc.get('images')} images whose diagonals differ {sc['diagonal_ratio']:.1f}x), so "
            "one factor would train and test the same kind of object at different sizes: "
            if mode == "auto"
            else "plan.normalize_size true: "
        )
        + f"each image is rescaled to a diagonal of {d:g} px, where the smallest relevant objects (5th "
        f"percentile: {rel:.3f} of their image's diagonal) keep {rel * d:.0f} px (plan.min_object_px "
        f"{min_object_px:g}; as nnU-Net resamples every case to one spacing)"
    )
    return d, why


def scale_warning(fp: dict[str, Any], scale: float) -> str | None:
    """A warning when one training scale cannot fit the images: the objects' pixel size grows with the
    image size (``fingerprint.json`` ``object_scaling``: slope >= :data:`SCALING_SLOPE` over images whose
    diagonals differ >= :data:`SCALING_RATIO` x), as when the same kind of scene is photographed at
    different resolutions. One factor for every image then trains and tests the same objects at
    different sizes (docs/plan.md, "Does the plan pay?"). The plan then normalises sizes
    (:func:`target_diagonal`) and warns only when that is turned off (``plan.normalize_size=false``).
    None when the sizes do not show it."""
    sc = fp.get("object_scaling") or {}
    slope, ratio = sc.get("slope"), float(sc.get("diagonal_ratio") or 1.0)
    if not _sizes_follow(fp):
        return None
    return (
        f"object sizes grow with image size (slope {slope:.2f} of log object size on log image size over "
        f"{sc.get('images')} images whose diagonals differ {ratio:.1f}x): at one scale ({scale:g}) the same "
        f"kind of object is trained and tested at sizes up to about {ratio**slope:.1f}x apart: "
        "plan.normalize_size=auto (the default) rescales each image to one diagonal instead (docs/plan.md)"
    )


def patch_size(
    fp: dict[str, Any], scale: float, max_patch: int = 512, target_diagonal: float | None = None
) -> tuple[list[int], bool, str]:
    """The training patch ``[h, w]`` (multiples of 32), whether training crops (the scaled median image
    is larger than the patch), and why. With ``target_diagonal`` the sizes are those of images of that
    diagonal: the median aspect ratio (fingerprint ``aspect``) gives the median image, the most extreme
    ones the tallest and the widest."""
    if target_diagonal is None:
        h = fp["height"]["median"] * scale
        w = fp["width"]["median"] * scale
        h_max, w_max = fp["height"]["max"] * scale, fp["width"]["max"] * scale
        at = f"at scale {scale:g}"
    else:
        aspect = fp.get("aspect") or {}
        a_med = float(aspect.get("median") or fp["height"]["median"] / fp["width"]["median"])

        def hw(a: float) -> tuple[float, float]:
            return target_diagonal * a / math.hypot(a, 1), target_diagonal / math.hypot(a, 1)

        h, w = hw(a_med)
        h_max = hw(float(aspect.get("max") or a_med))[0]
        w_max = hw(float(aspect.get("min") or a_med))[1]
        at = f"at a diagonal of {target_diagonal:g} px"
    # up to the next multiple of 32 (an image a few pixels larger than a multiple is padded, not cropped)
    ph = max(64, min(max_patch, math.ceil(h / 32) * 32))
    pw = max(64, min(max_patch, math.ceil(w / 32) * 32))
    crop = h_max > ph or w_max > pw
    why = (
        f"the median image {at} is {h:.0f}x{w:.0f}; patch {ph}x{pw} (a multiple of 32, at most "
        f"{max_patch})"
        + ("; larger images are trained on random crops" if crop else "; every image fits whole")
    )
    return [ph, pw], bool(crop), why


def loss_rule(fp: dict[str, Any], imbalance_ratio: float = 100.0) -> tuple[str | None, str]:
    """``median_frequency`` class weights when the classes are imbalanced beyond ``imbalance_ratio``."""
    shares = [c["pixel_share"] for c in fp["classes"] if c["pixel_share"] > 0]
    if len(shares) < 2:
        return None, "one class present: no class weights"
    ratio = max(shares) / min(shares)
    if ratio > imbalance_ratio:
        return "median_frequency", (
            f"the most frequent class covers {ratio:.0f}x the pixels of the rarest (more than "
            f"plan.imbalance_ratio {imbalance_ratio:g}): median-frequency weights on the cross-entropy"
        )
    return (
        None,
        f"class pixel shares within {ratio:.0f}x (plan.imbalance_ratio {imbalance_ratio:g}): no weights",
    )


def _step(
    model, batch: int, patch: list[int], n_classes: int, device: str, precision: str, channels_last: bool
) -> float:
    """Seconds of one forward/backward/optimiser step on random data (the mean of 2 after a warm-up)."""
    import torch

    x = torch.randn(batch, 3, *patch, device=device)
    y = torch.randint(0, n_classes, (batch, *patch), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = (
        torch.bfloat16
        if precision.startswith("bf16")
        else torch.float16
        if precision.startswith("16")
        else None
    )
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.mean(times))


def _peak_rss_mb(reset: bool = False) -> float:
    """The process's peak resident memory (MB). ``reset=True`` first resets the peak to the current
    resident memory (Linux: ``echo 5 > /proc/self/clear_refs``), so what a step adds is measured even
    when importing or an earlier model had already raised the high-water mark; elsewhere the peak since
    the process started (``ru_maxrss``)."""
    import resource

    if reset:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(
    model_cfg: dict[str, Any],
    n_classes: int,
    patch: list[int],
    device: str,
    precision: str,
    channels_last: bool,
    batches: tuple[int, ...] = (2, 4, 8, 16),
    max_batch: int = 16,
    memory_fraction: float = 0.5,
) -> dict[str, Any]:
    """Measure one model's training step at the patch size and choose its batch size (see the module
    docstring). Returns ``{batch_size, step_time_s, images_per_s, tried: {batch: s or "out of memory"},
    why}``."""
    import torch

    from .device import usable_memory_mb
    from .models import create_model

    model = create_model(
        num_classes=n_classes, **{k: v for k, v in model_cfg.items() if k != "encoder_weights"}
    )
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    tried: dict[int, Any] = {}
    best = None
    if device.startswith("cuda"):
        for b in [b for b in batches if b <= max_batch]:
            torch.cuda.empty_cache()
            try:
                tried[b] = _step(model, b, patch, n_classes, device, precision, channels_last)
                best = b
            except torch.cuda.OutOfMemoryError:
                tried[b] = "out of memory"
                break
        why = f"the largest power of two up to {max_batch} whose step fits in GPU memory"
    else:
        rss0 = _peak_rss_mb(reset=True)
        t2 = _step(model, batches[0], patch, n_classes, device, precision, channels_last)
        per_image_mb = max(1.0, (_peak_rss_mb() - rss0) / batches[0])
        fits = max(batches[0], int(usable_memory_mb() * memory_fraction / per_image_mb))
        tried[batches[0]] = t2
        for b in [b for b in batches[1:] if b <= min(max_batch, fits)]:
            tried[b] = _step(model, b, patch, n_classes, device, precision, channels_last)
        best = max((b for b, t in tried.items() if isinstance(t, float)), key=lambda b: (b / tried[b], -b))
        why = (
            "the most images per second among batch sizes whose memory (about "
            f"{per_image_mb:.0f} MB per image "
            f"measured) fits {memory_fraction:.0%} of the free RAM"
        )
    if best is None:
        raise RuntimeError(f"{model_cfg.get('name')}: even batch {batches[0]} does not fit on {device}")
    return {
        "batch_size": int(best),
        "step_time_s": float(tried[best]),
        "images_per_s": float(best / tried[best]),
        "tried": {str(b): t for b, t in tried.items()},
        "why": why,
    }


def _probe_child(threads: int, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return probe(*args, **kwargs)


def probe_in_child(*args, **kwargs) -> dict[str, Any]:
    """:func:`probe` in a fresh process (spawned, the caller's thread count): on a CPU the memory per
    image is the growth of the process's peak RSS (``ru_maxrss``, a high-water mark), which in a
    process that already probed a larger model would not grow at all; each model gets its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_probe_child, torch.get_num_threads(), args, kwargs).result()


def make_plan(
    fp: dict[str, Any],
    plan_cfg: dict[str, Any],
    models: dict[str, dict[str, Any]],
    train_images: int,
    device: str,
    precision: str,
    channels_last: dict[str, bool] | None = None,
    train_size: list[int] | dict[str, list[int] | None] | None = None,
    val_images: int = 0,
    probe_fn=None,
    fixed_diagonal: float | None = None,
) -> dict[str, Any]:
    """The plan (see the module docstring) for the models of an experiment.

    Args:
        fp: the dataset's fingerprint (:func:`segbench.data.fingerprint.fingerprint`).
        plan_cfg: ``plan`` config: ``min_object_px``, ``normalize_size``, ``max_patch``, ``foreground_share``,
            ``budget_hours`` (per training job), ``min_epochs``, ``max_epochs``, ``max_batch``,
            ``imbalance_ratio``.
        models: ``{name: model config}``.
        train_images: images of a training fold, the folds' mean (the steps per epoch follow).
        device, precision: where and how training runs (resolved, e.g. ``cpu``, ``bf16-mixed``).
        channels_last: per model, whether it trains in channels-last.
        train_size: the recipe's own ``image_size`` when it sets one (not ``plan``): the probe, and so
            the batch size and the epochs the budget buys, are measured at it. A dict gives it per model
            (a model whose own ``train:`` keys set a size, e.g. a whole-image resize candidate beside
            planned ones; ``None``: the plan's patch).
        val_images: images of a fold's validation split (the folds' mean, as ``train_images``), scored
            after every epoch: part of an epoch's cost, each counted as :data:`VAL_IMAGE_COST` of a
            training image (no backward, but scored one at a time), so a large validation split buys
            fewer epochs, not a longer job.
        probe_fn: how a model is measured (default: :func:`probe`, on a CPU in a fresh process per model,
            :func:`probe_in_child`).
        fixed_diagonal: the recipe's own ``train.target_diagonal`` (a number set with ``scale: plan``):
            it wins over the plan's size rule, and the patch, probe and preprocessed copy follow it.

    Returns:
        ``plan.json``: ``scale``, ``target_diagonal`` (None: one factor for every image), ``patch``,
        ``crop``, ``foreground_share``, ``inference``, ``class_weights``, ``models: {name: {batch_size,
        epochs, step_time_s, ...}}`` and a ``why`` for each.
    """
    min_px = float(plan_cfg.get("min_object_px", 32))
    if fixed_diagonal is not None:
        diagonal = float(fixed_diagonal)
        diagonal_why = (
            f"each image rescaled to a diagonal of {diagonal:g} px (train.target_diagonal, set in the recipe)"
        )
    else:
        diagonal, diagonal_why = target_diagonal(fp, min_px, plan_cfg.get("normalize_size", "auto"))
    if diagonal is None:
        scale, scale_why = training_scale(fp, min_px)
    else:
        # the median image's factor: what the report shows; each image has its own (image_scale)
        median_diagonal = float(
            (fp.get("diagonal") or {}).get("median")
            or math.hypot(fp["height"]["median"], fp["width"]["median"])
        )
        scale, scale_why = round(diagonal / median_diagonal, 3), diagonal_why
    patch, crop, patch_why = patch_size(fp, scale, int(plan_cfg.get("max_patch", 512)), diagonal)
    weights, loss_why = loss_rule(fp, float(plan_cfg.get("imbalance_ratio", 100)))
    budget_s = float(plan_cfg.get("budget_hours", 0.1)) * 3600
    lo, hi = int(plan_cfg.get("min_epochs", 2)), int(plan_cfg.get("max_epochs", 1000))
    n_classes = len(fp["classes"])
    per_model = {}
    # a batch never holds more images than a training fold has (a larger one would be measured, and its
    # epochs budgeted, at a step that never happens)
    max_batch = max(2, min(int(plan_cfg.get("max_batch", 16)), int(train_images)))
    for name, mcfg in models.items():
        own = train_size.get(name) if isinstance(train_size, dict) else train_size
        size = [int(v) for v in own] if own else list(patch)
        measure = probe_fn or (probe if device.startswith("cuda") else probe_in_child)
        p = measure(mcfg, n_classes, size, device, precision, bool((channels_last or {}).get(name)),
                    max_batch=max_batch)  # fmt: skip
        steps_per_epoch = max(1, math.ceil(train_images / p["batch_size"]))
        val_steps = VAL_IMAGE_COST * val_images / p["batch_size"]
        # 90 %: the loader's first epoch, checkpoints and the model's start take the rest of the budget
        epoch_s = p["step_time_s"] * (steps_per_epoch + val_steps)
        bought = math.floor(0.9 * budget_s / epoch_s)
        epochs = int(np.clip(bought, lo, hi))
        p["epochs"] = epochs
        p["epochs_why"] = (
            f"{_duration(budget_s)} of training (plan.budget_hours) at {p['step_time_s']:.2f} s per step "
            f"of {p['batch_size']} images, {steps_per_epoch} steps per epoch"
            + (
                f" and the validation of {val_images} images (about {epoch_s:.0f} s per epoch)"
                if val_images
                else ""
            )
            + f": {epochs} epochs (between {lo} and {hi})"
            + (
                f"; the budget buys {bought}: capped by plan.max_epochs, so this model trains for less than "
                "the budget and the candidates no longer get the same compute (raise plan.max_epochs)"
                if bought > hi
                else ""
            )
        )
        p["probe_size"] = size
        per_model[name] = p
    inference = {
        "mode": "slide" if crop else "whole",
        "scale": scale,
        "target_diagonal": diagonal,
        "crop": patch,
        "overlap": 0.5,
        "blend": "gaussian",
    }
    return {
        "dataset": fp["dataset"],
        "device": device,
        "precision": precision,
        "scale": scale,
        "scale_why": scale_why,
        "target_diagonal": diagonal,
        "scale_warning": scale_warning(fp, scale) if diagonal is None else None,
        "patch": patch,
        "crop": crop,
        "patch_why": patch_why,
        "foreground_share": float(plan_cfg.get("foreground_share", 0.33)),
        "inference": inference,
        "inference_why": (
            "sliding windows of the training patch at the training scale (overlap 0.5, Gaussian weights, as "
            "nnU-Net), the prediction resized back to the image"
            if crop
            else "each image whole at the training scale, the prediction resized back to the image"
        ),
        "class_weights": weights,
        "loss_why": loss_why,
        "budget_hours": budget_s / 3600,
        "train_images": train_images,
        "val_images": val_images,
        "models": per_model,
    }


def decisions(plan: dict[str, Any], model_name: str) -> dict[str, Any]:
    """What the plan decided for one model's training (``plan/<model>.json``): recipe keys only, no
    timings, so a new probe that decides the same leaves the model's training jobs up to date."""
    m = plan["models"][model_name]
    out = {
        "image_size": plan["patch"],
        "scale": plan["scale"],
        "target_diagonal": plan.get("target_diagonal"),
        "crop": plan["crop"],
        "foreground_share": plan["foreground_share"],
        "batch_size": m["batch_size"],
        "epochs": m["epochs"],
        "class_weights": plan["class_weights"],
    }
    return out


def resolve_recipe(train_cfg: dict[str, Any], decided: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe a model trains with: every ``plan`` value replaced by the plan's decision for that
    model (:func:`decisions`); a value the user set stays.

    Raises:
        ValueError: the recipe leaves keys to the plan but no decisions were given.
    """
    if not is_planned(train_cfg):
        return dict(train_cfg)
    if decided is None:
        raise ValueError(
            f"train: {', '.join(k for k in PLAN_KEYS if train_cfg.get(k) == PLANNED)} = plan, but no "
            "plan was "
            "given: run the workflow's plan step (segbench run), or set the keys"
        )
    out = dict(train_cfg)
    for k in PLAN_KEYS:
        if out.get(k) == PLANNED:
            out[k] = decided[k]
            if k == "scale":
                for w in WITH_SCALE:
                    if out.get(w) is None:
                        out[w] = decided.get(w)
    if out.get("crop") and "foreground_share" not in train_cfg:
        out["foreground_share"] = decided.get("foreground_share", 0.33)
    return out


def trains_on_rescaled_copy(model: str, model_cfg: dict[str, Any], train_cfg: dict[str, Any]) -> bool:
    """Whether a model's training jobs read the rescaled copy (``preprocessed/``): its recipe (the
    experiment's ``train`` with the model's own ``train:`` keys on top) has a scale. A model set to
    today's whole-image resize beside planned ones (``train: {scale: null, crop: false, image_size:
    [h, w]}``) reads the converted images.

    Raises:
        ValueError: the model's own scale (or target_diagonal) is a number other than the experiment's
            (one experiment rescales its images once), or it is null while its crop is not false (the
            unscaled images would be cropped to the plan's patch).
    """
    own = model_cfg.get("train") or {}
    scale = own["scale"] if "scale" in own else train_cfg.get("scale")
    if (
        scale is not None
        and "target_diagonal" in own
        and own["target_diagonal"] != train_cfg.get("target_diagonal")
    ):
        raise ValueError(
            f"model {model}: train.target_diagonal {own['target_diagonal']} differs from the experiment's "
            f"({train_cfg.get('target_diagonal')}); one experiment rescales its images once: set it in the "
            "experiment's train (or leave it to the plan), or give the model train.scale null (whole-image "
            "resize)"
        )
    crop = own["crop"] if "crop" in own else train_cfg.get("crop")
    if scale is None and crop not in (False, None):
        raise ValueError(
            f"model {model}: train.scale null (the whole image resized) needs train.crop: false in its own "
            f"train: block (the experiment's crop is {crop})"
        )
    if scale is not None and scale != train_cfg.get("scale"):
        raise ValueError(
            f"model {model}: train.scale {scale} differs from the experiment's train.scale "
            f"({train_cfg.get('scale')}); one experiment rescales its images once: set the model's "
            "train.scale to null (whole-image resize) or leave it to the experiment"
        )
    return scale is not None


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
