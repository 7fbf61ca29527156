"""Cluster -> class mapping on constructed data."""

import numpy as np
import pytest

from pseudo_labels.stages.mapping import (
    USES_GROUND_TRUTH, apply_mapping, class_confusion, cluster_confusion, map_clusters, void_predicted_pixels,
)


def constructed():
    # 4 clusters: 0 mostly road(0), 1 mostly car(13), 2 all sky(10), 3 only on void GT
    clusters = np.array([[0, 0, 0, 1], [1, 1, 2, 2], [3, 3, 0, 1]])
    gt = np.array([[0, 0, 13, 13], [13, 13, 10, 10], [255, 255, 0, 0]], np.uint8)
    return clusters, gt


def test_cluster_confusion_counts():
    clusters, gt = constructed()
    conf = cluster_confusion(clusters, gt, 4)
    assert conf.shape == (4, 19) and conf.dtype == np.int64
    assert conf[0, 0] == 3 and conf[0, 13] == 1
    assert conf[1, 13] == 3 and conf[1, 0] == 1
    assert conf[2, 10] == 2 and conf[3].sum() == 0
    assert conf.sum() == (gt != 255).sum()
    # accumulates; void cluster ids ignored
    assert cluster_confusion(np.full((2, 2), 255), np.zeros((2, 2)), 4).sum() == 0


def test_majority_hungarian_none():
    clusters, gt = constructed()
    conf = cluster_confusion(clusters, gt, 4)
    assert map_clusters(conf, "majority").tolist() == [0, 13, 10, 255]
    assert map_clusters(conf, "hungarian").tolist() == [0, 13, 10, 255]
    assert map_clusters(conf, "none").tolist() == [255] * 4
    assert USES_GROUND_TRUTH == {"majority": True, "hungarian": True, "none": False}
    # hungarian is one-to-one where majority is many-to-one
    conf2 = np.zeros((3, 19), np.int64)
    conf2[0, 5] = 10
    conf2[1, 5] = 8
    conf2[1, 6] = 2
    conf2[2, 6] = 1
    assert map_clusters(conf2, "majority").tolist() == [5, 5, 6]
    assert map_clusters(conf2, "hungarian").tolist() == [5, 6, 255]


def test_apply_mapping_and_scores():
    clusters, gt = constructed()
    conf = cluster_confusion(clusters, gt, 4)
    c2c = map_clusters(conf, "majority")
    sem = apply_mapping(np.where(clusters == 3, 255, clusters), c2c)
    assert sem.dtype == np.uint8
    np.testing.assert_array_equal(sem, [[0, 0, 0, 13], [13, 13, 10, 10], [255, 255, 0, 13]])
    cm = class_confusion(conf, c2c)
    from evaluation.semantic import confusion_matrix

    np.testing.assert_array_equal(cm, confusion_matrix(gt, apply_mapping(clusters, c2c)))
    assert void_predicted_pixels(conf, np.array([0, 255, 10, 255])) == 4


def test_unknown_method():
    with pytest.raises(Exception):
        map_clusters(np.zeros((2, 19)), "bogus")
