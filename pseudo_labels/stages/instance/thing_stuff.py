"""Label-free thing/stuff decision for pseudo-classes (``--thing-classes auto``).

Uses only the semantic (pseudo-)class maps and depth, no labels. Per image, the class
mask minus the depth edges (``|Sobel(gaussian(D))| > tau``, as the splitting uses) is cut
into connected components (4-connectivity); components of at least ``min_frac`` of the
image count. Per class, over all images where it occurs:

* ``area_frac``: median fraction of the image the class covers (road, building, sky,
  vegetation cover a lot; a thing class is a set of separate, smaller objects);
* ``bottom``: pixel-weighted median, over its components, of the component's lowest row
  (fraction of the image height, 0 = top). Things stand on the ground, in front of the
  camera: their lowest rows lie below the horizon, which a forward-looking street camera
  sees near the middle of the image. Elevated things of the street (signs and lights on
  poles, tree crowns, facades above the ground objects, sky) end higher up;
* ``elongation``: pixel-weighted median of the component bounding box height / width
  (thin vertical structures such as poles are far taller than wide; people are about 3x);
* ``depth_spread``: median over components of the 5-95 %% depth range inside the
  component, relative to its median depth (above the image's 1st percentile, + 2 %% of the
  image's depth range): a thing is a compact object at one distance, while ground, walls,
  fences and facades recede from near to far. The typical (unweighted) component;
* ``depth_spread_pixels``: the same, pixel-weighted: a class most of whose pixels lie in
  components spanning a large depth range (a road that also shows up as small fragments)
  is stuff even when its many small fragments look compact;
* ``n_components`` (mean per image) and ``fill`` (pixel-weighted median component area /
  box area): reported, not used by the rule.

Rule (:data:`RULE`, tunable): a class is a *thing* when it is not dominant
(``area_frac <= max_area_frac``), rests low in the image (``bottom >= min_bottom``), is not
a thin vertical structure (``elongation <= max_elongation``) and is compact in depth
(``depth_spread <= max_depth_spread`` and ``depth_spread_pixels <=
max_depth_spread_pixels``). Classes seen in fewer than ``min_images`` images, or without a
component, are stuff.

How it was set and what it gets: ``benchmarks/bench_thing_stuff.py`` (synthetic city,
ground-truth classes and label-free k-means clusters of the built-in backbone;
results in ``benchmarks/results/bench_thing_stuff.json``). The thresholds sit between the
values of things and stuff there; ``min_bottom`` assumes a roughly level, forward-looking
camera (Cityscapes, KITTI-like), and real depth (objects with depth extent) may need a
larger ``max_depth_spread``: pass ``rule`` to override.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from pseudo_labels.core.defaults import DEPTH_BLUR_SIGMA, GRAD_THRESHOLD
from pseudo_labels.datasets import cityscapes
from pseudo_labels.datasets.base import LabelTable
from pseudo_labels.stages.instance.maps import class_masks, depth_gradient_magnitude

#: decision thresholds (see module docstring)
RULE = dict(max_area_frac=0.15, min_bottom=0.47, max_elongation=6.0, max_depth_spread=0.05,
            max_depth_spread_pixels=1.0, min_images=1, min_frac=2e-4)



def _weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """Smallest value with at least half of the total weight at or below it."""
    v = np.asarray(values, np.float64)
    w = np.asarray(weights, np.float64)
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cw, 0.5 * cw[-1])])


def image_components(sem: np.ndarray, depth: np.ndarray, edges: np.ndarray, classes: Iterable[int],
                     min_pixels: int) -> dict[int, np.ndarray]:
    """Per class: (n, 5) float array of its components (area px, bottom, height/width, spread, fill).

    Components of ``(sem == c) & ~edges`` (4-connectivity) with >= ``min_pixels`` pixels;
    ``bottom`` is the lowest row + 1 as a fraction of the height; ``spread`` as in the
    module docstring.
    """
    H, W = sem.shape
    lo, hi = np.percentile(depth, [1, 99])
    rng = max(float(hi - lo), 1e-12)
    masks = class_masks(sem, classes)
    out = {}
    for c, box in masks.boxes.items():
        free = masks.masks[c] & ~edges[box]
        n, lab, st, _ = cv2.connectedComponentsWithStats(free.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        keep = np.flatnonzero(st[1:, cv2.CC_STAT_AREA] >= min_pixels) + 1
        rows = []
        r0, c0 = box[0].start, box[1].start
        for k in keep.tolist():
            x, y, w, h, a = (int(v) for v in st[k])
            vals = depth[r0 + y:r0 + y + h, c0 + x:c0 + x + w][lab[y:y + h, x:x + w] == k]
            p5, p50, p95 = np.percentile(vals, [5, 50, 95])
            spread = (p95 - p5) / max(p50 - lo + 0.02 * rng, 1e-12)
            rows.append((a, (r0 + y + h) / H, h / w, spread, a / (w * h)))
        out[c] = np.array(rows, np.float64).reshape(-1, 5)
    return out


def class_statistics(
    semantic_maps: Iterable[np.ndarray],
    depth_maps: Iterable[np.ndarray],
    ignore: Sequence[int] | None = None,
    grad_threshold: float = GRAD_THRESHOLD,
    sigma: float = DEPTH_BLUR_SIGMA,
    min_frac: float = RULE["min_frac"],
    labels: LabelTable = cityscapes.LABELS,
) -> dict[int, dict]:
    """Per class id: the statistics of the module docstring (and ``n_images``).

    ``semantic_maps``: (H, W) integer class maps (any ids: pseudo-classes may exceed the
    table's classes); ``depth_maps``: (H, W) float, same size, any unit (spreads are
    relative, positions are fractions of the image). ``ignore``: ids left out (default:
    the label table's void id and 65535).
    """
    if ignore is None:
        ignore = (labels.void, 65535)
    areas: dict[int, list] = {}
    comps: dict[int, list] = {}
    for sem, depth in zip(semantic_maps, depth_maps):
        sem = np.asarray(sem)
        d = np.asarray(depth, np.float64)
        if sem.shape != d.shape:
            raise ValueError(f"semantic {sem.shape} and depth {d.shape} differ in size")
        edges = depth_gradient_magnitude(d, sigma, dtype=np.float64) > grad_threshold
        n_pix = sem.size
        ids, counts = np.unique(sem, return_counts=True)
        present = [int(c) for c in ids.tolist() if int(c) not in ignore]
        for c, cnt in zip(ids.tolist(), counts.tolist()):
            if int(c) not in ignore:
                areas.setdefault(int(c), []).append(cnt / n_pix)
        per_class = image_components(sem, d, edges, present, max(int(np.ceil(min_frac * n_pix)), 4))
        for c in present:
            comps.setdefault(c, []).append(per_class.get(c, np.zeros((0, 5))))
    out = {}
    for c in sorted(areas):
        cs = [a for a in comps[c] if len(a)]
        s = {"n_images": len(areas[c]), "area_frac": float(np.median(areas[c])),
             "n_components": float(np.mean([len(a) for a in comps[c]]))}
        if cs:
            a = np.concatenate(cs)
            w = a[:, 0]
            s.update(bottom=_weighted_median(a[:, 1], w), elongation=_weighted_median(a[:, 2], w),
                     depth_spread=float(np.median(a[:, 3])), depth_spread_pixels=_weighted_median(a[:, 3], w),
                     fill=_weighted_median(a[:, 4], w))
        else:
            s.update(bottom=0.0, elongation=0.0, depth_spread=1.0, depth_spread_pixels=1e9, fill=0.0)
        out[c] = s
    return out


def is_thing(stats: dict, rule: dict = RULE) -> bool:
    """The decision rule of the module docstring on one class's statistics."""
    rule = {**RULE, **rule}
    return bool(stats["n_images"] >= rule["min_images"]
                and stats["n_components"] > 0
                and stats["area_frac"] <= rule["max_area_frac"]
                and stats["bottom"] >= rule["min_bottom"]
                and stats["elongation"] <= rule["max_elongation"]
                and stats["depth_spread"] <= rule["max_depth_spread"]
                and stats["depth_spread_pixels"] <= rule["max_depth_spread_pixels"])


def decide_thing_classes(
    semantic_maps: Iterable[np.ndarray],
    depth_maps: Iterable[np.ndarray],
    rule: dict | None = None,
    **kwargs,
) -> set[int]:
    """Set of class ids judged to be things from unsupervised statistics (no labels)."""
    rule = {**RULE, **(rule or {})}
    stats = class_statistics(semantic_maps, depth_maps, min_frac=rule["min_frac"], **kwargs)
    return {c for c, s in stats.items() if is_thing(s, rule)}


def agreement(decided: Iterable[int], true_things: Iterable[int], classes: Iterable[int]) -> float:
    """Fraction of ``classes`` whose thing/stuff decision agrees with ``true_things``."""
    decided, true_things, classes = set(decided), set(true_things), list(classes)
    if not classes:
        return 1.0
    return sum((c in decided) == (c in true_things) for c in classes) / len(classes)


def decide_thing_classes_from_files(sem_paths, depth_paths, resolution: tuple[int, int] | None,
                                    grad_threshold: float = GRAD_THRESHOLD, sigma: float = DEPTH_BLUR_SIGMA,
                                    normalize: str = "none", rule: dict | None = None,
                                    labels: LabelTable = cityscapes.LABELS) -> dict:
    """File edge of :func:`decide_thing_classes`: maps read and resized to ``resolution`` (None: half
    of each semantic map's size, :func:`pseudo_labels.core.defaults.work_resolution`).

    Returns ``{"thing_classes", "statistics", "rule"}`` (for the manifest).
    """
    from pseudo_labels.stages.instance.depth import read_depth_npy
    from pseudo_labels.stages.instance.maps import normalize_depth_map, resize_depth_bilinear, resize_semantic
    from pseudo_labels.core.io import read_png

    from pseudo_labels.core.defaults import work_resolution

    rule = {**RULE, **(rule or {})}
    sizes: list[tuple[int, int]] = []  # each image's working size, set when its semantic map is read

    def sems():
        for p in sem_paths:
            sem = read_png(p)
            sizes.append(work_resolution(sem.shape, resolution))
            yield resize_semantic(sem, sizes[-1])

    def depths():
        for i, p in enumerate(depth_paths):
            size = sizes[i] if i < len(sizes) else work_resolution(read_png(sem_paths[i]).shape, resolution)
            yield normalize_depth_map(resize_depth_bilinear(read_depth_npy(p), size), normalize)

    stats = class_statistics(sems(), depths(), grad_threshold=grad_threshold, sigma=sigma, min_frac=rule["min_frac"],
                             labels=labels)
    things = sorted(c for c, s in stats.items() if is_thing(s, rule))
    return {"thing_classes": things, "statistics": {str(c): s for c, s in stats.items()}, "rule": rule}
