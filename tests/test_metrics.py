"""segbench.metrics against hand-computed values and torchmetrics."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassF1Score, MulticlassJaccardIndex

from segbench.metrics import ConfusionMatrix, confusion_matrix, metrics_from_confusion


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
        cm.update(torch.from_numpy(t[i]), torch.from_numpy(p[i]))
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(t, p, 4))
    assert cm.matrix.sum() == (t != 255).sum()


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
