"""Cluster -> class mapping on constructed data."""

import numpy as np
import pytest

from pseudo_labels.stages.semantic.mapping import (
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


def test_label_table_instead_of_19_classes():
    """A 3-class table: confusion, mapping, application and scoring use its size and void."""
    from pseudo_labels.datasets.base import make_table

    three = make_table("three", [("a", (1, 1, 1), False), ("b", (2, 2, 2), False), ("c", (3, 3, 3), True)])
    clusters = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    gt = np.array([[0, 0, 2, 2], [1, 1, 5, 255]], np.uint8)  # 5 is not a class of the table: ignored
    conf = cluster_confusion(clusters, gt, 4, labels=three)
    assert conf.shape == (4, 3) and conf.sum() == 6 and conf[3].sum() == 0
    assert np.array_equal(conf, cluster_confusion(clusters, gt, 4, 3))
    c2c = map_clusters(conf, "hungarian", three)
    assert c2c.tolist() == [0, 2, 1, 255]
    assert class_confusion(conf, c2c, labels=three).shape == (3, 3)
    assert np.trace(class_confusion(conf, c2c, labels=three)) == 6
    # another void id: unmapped clusters and unknown ids take it
    odd = make_table("odd", [("a", (1, 1, 1), False), ("b", (2, 2, 2), False)], void=7)
    conf2 = cluster_confusion(clusters, np.minimum(gt, 1), 4, labels=odd)
    assert map_clusters(conf2, "none", odd).tolist() == [7] * 4
    assert map_clusters(conf2, "majority", odd).tolist() == [0, 1, 1, 1]
    assert apply_mapping(np.array([[0, 9]]), np.array([1, 7]), odd).tolist() == [[1, 7]]


def test_apply_mapping_wide_tables_and_bad_ids():
    from pseudo_labels.datasets.base import make_table

    wide = make_table("wide", [(f"c{i}", (0, 0, 0), False) for i in range(300)], void=65535)
    out = apply_mapping(np.array([[0, 1, 2]]), np.array([299, 5, 65535]), wide)
    assert out.dtype == np.uint16 and out.tolist() == [[299, 5, 65535]]
    # Cityscapes: uint8; a negative or too large class id is void, never wrapped
    assert apply_mapping(np.array([[0, 1, 2]]), np.array([-1, 300, 18])).tolist() == [[255, 255, 18]]
