"""Refinement of semantic pseudo-labels between the semantic and instance stages.

k-means pseudo-labels follow the 14-px patch grid of the features; two methods move their
boundaries onto image edges:

- ``dynaseg``: every region of an image-adaptive segmentation (DynaSeg, see
  :mod:`pseudo_labels.stages.refine.dynaseg`) takes the majority semantic label of its pixels;
  void (255) counts as a label, so a region that is mostly void stays void; ties go to
  the lowest id (a class before void). A DynaSeg segment id can cover several separate
  places of an image (a colour cluster); by default each 4-connected piece of a segment
  is its own region (``connected=False``: one region per segment id).
- ``crf``: a fully connected CRF (Kraehenbuehl & Koltun 2011, ``pydensecrf`` from the
  ``pydensecrf2`` package) on the image with the parameters of the CAUSE / STEGO scripts
  (10 iterations, Gaussian sxy 1 weight 3, bilateral sxy 67 srgb 3 weight 4); the unary
  comes from the hard labels: probability ``gt_prob`` on the pixel's label, the rest
  spread evenly; void pixels get a uniform unary and may take a class.
- ``none``: labels copied unchanged (the baseline of a comparison).

Arrays: semantic maps (H, W) uint8 with class ids 0..C-1 and void 255; segments (H, W)
integer ids; images (H, W, 3) uint8 RGB. Reads no ground truth.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.cityscapes import stem_of

METHODS = ("none", "dynaseg", "crf")
STAGE = "refine-semantics"
VOID = 255

from pseudo_labels.core.defaults import (  # noqa: E402
    CRF_ITERATIONS, CRF_POS_XY_STD, CRF_POS_WEIGHT, CRF_BI_XY_STD, CRF_BI_RGB_STD, CRF_BI_WEIGHT, CRF_GT_PROB,
)


def majority_in_segments(semantic: np.ndarray, segments: np.ndarray, void: int = VOID) -> np.ndarray:
    """Each segment takes the most frequent value of ``semantic`` inside it.

    semantic: (H, W) integer labels 0..254 and ``void``; segments: (H, W) non-negative
    integer ids (any numbering, need not be consecutive). Void counts like a label (a
    segment mostly void stays void). Ties: the smallest value. Returns (H, W) uint8.
    """
    semantic = np.asarray(semantic)
    segments = np.asarray(segments)
    if semantic.shape != segments.shape:
        raise PseudoLabelsError(f"semantic map {semantic.shape} and segments {segments.shape} differ in shape")
    if semantic.size == 0:
        return semantic.astype(np.uint8)
    if semantic.min() < 0 or semantic.max() > 255 or segments.min() < 0:
        raise PseudoLabelsError("semantic ids must be 0..255 and segment ids non-negative")
    _, seg = np.unique(segments.reshape(-1), return_inverse=True)
    n_seg = int(seg.max()) + 1
    sem = semantic.reshape(-1).astype(np.int64)
    counts = np.bincount(seg * 256 + sem, minlength=n_seg * 256).reshape(n_seg, 256)
    winner = np.argmax(counts, axis=1).astype(np.uint8)  # first maximum: the smallest value
    return winner[seg].reshape(semantic.shape)


def connected_regions(segments: np.ndarray) -> np.ndarray:
    """(H, W) int32 ids of the 4-connected pieces of equal segment id (1..n)."""
    from skimage.measure import label

    return label(np.asarray(segments), background=-1, connectivity=1).astype(np.int32)


@dataclass(frozen=True)
class CrfParams:
    iterations: int = CRF_ITERATIONS
    pos_xy_std: float = CRF_POS_XY_STD
    pos_weight: float = CRF_POS_WEIGHT
    bi_xy_std: float = CRF_BI_XY_STD
    bi_rgb_std: float = CRF_BI_RGB_STD
    bi_weight: float = CRF_BI_WEIGHT
    gt_prob: float = CRF_GT_PROB


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:  # without pydensecrf2: False; the crf method is refused by dense_crf's message
        return False
    return True


def dense_crf(image: np.ndarray, semantic: np.ndarray, num_labels: int, params: CrfParams = CrfParams(),
              void: int = VOID) -> np.ndarray:
    """Dense-CRF refinement of hard labels on ``image``.

    image: (H, W, 3) uint8 RGB of the label map's size; semantic: (H, W) ids in
    0..num_labels-1 or ``void``. Returns (H, W) uint8 ids in 0..num_labels-1 (the CRF's
    MAP labels; void pixels get a class).
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:  # without pydensecrf2: --method crf stops with this message (dynaseg / none still run)
        raise PseudoLabelsError("--method crf needs the pydensecrf2 package (pip install pydensecrf2; "
                                "it builds with a C++ compiler)") from None
    h, w = semantic.shape
    if image.shape[:2] != (h, w):
        raise PseudoLabelsError(f"image {image.shape[:2]} and semantic map {(h, w)} differ in size")
    n = int(num_labels)
    if n < 2:
        raise PseudoLabelsError(f"dense CRF needs at least 2 labels, got {n}")
    sem = np.asarray(semantic).reshape(-1).astype(np.int64)
    valid = sem != void
    if np.any(sem[valid] >= n):
        raise PseudoLabelsError(f"semantic ids {int(sem[valid].max())} >= the {n} labels of the CRF")
    off = (1.0 - params.gt_prob) / (n - 1)
    prob = np.full((n, h * w), off, np.float32)
    prob[sem[valid], np.flatnonzero(valid)] = params.gt_prob
    prob[:, ~valid] = 1.0 / n
    return np.argmax(crf_marginals(image, prob.reshape(n, h, w), params), axis=0).astype(np.uint8)


def crf_marginals(image: np.ndarray, prob: np.ndarray, params: CrfParams = CrfParams()) -> np.ndarray:
    """Dense-CRF marginals (n, H, W) float32 from soft class probabilities ``prob`` (n, H, W)
    (unary -log p, p clipped at 1e-5 like pydensecrf's ``unary_from_softmax``) on ``image``
    (H, W, 3) uint8 RGB; the pairwise terms of ``params``."""
    import pydensecrf.densecrf as dcrf

    n, h, w = prob.shape
    if image.shape[:2] != (h, w):
        raise PseudoLabelsError(f"image {image.shape[:2]} and probabilities {(h, w)} differ in size")
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.maximum(prob.reshape(n, -1), 1e-5)), dtype=np.float32))
    d.addPairwiseGaussian(sxy=params.pos_xy_std, compat=params.pos_weight)
    d.addPairwiseBilateral(sxy=params.bi_xy_std, srgb=params.bi_rgb_std,
                           rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=params.bi_weight)
    return np.asarray(d.inference(int(params.iterations)), np.float32).reshape(n, h, w)


# --------------------------------------------------------------------------- folder level


def file_key(path: Path, root: Path) -> str:
    """Key pairing files of one image across folders: the Cityscapes stem when the name
    has one, else the path below ``root`` without suffix."""
    return stem_of(path) or str(path.relative_to(root).with_suffix(""))


def index_files(folder: str | os.PathLike, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """key -> file for every file below ``folder`` ending in one of ``suffixes`` (recursive)."""
    root = Path(folder)
    if not root.is_dir():
        raise PseudoLabelsError(f"{root}: folder not found")
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(s.startswith(".") for s in rel.parts) or not p.name.lower().endswith(suffixes):
            continue
        key = file_key(p, root)
        if key in out:
            raise PseudoLabelsError(f"{root}: two files for image {key}: {out[key]} and {p}")
        out[key] = p
    return out


@dataclass(frozen=True)
class RefineConfig:
    """``refine-semantics``: every PNG below ``semantic_dir`` -> same relative path below
    ``output_dir``. ``dynaseg`` needs ``segments_dir`` (paired by Cityscapes stem or
    relative path); ``crf`` needs ``images_dir`` (RGB images paired the same way)."""

    semantic_dir: str
    output_dir: str
    method: str = "dynaseg"
    segments_dir: str | None = None
    images_dir: str | None = None
    num_labels: int = 19
    crf: CrfParams = CrfParams()
    connected: bool = True


@dataclass(frozen=True)
class RefineJob:
    key: str
    semantic_path: str
    out_path: str
    segments_path: str = ""
    image_path: str = ""


def plan_refine_jobs(config: RefineConfig) -> list[RefineJob]:
    if config.method not in METHODS:
        raise PseudoLabelsError(f"--method {config.method!r}: choose from {', '.join(METHODS)}")
    if config.method == "crf" and not crf_available():
        raise PseudoLabelsError("--method crf needs the pydensecrf2 package (pip install pydensecrf2)")
    sem_root = Path(config.semantic_dir)
    sems = index_files(sem_root, (".png",))
    if not sems:
        raise PseudoLabelsError(f"{sem_root}: no semantic PNGs found")
    other: dict[str, Path] = {}
    if config.method == "dynaseg":
        if not config.segments_dir:
            raise PseudoLabelsError("--method dynaseg needs --segments-dir (output of generate-dynaseg-segments)")
        other = index_files(config.segments_dir, (".png",))
    elif config.method == "crf":
        if not config.images_dir:
            raise PseudoLabelsError("--method crf needs --images-dir (the RGB images, e.g. <root>/leftImg8bit/<split>)")
        other = index_files(config.images_dir, (".png", ".jpg", ".jpeg", ".bmp"))
    missing = [k for k in sems if config.method != "none" and k not in other]
    if missing:
        where = config.segments_dir if config.method == "dynaseg" else config.images_dir
        raise PseudoLabelsError(f"{where}: no file for {len(missing)} semantic map(s), e.g. {', '.join(missing[:3])}")
    jobs = []
    for key, path in sems.items():
        extra = str(other[key]) if key in other else ""
        jobs.append(RefineJob(key, str(path), str(Path(config.output_dir) / path.relative_to(sem_root)),
                              segments_path=extra if config.method == "dynaseg" else "",
                              image_path=extra if config.method == "crf" else ""))
    return jobs


def refine_one(job: RefineJob, config: RefineConfig) -> dict:
    """Refine one semantic map and write it (atomically); returns changed-pixel counts."""
    from pseudo_labels.core.io import read_image_rgb, read_png, write_png

    sem = read_png(job.semantic_path)
    if sem.ndim != 2:
        raise PseudoLabelsError(f"{job.semantic_path}: expected a single-channel semantic PNG, got shape {sem.shape}")
    if config.method == "dynaseg":
        from pseudo_labels.stages.refine.dynaseg import resize_labels_nearest

        segs = resize_labels_nearest(read_png(job.segments_path), sem.shape)
        out = majority_in_segments(sem, connected_regions(segs) if config.connected else segs)
    elif config.method == "crf":
        import cv2

        image = read_image_rgb(job.image_path)
        if image.shape[:2] != sem.shape:
            image = cv2.resize(image, (sem.shape[1], sem.shape[0]), interpolation=cv2.INTER_AREA)
        try:
            out = dense_crf(image, sem, config.num_labels, config.crf)
        except PseudoLabelsError as exc:
            raise PseudoLabelsError(f"{job.semantic_path}: {exc}") from None
    else:
        out = sem.astype(np.uint8)
    write_png(job.out_path, out.astype(np.uint8))
    return {"pixels": int(sem.size), "changed": int(np.count_nonzero(out != sem))}


def _is_done(job: RefineJob) -> bool:
    return os.path.exists(job.out_path)


def refine_semantics(config: RefineConfig, options) -> dict:
    """Refine every semantic map of ``config.semantic_dir`` into ``config.output_dir`` under
    the shared runner (resume, shards, workers / Ray); writes the manifest
    (``uses_ground_truth`` false) and returns a summary dict."""
    from dataclasses import asdict

    from pseudo_labels.core.io import fingerprint_files, prepare_output_dir, write_manifest
    from pseudo_labels.core.runner import run_per_image

    jobs = options.select(plan_refine_jobs(config))
    parameters = {"method": config.method, "num_labels": config.num_labels if config.method == "crf" else None,
                  "crf": asdict(config.crf) if config.method == "crf" else None,
                  "segments_dir": str(Path(config.segments_dir).resolve()) if config.method == "dynaseg" else None,
                  "connected_regions": config.connected if config.method == "dynaseg" else None}
    resume = prepare_output_dir(config.output_dir, STAGE, parameters, overwrite=options.overwrite)
    summary = run_per_image(functools.partial(refine_one, config=config), jobs, desc=f"refine ({config.method})",
                            name_of=lambda j: j.key, is_done=_is_done if resume else None, options=options)
    done = [r for r in summary.results if r]
    changed = sum(r["changed"] for r in done) / max(1, sum(r["pixels"] for r in done))
    inputs = {"semantic_dir": str(Path(config.semantic_dir).resolve()),
              "semantic": fingerprint_files(j.semantic_path for j in jobs)}
    if config.method == "dynaseg":
        inputs["segments"] = fingerprint_files(j.segments_path for j in jobs)
    if config.method == "crf":
        inputs["images"] = fingerprint_files(j.image_path for j in jobs)
    write_manifest(config.output_dir, STAGE, parameters, uses_ground_truth=False, inputs=inputs,
                   counts={"images": len(jobs), "done": summary.done, "skipped": summary.skipped,
                           "failed": len(summary.failed), "changed_pixel_fraction": round(changed, 6)},
                   extra={"shard": list(options.shard) if options.shard else None})
    summary.raise_if_failed("semantic maps")
    return {"summary": summary.line(), "images": len(jobs), "changed_pixel_fraction": changed}
