"""Panoptic segments without sorting and from the small map (issue 27, part 3): equal to the
direct computation (np.unique + find_objects on the full-resolution map)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pseudo_labels.stages.instance.panoptic import (
    category_of, panoptic_for_image, panoptic_segments, resize_panoptic, resized_segments,
)


def direct_segments(pan):
    """segments_info by np.unique / bincount / find_objects on the map itself."""
    ids, inv = np.unique(pan, return_inverse=True)
    inv = inv.reshape(pan.shape)
    areas = np.bincount(inv.ravel())
    boxes = ndimage.find_objects(inv + 1)
    return [{"id": int(s), "category_id": category_of(int(s)), "iscrowd": 0, "area": int(areas[j]),
             "bbox": [boxes[j][1].start, boxes[j][0].start, boxes[j][1].stop - boxes[j][1].start,
                      boxes[j][0].stop - boxes[j][0].start]}
            for j, s in enumerate(ids) if s != 0]


def random_pan(h, w, seed):
    rng = np.random.default_rng(seed)
    pan = rng.choice([0, 7, 8, 11, 24000, 24001, 26000, 26003, 33999], size=(h, w)).astype(np.int32)
    pan[: h // 2, : w // 3] = 26005  # a large block
    pan[h - 1, w - 1] = 27001  # a one-pixel segment in the corner
    return pan


@pytest.mark.parametrize("shape", [(64, 96), (7, 5), (1, 9)])
def test_segments_equal_direct(shape):
    pan = random_pan(*shape, seed=shape[0])
    assert panoptic_segments(pan) == direct_segments(pan)
    assert panoptic_segments(pan.astype(np.int64)) == direct_segments(pan)
    big = pan.astype(np.int64) * 10**9  # ids too large to count: the sorting path
    assert [s["area"] for s in panoptic_segments(big)] == [s["area"] for s in direct_segments(pan)]


@pytest.mark.parametrize("small,size", [((64, 128), (128, 256)), ((37, 53), (100, 77)), ((64, 64), (20, 150)),
                                        ((5, 7), (5, 30)), ((9, 9), (3, 3))])
def test_resized_segments_equal_full_resolution(small, size):
    pan = random_pan(*small, seed=small[1])
    full = resize_panoptic(pan, size)
    assert resized_segments(pan, size) == direct_segments(full)


def test_panoptic_for_image_resized_segments():
    rng = np.random.default_rng(3)
    sem = rng.integers(0, 19, (64, 128)).astype(np.uint8)
    sem[:32] = 0
    inst = np.zeros((32, 64), np.int32)
    inst[20:30, 10:40] = 1
    sem[40:60, 20:80] = 13  # car
    pan, segs = panoptic_for_image(sem, inst, 64, None)
    assert pan.shape == sem.shape
    assert segs == direct_segments(pan)
