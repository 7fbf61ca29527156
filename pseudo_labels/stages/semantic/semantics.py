"""Stages 2-3 over a split: features -> k-means over-clustering -> cluster-to-class semantics.

:func:`generate_semantics` does everything ``generate-overclustered-semantics`` does;
:class:`SemanticConfig` holds its parameters (defaults from :mod:`pseudo_labels.core.defaults`).

Flow (one split): features per image (extracted on the fly with ``backbone``, or read
from ``features_dir`` as written by ``extract-features``) -> a bounded sample of patch
features -> k-means fit (or ``load_centroids``) -> every pixel assigned to its nearest
centroid (cosine) -> raw cluster maps -> cluster -> class mapping -> semantic PNGs.

Output layout (as the reference repository, qbit-glitch/monocular_ups):

- ``<root>/<output_subdir>/<split>/<city>/<stem>.png``: semantic class ids of the data
  set's label table (Cityscapes: trainIds, uint8, 255 void); with ``raw_clusters`` (or
  mapping ``none``) the raw cluster ids instead (uint8 with 255 void for k <= 255, uint16
  with 65535 void for k > 255: never wrapped). Default output_subdir:
  ``pseudo_semantic_raw_k<k>`` with raw_clusters, else ``pseudo_semantic_overclustered_k<k>``.
- ``<root>/<output_subdir>/kmeans_centroids.npz``: ``centroids`` (k x D float32,
  L2-normalised), ``cluster_to_class`` (k, 255 unmapped) once mapped, ``metadata``.
- ``<root>/<output_subdir>/<split>/manifest.json`` (parameters, ``uses_ground_truth``),
  ``stats.json`` (pixels per output id, the reference's schema) and, when gtFine labels
  exist, ``miou.json`` (scoring against ground truth: evaluation, not label generation).
- Without raw_clusters, the raw cluster maps are kept in
  ``<root>/<output_subdir>/.raw_clusters/<split>/<city>/<stem>.png`` (a hidden folder, so
  that stem pairing of the output folder only sees the semantics).

Scale: the fit sample is drawn per image under the runner, the fit itself runs once in
this process, then the per-image assignment and mapping run under the runner in
streaming blocks of :data:`STREAM_BLOCK_IMAGES` images (memory does not grow with the
split). A shard (``options.shard``) needs centroids (``load_centroids`` or a fit already
in the output folder); the shard that finds every image assigned maps the ones left and
writes stats.json / miou.json, so the folder equals an unsharded run's.

Ground truth: mappings ``majority`` / ``hungarian`` and sample filter ``gt-nonvoid`` read
gtFine labels; the summary's ``ground_truth_use`` and the manifest say where.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.runner import (
    RunOptions, RunSummary, batch_name, error_message, failures_error, run_per_image,
)
from pseudo_labels.datasets import label_table
from pseudo_labels.datasets.base import LabelTable
from pseudo_labels.datasets.cityscapes import LABELS, ImageEntry, gt_path, list_images, read_gt_train_ids
from pseudo_labels.stages.semantic.clustering import (
    BACKENDS, CENTROIDS_NAME, UPSAMPLE_MODES, assign_clusters, cluster_png_array, fit_kmeans, fit_sample_budget,
    image_rng, load_centroids, patch_grid, pool_to_grid, resize_nearest, resolve_backend, sample_patch_features,
    sample_quotas, save_centroids,
)
from pseudo_labels.stages.semantic.mapping import METHODS, apply_mapping, class_confusion, cluster_confusion, map_clusters
from pseudo_labels.stages.semantic.mapping import void_predicted_pixels
from pseudo_labels.core.io import require_finite
from pseudo_labels.core.validate import validate_config

STAGE = "generate-overclustered-semantics"
RAW_HIDDEN = ".raw_clusters"
SAMPLE_FILTERS = ("uniform", "gt-nonvoid")
DEFAULT_DATASET = "cityscapes"
#: images per runner call of the per-image passes: per-batch results are folded into running
#: sums after each block, so what the driver holds does not grow with the split
STREAM_BLOCK_IMAGES = 2048


@dataclass(frozen=True)
class SemanticConfig:
    """Parameters of :func:`generate_semantics` (the flags of ``generate-overclustered-semantics``).

    ``k`` None: :data:`defaults.K`, or the k of ``load_centroids``. ``mapping`` None: the
    stored mapping of ``load_centroids`` when it has one, else majority. ``max_samples``
    None: :func:`~pseudo_labels.stages.semantic.clustering.fit_sample_budget`'s default; 0: no cap.
    ``dataset`` names the label table (:func:`pseudo_labels.datasets.label_table`) of the
    mapping and the scores; the image and gtFine layout is Cityscapes'."""

    cityscapes_root: str
    split: str = "val"
    k: int | None = None
    output_subdir: str | None = None
    raw_clusters: bool = False
    load_centroids: str | None = None
    fit_only: bool = False
    mapping: str | None = None
    backbone: str = "builtin"
    weights: str | None = None
    head: str | None = None
    head_weights: str | None = None
    device: str = "cpu"
    batch_size: int = defaults.BATCH_SIZE
    seed: int = defaults.SEED
    features_dir: str | None = None
    sample_filter: str = defaults.SAMPLE_FILTER
    samples_per_image: int = defaults.SAMPLES_PER_IMAGE
    max_samples: int | None = None
    kmeans_backend: str = defaults.KMEANS_BACKEND
    upsample: str = defaults.UPSAMPLE
    limit: int = 0  # only the first N images of the split (0: all), applied before sharding
    skip_crf: bool = False  # accepted for compatibility with the reference; no CRF is ever applied
    dataset: str = DEFAULT_DATASET

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def semantic_parameters(config: SemanticConfig, k: int | None, mapping: str, budget: int | None,
                        centroids_sha: str | None = None) -> dict:
    """Parameters that determine the outputs (config hash); run-only options excluded.
    ``dataset`` is recorded only when it is not Cityscapes (earlier folders keep their hash)."""
    c = config
    params = {
        "split": c.split, "k": k, "raw_clusters": bool(c.raw_clusters),
        "load_centroids": str(Path(c.load_centroids).resolve()) if c.load_centroids else None,
        "centroids_sha256": centroids_sha,
        "mapping": mapping, "backbone": None if c.features_dir else c.backbone,
        "weights": c.weights, "head": c.head, "head_weights": c.head_weights, "seed": c.seed,
        "features_dir": str(Path(c.features_dir).resolve()) if c.features_dir else None,
        "sample_filter": c.sample_filter, "samples_per_image": c.samples_per_image,
        "max_samples": budget, "kmeans_backend": resolve_backend(c.kmeans_backend),
        "upsample": c.upsample, "limit": c.limit,
    }
    if c.dataset != DEFAULT_DATASET:
        params["dataset"] = c.dataset
    return params


def array_sha(a: np.ndarray) -> str:
    """Short content hash of an array (dtype, shape and bytes)."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- feature source
@dataclass(frozen=True)
class FeatureSource:
    """Where one run's features come from (picklable: the extractor is built lazily in each process)."""

    features_dir: str | None
    backbone: str
    weights: str | None
    head: str | None
    head_weights: str | None
    device: str
    batch_size: int

    def describe(self) -> str:
        return f"features {self.features_dir}" if self.features_dir else f"backbone {self.backbone}" + (
            f"+{self.head}" if self.head else "")

    def extractor(self):
        """The extractor (built once per process; see :func:`pseudo_labels.stages.semantic.features.extractor_of`)."""
        from pseudo_labels.stages.semantic.features import ExtractorConfig, extractor_of

        return extractor_of(ExtractorConfig(self.backbone, self.weights, self.head, self.head_weights, None,
                                            self.device, defaults.FEATURE_INPUT_SIZE, self.batch_size))


def feature_file(src: FeatureSource, entry: ImageEntry) -> Path:
    return Path(src.features_dir) / entry.relative(".npy")


class ImageFailures(list):
    """(stem, message) of the images of one batch that failed; raises at once with fail_fast."""

    def __init__(self, fail_fast: bool):
        super().__init__()
        self.fail_fast = fail_fast

    def add(self, entry: ImageEntry, exc: BaseException) -> None:
        msg = error_message(exc)
        if self.fail_fast:
            raise PseudoLabelsError(msg if entry.stem in msg else f"{entry.stem}: {msg}") from None
        self.append((entry.stem, msg))


def load_feature_batch(src: FeatureSource, entries: list[ImageEntry], failures: ImageFailures | None = None,
                       mmap: bool = False) -> list[tuple[ImageEntry, np.ndarray]]:
    """(entry, (D, h, w) features) of each entry, extracted (one batch) or read from disk
    (``mmap``: memory-mapped float16). An image or feature file that cannot be read is
    added to ``failures`` (raised when None) and left out."""
    from pseudo_labels.core.io import read_image_rgb
    from pseudo_labels.stages.semantic.features import load_features

    fails = failures if failures is not None else ImageFailures(True)
    if src.features_dir:
        out = []
        for e in entries:
            try:
                out.append((e, load_features(feature_file(src, e), mmap=mmap)))
            except Exception as exc:  # noqa: BLE001 - reported per image
                fails.add(e, exc)
        return out
    images = []
    for e in entries:
        try:
            images.append((e, read_image_rgb(e.image_path)))
        except Exception as exc:  # noqa: BLE001
            fails.add(e, exc)
    if not images:
        return []
    feats = src.extractor().extract([im for _, im in images])
    return [(e, f) for (e, _), f in zip(images, feats)]


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of a PNG from its header (the image itself is not decoded)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror})") from None
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        if path.suffix.lower() != ".png":
            from pseudo_labels.core.io import read_image_rgb

            return read_image_rgb(path).shape[:2]
        raise InputFileError(path, "not a readable PNG image")
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def has_gt(root: str, entry: ImageEntry) -> bool:
    return gt_path(root, entry, "labelTrainIds").exists() or gt_path(root, entry, "labelIds").exists()


# --------------------------------------------------------------------------- fit sample (per batch)
@dataclass(frozen=True)
class SampleJob:
    """One batch of images for the fit sample (picklable)."""

    root: str
    entries: tuple[ImageEntry, ...]
    quotas: tuple[int, ...]
    source: FeatureSource
    sample_filter: str
    seed: int
    fail_fast: bool
    void: int = LABELS.void  # the GT void id (gt-nonvoid sampling)


def sample_batch(job: SampleJob) -> dict:
    """Draw each image's share of the fit sample: at most its quota of patch vectors, on the
    ViT patch grid (dense maps are average-pooled to it first, as the reference), chosen
    with the image's own generator (:func:`~pseudo_labels.stages.semantic.clustering.image_rng`).
    Returns ``{samples: [(stem, (n, D) float32)], failed: [(stem, message)]}``."""
    failed = ImageFailures(job.fail_fast)
    quota = {e.stem: q for e, q in zip(job.entries, job.quotas)}
    grid = patch_grid()
    out = []
    for e, f in load_feature_batch(job.source, list(job.entries), failed, mmap=True):
        try:
            if f.shape[1] > grid[0] or f.shape[2] > grid[1]:
                f = pool_to_grid(f, grid)  # dense (CAUSE) map -> patch grid
            mask = None
            if job.sample_filter == "gt-nonvoid":
                gt = read_gt_train_ids(job.root, e)
                if gt is None:
                    raise InputFileError(gt_path(job.root, e, "labelIds"), "missing",
                                         "--sample-filter gt-nonvoid reads gtFine labels; use uniform")
                mask = resize_nearest(gt, f.shape[1:]) != job.void
            sample = sample_patch_features(f, quota[e.stem], image_rng(job.seed, e.stem), mask)
            if job.source.features_dir:  # NaN / Inf never reaches k-means (issue 24)
                require_finite(sample, feature_file(job.source, e), "feature map")
            out.append((e.stem, sample))
        except Exception as exc:  # noqa: BLE001 - reported per image
            failed.add(e, exc)
    return {"samples": out, "failed": list(failed)}


# --------------------------------------------------------------------------- assignment (per batch)
@dataclass(frozen=True)
class AssignJob:
    """One batch of images for the assignment pass (picklable)."""

    root: str
    entries: tuple[ImageEntry, ...]
    source: FeatureSource
    centroids_path: str
    raw_dir: str
    upsample: str
    reuse: bool
    centroids_name: str  # for error messages
    fail_fast: bool = False
    num_classes: int = LABELS.num_classes  # columns of the confusion with ground truth


_CENTROIDS: dict = {}


def _centroids(path: str) -> np.ndarray:
    if path not in _CENTROIDS:
        _CENTROIDS.clear()
        _CENTROIDS[path] = load_centroids(path).centroids
    return _CENTROIDS[path]


def _assigned_clusters(job: AssignJob, entry: ImageEntry, features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(H, W) cluster ids of one image at its full resolution (checked against the centroids' dim)."""
    if features.shape[0] != centroids.shape[1]:
        where = feature_file(job.source, entry) if job.source.features_dir else job.source.describe()
        raise PseudoLabelsError(
            f"{where}: features have dimension {features.shape[0]} but the centroids in {job.centroids_name} "
            f"have {centroids.shape[1]} (use the backbone/features the centroids were fitted on)")
    return assign_clusters(features, centroids, image_size(entry.image_path), job.upsample)


def assign_batch(job: AssignJob) -> dict:
    """Assign every pixel of each image of ``job`` to its nearest centroid and write the raw
    cluster PNG (an existing one is read back when ``job.reuse``: resume, other shards).

    Returns the batch's sums: ``cluster_pixels`` (k,), ``confusion`` (k, C) over the
    images with ground truth, ``n_gt`` / ``no_gt`` (first stem without GT), ``written``,
    ``reused``, ``ok`` (stems finished) and ``failed`` [(stem, message)]."""
    from pseudo_labels.core.io import read_png, write_png

    centroids = _centroids(job.centroids_path)
    k = centroids.shape[0]
    acc = {"cluster_pixels": np.zeros(k, np.int64), "confusion": np.zeros((k, job.num_classes), np.int64),
           "n_gt": 0, "no_gt": None, "written": 0, "reused": 0, "ok": []}
    failed = ImageFailures(job.fail_fast)

    def add(e: ImageEntry, clusters: np.ndarray) -> None:
        valid = clusters[(clusters >= 0) & (clusters < k)]
        acc["cluster_pixels"] += np.bincount(valid.ravel(), minlength=k)
        gt = read_gt_train_ids(job.root, e)
        if gt is None:
            acc["no_gt"] = acc["no_gt"] or e.stem
        else:
            if gt.shape != clusters.shape:
                gt = resize_nearest(gt, clusters.shape)
            acc["confusion"] += cluster_confusion(clusters, gt, k, job.num_classes)
            acc["n_gt"] += 1
        acc["ok"].append(e.stem)

    todo = []
    for e in job.entries:
        raw_path = Path(job.raw_dir) / e.relative(".png")
        if job.reuse and raw_path.exists():
            try:
                add(e, read_png(raw_path).astype(np.int64))
                acc["reused"] += 1
            except Exception as exc:  # noqa: BLE001
                failed.add(e, exc)
        else:
            todo.append(e)
    for e, f in load_feature_batch(job.source, todo, failed) if todo else []:
        try:
            clusters = _assigned_clusters(job, e, f, centroids)
            write_png(Path(job.raw_dir) / e.relative(".png"), cluster_png_array(clusters, k))
            add(e, clusters)
            acc["written"] += 1
        except Exception as exc:  # noqa: BLE001
            failed.add(e, exc)
    acc["failed"] = list(failed)
    return acc


@dataclass(frozen=True)
class MapJob:
    entry: ImageEntry
    raw_dir: str
    out_dir: str
    cluster_to_class: tuple[int, ...]
    reuse: bool
    labels: LabelTable = LABELS


def map_image(job: MapJob) -> bool:
    """Raw cluster PNG -> semantic PNG of class ids (Cityscapes: uint8 trainIds, 255 void).
    Returns True if written."""
    from pseudo_labels.core.io import read_png, write_png

    out_path = Path(job.out_dir) / job.entry.relative(".png")
    if job.reuse and out_path.exists():
        return False
    clusters = read_png(Path(job.raw_dir) / job.entry.relative(".png")).astype(np.int64)
    write_png(out_path, apply_mapping(clusters, np.asarray(job.cluster_to_class), job.labels))
    return True


# --------------------------------------------------------------------------- streaming driver
def progress_unit(per_job: int) -> str:
    """What one step of a pass's progress bar counts: a batch of images, or one image."""
    return "batch" if per_job > 1 else "img"


def _run_per_job(func, jobs: list, opts: RunOptions, desc: str, unit: str) -> RunSummary:
    """:func:`~pseudo_labels.core.runner.run_per_image` over ``jobs`` (batches of images),
    its progress bar counting ``unit``."""
    return run_per_image(func, jobs, options=opts, desc=desc, name_of=lambda j: batch_name(j.entries), unit=unit)


def run_blocks(func, jobs: list, opts, desc: str, n_images, reduce) -> list[tuple[str, str]]:
    """Run ``func`` over ``jobs`` under the shared runner, :data:`STREAM_BLOCK_IMAGES` images
    per call, folding each result into the caller's state with ``reduce(job, result)`` as
    soon as its block ends (results are not kept). Returns the runner-level failures."""
    failed: list[tuple[str, str]] = []
    if not jobs:
        return failed
    per_job = max(1, max(len(j.entries) for j in jobs))
    block = max(1, STREAM_BLOCK_IMAGES // per_job)
    seen = 0
    for b in range(0, len(jobs), block):
        part = jobs[b: b + block]
        n_part = sum(len(j.entries) for j in part)
        label = desc if len(jobs) <= block else f"{desc} [{seen + 1}-{seen + n_part} of {n_images}]"
        if per_job > 1:
            label += f" (batches of {per_job})"
        summary = _run_per_job(func, part, opts, label, progress_unit(per_job))
        for job, res in zip(part, summary.results):
            if res is not None:
                reduce(job, res)
        failed.extend(summary.failed)
        seen += n_part
    return failed


def batches(entries: list[ImageEntry], size: int) -> list[tuple[ImageEntry, ...]]:
    """``entries`` in consecutive tuples of ``size`` (the last one shorter)."""
    size = max(1, size)
    return [tuple(entries[s: s + size]) for s in range(0, len(entries), size)]


# --------------------------------------------------------------------------- fit
def collect_samples(root: str, entries: list[ImageEntry], src: FeatureSource, *, sample_filter: str,
                    samples_per_image: int, max_samples: int | None, seed: int, batch_size: int,
                    options: RunOptions | None = None, void: int = LABELS.void) -> tuple[np.ndarray, dict]:
    """Stream all images once (under the runner) and keep a bounded sample of patch features.

    ``max_samples`` is the total budget (None: no cap), spread over the images by
    :func:`~pseudo_labels.stages.semantic.clustering.sample_quotas` (each at most ``samples_per_image``).
    The sample is written into one preallocated (budget, D) array as batches finish, so the
    memory is the budget, whatever the number of images. Deterministic for a given seed
    (per-image generators), whatever the worker count or executor.
    Returns ((N, D) float32 L2-normalised, info dict incl. ``failed`` images).
    """
    opts = options or RunOptions()
    quotas = sample_quotas(len(entries), max_samples, samples_per_image)
    jobs = [SampleJob(root, chunk, tuple(quotas[s: s + len(chunk)]), src, sample_filter, seed, opts.fail_fast, void)
            for s, chunk in zip(range(0, len(entries), max(1, batch_size)), batches(entries, batch_size))]
    bounded = max_samples is not None
    state = {"buf": None, "parts": [], "n": 0, "dim": None, "failed": []}

    def reduce(job: SampleJob, res: dict) -> None:
        state["failed"].extend(res["failed"])
        for stem, x in res["samples"]:
            if state["dim"] is None:
                state["dim"] = x.shape[1]
                if bounded:
                    state["buf"] = np.empty((sum(quotas), x.shape[1]), np.float32)
            elif x.shape[1] != state["dim"]:
                raise PseudoLabelsError(f"{stem}: features have dimension {x.shape[1]}, earlier images "
                                        f"{state['dim']}")
            if bounded:
                state["buf"][state["n"]: state["n"] + len(x)] = x
            else:
                state["parts"].append(x)
            state["n"] += len(x)

    failed = run_blocks(sample_batch, jobs, opts, "sampling features", len(entries), reduce)
    failed = failed + state["failed"]
    dim = state["dim"] or 0
    if bounded:
        samples = state["buf"][: state["n"]] if state["buf"] is not None else np.zeros((0, dim), np.float32)
    else:
        samples = np.concatenate(state["parts"]) if state["parts"] else np.zeros((0, dim), np.float32)
    return samples, {"n_samples": int(samples.shape[0]), "budget": max_samples,
                     "per_image_max": int(max(quotas)) if quotas else 0, "dim": dim, "grid": list(patch_grid()),
                     "rng": "per image: numpy default_rng([seed, crc32(stem)])",
                     "failed": [{"image": n, "error": m} for n, m in failed]}


def check_feature_files(src: FeatureSource, entries: list[ImageEntry], loaded, centroids_file) -> None:
    """Every feature file exists, is (D, h, w) and (with loaded centroids) of their dimension:
    checked from the .npy headers before anything is written. A file that exists but cannot
    be read is left to the per-image pass (named in the summary, the others go on)."""
    dim = loaded.dim if loaded is not None else None
    for e in entries:
        p = feature_file(src, e)
        if not p.exists():
            raise InputFileError(p, "feature file missing", "run extract-features for this split first")
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError):
            continue
        if arr.ndim != 3:
            raise InputFileError(p, f"expected a (D, h, w) feature array, got shape {arr.shape}")
        if dim is not None and arr.shape[0] != dim:
            raise InputFileError(p, f"features have dimension {arr.shape[0]} but the centroids in {centroids_file} "
                                    f"have {dim}", "use the features the centroids were fitted on")
        dim = arr.shape[0] if dim is None else dim
        if arr.shape[0] != dim:
            raise InputFileError(p, f"features have dimension {arr.shape[0]}, other images {dim}")


def write_mapping(centroids_path: Path, use_path: Path, centroids, c2c, fit_info: dict, loaded: bool,
                  overwrite: bool) -> None:
    """Store cluster_to_class in <out>/kmeans_centroids.npz. A loaded file elsewhere is copied
    there with the mapping; the loaded file itself is never changed."""
    meta = dict(fit_info.get("fit_metadata") or {})
    if loaded:
        if centroids_path.exists() and centroids_path.resolve() == use_path.resolve():
            return
        if centroids_path.exists() and not overwrite:
            other = load_centroids(centroids_path)
            if other.centroids.shape != centroids.shape or not np.allclose(other.centroids, centroids, atol=1e-6):
                raise PseudoLabelsError(f"{centroids_path}: holds other centroids than {use_path}; use another "
                                        "--output-subdir or --overwrite")
        meta["copied_from"] = str(use_path)
    save_centroids(centroids_path, centroids, c2c, meta)


def score_mapping(conf: np.ndarray, c2c: np.ndarray, mapping: str, k: int, split: str, n_images: int,
                  labels: LabelTable = LABELS) -> dict:
    """mIoU of the mapped output from the accumulated (k, C) cluster confusion
    (evaluation.semantic). With mapping none the clusters are matched for scoring only:
    Hungarian when k <= C, majority otherwise (the DESIGN's protocol for pseudo-classes)."""
    from evaluation.semantic import miou_from_confusion

    n_classes = labels.num_classes
    scored = c2c
    how = f"mapping {mapping}"
    if mapping == "none":
        how = "clusters matched for scoring only: " + ("hungarian" if k <= n_classes else "majority")
        scored = map_clusters(conf, "hungarian" if k <= n_classes else "majority", labels)
    cm = class_confusion(conf, scored, labels=labels)
    misses = np.zeros(n_classes, np.int64)
    unmapped = (scored < 0) | (scored >= n_classes)
    if unmapped.any():
        misses = conf[unmapped].sum(axis=0)
    res = miou_from_confusion(cm, misses)
    return {"split": split, "n_images": n_images, "k": k, "mIoU": res["mIoU"],
            "pixel_accuracy": res["pixel_accuracy"], "n_classes": res["n_classes"],
            "per_class_iou": {name: (None if np.isnan(v) else v) for name, v in zip(labels.names, res["per_class_iou"])},
            "scored_mapping": how, "cluster_to_class": [int(v) for v in scored],
            "gt_pixels_in_unmapped_clusters": void_predicted_pixels(conf, scored),
            "ground_truth": "gtFine trainIds (_labelTrainIds, or _labelIds mapped by cityscapesscripts; 255 ignored); "
                            "scoring is evaluation and uses ground truth",
            "resolution": "full image resolution"}


# --------------------------------------------------------------------------- the split
RETRY_HINT = "the others were finished, rerun to retry the failed ones"


@dataclass
class SemanticRunSummary(RunSummary):
    """Outcome of :func:`generate_semantics`: ``done`` images written, ``skipped`` reused,
    ``failed`` [(stem, message)]; ``status`` "finished", "fitted" (fit only) or "shard
    waiting" (other shards not assigned yet, ``message`` says what comes next);
    ``ground_truth_use`` (empty when no labels were read), ``evaluation`` (miou.json)."""

    status: str = "finished"
    out_dir: str = ""
    message: str = ""
    ground_truth_use: dict = field(default_factory=dict)
    evaluation: dict | None = None

    @property
    def uses_ground_truth(self) -> bool:
        return bool(self.ground_truth_use)

    def line(self) -> str:
        if self.status != "finished":
            return self.message
        return f"{self.done} images written, {self.skipped} reused, {len(self.failed)} failed -> {self.out_dir}"

    def raise_if_failed(self, what: str = "images", hint: str = RETRY_HINT) -> None:
        super().raise_if_failed(what, hint)


class _SemanticRun:
    """One call of :func:`generate_semantics`: the steps in order, sharing their state."""

    def __init__(self, config: SemanticConfig, options: RunOptions, notify: Callable[[str], None]):
        self.config, self.opts, self.notify = config, options, notify
        self.t0 = time.time()
        self.gt_use: dict = {}
        self.failures: dict[str, str] = {}
        self.fit_info: dict = {}
        self.sem_mapping = None

    def note_failures(self, items) -> None:
        for n, m in items:
            self.failures.setdefault(n, m)

    # ---- before anything is written
    def validate(self) -> None:
        c, opts = self.config, self.opts
        self.root = str(c.cityscapes_root)
        if not Path(self.root).is_dir():
            raise PseudoLabelsError(f"{self.root}: dataset root not found")
        for name in ("batch_size", "samples_per_image"):
            if getattr(c, name) < 1:
                raise PseudoLabelsError(f"--{name.replace('_', '-')} must be >= 1")
        if c.seed < 0:
            raise PseudoLabelsError(f"--seed {c.seed}: need a non-negative integer")
        for flag, value, allowed in (("--mapping", c.mapping, (None, *METHODS)),
                                     ("--sample-filter", c.sample_filter, SAMPLE_FILTERS),
                                     ("--upsample", c.upsample, UPSAMPLE_MODES),
                                     ("--kmeans-backend", c.kmeans_backend, BACKENDS)):
            if value not in allowed:
                raise PseudoLabelsError(f"{flag} {value!r}: choose {', '.join(a for a in allowed if a)}")
        if c.fit_only and c.load_centroids:
            raise PseudoLabelsError("--fit-only fits k-means; with --load-centroids there is nothing to fit")
        if c.fit_only and opts.shard:
            raise PseudoLabelsError("--fit-only reads the whole split; leave out --shard")
        self.labels = label_table(c.dataset)
        if c.skip_crf:
            self.notify("note: --skip-crf given; no CRF is applied in any case")

    def plan(self) -> None:
        """k, mapping, output folders, images and the parameters of the run."""
        c = self.config
        loaded = self.loaded = load_centroids(c.load_centroids) if c.load_centroids else None
        if loaded is not None:
            if c.k is not None and c.k != loaded.k:
                raise PseudoLabelsError(f"{c.load_centroids}: holds k = {loaded.k} centroids but --k {c.k} was given")
            k = loaded.k
        else:
            k = defaults.K if c.k is None else c.k
            if k < 2:
                raise PseudoLabelsError(f"--k {k}: need at least 2 clusters")
        self.k = k
        self.budget = fit_sample_budget(k, c.max_samples)
        self.mapping = c.mapping or ("stored" if loaded is not None and loaded.cluster_to_class is not None
                                     else defaults.MAPPING)
        self.out = Path(self.root) / (c.output_subdir or (f"pseudo_semantic_raw_k{k}" if c.raw_clusters
                                                          else f"pseudo_semantic_overclustered_k{k}"))
        self.split_dir = self.out / c.split
        self.raw_is_output = bool(c.raw_clusters) or self.mapping == "none"
        self.raw_root = self.out if self.raw_is_output else self.out / RAW_HIDDEN
        entries = list_images(self.root, c.split)
        self.entries = entries[: c.limit] if c.limit > 0 else entries
        self.mine = self.opts.select(self.entries)
        self.sharded = self.opts.shard is not None
        self.src = FeatureSource(c.features_dir, c.backbone, c.weights, c.head, c.head_weights, c.device, c.batch_size)
        self.centroids_path = self.out / CENTROIDS_NAME
        self.params = semantic_parameters(c, k, self.mapping, self.budget,
                                          array_sha(loaded.centroids) if loaded is not None else None)

    def decide_fit(self) -> None:
        """Can a fit already in the output folder be reused? (decided before any per-image check)"""
        from pseudo_labels.core.io import config_hash, fingerprint_files

        c, opts, out = self.config, self.opts, self.out
        self.images_fp = fingerprint_files(e.image_path for e in self.entries)
        self.fit_params = {**{k_: self.params[k_] for k_ in (
            "k", "seed", "backbone", "weights", "head", "head_weights", "features_dir", "sample_filter",
            "samples_per_image", "max_samples", "kmeans_backend", "limit")}, "fit_split": c.split,
            "images": self.images_fp}
        self.fit_hash = config_hash(self.fit_params)
        existing = None
        if self.loaded is None and self.centroids_path.exists():
            existing = load_centroids(self.centroids_path)
        self.existing = existing
        fit_reusable = existing is not None and (existing.metadata or {}).get("fit_hash") == self.fit_hash
        self.need_fit = self.loaded is None and not (fit_reusable and (not opts.overwrite or self.sharded))
        if self.need_fit and self.sharded:
            what = (f"{self.centroids_path} holds a fit of other parameters" if existing is not None
                    else f"no fit in {out}")
            raise PseudoLabelsError(
                f"--shard {opts.shard[0]}/{opts.shard[1]}: the k-means fit needs a sample of the whole split and is "
                f"not sharded ({what}). Fit first: run the same command once with --fit-only instead of --shard (or "
                "once without --shard, which also labels every image), or give --load-centroids FILE; then run the "
                "shards")
        if self.need_fit and existing is not None and not opts.overwrite:
            raise PseudoLabelsError(
                f"{self.centroids_path}: holds a k-means fit of other parameters (another split or settings); "
                "use another --output-subdir, --load-centroids to apply it, or --overwrite to refit")

    def check_inputs(self) -> None:
        """Feature files, the extractor (weights, device) and gtFine labels where they are needed."""
        c, src, loaded = self.config, self.src, self.loaded
        if c.features_dir:
            check_feature_files(src, self.entries if self.need_fit else self.mine, loaded, c.load_centroids)
        elif c.backbone != "builtin" or c.head or loaded is not None:
            ex = src.extractor()  # fail early on missing weights / CUDA
            if loaded is not None and ex.dim != loaded.dim:
                raise PseudoLabelsError(
                    f"{c.load_centroids}: centroids have dimension {loaded.dim} but backbone {src.describe()} "
                    f"gives {ex.dim}-d features (use the backbone/features the centroids were fitted on)")
        if self.need_fit and c.sample_filter == "gt-nonvoid":
            missing = next((e for e in self.entries if not has_gt(self.root, e)), None)
            if missing is not None:
                raise InputFileError(gt_path(self.root, missing, "labelIds"), "missing",
                                     "--sample-filter gt-nonvoid reads gtFine labels; use uniform")

    def prepare_output(self) -> None:
        from pseudo_labels.core.io import prepare_output_dir, read_manifest

        prev = read_manifest(self.split_dir) if self.split_dir.is_dir() else None
        self.reuse = prepare_output_dir(self.split_dir, STAGE, self.params, overwrite=self.opts.overwrite)
        # the mapping the semantic PNGs on disk were written with (reused only under the same one)
        self.sem_mapping = (prev or {}).get("semantics_mapping") if self.reuse else None

    # ---- centroids
    def obtain_centroids(self) -> None:
        """Load, reuse a finished fit, or fit; sets centroids, fit_info and use_path."""
        c, loaded = self.config, self.loaded
        if loaded is not None:
            self.centroids, meta = loaded.centroids, dict(loaded.metadata or {})
            self.fit_info = {"loaded_from": str(Path(c.load_centroids).resolve()), "fit_metadata": meta}
            if meta.get("ground_truth_use"):
                self.gt_use["centroids"] = f"{c.load_centroids} was fitted with ground truth: {meta['ground_truth_use']}"
            self.use_path = Path(c.load_centroids)
        else:
            if not self.need_fit:
                self.notify(f"reusing the k-means fit in {self.centroids_path} (same parameters)")
                self.centroids, meta = self.existing.centroids, dict(self.existing.metadata)
            else:
                self.centroids, meta = self.fit()
            if meta.get("ground_truth_use"):
                self.gt_use.update(meta["ground_truth_use"])
            self.fit_info = {"fit_metadata": meta}
            self.use_path = self.centroids_path
        if self.mapping == "stored":
            fit_split = (loaded.metadata or {}).get("fit_split", "unknown (reference file)")
            self.gt_use["mapping"] = (f"cluster_to_class loaded from {c.load_centroids} (majority vote on ground "
                                      f"truth of split {fit_split})")
        elif self.mapping != "none" and not c.fit_only:
            self.gt_use["mapping"] = (f"{self.mapping} cluster->class mapping from the pixel confusion with gtFine "
                                      f"trainIds of split {c.split}")

    def fit(self) -> tuple[np.ndarray, dict]:
        """Sample the split, fit k-means, write kmeans_centroids.npz; returns (centroids, metadata)."""
        c, k, budget = self.config, self.k, self.budget
        if c.sample_filter == "gt-nonvoid":
            msg = (f"fit sample: only patches whose nearest-downsampled gtFine trainId is not void "
                   f"(split {c.split}, reference sampling)")
            self.notify(f"uses ground truth: {msg}")
            self.gt_use["sampling"] = msg
        samples, sinfo = collect_samples(self.root, self.entries, self.src, sample_filter=c.sample_filter,
                                         samples_per_image=c.samples_per_image, max_samples=budget, seed=c.seed,
                                         batch_size=c.batch_size, options=self.opts, void=self.labels.void)
        self.note_failures((f["image"], f["error"]) for f in sinfo["failed"])
        if samples.shape[0] == 0 and self.failures:
            raise failures_error(list(self.failures.items()), hint=RETRY_HINT)  # nothing could be sampled: name the failures, not k
        if k > samples.shape[0]:
            raise PseudoLabelsError(f"--k {k} is more than the {samples.shape[0]} sampled feature vectors of "
                                    f"split {c.split}; lower --k or raise --samples-per-image")
        tf = time.time()
        centroids = fit_kmeans(samples, k, c.kmeans_backend, c.seed, device=c.device)
        del samples
        meta = {"backend": resolve_backend(c.kmeans_backend), "seed": c.seed, "k": k,
                "feature_dim": int(centroids.shape[1]), "feature_source": self.src.describe(),
                "backbone": self.params["backbone"], "head": c.head, "fit_split": c.split,
                "fit_seconds": round(time.time() - tf, 3), "sampling": sinfo, "fit_hash": self.fit_hash,
                "fit_parameters": self.fit_params, "ground_truth_use": dict(self.gt_use)}
        save_centroids(self.centroids_path, centroids, None, meta)
        left = f", without {len(sinfo['failed'])} image(s) that failed" if sinfo["failed"] else ""
        self.notify(f"fitted k-means (k={k}, {meta['backend']}) on {sinfo['n_samples']} vectors "
                    f"(budget {budget if budget is not None else 'none'}{left}) in {meta['fit_seconds']:.1f} s "
                    f"-> {self.centroids_path}")
        return centroids, meta

    def manifest(self, status: str, counts: dict | None = None, **extra) -> None:
        from pseudo_labels.core.io import write_manifest

        write_manifest(self.split_dir, STAGE, self.params, uses_ground_truth=self.gt_use or False,
                       inputs={"images": self.images_fp, "centroids": str(self.use_path),
                               "features": self.src.describe()},
                       counts={"status": status, "images": len(self.entries), **(counts or {})},
                       extra={**self.opts.describe(), "semantics_mapping": self.sem_mapping, **extra})

    def summary(self, status: str, message: str = "", written: int = 0, reused: int = 0,
                evaluation: dict | None = None) -> SemanticRunSummary:
        return SemanticRunSummary(results=[], done=written, skipped=reused, failed=list(self.failures.items()),
                                  status=status, out_dir=str(self.out / self.config.split), message=message,
                                  ground_truth_use=dict(self.gt_use), evaluation=evaluation)

    # ---- per-image passes
    def start_assignment(self) -> None:
        self.acc = {"cluster_pixels": np.zeros(self.k, np.int64),
                    "confusion": np.zeros((self.k, self.labels.num_classes), np.int64),
                    "n_gt": 0, "no_gt": None, "written": 0, "reused": 0, "ok": set()}

    def fold(self, job: AssignJob, res: dict) -> None:
        acc = self.acc
        for key in ("cluster_pixels", "confusion", "n_gt", "written", "reused"):
            acc[key] = acc[key] + res[key]
        acc["no_gt"] = acc["no_gt"] or res["no_gt"]
        acc["ok"].update(res["ok"])
        self.note_failures(res["failed"])

    def assign(self, which: list[ImageEntry], reuse_raw: bool) -> None:
        c, use = self.config, str(self.use_path)
        jobs = [AssignJob(self.root, b, self.src, use, str(self.raw_root), c.upsample, reuse_raw, use,
                          self.opts.fail_fast, self.labels.num_classes) for b in batches(which, c.batch_size)]
        self.note_failures(run_blocks(assign_batch, jobs, self.opts, "assigning clusters", len(which), self.fold))

    def write_semantics(self, which: list[ImageEntry], c2c: np.ndarray) -> int:
        """Semantic PNGs of the assigned images of ``which``; returns how many were written."""
        lut = [int(v) for v in c2c]
        same = self.sem_mapping == lut
        if not same:
            self.sem_mapping = lut  # recorded before the first PNG with this mapping is written
            self.manifest("running")
        todo = [e for e in which if e.stem in self.acc["ok"]]
        mjobs = [MapJob(e, str(self.raw_root), str(self.out), tuple(lut), self.reuse and same, self.labels)
                 for e in todo]
        msum = run_per_image(map_image, mjobs, options=self.opts, desc="writing semantics",
                             name_of=lambda j: j.entry.stem)
        self.note_failures(msum.failed)
        return sum(bool(v) for v in msum.results)

    def known_mapping(self) -> np.ndarray | None:
        """cluster_to_class known before the split's confusion (stored or none), else None."""
        if self.mapping == "stored":
            return np.asarray(self.loaded.cluster_to_class, np.int64)
        if self.mapping == "none":
            return map_clusters(np.zeros((self.k, self.labels.num_classes)), "none", self.labels)
        return None

    def shard_step(self, known_c2c: np.ndarray | None) -> tuple[int, SemanticRunSummary | None]:
        """This shard's semantics when the mapping is known; then either a summary (other
        shards not assigned yet) or None after reading back the other shards' raw clusters."""
        acc, opts = self.acc, self.opts
        written_sem = 0
        if known_c2c is not None and not self.raw_is_output:
            written_sem = self.write_semantics(self.mine, known_c2c)
        mine_stems = {e.stem for e in self.mine}
        others = [e for e in self.entries if e.stem not in mine_stems]
        left = [e for e in others if not (self.raw_root / e.relative(".png")).exists()]
        shard = f"shard {opts.shard[0]}/{opts.shard[1]}"
        if left or self.failures:
            how = ("writes the semantic PNGs" if known_c2c is None and not self.raw_is_output
                   else "writes stats.json and miou.json")
            self.manifest("shard finished", {"shard_images": len(self.mine), "written": acc["written"],
                                             "reused": acc["reused"], "failed": len(self.failures)},
                          failed=[{"image": n, "error": m} for n, m in self.failures.items()], **self.fit_info)
            failed = f", {len(self.failures)} failed" if self.failures else ""
            message = (f"{shard}: {acc['written']} images assigned, {acc['reused']} reused{failed}; {len(left)} "
                       f"image(s) of other shards not assigned yet: the shard that finds every image assigned {how} "
                       "(or rerun without --shard)")
            return written_sem, self.summary("shard waiting", message, acc["written"], acc["reused"])
        self.notify(f"{shard}: every image is assigned; mapping the split")
        self.assign(others, True)  # read back the other shards' raw clusters (their counts and confusion)
        return written_sem, None

    def final_mapping(self, known_c2c: np.ndarray | None, ok: list[ImageEntry], have_gt: bool) -> np.ndarray:
        """cluster_to_class of the split (majority / hungarian read the accumulated confusion)."""
        c = self.config
        if self.mapping == "stored":
            self.notify(f"uses ground truth: {self.gt_use['mapping']}")
            return known_c2c
        if self.mapping == "none":
            return known_c2c
        if not have_gt:
            stem = self.acc["no_gt"]
            missing = next((gt_path(self.root, e, "labelIds") for e in ok if e.stem == stem),
                           Path(self.root) / "gtFine" / c.split)
            raise InputFileError(missing, "missing", f"--mapping {self.mapping} reads gtFine labels; use --mapping none")
        c2c = map_clusters(self.acc["confusion"], self.mapping, self.labels)
        self.gt_use["mapping"] = (f"{self.mapping} cluster->class mapping from the pixel confusion with gtFine "
                                  f"trainIds of split {c.split} ({len(ok)} images)")
        self.notify(f"uses ground truth: {self.gt_use['mapping']}")
        return c2c

    def write_stats_and_score(self, c2c: np.ndarray, ok: list[ImageEntry], have_gt: bool) -> dict | None:
        """stats.json (the reference's schema) and, with ground truth, miou.json (evaluation)."""
        from pseudo_labels.core.io import write_json

        n_classes, pixels = self.labels.num_classes, self.acc["cluster_pixels"]
        if self.raw_is_output:
            per_id = {int(i): int(n) for i, n in enumerate(pixels)}
        else:
            per_id = {cl: int(pixels[c2c == cl].sum()) for cl in range(n_classes)}
        write_json(self.split_dir / "stats.json", {"total_images": len(ok), "per_class_pixels": per_id,
                                                   "num_output_classes": self.k if self.raw_is_output else n_classes,
                                                   "raw_clusters": self.raw_is_output})
        if not have_gt:
            return None
        evaluation = score_mapping(self.acc["confusion"], c2c, self.mapping, self.k, self.config.split, len(ok),
                                   self.labels)
        write_json(self.split_dir / "miou.json", evaluation)
        self.notify(f"mIoU {evaluation['mIoU']:.2f} % against gtFine trainIds ({evaluation['scored_mapping']}; "
                    "scoring uses ground truth: evaluation only) -> " + str(self.split_dir / "miou.json"))
        return evaluation

    def finish(self, c2c: np.ndarray, written: int, reused: int, evaluation: dict | None) -> None:
        """The final manifest: counts, run settings, outputs, mapping, evaluation, failures."""
        c, opts = self.config, self.opts
        pixels = self.acc["cluster_pixels"]
        counts = {"written": written, "reused": reused, "failed": len(self.failures), "k": self.k,
                  "clusters_used": int((pixels > 0).sum())}
        centroids = self.centroids_path if self.mapping != "none" or self.loaded is None else self.use_path
        self.manifest(
            "finished" if not self.failures else "finished with failures", counts,
            run={"workers": opts.workers, "executor": opts.executor, "batch_size": c.batch_size,
                 "device": c.device, "skip_crf": bool(c.skip_crf), "crf": "none",
                 "overwrite": bool(opts.overwrite), "seconds": round(time.time() - self.t0, 2)},
            outputs={"per_image": str(self.out / c.split) + "/<city>/<stem>.png",
                     "content": "raw cluster ids" if self.raw_is_output else "trainIds",
                     "raw_clusters": str(self.raw_root / c.split), "centroids": str(centroids)},
            cluster_to_class=[int(v) for v in c2c],
            evaluation={"uses_ground_truth": True, "note": "mIoU against gtFine (scoring only)",
                        "file": str(self.split_dir / "miou.json")} if evaluation else None,
            failed=[{"image": n, "error": m} for n, m in self.failures.items()],
            **self.fit_info)

    def label_split(self) -> SemanticRunSummary:
        """Assignment, mapping, semantic PNGs, stats, scores and the final manifest."""
        self.manifest("running")  # before the first per-image output: a changed rerun is refused
        self.start_assignment()
        self.assign(self.mine, self.reuse)
        known_c2c = self.known_mapping()
        written_sem = 0
        if self.sharded:
            written_sem, waiting = self.shard_step(known_c2c)
            if waiting is not None:
                return waiting
        ok = [e for e in self.entries if e.stem in self.acc["ok"]]
        have_gt = bool(ok) and self.acc["n_gt"] == len(ok)
        c2c = self.final_mapping(known_c2c, ok, have_gt)
        if self.mapping != "none":
            write_mapping(self.centroids_path, self.use_path, self.centroids, c2c, self.fit_info,
                          self.loaded is not None, self.opts.overwrite)
        written, reused = self.acc["written"], self.acc["reused"]
        if not self.raw_is_output:
            written = written_sem + self.write_semantics(ok, c2c)
            reused = len(ok) - written
        evaluation = self.write_stats_and_score(c2c, ok, have_gt)
        self.finish(c2c, written, reused, evaluation)
        return self.summary("finished", written=written, reused=reused, evaluation=evaluation)


def generate_semantics(config: SemanticConfig, options: RunOptions | None = None, *,
                       notify: Callable[[str], None] | None = None) -> SemanticRunSummary:
    """Label one split (see the module docstring): fit or load k-means centroids, assign
    every pixel, map clusters to classes, write the PNGs, stats.json, miou.json and the
    manifest. ``notify`` receives progress notes as they happen (the fit, ground-truth use,
    shard hand-over, the score); the command passes ``print``.

    Bad inputs raise :class:`PseudoLabelsError` before anything is written. Images that
    fail are named in the summary's ``failed`` (the others are finished; call
    ``raise_if_failed``)."""
    run = _SemanticRun(config, options or RunOptions(), notify or (lambda message: None))
    run.validate()
    run.plan()
    run.decide_fit()
    run.check_inputs()
    run.prepare_output()
    run.obtain_centroids()
    if config.fit_only:
        run.manifest("fitted (--fit-only)", fit_only=True, **run.fit_info)
        message = f"--fit-only: centroids in {run.centroids_path}; now run the shards (--shard I/N, same flags)"
        return run.summary("fitted", message)
    return run.label_split()

