"""The reference repository's thing/stuff rule (qbit-glitch/monocular_ups, ``classify_stuff_things.py``).

Label-free: semantic (pseudo-)class maps + depth. Per image and class ``k`` present:

* depth edges ``|Sobel(gaussian(depth, sigma))| > grad_threshold`` (scipy, float64, on
  depth as stored; depth of another size is first resized to the semantic map, PIL bilinear);
* ``regions``: connected components of ``sem == k`` (4-connectivity), ``split``: those of
  the mask without the edge pixels;
* per region: its size / image area, its mean depth and depth variance (regions > 1 px);
  per image: the largest region / class pixels.

Per class: ``avg_region_count``, ``avg_split_count`` (means over images),
``depth_split_ratio = avg_split_count / max(avg_region_count, 1)``, ``avg_relative_size``
(mean over regions), ``depth_spread`` (std of region mean depths), ``intra_depth_var``,
``max_region_fraction``, ``pixel_count``.

Two stages: (1) "big stuff" = ``avg_relative_size > big_stuff_size_thresh`` and
``pixel_count / num_images > big_stuff_pix_thresh`` (forced stuff, score -500); (2) the
other classes with pixels ranked by ``depth_split_ratio`` (descending; ties by class id):
the first ``n_things`` are things. Classes without pixels are stuff (score 0).
``num_images`` counts every semantic PNG (also those whose depth is missing, which are
skipped), as the reference does. Output: the reference's ``stuff_things.json``
(``classification``, ``statistics``, ``stuff_ids``, ``thing_ids``) plus ``parameters`` and
``uses_ground_truth`` (false).

Per-region mean and variance are computed with one ``bincount`` per class instead of the
reference's per-region mask loop (same definitions; float sums may differ in the last bits).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.validate import validate_config

STAGE = "classify-stuff-things"
#: the reference's defaults
REFERENCE_DEFAULTS = dict(num_classes=19, n_things=8, grad_threshold=0.05, depth_blur=1.0,
                          big_stuff_size_thresh=0.02, big_stuff_pix_thresh=5000.0)


# --------------------------------------------------------------------------- one image
def image_class_records(sem: np.ndarray, depth: np.ndarray, num_classes: int, grad_threshold: float,
                        depth_blur: float) -> dict[int, dict]:
    """Per class present in ``sem`` (ids < ``num_classes``): ``n_pixels``, ``regions``,
    ``split``, ``max_frac``, ``sizes`` (region size / image area), ``means`` and ``vars``
    (depth of regions with > 1 px). ``sem`` (H, W) int; ``depth`` (H, W) float64, same size."""
    from scipy import ndimage

    from pseudo_labels.stages.instance.maps import depth_gradient_magnitude

    sem = np.asarray(sem)
    depth = np.asarray(depth, np.float64)
    area = sem.size
    edges = depth_gradient_magnitude(depth, depth_blur, dtype=np.float64) > grad_threshold
    out = {}
    present = [int(k) for k in np.unique(sem) if 0 <= int(k) < num_classes]
    for k in present:
        mask = sem == k
        n = int(mask.sum())
        labeled, n_regions = ndimage.label(mask)
        _, n_split = ndimage.label(mask & ~edges)
        lab = labeled.ravel()
        sizes = np.bincount(lab, minlength=n_regions + 1)[1:]
        sums = np.bincount(lab, weights=depth.ravel(), minlength=n_regions + 1)[1:]
        means = sums / np.maximum(sizes, 1)
        dev = depth.ravel() - np.concatenate([[0.0], means])[lab]
        sq = np.bincount(lab, weights=dev * dev * (lab > 0), minlength=n_regions + 1)[1:]
        multi = sizes > 1
        out[k] = {"n_pixels": n, "regions": int(n_regions), "split": int(n_split),
                  "max_frac": float(sizes.max()) / n if n_regions else None,
                  "sizes": (sizes / area).tolist(), "means": means[multi].tolist(),
                  "vars": (sq[multi] / sizes[multi]).tolist()}
    return out


# --------------------------------------------------------------------------- statistics and rule
def cluster_statistics(records: Iterable[dict[int, dict]], num_classes: int) -> dict[int, dict]:
    """The reference's per-class summary from per-image records (in image order)."""
    acc = {k: {"pix": 0, "rc": [], "sc": [], "rs": [], "md": [], "iv": [], "mf": []} for k in range(num_classes)}
    for rec in records:
        for k, r in rec.items():
            a = acc[int(k)]
            a["pix"] += r["n_pixels"]
            a["rc"].append(r["regions"])
            a["sc"].append(r["split"])
            if r["max_frac"] is not None:
                a["mf"].append(r["max_frac"])
            a["rs"] += r["sizes"]
            a["md"] += r["means"]
            a["iv"] += r["vars"]
    stats = {}
    for k in range(num_classes):
        a = acc[k]
        if a["pix"] == 0:
            stats[k] = {"avg_region_count": 0.0, "avg_split_count": 0.0, "depth_split_ratio": 1.0,
                        "avg_relative_size": 0.0, "depth_spread": 0.0, "intra_depth_var": 0.0,
                        "max_region_fraction": 1.0, "pixel_count": 0}
            continue
        avg_rc = float(np.mean(a["rc"])) if a["rc"] else 0.0
        avg_sc = float(np.mean(a["sc"])) if a["sc"] else 0.0
        stats[k] = {
            "avg_region_count": avg_rc,
            "avg_split_count": avg_sc,
            "depth_split_ratio": avg_sc / max(avg_rc, 1.0),
            "avg_relative_size": float(np.mean(a["rs"])) if a["rs"] else 0.0,
            "depth_spread": float(np.std(a["md"])) if len(a["md"]) > 1 else 0.0,
            "intra_depth_var": float(np.mean(a["iv"])) if a["iv"] else 0.0,
            "max_region_fraction": float(np.mean(a["mf"])) if a["mf"] else 1.0,
            "pixel_count": int(a["pix"]),
        }
    return stats


def classify(stats: dict[int, dict], num_classes: int, n_things: int = 8, num_images: int = 200,
             big_stuff_size_thresh: float = 0.02, big_stuff_pix_thresh: float = 5000.0) -> dict[int, dict]:
    """The two-stage rule: ``{k: {"label": "thing"|"stuff", "score": float}}``."""
    big = {k for k in range(num_classes) if stats[k]["pixel_count"] > 0
           and stats[k]["avg_relative_size"] > big_stuff_size_thresh
           and stats[k]["pixel_count"] / max(num_images, 1) > big_stuff_pix_thresh}
    scores = {k: (-999.0 if stats[k]["pixel_count"] == 0 else -500.0 if k in big else stats[k]["depth_split_ratio"])
              for k in range(num_classes)}
    ranked = sorted(((k, s) for k, s in scores.items() if s > -999), key=lambda ks: -ks[1])  # stable: ties by id
    things = {k for i, (k, s) in enumerate(ranked) if s > -500 and i < n_things}
    return {k: ({"label": "stuff", "score": 0.0} if scores[k] <= -999
                else {"label": "thing" if k in things else "stuff", "score": scores[k]}) for k in range(num_classes)}


def stuff_things_document(stats: dict[int, dict], classification: dict[int, dict], num_classes: int) -> dict:
    """The reference's ``stuff_things.json`` content (string keys)."""
    return {
        "classification": {str(k): classification[k] for k in range(num_classes)},
        "statistics": {str(k): stats[k] for k in range(num_classes)},
        "stuff_ids": sorted(k for k in range(num_classes) if classification[k]["label"] == "stuff"),
        "thing_ids": sorted(k for k in range(num_classes) if classification[k]["label"] == "thing"),
    }


# --------------------------------------------------------------------------- folders
@dataclass
class StuffThingsConfig:
    """``semantic_dir``: PNGs of class ids (searched recursively); ``depth_dir``: ``<rel dir>/<png stem>.npy``."""

    semantic_dir: str
    depth_dir: str
    output_path: str | None = None
    num_classes: int = 19
    n_things: int = 8
    max_images: int | None = None
    grad_threshold: float = 0.05
    depth_blur: float = 1.0
    big_stuff_size_thresh: float = 0.02
    big_stuff_pix_thresh: float = 5000.0

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def _image_record(pair: tuple[str, str], cfg: StuffThingsConfig) -> dict[int, dict] | None:
    from pseudo_labels.core.io import read_npy, read_png
    from pseudo_labels.stages.instance.maps import resize_depth_bilinear

    sem_path, depth_path = pair
    if not Path(depth_path).is_file():
        return None  # the reference skips images without depth
    sem = read_png(sem_path)
    if sem.ndim != 2:
        raise InputFileError(sem_path, f"expected a single-channel class-id PNG, got shape {sem.shape}")
    depth = np.asarray(read_npy(depth_path, finite=True, what="depth map"), np.float64)
    if depth.ndim != 2:
        raise InputFileError(depth_path, f"expected an (H, W) depth map, got shape {depth.shape}")
    if depth.shape != sem.shape:
        depth = resize_depth_bilinear(depth, sem.shape).astype(np.float64)
    return image_class_records(sem, depth, cfg.num_classes, cfg.grad_threshold, cfg.depth_blur)


def list_pairs(semantic_dir: str | Path, depth_dir: str | Path, max_images: int | None = None) -> list[tuple[str, str]]:
    """(semantic PNG, depth .npy) pairs in the reference's order (sorted ``rglob('*.png')``)."""
    sem_root, depth_root = Path(semantic_dir), Path(depth_dir)
    if not sem_root.is_dir():
        raise InputFileError(sem_root, "semantic folder not found")
    if not depth_root.is_dir():
        raise InputFileError(depth_root, "depth folder not found")
    files = sorted(sem_root.rglob("*.png"))
    if max_images is not None:
        files = files[:max_images]
    if not files:
        raise InputFileError(sem_root, "no PNGs found")
    return [(str(p), str(depth_root / p.relative_to(sem_root).parent / f"{p.stem}.npy")) for p in files]


def classify_stuff_things_folder(config: StuffThingsConfig, options=None) -> dict:
    """Statistics over the folders, the rule, and the JSON (written to ``output_path`` when
    given, atomically). Returns the document plus ``n_images`` / ``n_missing_depth``."""
    from pseudo_labels.core.io import write_json
    from pseudo_labels.core.runner import RunOptions, run_per_image

    if config.num_classes < 1 or config.n_things < 0:
        raise PseudoLabelsError("--num-classes must be >= 1 and --n-things >= 0")
    pairs = list_pairs(config.semantic_dir, config.depth_dir, config.max_images)
    summary = run_per_image(functools.partial(_image_record, cfg=config), pairs, options=options or RunOptions(),
                            desc="stuff/things statistics", name_of=lambda p: Path(p[0]).name)
    summary.raise_if_failed("images")
    records = [r for r in summary.results if r is not None]
    stats = cluster_statistics(records, config.num_classes)
    labels = classify(stats, config.num_classes, config.n_things, len(pairs), config.big_stuff_size_thresh,
                      config.big_stuff_pix_thresh)
    doc = stuff_things_document(stats, labels, config.num_classes)
    doc["parameters"] = {k: v for k, v in asdict(config).items() if k != "output_path"}
    doc["uses_ground_truth"] = False
    if config.output_path:
        write_json(config.output_path, doc)
    return {**doc, "n_images": len(pairs), "n_missing_depth": len(pairs) - len(records)}


def decide_thing_classes_reference(semantic_maps: Sequence[np.ndarray], depth_maps: Sequence[np.ndarray],
                                   num_classes: int, **rule) -> set[int]:
    """In-memory form for other stages: the set of thing class ids (``rule``: the
    :data:`REFERENCE_DEFAULTS` keys other than ``num_classes``)."""
    p = {**REFERENCE_DEFAULTS, **rule}
    records = [image_class_records(s, np.asarray(d, np.float64), num_classes, p["grad_threshold"], p["depth_blur"])
               for s, d in zip(semantic_maps, depth_maps)]
    stats = cluster_statistics(records, num_classes)
    labels = classify(stats, num_classes, p["n_things"], len(records), p["big_stuff_size_thresh"],
                      p["big_stuff_pix_thresh"])
    return {k for k, v in labels.items() if v["label"] == "thing"}


def decide_thing_classes_reference_from_files(sem_paths: Sequence[str], depth_paths: Sequence[str],
                                              num_classes: int | None = None, rule: dict | None = None) -> dict:
    """File form for the instance stage (``--thing-classes auto --rule reference``), the return
    shape of :func:`pseudo_labels.stages.instance.thing_stuff.decide_thing_classes_from_files`:
    ``{"thing_classes", "statistics", "rule"}``. Maps are read as stored (depth resized to the
    semantic map when sizes differ), as the reference does; a missing depth file is an error
    here (the instance stage needs depth anyway). ``num_classes`` None: the largest id below
    255 found, + 1. ``rule``: overrides of :data:`REFERENCE_DEFAULTS`.
    """
    p = {**REFERENCE_DEFAULTS, **(rule or {})}
    pairs = list(zip(map(str, sem_paths), map(str, depth_paths)))
    for _, d in pairs:
        if not Path(d).is_file():
            raise InputFileError(d, "depth map not found")
    if num_classes is None:
        from pseudo_labels.core.io import read_png

        ids = [int(v) for s, _ in pairs for v in np.unique(read_png(s)) if int(v) < 255]
        num_classes = max(ids, default=0) + 1
    cfg = StuffThingsConfig(semantic_dir="", depth_dir="", num_classes=num_classes, n_things=p["n_things"],
                            grad_threshold=p["grad_threshold"], depth_blur=p["depth_blur"],
                            big_stuff_size_thresh=p["big_stuff_size_thresh"],
                            big_stuff_pix_thresh=p["big_stuff_pix_thresh"])
    records = [_image_record(pair, cfg) for pair in pairs]
    stats = cluster_statistics(records, num_classes)
    labels = classify(stats, num_classes, cfg.n_things, len(records), cfg.big_stuff_size_thresh,
                      cfg.big_stuff_pix_thresh)
    return {"thing_classes": sorted(k for k, v in labels.items() if v["label"] == "thing"),
            "statistics": {k: {**stats[k], **labels[k]} for k in range(num_classes) if stats[k]["pixel_count"]},
            "rule": {"name": "reference", **p, "num_classes": num_classes}}
