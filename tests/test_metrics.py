"""segbench.metrics against hand-computed values and torchmetrics."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassF1Score, MulticlassJaccardIndex

from segbench.metrics import confusion_matrix, metrics_from_confusion
from segbench.training.metric import ConfusionMatrix


def test_hand_computed_two_classes():
    target = np.array([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0]])
    m = confusion_matrix(target, pred, num_classes=2)
    # class 0: 3 gt pixels, 2 correct, 1 -> 1; class 1: 4 gt pixels, 3 correct, 1 -> 0; ignore pixel dropped
    assert m.tolist() == [[2, 1], [1, 3]]
    assert m.dtype == np.int64
    r = metrics_from_confusion(m)
    assert r["IoU"] == pytest.approx([2 / 4, 3 / 5])
    assert r["Dice"] == pytest.approx([4 / 6, 6 / 8])
    assert r["Acc"] == pytest.approx([2 / 3, 3 / 4])
    assert r["Precision"] == pytest.approx([2 / 3, 3 / 4])
    assert r["mIoU"] == pytest.approx((0.5 + 0.6) / 2)
    assert r["aAcc"] == pytest.approx(5 / 7)
    assert r["fwIoU"] == pytest.approx(3 / 7 * 0.5 + 4 / 7 * 0.6)


def test_absent_class_is_nan_and_left_out_of_means():
    m = metrics_from_confusion([[5, 0, 0], [1, 4, 0], [0, 0, 0]])
    assert math.isnan(m["IoU"][2]) and math.isnan(m["Dice"][2])
    assert m["mIoU"] == pytest.approx(np.mean([5 / 6, 4 / 5]))


def test_class_predicted_but_absent_from_ground_truth_counts_as_zero():
    m = metrics_from_confusion([[3, 1], [0, 0]])
    assert m["IoU"][1] == 0.0
    assert m["mIoU"] == pytest.approx((0.75 + 0.0) / 2)
    assert math.isnan(m["Acc"][1])  # recall undefined without ground truth


def test_background_excluded_from_foreground_means():
    m = metrics_from_confusion([[8, 2], [1, 4]], background=0)
    assert m["mIoU_fg"] == pytest.approx(4 / 7)


def test_all_ignored_gives_empty_matrix_and_nan_metrics():
    m = confusion_matrix(np.full((4, 4), 255), np.zeros((4, 4), dtype=int), 3)
    assert m.sum() == 0
    r = metrics_from_confusion(m)
    assert math.isnan(r["mIoU"]) and math.isnan(r["aAcc"])


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="pred holds"):
        confusion_matrix(np.array([0, 1]), np.array([0, 5]), 2)
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(np.array([0, 1]), np.array([0.2, 0.7]), 2)
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion(np.zeros((2, 3)))


def test_accepts_tensors_and_accumulates():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, size=(3, 16, 16))
    t[0, :2] = 255
    p = rng.integers(0, 4, size=(3, 16, 16))
    cm = ConfusionMatrix(4)
    for i in range(3):
        cm.update(torch.from_numpy(p[i]), torch.from_numpy(t[i]))  # torchmetrics order: preds, target
    np.testing.assert_array_equal(cm.compute().numpy(), confusion_matrix(t, p, 4))
    assert cm.compute().sum() == (t != 255).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_torchmetrics_random(seed):
    rng = np.random.default_rng(seed)
    C = 6
    t = rng.integers(0, C, size=(4, 32, 40))
    t[rng.random(t.shape) < 0.1] = 255
    t[t == 5] = 0  # class 5 absent from the ground truth ...
    p = rng.integers(0, C - 1, size=t.shape)  # ... and from the predictions: NaN for us
    tt, pt = torch.from_numpy(t), torch.from_numpy(p)
    ours = confusion_matrix(t, p, C)
    tm_cm = MulticlassConfusionMatrix(C, ignore_index=255)(pt, tt).numpy()
    np.testing.assert_array_equal(ours, tm_cm)
    r = metrics_from_confusion(ours)
    iou_tm = MulticlassJaccardIndex(C, average="none", ignore_index=255)(pt, tt).numpy()
    f1_tm = MulticlassF1Score(C, average="none", ignore_index=255, multidim_average="global")(pt, tt).numpy()
    present = ~np.isnan(r["IoU"])
    assert not present[5]
    np.testing.assert_allclose(np.array(r["IoU"])[present], iou_tm[present], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.array(r["Dice"])[present], f1_tm[present], rtol=0, atol=1e-6)
    assert r["mIoU"] == pytest.approx(iou_tm[present].mean(), abs=1e-6)


# --- Boundary IoU -------------------------------------------------------------------------------


def _band_scipy(mask, ratio):
    """Independent formulation of the Boundary IoU band: d erosions by a 3x3 square, border = background."""
    from scipy import ndimage

    h, w = mask.shape
    d = max(1, int(round(ratio * np.sqrt(h * h + w * w))))
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=d, border_value=0)
    return mask & ~eroded


def test_boundary_band_hand_cases():
    from segbench.metrics import boundary_band

    sq = np.zeros((6, 6), bool)
    sq[1:5, 1:5] = True
    assert boundary_band(sq, 0.1).sum() == 12  # d = 1: ring of a 4x4 square
    full = np.ones((10, 10), bool)
    band = boundary_band(full, 0.05)  # d = 1: the image border counts as background
    assert band.sum() == 36 and not band[1:9, 1:9].any()
    assert boundary_band(np.zeros((5, 5), bool)).sum() == 0


@pytest.mark.parametrize("shape,ratio", [((60, 80), 0.02), ((97, 131), 0.02), ((50, 50), 0.1)])
def test_boundary_band_matches_independent_erosion(shape, ratio):
    from scipy import ndimage

    from segbench.metrics import boundary_band

    rng = np.random.default_rng(sum(shape))
    blobs = ndimage.gaussian_filter(rng.random(shape), 3) > 0.5
    np.testing.assert_array_equal(boundary_band(blobs, ratio), _band_scipy(blobs, ratio))


def test_boundary_iou_counts():
    from scipy import ndimage

    from segbench.metrics import boundary_iou, boundary_iou_counts

    rng = np.random.default_rng(0)
    t = (ndimage.gaussian_filter(rng.random((90, 120)), 4) * 30).astype(np.int64) % 3
    inter, union = boundary_iou_counts(t, t, 4)
    r = boundary_iou(inter, union)
    assert (
        r["BoundaryIoU"][:3] == [1.0, 1.0, 1.0]
        and math.isnan(r["BoundaryIoU"][3])
        and r["mBoundaryIoU"] == 1.0
    )
    shifted = np.roll(t, 3, axis=1)
    inter2, union2 = boundary_iou_counts(t, shifted, 4)
    assert (inter2[:3] < union2[:3]).all()
    # the same counts from the independent band formulation
    for c in range(3):
        g, p = _band_scipy(t == c, 0.02), _band_scipy(shifted == c, 0.02)
        assert inter2[c] == (g & p).sum() and union2[c] == (g | p).sum()
    # ignored pixels never count
    t_ign = t.copy()
    t_ign[:, :60] = 255
    inter3, union3 = boundary_iou_counts(t_ign, shifted, 4)
    assert union3.sum() < union2.sum()
    g0 = _band_scipy(t_ign == 0, 0.02) & (t_ign != 255)
    p0 = _band_scipy(shifted == 0, 0.02) & (t_ign != 255)
    assert union3[0] == (g0 | p0).sum()


# --- MMSegmentation's IoUMetric on the same predictions ------------------------------------------


def _mmseg_metrics(targets, preds, num_classes, ignore_index=255):
    from segbench._compat import ensure_mmcv_ext

    ensure_mmcv_ext()
    from mmseg.evaluation.metrics import IoUMetric

    areas = [
        IoUMetric.intersect_and_union(torch.from_numpy(p), torch.from_numpy(t), num_classes, ignore_index)
        for t, p in zip(targets, preds)
    ]
    # mmseg accumulates float32 areas; they are exact integers here (< 2**24), so in float64 its
    # formulas can be compared with ours to 1e-9
    totals = [sum(a[i] for a in areas).double() for i in range(4)]
    return totals, IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU", "mDice"])


@pytest.mark.parametrize("case", ["random", "absent_classes", "all_ignore_image", "one_class_only"])
def test_against_mmseg_iou_metric(case):
    rng = np.random.default_rng(7)
    C = 5
    targets = [rng.integers(0, C, size=(24, 32)) for _ in range(4)]
    preds = [rng.integers(0, C, size=(24, 32)) for _ in range(4)]
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 255
    if case == "absent_classes":  # class 4 nowhere, class 3 only predicted
        targets = [np.where(t >= 3, 0, t) for t in targets]
        preds = [np.where(p == 4, 1, p) for p in preds]
    elif case == "all_ignore_image":
        targets[1][:] = 255
    elif case == "one_class_only":
        targets = [np.where(t == 255, 255, 2) for t in targets]
        preds = [np.full_like(p, 2) for p in preds]
    cm = sum(confusion_matrix(t, p, C) for t, p in zip(targets, preds))
    ours = metrics_from_confusion(cm)
    (inter, union, pred_area, label_area), mm = _mmseg_metrics(targets, preds, C)
    tp, fp, fn = (np.array(ours[k]) for k in ("TP", "FP", "FN"))
    np.testing.assert_array_equal(inter.numpy(), tp)
    np.testing.assert_array_equal(union.numpy(), tp + fp + fn)
    np.testing.assert_array_equal(pred_area.numpy(), tp + fp)
    np.testing.assert_array_equal(label_area.numpy(), tp + fn)
    np.testing.assert_allclose(ours["IoU"], mm["IoU"], rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(ours["Dice"], mm["Dice"], rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(ours["Acc"], mm["Acc"], rtol=0, atol=1e-9, equal_nan=True)
    assert ours["aAcc"] == pytest.approx(float(mm["aAcc"]), abs=1e-9)
    assert ours["mIoU"] == pytest.approx(float(np.nanmean(mm["IoU"])), abs=1e-9)


def test_miou_as_other_libraries():
    from segmentation_models_pytorch.metrics import get_stats, iou_score

    from segbench.metrics import miou_as

    rng = np.random.default_rng(3)
    C = 6
    t = rng.integers(0, C - 2, size=(2, 20, 20))  # classes 4 and 5 never in the ground truth ...
    p = np.where(
        rng.random(t.shape) < 0.8, t, rng.integers(0, C - 1, size=t.shape)
    )  # ... 4 predicted, 5 never
    M = confusion_matrix(t, p, C)
    tm = MulticlassJaccardIndex(C, average="macro")(torch.from_numpy(p), torch.from_numpy(t)).item()
    assert miou_as(M, "torchmetrics") == pytest.approx(tm, abs=1e-6) == pytest.approx(miou_as(M, "segbench"))
    tp, fp, fn, tn = get_stats(torch.from_numpy(p), torch.from_numpy(t), mode="multiclass", num_classes=C)
    smp_default = iou_score(
        tp, fp, fn, tn, reduction="macro"
    ).item()  # default zero_division=1.0: absent -> 1
    assert miou_as(M, "smp") == pytest.approx(smp_default, abs=1e-6)
    assert miou_as(M, "smp_zero_division_0") == pytest.approx(
        iou_score(tp, fp, fn, tn, reduction="macro", zero_division=0).item(), abs=1e-6
    )
    assert miou_as(M, "paddleseg") < miou_as(M, "segbench") < miou_as(M, "smp")
    with pytest.raises(ValueError, match="paddleseg"):
        miou_as(M, "detectron")


def test_bootstrap_miou():
    import time

    from segbench.metrics import bootstrap_miou

    rng = np.random.default_rng(0)
    C, N = 5, 200
    cms = np.stack(
        [
            confusion_matrix(t, np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, C, t.shape)), C)
            for t in rng.integers(0, C, size=(N, 16, 16))
        ]
    )
    t0 = time.perf_counter()
    r = bootstrap_miou(cms, n_resamples=2000, seed=1)
    assert time.perf_counter() - t0 < 10
    assert r["mIoU"] == pytest.approx(metrics_from_confusion(cms.sum(0))["mIoU"])
    assert r["low"] < r["mIoU"] < r["high"] and r["high"] - r["low"] < 0.1
    assert bootstrap_miou(cms, n_resamples=2000, seed=1) == r  # seeded
    # the same seeded draws through a slow loop (resample, sum matrices, mIoU) give the same interval
    counts = np.random.default_rng(7).multinomial(N, np.full(N, 1 / N), size=400)  # one chunk of 400
    slow = [metrics_from_confusion((cms * row[:, None, None]).sum(0))["mIoU"] for row in counts]
    fast = bootstrap_miou(cms, n_resamples=400, seed=7)
    assert fast["low"] == pytest.approx(np.quantile(slow, 0.025), abs=1e-12)
    assert fast["high"] == pytest.approx(np.quantile(slow, 0.975), abs=1e-12)
    # fewer images -> wider interval
    small = bootstrap_miou(cms[:20], n_resamples=2000, seed=1)
    assert small["high"] - small["low"] > r["high"] - r["low"]
    with pytest.raises(ValueError, match=r"int\[N, C, C\]"):
        bootstrap_miou(np.zeros((0, 3, 3)))
