"""Nearest-neighbour resizing exactly as PIL ``Image.resize(..., NEAREST)`` samples (the
reference repository resizes label maps with PIL), shared by the panoptic and instance metrics."""

from __future__ import annotations

import numpy as np


def pil_nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of PIL ``Image.resize(..., NEAREST)`` along one axis, bit-exact.

    PIL steps a double ``x = scale / 2, x += scale`` (scale = n_in / n_out) and truncates;
    the running sum (a sequential cumsum here) can fall just below an integer that the
    closed form ``floor((i + 0.5) * scale)`` reaches, so the closed form differs for some
    non-integer scales (e.g. 2048 -> 644).
    """
    scale = n_in / n_out
    steps = np.full(n_out, scale)
    steps[0] = scale * 0.5
    return np.minimum(np.floor(np.cumsum(steps)).astype(np.intp), n_in - 1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W[, C]) array resized to ``size`` = (h, w) exactly as PIL NEAREST does."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    return array[pil_nearest_indices(array.shape[0], h)[:, None], pil_nearest_indices(array.shape[1], w)[None, :]]
