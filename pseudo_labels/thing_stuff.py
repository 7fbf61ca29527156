"""Label-free thing/stuff decision for pseudo-classes (``--thing-classes auto``).

Uses only the semantic (pseudo-)class maps and depth, no labels. Per class, over all
images where it occurs, with connected components (4-conn.) of the class mask after
removing depth edges (as the splitting does) and keeping components >= ``min_frac`` of
the image:

* ``area_frac``: median fraction of the image the class covers (stuff: road, building,
  sky, vegetation cover a lot; things are small);
* ``depth_spread``: median over components of the 5-95 %% depth range inside the
  component, relative to the image's depth range (a thing is a compact object at one
  distance; road, sidewalk, building facades run from near to far);
* ``n_components``: mean number of such components per image where the class occurs
  (things come as several separate objects);
* ``elongation``: median component bbox height / width (thin vertical poles are stuff);
* ``fill``: median component area / bbox area (compact blobs vs. sprawling regions).

Rule (documented, tunable): a class is a *thing* when it is small
(``area_frac <= max_area_frac``), lies at one depth (``depth_spread <= max_depth_spread``),
is not a thin vertical structure (``elongation <= max_elongation``) and is reasonably
compact (``fill >= min_fill``). Classes seen in fewer than ``min_images`` images are stuff.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from .defaults import DEPTH_BLUR_SIGMA, GRAD_THRESHOLD
from .instances import depth_gradient_magnitude

#: decision thresholds (see module docstring)
RULE = dict(max_area_frac=0.05, max_depth_spread=0.12, max_elongation=3.0, min_fill=0.35, min_images=1,
            min_frac=2e-4)


def class_statistics(
    semantic_maps: Iterable[np.ndarray],
    depth_maps: Iterable[np.ndarray],
    ignore: Sequence[int] = (255, 65535),
    grad_threshold: float = GRAD_THRESHOLD,
    sigma: float = DEPTH_BLUR_SIGMA,
    min_frac: float = RULE["min_frac"],
) -> dict[int, dict]:
    """Per class id: the statistics of the module docstring (and ``n_images``).

    ``semantic_maps``: (H, W) integer class maps; ``depth_maps``: (H, W) float, same size,
    any unit (spreads are relative to each image's depth range).
    """
    acc: dict[int, dict[str, list]] = {}
    for sem, depth in zip(semantic_maps, depth_maps):
        sem = np.asarray(sem)
        d = np.asarray(depth, np.float64)
        lo, hi = np.percentile(d, [1, 99])
        rng = max(hi - lo, 1e-12)
        edges = depth_gradient_magnitude(d, sigma, dtype=np.float64) > grad_threshold
        n_pix = sem.size
        ids, counts = np.unique(sem, return_counts=True)
        for c, cnt in zip(ids.tolist(), counts.tolist()):
            if c in ignore:
                continue
            a = acc.setdefault(c, {"area_frac": [], "spread": [], "ncomp": [], "elong": [], "fill": []})
            a["area_frac"].append(cnt / n_pix)
            lab, n = ndimage.label((sem == c) & ~edges)
            if n == 0:
                a["ncomp"].append(0)
                continue
            sizes = np.bincount(lab.ravel())
            keep = np.flatnonzero(sizes[1:] >= max(min_frac * n_pix, 4)) + 1
            a["ncomp"].append(len(keep))
            if not len(keep):
                continue
            objs = ndimage.find_objects(lab)
            for k in keep:
                rs, cs = objs[k - 1]
                m = lab[rs, cs] == k
                vals = d[rs, cs][m]
                p5, p50, p95 = np.percentile(vals, [5, 50, 95])
                a["spread"].append((p95 - p5) / max(p50 - lo + 0.02 * rng, 1e-12))
                h, w = rs.stop - rs.start, cs.stop - cs.start
                a["elong"].append(h / w)
                a["fill"].append(sizes[k] / (h * w))
    out = {}
    for c, a in sorted(acc.items()):
        out[c] = {
            "n_images": len(a["area_frac"]),
            "area_frac": float(np.median(a["area_frac"])),
            "depth_spread": float(np.median(a["spread"])) if a["spread"] else 1.0,
            "n_components": float(np.mean(a["ncomp"])) if a["ncomp"] else 0.0,
            "elongation": float(np.median(a["elong"])) if a["elong"] else 0.0,
            "fill": float(np.median(a["fill"])) if a["fill"] else 0.0,
        }
    return out


def is_thing(stats: dict, rule: dict = RULE) -> bool:
    """The decision rule of the module docstring on one class's statistics."""
    return (stats["n_images"] >= rule["min_images"]
            and stats["n_components"] > 0
            and stats["area_frac"] <= rule["max_area_frac"]
            and stats["depth_spread"] <= rule["max_depth_spread"]
            and stats["elongation"] <= rule["max_elongation"]
            and stats["fill"] >= rule["min_fill"])


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


def decide_thing_classes_from_files(sem_paths, depth_paths, resolution: tuple[int, int],
                                    grad_threshold: float = GRAD_THRESHOLD, sigma: float = DEPTH_BLUR_SIGMA,
                                    normalize: str = "none", rule: dict | None = None) -> dict:
    """File edge of :func:`decide_thing_classes`: maps read and resized to ``resolution``.

    Returns ``{"thing_classes", "statistics", "rule"}`` (for the manifest).
    """
    from .depth import read_depth_npy
    from .instances import normalize_depth_map, resize_depth_bilinear, resize_semantic
    from .io import read_png

    rule = {**RULE, **(rule or {})}

    def sems():
        for p in sem_paths:
            yield resize_semantic(read_png(p), resolution)

    def depths():
        for p in depth_paths:
            yield normalize_depth_map(resize_depth_bilinear(read_depth_npy(p), resolution), normalize)

    stats = class_statistics(sems(), depths(), grad_threshold=grad_threshold, sigma=sigma, min_frac=rule["min_frac"])
    things = sorted(c for c, s in stats.items() if is_thing(s, rule))
    return {"thing_classes": things, "statistics": {str(c): s for c, s in stats.items()}, "rule": rule}
