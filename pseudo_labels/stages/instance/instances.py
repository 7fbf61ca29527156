"""Depth-guided instance splitting of thing classes (DESIGN.md, "The depth-guided splitting").

Pure functions on numpy arrays. Conventions:

* ``semantic``: (H, W) uint8/uint16 class map: ids 0..C-1 of a label table (Cityscapes:
  trainIds 0..18, 255 void; default thing ids = the table's) or pseudo-class ids with
  ``thing_classes`` given explicitly.
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
-> :func:`place_instances`. :func:`split_instances_by_depth_edges` chains them. The map
primitives (resizes, gradient, class masks) live in :mod:`pseudo_labels.stages.instance.maps`.
:func:`generate_instances` is the folder-level stage (``generate-depth-guided-instances``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from scipy import ndimage

from pseudo_labels.datasets import cityscapes
from pseudo_labels.datasets.base import LabelTable
from pseudo_labels.core import defaults
from pseudo_labels.core.defaults import (
    CC_MIN_AREA,
    CONNECTIVITY,
    DEPTH_BLUR_SIGMA,
    DILATION_ITERS,
    GRAD_THRESHOLD,
    MIN_AREA,
    MIN_NEW_PIXELS,
    WORK_RESOLUTION,
)
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.runner import RunOptions, RunSummary, run_per_image
from pseudo_labels.stages.instance.maps import (  # noqa: F401  (part of this stage's interface)
    ClassMasks,
    class_boxes,
    class_masks,
    depth_gradient_magnitude,
    gradient_margin,
    normalize_depth_map,
    resize_depth_bilinear,
    resize_semantic,
)
from pseudo_labels.core.defaults import DEPTH_MODES
from pseudo_labels.core.validate import COUNT, Range, check_not_upscaled, validate_config

#: thing ids of the default label table (Cityscapes trainIds 11..18)
DEFAULT_THING_IDS: tuple[int, ...] = cityscapes.LABELS.thing_ids

_CROSS_U8 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


# --------------------------------------------------------------------------- step 1 (edges)
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
                thing_classes: Iterable[int] = DEFAULT_THING_IDS) -> np.ndarray:
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


def thing_components(
    semantic: np.ndarray,
    edges: np.ndarray,
    thing_classes: Sequence[int] = DEFAULT_THING_IDS,
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
        return list(DEFAULT_THING_IDS)
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
    thing_classes: Iterable[int] = DEFAULT_THING_IDS,
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
    thing_classes: Iterable[int] = DEFAULT_THING_IDS,
    min_area: int = CC_MIN_AREA,
    connectivity: int = CONNECTIVITY,
) -> np.ndarray:
    """Components only (``depth = "none"``; the sweep's CC-only row): one instance per connected
    component (>= ``min_area`` pixels, classes below ``min_area`` skipped) of each thing class;
    (H, W) int32, 0 none, 1..N largest first (stable: class, then label order). Equals the
    reference's ``cc_only_instances`` (min_area 10, scipy 4-connectivity) + its placement."""
    H, W = semantic.shape
    edges = np.zeros((H, W), bool)
    cc = thing_components(semantic, edges, _thing_list(thing_classes), min_area, connectivity, 0)
    inst = candidate_instances(cc, min_area, 0)
    out, _ = place_instances(inst, (H, W), 0)
    return out


def check_semantic_ids(semantic: np.ndarray, num_classes: int | None = None, ignore: int | None = None,
                       labels: LabelTable = cityscapes.LABELS) -> list[int]:
    """Class ids of ``semantic`` that are neither 0..num_classes-1 nor ``ignore`` (sorted).

    ``num_classes`` / ``ignore`` default to the label table's class count and void id.
    """
    num_classes = labels.num_classes if num_classes is None else num_classes
    ignore = labels.void if ignore is None else ignore
    if semantic.dtype == np.uint8 and semantic.ndim == 2 and 0 < semantic.size < (1 << 24):  # exact counts
        hist = cv2.calcHist([np.ascontiguousarray(semantic)], [0], None, [256], [0, 256]).ravel()
        vals = np.flatnonzero(hist)
    elif semantic.dtype in (np.uint8, np.uint16):
        vals = np.flatnonzero(np.bincount(semantic.ravel(), minlength=1))
    else:
        vals = np.unique(semantic)
    return [int(v) for v in vals if not (0 <= v < num_classes or v == ignore)]


def expected_ids_text(labels: LabelTable) -> str:
    """How error messages name the valid ids of a label table (Cityscapes: ``trainIds 0..18 or 255``)."""
    kind = "trainIds" if labels.name == "cityscapes" else f"{labels.name} class ids"
    return f"{kind} 0..{labels.num_classes - 1} or {labels.void}"


# --------------------------------------------------------------------------- folder level (generate-depth-guided-instances)
STAGE = "generate-depth-guided-instances"
INSTANCE_SUFFIX = "_instance.png"


@dataclass(frozen=True)
class InstanceConfig:
    """What ``generate-depth-guided-instances`` computes.

    ``semantic_dir``: class-id PNGs (ids of the ``dataset``'s label table, void 255) and
    ``depth_dir``: float ``.npy`` maps (any size), both searched recursively and paired by
    Cityscapes stem. Instance PNGs (uint16, 0 none, 1..N, at ``resolution`` = (H, W))
    go to ``output_dir`` under the semantic file's relative folder. ``thing_classes``:
    ``"dataset"`` (the table's thing ids, ids checked against the table), ``"cityscapes"``
    (Cityscapes trainIds 11..18, checked), ``"auto"`` (label-free decision from depth
    statistics, :mod:`pseudo_labels.stages.instance.thing_stuff`; with ``thing_rule="reference"`` the
    reference's depth-split rule, :mod:`pseudo_labels.stages.instance.thing_stuff_reference`, on the maps
    as stored) or an explicit id list / ``"11,13"``.
    ``min_area`` in pixels at ``resolution`` (None: the mode's default, :func:`instance_min_area`);
    ``grad_threshold`` in depth units per pixel (x8). ``depth``: ``"edges"`` (split at depth edges)
    or ``"none"`` (connected components alone, :func:`connected_component_instances`: the
    reference's k=300 CC-only row; ``depth_dir`` may be None and ``grad_threshold``, ``sigma``,
    ``dilation_iters``, ``normalize`` are not used).
    ``resolution`` None: half of each semantic map's size (:func:`defaults.work_resolution`; the
    reference's 512x1024 for Cityscapes); ``min_area`` None with depth edges: the reference's 1000 at
    512x1024 scaled to each image's working resolution (:func:`defaults.scaled_min_area`); explicit
    values are used as given.
    """

    semantic_dir: str
    depth_dir: str | None
    output_dir: str
    grad_threshold: float = GRAD_THRESHOLD
    min_area: int | None = None
    sigma: float = DEPTH_BLUR_SIGMA
    dilation_iters: int = DILATION_ITERS
    connectivity: int = CONNECTIVITY
    normalize: str = "none"
    resolution: tuple[int, int] | None = WORK_RESOLUTION
    thing_classes: str | Sequence[int] = "dataset"
    skip_missing: bool = False
    dataset: str = "cityscapes"
    thing_rule: str = defaults.THING_RULE
    depth: str = "edges"

    RANGES = {"min_area": COUNT, "depth": Range(choices=DEPTH_MODES)}  # beside the shared rules

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def _resizes(to) -> dict:
    """What the stage resizes, for its manifest."""
    return {"semantic": f"nearest to {to} (never up from a map smaller than its depth)",
            "depth": f"bilinear to {to} (any size)"}


def instance_min_area(config: InstanceConfig) -> int | None:
    """``config.min_area``, or the mode's default: None with depth edges (the reference's A_min of 1000
    at 512x1024, scaled to each image's working resolution: :func:`defaults.scaled_min_area`), 10
    for components only (the reference's CC-only ``min_area``)."""
    if config.min_area is not None:
        return int(config.min_area)
    return CC_MIN_AREA if config.depth == "none" else None


@dataclass
class InstanceRun(RunSummary):
    """The runner's summary plus what the stage found: instances written, images without depth."""

    instances: int = 0
    missing_depth: int = 0
    thing_classes: list = field(default_factory=list)

    def line(self) -> str:
        msg = f"{super().line()}; {self.instances} instances"
        if self.missing_depth:
            msg += f"; {self.missing_depth} image(s) without depth skipped"
        return msg


@dataclass(frozen=True)
class InstanceJob:
    stem: str
    semantic_path: str
    depth_path: str | None  # None: components only
    out_path: str


def resolve_thing_classes(spec: str | Sequence[int], labels: LabelTable) -> tuple[list[int] | str, LabelTable | None]:
    """(thing ids or ``"auto"``, table to check semantic ids against or None) of a ``thing_classes`` spec.

    ``"dataset"`` / the table's name -> the table's thing ids (checked); ``"cityscapes"`` ->
    Cityscapes trainIds 11..18 (checked against Cityscapes); ``"auto"``; ``"11,13"`` or a
    sequence of ints -> those ids (not checked: pseudo-class maps may use any id).
    """
    if not isinstance(spec, str):
        ids = sorted({int(c) for c in spec})
        text = ",".join(map(str, ids))
    else:
        t = spec.strip().lower()
        if t in ("dataset", labels.name):
            return list(labels.thing_ids), labels
        if t == "cityscapes":
            return list(cityscapes.LABELS.thing_ids), cityscapes.LABELS
        if t == "auto":
            return "auto", None
        text = spec
        try:
            ids = sorted({int(x) for x in t.replace(" ", "").split(",") if x})
        except ValueError:
            raise PseudoLabelsError(f"--thing-classes {spec!r}: expected auto, dataset, cityscapes or a list "
                                    "like 11,12,13") from None
    if not ids or min(ids) < 0:
        raise PseudoLabelsError(f"--thing-classes {text!r}: expected non-negative class ids")
    return ids, None


def load_pair(sem_path, depth_path, resolution, check_labels: LabelTable | None, normalize: str = "none",
              lut: np.ndarray | None = None):
    """Read one (semantic, depth) pair and resize both to ``resolution`` (None: half of the semantic
    map's size, :func:`defaults.work_resolution`); errors name the file.

    ``check_labels``: a table whose ids the semantic map must use (None: any ids); ``lut``: raw cluster
    id -> class id (the semantic map holds raw clusters).
    Returns (semantic (H, W) as stored, depth (H, W) float64 normalised as asked, or None
    when ``depth_path`` is None).
    """
    from pseudo_labels.core.io import read_npy, read_png

    sem = read_png(sem_path)
    if sem.ndim != 2:
        raise InputFileError(sem_path, f"expected a single-channel class map, got shape {sem.shape}")
    if lut is not None:
        if int(sem.max()) >= len(lut):
            raise InputFileError(sem_path, f"cluster id {int(sem.max())} >= number of clusters {len(lut) - 1}")
        sem = lut[sem]
    if check_labels is not None:
        bad = check_semantic_ids(sem, labels=check_labels)
        if bad:
            raise InputFileError(sem_path, f"unknown class ids {bad[:10]} (expected {expected_ids_text(check_labels)})",
                                 "map pseudo-classes to class ids first, or pass --thing-classes auto|LIST")
    resolution = defaults.work_resolution(sem.shape, resolution)
    if depth_path is None:
        return resize_semantic(sem, resolution), None
    depth = np.squeeze(read_npy(depth_path))
    if depth.ndim != 2:
        raise InputFileError(depth_path, f"expected a 2-D depth map, got shape {depth.shape}")
    if not np.isfinite(depth).all():
        raise InputFileError(depth_path, "depth has NaN/infinite values", "fill invalid pixels when writing depth")
    check_not_upscaled(sem_path, sem.shape, depth.shape, "semantic map", f"depth map {depth_path}", both=True)
    sem = resize_semantic(sem, resolution)
    depth = resize_depth_bilinear(depth.astype(np.float32), resolution)
    return sem, normalize_depth_map(depth, normalize)


def instance_stats(sem: np.ndarray, inst: np.ndarray) -> dict:
    """``{"n": instances, "per_class": {class id: instances}}`` of one instance map."""
    n = int(inst.max())
    per_class: dict[int, int] = {}
    if n:
        first = np.zeros(n + 1, np.int64)
        first[inst.ravel()] = sem.ravel()  # any pixel: an instance lies in one class
        for c in first[1:]:
            per_class[int(c)] = per_class.get(int(c), 0) + 1
    return {"n": n, "per_class": per_class}


def process_instance_job(job: InstanceJob, params: dict, thing_classes: list[int],
                         check_labels: LabelTable | None, lut: np.ndarray | None = None) -> dict:
    """Split and write one image (uint16 PNG, atomic); returns its :func:`instance_stats`."""
    from pseudo_labels.core.io import write_png

    sem, depth = load_pair(job.semantic_path, job.depth_path, params["resolution"], check_labels,
                           params.get("normalize", "none"), lut)
    min_area = params["min_area"] if params["min_area"] is not None else defaults.scaled_min_area(sem.shape)
    if params.get("depth") == "none":
        inst = connected_component_instances(sem, thing_classes, min_area, params["connectivity"])
    else:
        inst = split_instances_by_depth_edges(
            sem, depth,
            grad_threshold=params["grad_threshold"], min_area=min_area, sigma=params["sigma"],
            dilation_iters=params["dilation_iters"], connectivity=params["connectivity"],
            thing_classes=thing_classes,
        )
    if inst.max() > 65535:
        raise PseudoLabelsError(f"{job.stem}: more than 65535 instances")
    write_png(job.out_path, inst.astype(np.uint16))
    return instance_stats(sem, inst)


def _instance_job_done(job: InstanceJob) -> bool:
    from pseudo_labels.core.io import is_up_to_date

    return is_up_to_date(job.out_path, job.semantic_path, *([job.depth_path] if job.depth_path else []))


def _stats_of_finished(job: InstanceJob, params: dict, lut: np.ndarray | None = None) -> dict:
    """Statistics of an instance PNG written by an earlier (resumed) run."""
    from pseudo_labels.core.io import read_png

    sem, _ = load_pair(job.semantic_path, None, params["resolution"], None, "none", lut)
    return instance_stats(sem, read_png(job.out_path).astype(np.int64))


def _pair_inputs(cfg: InstanceConfig, options: RunOptions, auto: bool):
    """(semantic index, depth index, this shard's stems, stems with depth, stems without depth)."""
    sems = cityscapes.index_by_stem(cfg.semantic_dir, ".png")
    if not sems:
        raise PseudoLabelsError(f"{cfg.semantic_dir}: no semantic PNGs with a Cityscapes stem (<city>_<seq>_<frame>...)")
    if cfg.depth == "none":
        if auto:
            raise PseudoLabelsError("--thing-classes auto decides from depth statistics: it needs depth maps "
                                    "(not --depth none)")
        return sems, {}, set(options.select(sorted(sems))), sorted(sems), []
    if not cfg.depth_dir:
        raise PseudoLabelsError("--depth-dir is required to split at depth edges (or pass --depth none: "
                                "connected components only)")
    depths = cityscapes.index_by_stem(cfg.depth_dir, ".npy")
    mine = set(options.select(sorted(sems)))  # --shard: this shard's images (by sorted stem)
    # 'auto' decides thing classes from every image, so it needs all depth maps even in a shard
    missing = [s for s in sems if s not in depths and (auto or s in mine)]
    if missing and not cfg.skip_missing:
        raise PseudoLabelsError(
            f"{cfg.depth_dir}: no depth map for {len(missing)} image(s), e.g. {missing[0]} "
            f"(expected {missing[0]}*.npy; pass --skip-missing to skip them)"
        )
    if cfg.grad_threshold < 0 or cfg.dilation_iters < 0 or cfg.sigma < 0:
        raise PseudoLabelsError("--grad-threshold and --sigma must be >= 0, --min-area >= 1, --dilation-iters >= 0")
    return sems, depths, mine, [s for s in sems if s in depths], missing


def _instance_parameters(cfg: InstanceConfig, things: list[int]) -> dict:
    """The manifest's ``parameters`` (``dataset`` only when it is not Cityscapes: older manifests stay valid;
    components only: ``depth = "none"`` and only the parameters it uses)."""
    if cfg.depth == "none":
        params = {"depth": "none", "min_area": instance_min_area(cfg), "connectivity": cfg.connectivity,
                  "resolution": list(cfg.resolution) if cfg.resolution else None, "thing_classes": things}
        if cfg.dataset != "cityscapes":
            params["dataset"] = cfg.dataset
        return params
    params = {
        "grad_threshold": cfg.grad_threshold, "min_area": instance_min_area(cfg), "sigma": cfg.sigma,
        "dilation_iters": cfg.dilation_iters, "connectivity": cfg.connectivity,
        "normalize": cfg.normalize, "resolution": list(cfg.resolution) if cfg.resolution else None,
        "thing_classes": things, "min_new_pixels": MIN_NEW_PIXELS,
    }
    if cfg.resolution is None or cfg.min_area is None:  # what None means, for the manifest's reader
        params["defaults"] = {"resolution": "half of each image", "min_area": f"{MIN_AREA} px at 512x1024, scaled "
                              "by the pixel count to each image's working resolution"}
    if cfg.dataset != "cityscapes":
        params["dataset"] = cfg.dataset
    return params


def _write_instance_stats(cfg: InstanceConfig, labels: LabelTable, done: list[dict], things: list[int],
                          params: dict, skipped: int, missing: int) -> int:
    """``stats.json`` (the reference's statistics); returns the number of instances."""
    from pseudo_labels.core.io import write_json

    counts = [r["n"] for r in done]
    per_class: dict[int, int] = {c: 0 for c in things}
    for r in done:
        for c, n in r["per_class"].items():
            per_class[c] = per_class.get(c, 0) + n

    def name(c: int) -> str:
        return labels.names[c] if 0 <= c < labels.num_classes else f"class_{c}"

    write_json(Path(cfg.output_dir) / "stats.json", {
        "total_images": len(done),
        "total_instances": int(sum(counts)),
        "avg_instances_per_image": round(sum(counts) / max(len(done), 1), 2),
        "max_instances_per_image": max(counts) if counts else 0,
        "min_instances_per_image": min(counts) if counts else 0,
        "per_class_counts": {name(c): n for c, n in sorted(per_class.items())},
        "config": params,
        "skipped_existing": skipped,
        "missing_depth": missing,
    })
    return int(sum(counts))


def generate_instances(config: InstanceConfig, options: RunOptions | None = None) -> InstanceRun:
    """Split the thing classes of every semantic map into instances (folder level, resumable).

    Writes ``<output_dir>/<relative folder>/<semantic name>_instance.png``, ``stats.json`` and
    ``manifest.json``. Returns an :class:`InstanceRun`; raises :class:`PseudoLabelsError` when
    an image failed or inputs are missing (without ``skip_missing``).
    """
    import sys

    from pseudo_labels.core.io import prepare_output_dir, write_manifest
    from pseudo_labels.datasets import label_table

    cfg, options = config, options or RunOptions()
    labels = label_table(cfg.dataset)
    things, check_labels = resolve_thing_classes(cfg.thing_classes, labels)
    sems, depths, mine, stems, missing = _pair_inputs(cfg, options, things == "auto")
    thing_decision = None
    if cfg.thing_rule not in defaults.THING_RULES:
        raise PseudoLabelsError(f"--rule {cfg.thing_rule!r}: choose ours or reference")
    if things == "auto" and cfg.thing_rule == "reference":
        from pseudo_labels.stages.instance.thing_stuff_reference import decide_thing_classes_reference_from_files

        thing_decision = decide_thing_classes_reference_from_files([sems[s] for s in stems],
                                                                   [depths[s] for s in stems])
        things = sorted(thing_decision["thing_classes"])
        print(f"thing classes (auto, reference rule): {things}", file=sys.stderr)
    elif things == "auto":
        from pseudo_labels.stages.instance.thing_stuff import decide_thing_classes_from_files

        thing_decision = decide_thing_classes_from_files(
            [sems[s] for s in stems], [depths[s] for s in stems], cfg.resolution,
            grad_threshold=cfg.grad_threshold, sigma=cfg.sigma, normalize=cfg.normalize, labels=labels)
        things = sorted(thing_decision["thing_classes"])
        print(f"thing classes (auto): {things}", file=sys.stderr)
    params = _instance_parameters(cfg, things)
    lut = None
    if check_labels is not None:  # raw cluster ids beside a mapped kmeans_centroids.npz (the reference's layout)
        from pseudo_labels.stages.semantic.centroids import load_cluster_lut

        sem_dir = Path(cfg.semantic_dir)
        lut, _ = load_cluster_lut(sem_dir.parent, sem_dir.name, labels)
        if lut is not None:
            params["cluster_to_class"] = str(sem_dir.parent / "kmeans_centroids.npz")
            print(f"{sem_dir}: raw cluster ids, mapped to class ids with {params['cluster_to_class']} "
                  "(cluster_to_class)", file=sys.stderr)
    resume = prepare_output_dir(cfg.output_dir, STAGE, params, overwrite=options.overwrite)
    jobs = [InstanceJob(s, str(sems[s]), str(depths[s]) if s in depths else None,
                        str(Path(cfg.output_dir) / sems[s].relative_to(cfg.semantic_dir).parent
                            / (sems[s].name[: -len(".png")] + INSTANCE_SUFFIX)))
            for s in stems if s in mine]
    worker = functools.partial(process_instance_job, params=params, thing_classes=things, check_labels=check_labels,
                               lut=lut)
    summary = run_per_image(worker, jobs, options=options, desc="instances", name_of=lambda j: j.stem,
                            is_done=_instance_job_done if resume else None)
    summary.raise_if_failed()
    done = [r if r is not None else _stats_of_finished(j, params, lut) for r, j in zip(summary.results, jobs)]
    n_inst = _write_instance_stats(cfg, labels, done, things, params, summary.skipped, len(missing))
    write_manifest(
        cfg.output_dir, STAGE, params, uses_ground_truth=False,
        inputs={"semantic_dir": str(cfg.semantic_dir), "depth_dir": None if cfg.depth == "none" else str(cfg.depth_dir)},
        counts={"images": len(jobs), "done": summary.done, "skipped_existing": summary.skipped,
                "missing_depth": len(missing), "instances": n_inst},
        extra={"thing_classes_decision": thing_decision, **options.describe(),
               "resizes": _resizes(params.get("resolution") or "the working resolution")},  # issue 24
    )
    return InstanceRun(**vars(summary), instances=n_inst, missing_depth=len(missing), thing_classes=list(things))
