"""Unsupervised scores over any label table, overall and per group (evaluation.rgbt)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.matching import cluster_class_confusion, match_clusters
from evaluation.matching import mapped_confusion as class_confusion
from evaluation.rgbt import evaluate_unsupervised


def test_confusion_of_one_image():
    clusters = np.array([[0, 0, 1], [2, 1, 7]])
    gt = np.array([[1, 1, 0], [255, 0, 2]])
    cm = cluster_class_confusion(clusters, gt, k=3, num_classes=3)
    assert cm.tolist() == [[0, 2, 0], [2, 0, 0], [0, 0, 0]]  # void GT and cluster 7 (>= k) left out


def test_hungarian_permutation_gives_perfect_scores():
    gt = np.random.default_rng(0).integers(0, 3, (20, 20))
    perm = np.array([2, 0, 1])
    clusters = perm[gt]
    conf = {"aD": cluster_class_confusion(clusters, gt, 3, 3)}
    res = evaluate_unsupervised(conf, {"aD": "day"}, "hungarian", ["a", "b", "c"])
    assert res["overall"]["mIoU"] == pytest.approx(100.0) and res["overall"]["pixel_accuracy"] == pytest.approx(100.0)
    assert res["mapping"] == [1, 2, 0] and res["groups"]["day"]["mIoU"] == pytest.approx(100.0)


def test_one_mapping_for_all_groups():
    # day: cluster 0 = class 0, cluster 1 = class 1; night: the clusters are swapped (a domain shift)
    day = np.array([[50, 0], [0, 50]])
    night = np.array([[0, 10], [10, 0]])
    res = evaluate_unsupervised({"d": day, "n": night}, {"d": "day", "n": "night"}, "hungarian", ["x", "y"])
    assert res["mapping"] == [0, 1]  # fitted on the sum, dominated by day
    assert res["groups"]["day"]["mIoU"] == pytest.approx(100.0)
    assert res["groups"]["night"]["mIoU"] == pytest.approx(0.0)
    assert res["overall"]["pixel_accuracy"] == pytest.approx(100 * 100 / 120)
    assert res["images"] == {"overall": 2, "day": 1, "night": 1}


def test_majority_with_more_clusters_and_hand_computed_iou():
    conf = np.array([[8, 2], [1, 4], [3, 0]])  # 3 clusters, 2 classes
    res = evaluate_unsupervised({"a": conf}, None, "majority", ["p", "q"])
    assert res["mapping"] == [0, 1, 0]
    # class p: TP 8 + 3 = 11, GT 12, pred 13 -> 11 / 14; class q: TP 4, GT 6, pred 5 -> 4 / 7
    assert res["overall"]["per_class"]["p"] == pytest.approx(100 * 11 / 14)
    assert res["overall"]["mIoU"] == pytest.approx(100 * (11 / 14 + 4 / 7) / 2)
    assert res["overall"]["pixel_accuracy"] == pytest.approx(100 * 15 / 18)


def test_hungarian_k_greater_than_classes_counts_unmatched_as_misses():
    conf = np.array([[5, 0], [0, 5], [5, 0]])
    m = match_clusters(conf, "hungarian")
    assert sorted(m.tolist()) == [0, 1, 255]
    cm, misses = class_confusion(conf, m)
    assert cm.trace() == 10 and misses.tolist() == [5, 0]
    res = evaluate_unsupervised({"a": conf}, None, "hungarian", ["p", "q"])
    assert res["overall"]["per_class"]["p"] == pytest.approx(50.0)


def test_ignore_classes_and_errors():
    conf = np.array([[90, 1, 0], [5, 9, 0], [5, 0, 10]])
    res = evaluate_unsupervised({"a": conf}, None, "hungarian", ["unlabeled", "car", "person"], ignore_classes=[0])
    assert res["classes"] == ["car", "person"] and res["ignored_classes"] == ["unlabeled"]
    assert res["overall"]["pixels"] == 20
    assert 0 not in res["mapping"]
    with pytest.raises(ValueError, match="one shape"):
        evaluate_unsupervised({"a": np.zeros((2, 2)), "b": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="unknown matching"):
        evaluate_unsupervised({"a": conf}, method="greedy")


def _rtfnet_miou(conf: np.ndarray) -> float:
    """RTFNet / CRM compute_results written out: IoU 0 where the union is empty, mean over all classes."""
    ious = []
    for c in range(conf.shape[0]):
        union = conf[c, :].sum() + conf[:, c].sum() - conf[c, c]
        ious.append(0.0 if union == 0 else conf[c, c] / union)
    return 100 * float(np.mean(ious))


def _stego_miou(conf: np.ndarray) -> float:
    """STEGO / DARTS UnsupervisedMetrics: tp / (tp + fp + fn), NaN classes dropped."""
    tp = np.diag(conf).astype(float)
    with np.errstate(invalid="ignore"):
        iou = tp / (tp + (conf.sum(0) - tp) + (conf.sum(1) - tp))
    return 100 * float(iou[~np.isnan(iou)].mean())


def _official_square(conf: np.ndarray) -> np.ndarray:
    """STEGO's reordering written out: Hungarian on the (K, C) counts, every cluster keeps its class."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(conf, maximize=True)
    square = np.zeros((conf.shape[1], conf.shape[1]), np.int64)  # rows GT, columns predicted class
    for r, c in zip(rows, cols):
        square[:, c] += conf[r]
    return square


def test_miou_conventions_equal_the_official_formulas():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 3, (30, 30))  # classes 3 and 4 never in the GT
    clusters = np.where(rng.random((30, 30)) < 0.7, gt, rng.integers(0, 4, (30, 30)))  # cluster 3: noise only
    conf = cluster_class_confusion(clusters, gt, 5, 5)
    by = {c: evaluate_unsupervised({"x": conf}, None, "hungarian", convention=c)["overall"]
          for c in ("present", "stego", "all-classes")}
    square = _official_square(conf)
    assert by["all-classes"]["mIoU"] == pytest.approx(_rtfnet_miou(square), abs=1e-6)
    assert by["stego"]["mIoU"] == pytest.approx(_stego_miou(square), abs=1e-6)
    # ours: cluster 3 overlaps no class it could be matched to -> its pixels are misses, class 3 absent
    assert by["present"]["n_classes"] == 3 and by["stego"]["mIoU"] < by["present"]["mIoU"]
    assert by["all-classes"]["mIoU"] < by["stego"]["mIoU"]  # class 4 has an empty union: 0 in the mean
    assert by["present"]["convention"] == "present"
    assert by["present"]["mIoU_all_classes"] == by["all-classes"]["mIoU"] == by["stego"]["mIoU_all_classes"]
    with pytest.raises(ValueError, match="convention"):
        evaluate_unsupervised({"x": conf}, convention="mean")
