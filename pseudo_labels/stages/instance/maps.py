"""Per-pixel map operations shared by the depth-guided splitting, the thing/stuff decision,
the panoptic assembly and the sweep (pure numpy / OpenCV / scipy / PIL, no files).

* label maps: (H, W) integer class ids; :func:`resize_semantic` (nearest, PIL pixel-centre
  convention), :func:`class_boxes` / :func:`class_masks` (per-class bounding box, box-sized
  bool mask, pixel count);
* depth maps: (H, W) float, any unit; :func:`resize_depth_bilinear` (PIL bilinear, as the
  reference), :func:`normalize_depth_map`, :func:`depth_gradient_magnitude`
  (``|Sobel(gaussian(D, sigma))|``) and :func:`gradient_margin` (the filters' reach).

:mod:`pseudo_labels.stages.instance.instances` re-exports them; they live here so that
:mod:`pseudo_labels.stages.instance.thing_stuff` can use them without importing the splitting stage
(which imports the thing/stuff decision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np
from scipy import ndimage

from pseudo_labels.core.defaults import DEPTH_BLUR_SIGMA
from pseudo_labels.core.errors import PseudoLabelsError


def normalize_depth_map(depth: np.ndarray, mode: str = "none") -> np.ndarray:
    """``none``: depth as float64 unchanged; ``minmax``: (d - min) / (max - min), constant -> 0.

    Raises :class:`PseudoLabelsError` if the depth has NaN or infinite values.
    """
    d = np.asarray(depth, np.float64)
    if not np.isfinite(d).all():
        bad = int(d.size - np.count_nonzero(np.isfinite(d)))
        raise PseudoLabelsError(f"depth map has {bad} NaN/infinite values (fill or mask them before splitting)")
    if mode == "none":
        return d
    if mode == "minmax":
        lo, hi = float(d.min()), float(d.max())
        if hi <= lo:
            return np.zeros_like(d)
        return (d - lo) / (hi - lo)
    raise PseudoLabelsError(f"unknown depth normalisation {mode!r} (choose none or minmax)")


def resize_semantic(semantic: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``size`` = (H, W).

    Pixel-centre convention, identical to PIL ``Image.NEAREST`` (what the reference uses;
    for a 2x downsample it keeps the odd rows/columns, unlike ``cv2.INTER_NEAREST``).
    """
    h, w = size
    if semantic.shape[:2] == (h, w):
        return semantic
    if semantic.dtype in (np.uint8, np.uint16, np.int16, np.float32):
        return cv2.resize(semantic, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    from pseudo_labels.stages.semantic.clustering import nearest_indices

    H, W = semantic.shape[:2]
    return semantic[nearest_indices(h, H)[:, None], nearest_indices(w, W)[None, :]]


def resize_depth_bilinear(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float depth map to ``size`` = (H, W), float32.

    Uses PIL ``Image.BILINEAR`` on a float32 ('F') image exactly as the reference does
    (when shrinking, PIL widens the triangle filter, i.e. it antialiases).
    """
    from PIL import Image

    h, w = size
    d = np.asarray(depth, np.float32)
    if d.shape == (h, w):
        return d
    return np.asarray(Image.fromarray(d, mode="F").resize((w, h), Image.BILINEAR), np.float32)


# --------------------------------------------------------------------------- step 1
def depth_gradient_magnitude(depth: np.ndarray, sigma: float = DEPTH_BLUR_SIGMA, dtype=np.float32) -> np.ndarray:
    """|Sobel(gaussian(depth, sigma))|: (H, W) ``dtype`` (float32 by default).

    Computed in float64: ``scipy.ndimage.gaussian_filter`` (skipped for sigma <= 0), then
    ``scipy.ndimage.sobel`` along x and y (3x3, weights 1-2-1, **not** divided by 8),
    magnitude ``sqrt(gx^2 + gy^2)``. Units: depth units per pixel (x 8). Pass
    ``dtype=np.float64`` for the exact values the split thresholds.
    """
    d = np.asarray(depth, np.float64)
    if sigma > 0:
        d = ndimage.gaussian_filter(d, sigma=sigma)
    gx = ndimage.sobel(d, axis=1)
    gy = ndimage.sobel(d, axis=0)
    g = np.sqrt(gx * gx + gy * gy)
    return g.astype(dtype, copy=False)


def gradient_margin(sigma: float) -> int:
    """Pixels of context |Sobel(gaussian(., sigma))| needs: scipy's gaussian radius + 1 (Sobel)."""
    return (int(4.0 * float(sigma) + 0.5) if sigma > 0 else 0) + 1


def class_boxes(semantic: np.ndarray, classes: Iterable[int]) -> dict:
    """Bounding box (row slice, col slice) of each of ``classes`` present in ``semantic``."""
    out = {}
    for c in sorted({int(c) for c in classes}):
        x, y, w, h = cv2.boundingRect((semantic == c).view(np.uint8))
        if w > 0:
            out[c] = (slice(y, y + h), slice(x, x + w))
    return out


@dataclass
class ClassMasks:
    """Per class of one semantic map: bounding box, box-sized bool mask and pixel count.

    Computed once per image by :func:`class_masks` and reused by every edge map
    (:func:`pseudo_labels.stages.instance.instances.thing_components`) and every dilation (the class mask limits the reach).
    """

    shape: tuple[int, int]
    boxes: dict
    masks: dict
    area: dict


def class_masks(semantic: np.ndarray, classes: Iterable[int]) -> ClassMasks:
    """:class:`ClassMasks` of ``classes`` in ``semantic`` (absent classes: area 0, no box)."""
    classes = sorted({int(c) for c in classes})
    boxes = class_boxes(semantic, classes)
    masks, area = {}, {}
    for c in classes:
        box = boxes.get(c)
        if box is None:
            area[c] = 0
            continue
        m = semantic[box] == c
        masks[c] = m
        area[c] = int(np.count_nonzero(m))
    return ClassMasks(tuple(semantic.shape), boxes, masks, area)
