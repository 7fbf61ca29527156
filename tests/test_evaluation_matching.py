"""Cluster -> class matching."""

import numpy as np

from evaluation.matching import apply_mapping, hungarian_match, majority_match


def test_hungarian_recovers_permutation():
    rng = np.random.default_rng(0)
    perm = rng.permutation(19)
    cm = rng.integers(0, 10, size=(19, 19))
    cm[np.arange(19), perm] += 1000
    m = hungarian_match(cm)
    assert m.dtype == np.int64
    np.testing.assert_array_equal(m, perm)


def test_hungarian_more_clusters_than_classes():
    cm = np.array([[5, 0], [0, 1], [0, 7]])
    np.testing.assert_array_equal(hungarian_match(cm), [0, 255, 1])


def test_majority_many_to_one_and_empty_rows():
    cm = np.array([[5, 1, 0], [4, 0, 0], [0, 0, 0], [0, 2, 9]])
    np.testing.assert_array_equal(majority_match(cm), [0, 0, 255, 2])


def test_apply_mapping():
    lab = np.array([[0, 1], [3, 2]])
    np.testing.assert_array_equal(apply_mapping(lab, np.array([4, 255, 7])), [[4, 255], [255, 7]])
