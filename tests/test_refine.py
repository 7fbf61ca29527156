"""Refinement library: majority label in segments (void rules), dense CRF."""

from __future__ import annotations

import numpy as np
import pytest

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.refine import refine_semantics as refine


def test_majority_in_segments_against_a_loop():
    rng = np.random.default_rng(0)
    sem = rng.choice([0, 1, 2, 5, 255], size=(30, 40), p=[0.3, 0.2, 0.2, 0.1, 0.2]).astype(np.uint8)
    segs = rng.integers(0, 7, size=(30, 40)) * 10 + 3  # non-consecutive ids
    out = refine.majority_in_segments(sem, segs)
    for s in np.unique(segs):
        vals, counts = np.unique(sem[segs == s], return_counts=True)
        winner = vals[counts == counts.max()].min()
        assert np.all(out[segs == s] == winner)
    assert out.dtype == np.uint8


def test_void_stays_void_only_where_it_dominates():
    sem = np.array([[255, 255, 255, 1, 1, 2],
                    [255, 255, 3, 1, 255, 255]], np.uint8)
    segs = np.array([[0, 0, 0, 1, 1, 1],
                     [0, 0, 0, 1, 1, 1]])
    out = refine.majority_in_segments(sem, segs)
    assert np.all(out[segs == 0] == 255)  # 4 void vs 1 class: stays void
    assert np.all(out[segs == 1] == 1)  # 2 void vs 2 of class 1: tie -> the class (smaller id)


def test_majority_shape_and_value_errors():
    with pytest.raises(PseudoLabelsError):
        refine.majority_in_segments(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.int32))
    with pytest.raises(PseudoLabelsError):
        refine.majority_in_segments(np.zeros((2, 2), np.uint8), -np.ones((2, 2), np.int32))


def test_segments_snap_blocky_labels_to_an_edge():
    """Labels with a boundary 3 px off the image edge are fixed by segments that follow the edge."""
    sem = np.zeros((20, 20), np.uint8)
    sem[:, 13:] = 1  # true edge at column 10
    segs = np.zeros((20, 20), np.int32)
    segs[:, 10:] = 1
    out = refine.majority_in_segments(sem, segs)
    assert np.all(out[:, :10] == 0) and np.all(out[:, 10:] == 1)


def test_dense_crf_moves_a_boundary_to_the_image_edge():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 255
    sem = np.zeros((40, 40), np.uint8)
    sem[:, 24:] = 1  # label boundary 4 px right of the colour edge
    sem[0, 0] = 255
    out = refine.dense_crf(img, sem, 2)
    assert out.shape == (40, 40) and out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    assert np.mean(out[:, 20:24] == 1) > 0.9  # pulled onto the edge
    assert np.all(out[:, :18] == 0) and np.all(out[:, 26:] == 1)


def test_dense_crf_rejects_ids_outside_the_labels():
    with pytest.raises(PseudoLabelsError):
        refine.dense_crf(np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 5, np.uint8), 3)


def test_connected_regions_split_a_segment_id_into_its_pieces():
    segs = np.array([[1, 1, 2, 1],
                     [2, 2, 2, 1]])
    regions = refine.connected_regions(segs)
    assert len(np.unique(regions)) == 3  # id 1 has two separate pieces
    assert regions[0, 0] == regions[0, 1] != regions[0, 3]
    sem = np.array([[255, 255, 0, 4],
                    [0, 0, 0, 4]], np.uint8)
    # per id: 2 void + 2 of class 4 in segment 1 -> class 4 everywhere; per piece the left piece stays void
    assert np.all(refine.majority_in_segments(sem, segs)[segs == 1] == 4)
    by_piece = refine.majority_in_segments(sem, regions)
    assert np.all(by_piece[0, :2] == 255) and np.all(by_piece[:, 3] == 4)


def test_crf_without_pydensecrf2_names_the_package(monkeypatch):
    """The ``except ImportError`` paths: crf_available() is False and dense_crf says what to install."""
    import sys

    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert not refine.crf_available()
    with pytest.raises(PseudoLabelsError, match="pydensecrf2"):
        refine.dense_crf(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), 2)
