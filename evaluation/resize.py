"""Nearest-neighbour resizing exactly as PIL ``Image.resize(..., NEAREST)`` samples (the
reference repository resizes label maps with PIL), shared by the panoptic and instance metrics."""

from __future__ import annotations

import numpy as np

from evaluation.pq_stats import EvaluationError

#: largest relative difference of aspect ratio (W / H) for which a prediction is resized to the GT
ASPECT_TOLERANCE = 0.02


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


def png_size(path) -> tuple[int, int] | None:
    """(H, W) from a PNG file's IHDR header (24 bytes read), or None if it is not a readable PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def check_aspect(pred_shape, gt_shape, where) -> None:
    """Refuse to resize a prediction whose W / H differs from the GT's by more than 2% (wrong pairing)."""
    rp, rg = pred_shape[1] / pred_shape[0], gt_shape[1] / gt_shape[0]
    if abs(rp / rg - 1) > ASPECT_TOLERANCE:
        raise EvaluationError(f"{where}: prediction size {pred_shape[1]}x{pred_shape[0]} does not have the ground "
                              f"truth's aspect ratio ({gt_shape[1]}x{gt_shape[0]}, W x H); is it the same image?")
