"""Depth-guided instance splitting of thing classes (DESIGN.md, "The depth-guided splitting").

Pure functions on numpy arrays. Conventions:

* ``semantic``: (H, W) uint8/uint16 class map (Cityscapes trainIds 0..18, 255 void, or
  pseudo-class ids with ``thing_classes`` given explicitly).
* ``depth``: (H, W) float depth, any unit; the split does not normalise unless asked
  (the reference's depth maps are already min-max normalised per image when written).
* result: (H, W) int32 instance map, 0 = no instance, 1..N, every instance inside one class.

Algorithm (reproduces qbit-glitch/monocular_ups ``depth_guided_instances`` + the placement
of its sweep evaluator exactly):

1. ``G = |Sobel(gaussian(D, sigma))|`` (float64, scipy 3x3 Sobel, not divided by 8).
2. ``E = G > tau``.
3. per thing class c (increasing): ``M = S == c``; skip if ``|M| < A_min``; components of
   ``M & ~E`` (4- or 8-connectivity) with >= A_min pixels, largest first (ties in label
   order); each is dilated ``dilation_iters`` times (cross) and joined with the pixels of M
   not yet assigned (the component itself kept whole); results below A_min are dropped.
4. placement: instances sorted by area, largest first (stable); each takes only untaken
   pixels and is skipped if fewer than ``min_new_pixels`` are new.

The implementation works inside component bounding boxes (``scipy.ndimage.find_objects``)
and splits the work into reusable pieces so that a parameter sweep computes the gradient
once per sigma, the components once per tau and the dilations once per component:
:func:`depth_gradient_magnitude` -> :func:`thing_components` -> :func:`candidate_instances`
-> :func:`place_instances`. :func:`split_instances_by_depth_edges` chains them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np
from scipy import ndimage

from pseudo_labels.datasets.cityscapes import IGNORE, NUM_CLASSES, THING_TRAIN_IDS
from pseudo_labels.core.defaults import (
    CONNECTIVITY,
    DEPTH_BLUR_SIGMA,
    DILATION_ITERS,
    GRAD_THRESHOLD,
    MIN_AREA,
    MIN_NEW_PIXELS,
)
from pseudo_labels.core.errors import PseudoLabelsError

_CROSS_U8 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


# --------------------------------------------------------------------------- inputs
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
    H, W = semantic.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * (H / h)).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (W / w)).astype(np.int64), W - 1)
    return semantic[rows[:, None], cols[None, :]]


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


def thing_box(semantic: np.ndarray, thing_classes: Iterable[int], margin: int = 0) -> tuple[slice, slice] | None:
    """Bounding box of all pixels of ``thing_classes``, grown by ``margin`` (clipped); None if none."""
    m = np.isin(semantic, [int(c) for c in thing_classes])
    rows = np.flatnonzero(m.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m[rows[0]:rows[-1] + 1].any(0))
    H, W = semantic.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, H)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, W)))


def depth_edges(depth: np.ndarray, semantic: np.ndarray, grad_threshold: float, sigma: float = DEPTH_BLUR_SIGMA,
                thing_classes: Iterable[int] = THING_TRAIN_IDS) -> np.ndarray:
    """E = |Sobel(gaussian(D, sigma))| > tau, (H, W) bool, exact where thing classes lie.

    Computed only in the thing classes' bounding box plus the filters' reach: scipy's
    filters give every pixel the same float64 value from the same neighbourhood, so the
    crop is bit-identical to the full-image gradient there (outside, E is False).
    """
    edges = np.zeros(semantic.shape, bool)
    box = thing_box(semantic, thing_classes, gradient_margin(sigma))
    if box is not None:
        edges[box] = depth_gradient_magnitude(depth[box], sigma, dtype=np.float64) > grad_threshold
    return edges


# --------------------------------------------------------------------------- step 3 pieces
@dataclass
class Component:
    """One connected component of ``M & ~E`` of a thing class, inside its (padded) box.

    ``box``: (row slice, col slice) of the image, the component's bounding box grown by
    ``pad`` pixels (clipped); ``mask``: bool, box-sized; ``area``: pixels of the component.
    """

    cls: int
    box: tuple[slice, slice]
    mask: np.ndarray
    area: int
    _reach: dict = field(default_factory=dict, repr=False)

    def reach(self, class_mask_box: np.ndarray, dilation_iters: int) -> np.ndarray:
        """Pixels of the class reachable by ``dilation_iters`` cross dilations (cached)."""
        r = self._reach.get(dilation_iters)
        if r is None:
            if dilation_iters > 0:
                dil = cv2.dilate(self.mask.view(np.uint8), _CROSS_U8, iterations=dilation_iters).view(bool)
                r = dil & class_mask_box
            else:
                r = self.mask
            self._reach[dilation_iters] = r
        return r


@dataclass
class ClassComponents:
    """Components of every thing class of one image for one edge map (one sigma, one tau).

    ``class_area[c]``: |M_c|; ``components[c]``: components with area >= ``min_size``,
    largest first, ties in scipy label (raster) order.
    """

    shape: tuple[int, int]
    semantic: np.ndarray
    class_area: dict
    components: dict
    pad: int
    min_size: int


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    if connectivity == 8:
        return ndimage.generate_binary_structure(2, 2)
    raise PseudoLabelsError(f"connectivity must be 4 or 8, got {connectivity}")


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
    (:func:`thing_components`) and every dilation (the class mask limits the reach).
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


def thing_components(
    semantic: np.ndarray,
    edges: np.ndarray,
    thing_classes: Sequence[int] = THING_TRAIN_IDS,
    min_size: int = MIN_AREA,
    connectivity: int = CONNECTIVITY,
    pad: int = DILATION_ITERS,
    masks: ClassMasks | None = None,
) -> ClassComponents:
    """Step 3's components: per thing class, components of ``(S == c) & ~edges`` >= ``min_size``.

    ``semantic`` (H, W) int class map, ``edges`` (H, W) bool. Classes with fewer than
    ``min_size`` pixels are left out (the split skips them for every ``A_min >= min_size``).
    ``pad``: margin kept around each component box, >= the largest dilation to be used.
    ``masks``: :func:`class_masks` of ``semantic`` for these classes, when already computed.
    """
    if semantic.shape != edges.shape:
        raise ValueError(f"semantic {semantic.shape} and edges {edges.shape} differ in size")
    H, W = semantic.shape
    _structure(connectivity)  # validates it
    classes = sorted({int(c) for c in thing_classes})
    if masks is None:
        masks = class_masks(semantic, classes)
    counts = {}
    comps: dict[int, list[Component]] = {}
    for c in classes:
        box = masks.boxes.get(c)
        area_c = masks.area.get(c, 0)
        counts[c] = area_c
        if box is None or area_c < min_size:
            continue
        mc = masks.masks[c]
        free = mc & ~edges[box]
        # OpenCV labels the same components as scipy.ndimage.label (same connectivity), in
        # another order: scipy's is the raster order of each component's first pixel.
        n, lab, st, _ = cv2.connectedComponentsWithStats(free.view(np.uint8), connectivity=connectivity,
                                                         ltype=cv2.CV_32S)
        sizes = st[:, cv2.CC_STAT_AREA]
        keep = np.flatnonzero(sizes[1:] >= min_size) + 1
        if keep.size == 0:
            comps[c] = []
            continue
        tops, lefts = st[keep, cv2.CC_STAT_TOP], st[keep, cv2.CC_STAT_LEFT]
        widths, heights = st[keep, cv2.CC_STAT_WIDTH], st[keep, cv2.CC_STAT_HEIGHT]
        first = np.array([t * lab.shape[1] + l + int(np.argmax(lab[t, l:l + w] == k))
                          for k, t, l, w in zip(keep.tolist(), tops.tolist(), lefts.tolist(), widths.tolist())],
                         np.int64)
        # largest first, ties in scipy's label order
        order = np.lexsort((first, -sizes[keep]))
        r0, c0 = box[0].start, box[1].start
        lst = []
        for j in order.tolist():
            k = int(keep[j])
            t, l, h, w = int(tops[j]), int(lefts[j]), int(heights[j]), int(widths[j])
            # padded box in image coordinates
            pr0, pr1 = max(t + r0 - pad, 0), min(t + h + r0 + pad, H)
            pc0, pc1 = max(l + c0 - pad, 0), min(l + w + c0 + pad, W)
            mask = np.zeros((pr1 - pr0, pc1 - pc0), bool)
            ir0, ic0 = t + r0 - pr0, l + c0 - pc0
            mask[ir0:ir0 + h, ic0:ic0 + w] = lab[t:t + h, l:l + w] == k
            lst.append(Component(c, (slice(pr0, pr1), slice(pc0, pc1)), mask, int(sizes[k])))
        comps[c] = lst
    return ClassComponents((H, W), semantic, counts, comps, pad, min_size)


@dataclass
class Instance:
    """A candidate instance of step 3: class, box (image slices), box-sized bool mask, area."""

    cls: int
    box: tuple[slice, slice]
    mask: np.ndarray
    area: int


def candidate_instances(
    cc: ClassComponents,
    min_area: int = MIN_AREA,
    dilation_iters: int = DILATION_ITERS,
) -> list[Instance]:
    """Step 3 for one ``A_min`` and dilation: the instances in creation order (class, then size).

    ``min_area`` must be >= ``cc.min_size`` and ``dilation_iters`` <= ``cc.pad``.
    """
    if min_area < cc.min_size:
        raise ValueError(f"min_area {min_area} < components' min_size {cc.min_size}")
    if dilation_iters > cc.pad:
        raise ValueError(f"dilation_iters {dilation_iters} > components' pad {cc.pad}")
    assigned = np.zeros(cc.shape, bool)
    out: list[Instance] = []
    for c in sorted(cc.components):
        if cc.class_area[c] < min_area:
            continue
        for comp in cc.components[c]:
            if comp.area < min_area:
                break  # sorted largest first
            box = comp.box
            if dilation_iters > 0:
                reach = comp._reach.get(dilation_iters)
                if reach is None:
                    reach = comp.reach(cc.semantic[box] == c, dilation_iters)
                final = comp.mask | (reach & ~assigned[box])
            else:
                final = comp.mask
            area = int(np.count_nonzero(final))
            if area < min_area:
                continue
            assigned[box] |= final
            out.append(Instance(c, box, final, area))
    return out


# --------------------------------------------------------------------------- step 4
def place_instances(
    instances: Sequence[Instance],
    shape: tuple[int, int],
    min_new_pixels: int = MIN_NEW_PIXELS,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Step 4: (H, W) int32 map (0 none, 1..N in placement order) and the class of each id.

    Largest first (stable on creation order); each takes only untaken pixels and is
    skipped if fewer than ``min_new_pixels`` are new. ``out``: an all-zero (H, W) int32
    array to fill (a reused buffer) instead of a new one.
    """
    if out is None:
        out = np.zeros(shape, np.int32)
    elif out.shape != tuple(shape) or out.dtype != np.int32:
        raise ValueError(f"out must be int32 {tuple(shape)}, got {out.dtype} {out.shape}")
    classes: list[int] = []
    order = sorted(range(len(instances)), key=lambda i: -instances[i].area)
    for i in order:
        inst = instances[i]
        view = out[inst.box]
        new = inst.mask & (view == 0)
        if np.count_nonzero(new) < min_new_pixels:
            continue
        classes.append(inst.cls)
        view[new] = len(classes)
    return out, classes


# --------------------------------------------------------------------------- all steps
def _thing_list(thing_classes) -> list[int]:
    if thing_classes is None:
        return list(THING_TRAIN_IDS)
    return sorted({int(c) for c in thing_classes})


def split_instances_by_depth_edges(
    semantic: np.ndarray,
    depth: np.ndarray | None,
    grad_threshold: float = GRAD_THRESHOLD,
    min_area: int = MIN_AREA,
    sigma: float = DEPTH_BLUR_SIGMA,
    dilation_iters: int = DILATION_ITERS,
    connectivity: int = CONNECTIVITY,
    normalize: str = "none",
    thing_classes: Iterable[int] = THING_TRAIN_IDS,
    gradient: np.ndarray | None = None,
    min_new_pixels: int = MIN_NEW_PIXELS,
) -> np.ndarray:
    """Depth-guided instances: (H, W) int32, 0 none, 1..N (placement order, largest first).

    ``semantic`` (H, W) integer class map, ``depth`` (H, W) float (same size; resize first,
    see :func:`resize_semantic` / :func:`resize_depth_bilinear`). ``gradient`` (H, W) float
    may be given instead of ``depth`` (then ``sigma`` / ``normalize`` are not used); pass the
    float64 one from :func:`depth_gradient_magnitude` for bit-exact thresholds.
    Constant depth -> no edges (plain connected components). NaN depth -> error.
    """
    semantic = np.asarray(semantic)
    if semantic.ndim != 2:
        raise ValueError(f"semantic must be (H, W), got {semantic.shape}")
    if gradient is None:
        if depth is None:
            raise ValueError("give depth or gradient")
        if depth.shape != semantic.shape:
            raise PseudoLabelsError(
                f"depth {depth.shape} and semantic {semantic.shape} differ in size (resize first)"
            )
        edges = depth_edges(normalize_depth_map(depth, normalize), semantic, grad_threshold, sigma,
                            _thing_list(thing_classes))
    elif gradient.shape != semantic.shape:
        raise PseudoLabelsError(f"gradient {gradient.shape} and semantic {semantic.shape} differ in size")
    else:
        edges = gradient > grad_threshold
    if dilation_iters < 0:
        raise PseudoLabelsError(f"dilation_iters must be >= 0, got {dilation_iters}")
    cc = thing_components(semantic, edges, _thing_list(thing_classes), min_area, connectivity, dilation_iters)
    inst = candidate_instances(cc, min_area, dilation_iters)
    out, _ = place_instances(inst, semantic.shape, min_new_pixels)
    return out


def connected_component_instances(
    semantic: np.ndarray,
    thing_classes: Iterable[int] = THING_TRAIN_IDS,
    min_area: int = MIN_NEW_PIXELS,
    connectivity: int = CONNECTIVITY,
) -> np.ndarray:
    """Baseline without depth: one instance per connected component (>= ``min_area``) of each
    thing class; (H, W) int32, 0 none, 1..N largest first. The reference's "CC-only" mode
    uses ``min_area=10``."""
    H, W = semantic.shape
    edges = np.zeros((H, W), bool)
    cc = thing_components(semantic, edges, _thing_list(thing_classes), min_area, connectivity, 0)
    inst = candidate_instances(cc, min_area, 0)
    out, _ = place_instances(inst, (H, W), 0)
    return out


def check_semantic_ids(semantic: np.ndarray, num_classes: int = NUM_CLASSES, ignore: int = IGNORE) -> list[int]:
    """Class ids of ``semantic`` that are neither 0..num_classes-1 nor ``ignore`` (sorted)."""
    if semantic.dtype == np.uint8 and semantic.ndim == 2 and 0 < semantic.size < (1 << 24):  # exact counts
        hist = cv2.calcHist([np.ascontiguousarray(semantic)], [0], None, [256], [0, 256]).ravel()
        vals = np.flatnonzero(hist)
    elif semantic.dtype in (np.uint8, np.uint16):
        vals = np.flatnonzero(np.bincount(semantic.ravel(), minlength=1))
    else:
        vals = np.unique(semantic)
    return [int(v) for v in vals if not (0 <= v < num_classes or v == ignore)]
