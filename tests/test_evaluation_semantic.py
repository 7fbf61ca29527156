"""mIoU: hand-computed 3x3 case and conventions."""

import math

import numpy as np
import pytest

from evaluation.semantic import confusion_matrix, confusion_matrix_with_misses, miou_from_confusion


def test_hand_computed_3x3():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(gt, pred, num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    assert cm.dtype == np.int64
    r = miou_from_confusion(cm)
    # IoU0 = 1/(2+1-1) = 1/2, IoU1 = 2/(2+4-2) = 1/2, IoU2 = 0/(1+0-0) = 0
    assert r["per_class_iou"] == pytest.approx([50.0, 50.0, 0.0])
    assert r["mIoU"] == pytest.approx(100 / 3)
    assert r["pixel_accuracy"] == pytest.approx(60.0)


def test_absent_class_is_nan_and_excluded():
    cm = np.array([[3, 1, 0], [1, 3, 0], [0, 0, 0]])
    r = miou_from_confusion(cm)
    assert math.isnan(r["per_class_iou"][2]) and r["n_classes"] == 2
    assert r["mIoU"] == pytest.approx(60.0)


def test_out_of_range_prediction_counts_as_miss():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 255, 1, 1])
    cm, miss = confusion_matrix_with_misses(gt, pred, num_classes=2)
    np.testing.assert_array_equal(miss, [1, 0])
    assert miou_from_confusion(cm, miss)["per_class_iou"] == pytest.approx([50.0, 100.0])
    assert miou_from_confusion(cm)["per_class_iou"] == pytest.approx([100.0, 100.0])
    with pytest.raises(ValueError):
        confusion_matrix(gt, pred[:3])
