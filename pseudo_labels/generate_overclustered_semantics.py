"""Features -> k-means over-clustering -> cluster-to-class semantic pseudo-labels.

Flow (one split): features per image (extracted on the fly with ``--backbone``, or read
from ``--features-dir`` as written by ``extract-features``) -> a bounded sample of patch
features -> k-means fit (or ``--load-centroids``) -> every pixel assigned to its nearest
centroid (cosine) -> raw cluster maps -> cluster -> class mapping -> semantic trainId PNGs.

Output layout (as the reference repository, qbit-glitch/monocular_ups):

- ``<root>/<output-subdir>/<split>/<city>/<stem>.png``: semantic trainIds (uint8, 255
  void); with ``--raw-clusters`` (or ``--mapping none``) the raw cluster ids instead
  (uint8 with 255 void for k <= 255, uint16 with 65535 void for k > 255: never wrapped).
  Default output-subdir: ``pseudo_semantic_raw_k<k>`` with --raw-clusters, else
  ``pseudo_semantic_overclustered_k<k>``.
- ``<root>/<output-subdir>/kmeans_centroids.npz``: ``centroids`` (k x D float32,
  L2-normalised), ``cluster_to_class`` (k, 255 unmapped) once mapped, ``metadata``.
  Reuse it on another split with ``--load-centroids`` (no refit).
- ``<root>/<output-subdir>/<split>/manifest.json`` (parameters, ``uses_ground_truth``),
  ``stats.json`` (pixels per output id, the reference's schema) and, when gtFine labels
  exist, ``miou.json`` (scoring against ground truth: evaluation, not label generation).
- Without --raw-clusters, the raw cluster maps are kept in
  ``<root>/<output-subdir>/.raw_clusters/<split>/<city>/<stem>.png`` (a hidden folder, so
  that stem pairing of the output folder only sees the semantics).

Scale (the shared runner flags ``--workers --executor --ray-address --shard --fail-fast
--overwrite``): the fit sample is drawn per image under the runner (``--workers`` / Ray),
the fit itself runs once in this process, then the per-image assignment and mapping run
under the runner in streaming blocks (memory does not grow with the split).
``--shard I/N`` shards the per-image work only: it needs centroids, from
``--load-centroids`` or from a fit already in the output folder (``--fit-only``, same
flags, no --shard). Shards write into one folder; the shard that finds every image
assigned maps the ones left (a majority/hungarian mapping needs the whole split) and
writes stats.json / miou.json, so the folder equals an unsharded run's.

Ground truth: ``--mapping majority|hungarian`` and ``--sample-filter gt-nonvoid`` read
gtFine labels; the command says so and records it in the manifest. ``--mapping none``
with the default uniform sampling uses no labels. No CRF is applied (the reference's
``--skip_crf`` behaviour); ``--skip-crf`` is accepted for compatibility and changes nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.datasets.cityscapes import (
    CLASS_NAMES, IGNORE, NUM_CLASSES, ImageEntry, gt_path, label_id_to_train_id_lut, list_images,
)
from pseudo_labels.core.arguments import add_option, add_runner_arguments, module_main, runner_options
from pseudo_labels.core.runner import batch_name, error_message
from pseudo_labels.stages.clustering import (
    BACKENDS, CENTROIDS_NAME, UPSAMPLE_MODES, assign_clusters, cluster_png_array, fit_kmeans, fit_sample_budget,
    image_rng, load_centroids, patch_grid, pool_to_grid, resize_nearest, resolve_backend, sample_patch_features,
    sample_quotas, save_centroids,
)
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.stages.mapping import METHODS, apply_mapping, class_confusion, cluster_confusion, map_clusters, void_predicted_pixels

STAGE = "generate-overclustered-semantics"
RAW_HIDDEN = ".raw_clusters"
SAMPLE_FILTERS = ("uniform", "gt-nonvoid")
#: images per runner call of the per-image passes: per-batch results are folded into running
#: sums after each block, so what the driver holds does not grow with the split
STREAM_BLOCK_IMAGES = 2048


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pseudo_labels.stages.features import BACKBONES, HEADS

    add_option(parser, "--cityscapes-root", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument("--split", default="val", help="split to label (default: val); k-means is fitted on it "
                        "unless --load-centroids")
    parser.add_argument("--k", type=int, default=None,
                        help=f"number of clusters, 2..(number of samples) (default {defaults.K}; with "
                             "--load-centroids: the file's k)")
    add_option(parser, "--output-subdir", default=None,
               help="output folder under the root (default pseudo_semantic_raw_k<k> with --raw-clusters, "
                    "else pseudo_semantic_overclustered_k<k>)")
    add_option(parser, "--raw-clusters", action="store_true",
               help="write raw cluster ids (0..k-1) as the per-image PNGs instead of mapped trainIds")
    add_option(parser, "--load-centroids", default=None,
               help="kmeans_centroids.npz to reuse (no refit); its cluster_to_class is applied unless --mapping "
                    "is given")
    add_option(parser, "--fit-only", action="store_true",
               help="fit k-means on the split's sample, write kmeans_centroids.npz into the output folder and "
                    "stop: the first step of a sharded run (then the same command with --shard I/N reuses the "
                    "fit)")
    parser.add_argument("--mapping", choices=METHODS, default=None,
                        help="cluster->class: majority (uses GT, the reference), hungarian (uses GT, one-to-one), "
                             "none (label-free: clusters stay pseudo-classes). Default: the stored mapping of "
                             "--load-centroids when it has one, else majority")
    parser.add_argument("--backbone", default="builtin", choices=BACKBONES,
                        help="feature backbone when extracting on the fly (default builtin; the reference is "
                             "dinov2_vitb14 with --head cause). On the fly, features are extracted twice (fit "
                             "sample, then assignment); extract-features + --features-dir extracts once")
    parser.add_argument("--weights", default=None, help="local DINOv2 checkpoint (official key layout)")
    parser.add_argument("--head", choices=HEADS, default=None, help="cause: CAUSE-TR Segment_TR head (90-d)")
    add_option(parser, "--head-weights", default=None, help="CAUSE segment_tr.pth (with --head cause)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for feature extraction and the torch "
                        "k-means backend (default cpu)")
    add_option(parser, "--batch-size", type=int, default=defaults.BATCH_SIZE,
               help="images per extraction batch (one runner task per batch)")
    parser.add_argument("--seed", type=int, default=defaults.SEED,
                        help="sampling and k-means seed (default 42); each image draws its sample from the seed "
                             "and its stem, so the sample does not depend on workers or shards")
    add_option(parser, "--features-dir", default=None,
               help="read precomputed features <dir>/<split>/<city>/<stem>.npy (extract-features) instead of "
                    "extracting (memory-mapped: only the sampled patches are read for the fit)")
    add_option(parser, "--sample-filter", choices=SAMPLE_FILTERS, default=defaults.SAMPLE_FILTER,
               help="uniform (label-free, default) or gt-nonvoid (the reference: only patches whose "
                    "nearest-downsampled GT trainId is not void; uses ground truth)")
    add_option(parser, "--samples-per-image", type=int, default=defaults.SAMPLES_PER_IMAGE,
               help=f"at most this many patch vectors per image for the fit (default {defaults.SAMPLES_PER_IMAGE}, "
                    "reference)")
    add_option(parser, "--max-samples", type=int, default=None,
               help=f"fit sample budget: at most this many patch vectors from the whole split, spread evenly "
                    f"over the images (image i of n gets about N/n, at most --samples-per-image), so the fit's "
                    f"memory is bounded by the sample, not the number of images. Default: "
                    f"max({defaults.MAX_FIT_SAMPLES:,}, k x {defaults.KMEANS_MAX_POINTS_PER_CENTROID}) "
                    f"(the faiss/torch fit uses at most k x {defaults.KMEANS_MAX_POINTS_PER_CENTROID} points "
                    f"anyway); 0: no total cap (the reference's sampling; memory grows with the split)")
    add_option(parser, "--kmeans-backend", choices=BACKENDS, default=defaults.KMEANS_BACKEND,
               help="auto (faiss if installed, else torch), faiss, torch, or sklearn (MiniBatchKMeans with the "
                    "reference settings)")
    parser.add_argument("--upsample", choices=UPSAMPLE_MODES, default=defaults.UPSAMPLE,
                        help="similarity (default: bilinear similarities then argmax) or labels (argmax at feature "
                             "resolution then nearest, the reference path)")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N images of the split (0: all; applied before --shard)")
    add_option(parser, "--skip-crf", action="store_true",
               help="accepted for compatibility with the reference; no CRF is ever applied (this is the default)")
    add_runner_arguments(parser, workers=1)
    parser.epilog = (
        "Sharding: the k-means fit needs a sample of the whole split and is never sharded. Either "
        "give --load-centroids FILE to every shard, or fit once with --fit-only (same flags, no --shard) and "
        "then run the shards with --shard I/N; without centroids, --shard is refused. Shards write into the "
        "same folder; the shard that finds every image assigned maps the rest (a majority/hungarian mapping "
        "reads the whole split's confusion) and writes stats.json and miou.json: the per-image PNGs, stats.json "
        "and miou.json equal an unsharded run's byte for byte. A rerun without --shard does the same and reuses "
        "finished images. "
        "With --shard, --overwrite recomputes this shard's images and keeps the fit. A failed image (e.g. a "
        "corrupt PNG) is named in the summary, the others are finished, and the exit status is 2; "
        "--fail-fast stops at the first one.")


def parameters_of(args: argparse.Namespace, k: int | None, mapping: str, budget: int | None,
                  centroids_sha: str | None = None) -> dict:
    """Parameters that determine the outputs (config hash); run-only options excluded."""
    return {
        "split": args.split, "k": k, "raw_clusters": bool(args.raw_clusters),
        "load_centroids": str(Path(args.load_centroids).resolve()) if args.load_centroids else None,
        "centroids_sha256": centroids_sha,
        "mapping": mapping, "backbone": None if args.features_dir else args.backbone,
        "weights": args.weights, "head": args.head, "head_weights": args.head_weights, "seed": args.seed,
        "features_dir": str(Path(args.features_dir).resolve()) if args.features_dir else None,
        "sample_filter": args.sample_filter, "samples_per_image": args.samples_per_image,
        "max_samples": budget, "kmeans_backend": resolve_backend(args.kmeans_backend),
        "upsample": args.upsample, "limit": args.limit,
    }


def _array_sha(a: np.ndarray) -> str:
    import hashlib

    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- feature source
@dataclass(frozen=True)
class FeatureSource:
    """Where one run's features come from (picklable: built lazily in each process)."""

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


_EXTRACTORS: dict = {}


def _extractor(src: FeatureSource):
    key = (src.backbone, src.weights, src.head, src.head_weights, src.device, src.batch_size)
    if key not in _EXTRACTORS:
        from pseudo_labels.stages.features import build_extractor

        _EXTRACTORS.clear()
        _EXTRACTORS[key] = build_extractor(src.backbone, src.weights, src.head, src.device,
                                           head_weights=src.head_weights, batch_size=src.batch_size)
    return _EXTRACTORS[key]


def feature_file(src: FeatureSource, entry: ImageEntry) -> Path:
    return Path(src.features_dir) / entry.relative(".npy")


class _Failures(list):
    """(stem, message) of the images of one batch that failed; raises at once with fail_fast."""

    def __init__(self, fail_fast: bool):
        super().__init__()
        self.fail_fast = fail_fast

    def add(self, entry: ImageEntry, exc: BaseException) -> None:
        msg = error_message(exc)
        if self.fail_fast:
            raise PseudoLabelsError(msg if entry.stem in msg else f"{entry.stem}: {msg}") from None
        self.append((entry.stem, msg))


def load_feature_batch(src: FeatureSource, entries: list[ImageEntry], failures: _Failures | None = None,
                       mmap: bool = False) -> list[tuple[ImageEntry, np.ndarray]]:
    """(entry, (D, h, w) features) of each entry, extracted (one batch) or read from disk
    (``mmap``: memory-mapped float16). An image or feature file that cannot be read is
    added to ``failures`` (raised when None) and left out."""
    from pseudo_labels.stages.features import load_features
    from pseudo_labels.core.io import read_image_rgb

    fails = failures if failures is not None else _Failures(True)
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
    feats = _extractor(src).extract([im for _, im in images])
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


def read_gt_train_ids(root: str, entry: ImageEntry) -> np.ndarray | None:
    """gtFine trainIds (H, W) uint8 of an image: ``labelTrainIds`` or, failing that,
    ``labelIds`` mapped with cityscapesscripts' table; None when neither exists."""
    from pseudo_labels.core.io import read_png

    p = gt_path(root, entry, "labelTrainIds")
    if p.exists():
        return read_png(p)
    p = gt_path(root, entry, "labelIds")
    if p.exists():
        return label_id_to_train_id_lut()[read_png(p)]
    return None


def _has_gt(root: str, entry: ImageEntry) -> bool:
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


def sample_batch(job: SampleJob) -> dict:
    """Draw each image's share of the fit sample: at most its quota of patch vectors, on the
    ViT patch grid (dense maps are average-pooled to it first, as the reference), chosen
    with the image's own generator (:func:`~pseudo_labels.stages.clustering.image_rng`).
    Returns ``{samples: [(stem, (n, D) float32)], failed: [(stem, message)]}``."""
    failed = _Failures(job.fail_fast)
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
                    raise InputFileError(gt_path(job.root, e, "labelTrainIds"), "missing",
                                         "--sample-filter gt-nonvoid reads gtFine labels; use uniform")
                mask = resize_nearest(gt, f.shape[1:]) != IGNORE
            out.append((e.stem, sample_patch_features(f, quota[e.stem], image_rng(job.seed, e.stem), mask)))
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


_CENTROIDS: dict = {}


def _centroids(path: str) -> np.ndarray:
    if path not in _CENTROIDS:
        _CENTROIDS.clear()
        _CENTROIDS[path] = load_centroids(path).centroids
    return _CENTROIDS[path]


def assign_batch(job: AssignJob) -> dict:
    """Assign every pixel of each image of ``job`` to its nearest centroid and write the raw
    cluster PNG (an existing one is read back when ``job.reuse``: resume, other shards).

    Returns the batch's sums: ``cluster_pixels`` (k,), ``confusion`` (k, 19) over the
    images with ground truth, ``n_gt`` / ``no_gt`` (first stem without GT), ``written``,
    ``reused``, ``ok`` (stems finished) and ``failed`` [(stem, message)]."""
    from pseudo_labels.core.io import read_png, write_png

    centroids = _centroids(job.centroids_path)
    k = centroids.shape[0]
    acc = {"cluster_pixels": np.zeros(k, np.int64), "confusion": np.zeros((k, NUM_CLASSES), np.int64),
           "n_gt": 0, "no_gt": None, "written": 0, "reused": 0, "ok": []}
    failed = _Failures(job.fail_fast)

    def add(e: ImageEntry, clusters: np.ndarray) -> None:
        valid = clusters[(clusters >= 0) & (clusters < k)]
        acc["cluster_pixels"] += np.bincount(valid.ravel(), minlength=k)
        gt = read_gt_train_ids(job.root, e)
        if gt is None:
            acc["no_gt"] = acc["no_gt"] or e.stem
        else:
            if gt.shape != clusters.shape:
                gt = resize_nearest(gt, clusters.shape)
            acc["confusion"] += cluster_confusion(clusters, gt, k)
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
    if todo:
        for e, f in load_feature_batch(job.source, todo, failed):
            try:
                if f.shape[0] != centroids.shape[1]:
                    where = feature_file(job.source, e) if job.source.features_dir else job.source.describe()
                    raise PseudoLabelsError(
                        f"{where}: features have dimension {f.shape[0]} but the centroids in {job.centroids_name} "
                        f"have {centroids.shape[1]} (use the backbone/features the centroids were fitted on)")
                clusters = assign_clusters(f, centroids, image_size(e.image_path), job.upsample)
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


def map_image(job: MapJob) -> bool:
    """Raw cluster PNG -> semantic trainId PNG (uint8, 255 void). Returns True if written."""
    from pseudo_labels.core.io import read_png, write_png

    out_path = Path(job.out_dir) / job.entry.relative(".png")
    if job.reuse and out_path.exists():
        return False
    clusters = read_png(Path(job.raw_dir) / job.entry.relative(".png")).astype(np.int64)
    write_png(out_path, apply_mapping(clusters, np.asarray(job.cluster_to_class)))
    return True


# --------------------------------------------------------------------------- streaming driver
def run_blocks(func, jobs: list, opts, desc: str, n_images, reduce) -> list[tuple[str, str]]:
    """Run ``func`` over ``jobs`` under the shared runner, :data:`STREAM_BLOCK_IMAGES` images
    per call, folding each result into the caller's state with ``reduce(job, result)`` as
    soon as its block ends (results are not kept). Returns the runner-level failures."""
    from pseudo_labels.core.runner import run_per_image

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
        summary = run_per_image(func, part, options=opts, desc=label, name_of=lambda j: batch_name(j.entries))
        for job, res in zip(part, summary.results):
            if res is not None:
                reduce(job, res)
        failed.extend(summary.failed)
        seen += n_part
    return failed


def _batches(entries: list[ImageEntry], size: int) -> list[tuple[ImageEntry, ...]]:
    size = max(1, size)
    return [tuple(entries[s: s + size]) for s in range(0, len(entries), size)]


# --------------------------------------------------------------------------- fit
def collect_samples(root: str, entries: list[ImageEntry], src: FeatureSource, *, sample_filter: str,
                    samples_per_image: int, max_samples: int | None, seed: int, batch_size: int,
                    options=None) -> tuple[np.ndarray, dict]:
    """Stream all images once (under the runner) and keep a bounded sample of patch features.

    ``max_samples`` is the total budget (None: no cap), spread over the images by
    :func:`~pseudo_labels.stages.clustering.sample_quotas` (each at most ``samples_per_image``).
    The sample is written into one preallocated (budget, D) array as batches finish, so the
    memory is the budget, whatever the number of images. Deterministic for a given seed
    (per-image generators), whatever the worker count or executor.
    Returns ((N, D) float32 L2-normalised, info dict incl. ``failed`` images).
    """
    from pseudo_labels.core.runner import RunOptions

    opts = options or RunOptions()
    quotas = sample_quotas(len(entries), max_samples, samples_per_image)
    jobs = []
    for s in range(0, len(entries), max(1, batch_size)):
        chunk = tuple(entries[s: s + max(1, batch_size)])
        jobs.append(SampleJob(root, chunk, tuple(quotas[s: s + len(chunk)]), src, sample_filter, seed,
                              opts.fail_fast))
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


# --------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    from pseudo_labels.core.io import config_hash, fingerprint_files, prepare_output_dir, read_manifest, write_json, write_manifest

    t0 = time.time()
    opts = runner_options(args)
    root = str(args.cityscapes_root)
    if not Path(root).is_dir():
        raise PseudoLabelsError(f"{root}: dataset root not found")
    for name in ("batch_size", "samples_per_image"):
        if getattr(args, name) < 1:
            raise PseudoLabelsError(f"--{name.replace('_', '-')} must be >= 1")
    if args.seed < 0:
        raise PseudoLabelsError(f"--seed {args.seed}: need a non-negative integer")
    if args.fit_only and args.load_centroids:
        raise PseudoLabelsError("--fit-only fits k-means; with --load-centroids there is nothing to fit")
    if args.fit_only and opts.shard:
        raise PseudoLabelsError("--fit-only reads the whole split; leave out --shard")
    if args.skip_crf:
        print("note: --skip-crf given; no CRF is applied in any case")

    loaded = load_centroids(args.load_centroids) if args.load_centroids else None
    if loaded is not None:
        if args.k is not None and args.k != loaded.k:
            raise PseudoLabelsError(f"{args.load_centroids}: holds k = {loaded.k} centroids but --k {args.k} was given")
        k = loaded.k
    else:
        k = defaults.K if args.k is None else args.k
        if k < 2:
            raise PseudoLabelsError(f"--k {k}: need at least 2 clusters")
    budget = fit_sample_budget(k, args.max_samples)
    mapping = args.mapping or ("stored" if loaded is not None and loaded.cluster_to_class is not None else "majority")
    out = Path(root) / (args.output_subdir or (f"pseudo_semantic_raw_k{k}" if args.raw_clusters
                                               else f"pseudo_semantic_overclustered_k{k}"))
    split_dir = out / args.split
    raw_is_output = bool(args.raw_clusters) or mapping == "none"
    raw_root = out if raw_is_output else out / RAW_HIDDEN

    entries = list_images(root, args.split)
    if args.limit > 0:
        entries = entries[: args.limit]
    mine = opts.select(entries)
    sharded = opts.shard is not None
    src = FeatureSource(args.features_dir, args.backbone, args.weights, args.head, args.head_weights,
                        args.device, args.batch_size)
    centroids_path = out / CENTROIDS_NAME
    params = parameters_of(args, k, mapping, budget, _array_sha(loaded.centroids) if loaded is not None else None)

    # ---- can the fit be reused? (decided before anything is checked per image)
    images_fp = fingerprint_files(e.image_path for e in entries)
    fit_params = {**{k_: params[k_] for k_ in ("k", "seed", "backbone", "weights", "head", "head_weights",
                                              "features_dir", "sample_filter", "samples_per_image",
                                              "max_samples", "kmeans_backend", "limit")},
                  "fit_split": args.split, "images": images_fp}
    fit_hash = config_hash(fit_params)
    existing = None
    if loaded is None and centroids_path.exists():
        existing = load_centroids(centroids_path)
    fit_reusable = existing is not None and (existing.metadata or {}).get("fit_hash") == fit_hash
    need_fit = loaded is None and not (fit_reusable and (not opts.overwrite or sharded))
    if need_fit and sharded:
        what = (f"{centroids_path} holds a fit of other parameters" if existing is not None
                else f"no fit in {out}")
        raise PseudoLabelsError(
            f"--shard {opts.shard[0]}/{opts.shard[1]}: the k-means fit needs a sample of the whole split and is not "
            f"sharded ({what}). Fit first: run the same command once with --fit-only instead of --shard (or once "
            "without --shard, which also labels every image), or give --load-centroids FILE; then run the shards")
    if need_fit and existing is not None and not opts.overwrite:
        raise PseudoLabelsError(
            f"{centroids_path}: holds a k-means fit of other parameters (another split or settings); "
            "use another --output-subdir, --load-centroids to apply it, or --overwrite to refit")

    # ---- inputs checked before anything is written
    if args.features_dir:
        _check_feature_files(src, entries if need_fit else mine, loaded, args.load_centroids)
    elif args.backbone != "builtin" or args.head or loaded is not None:
        ex = _extractor(src)  # fail early on missing weights / CUDA
        if loaded is not None and ex.dim != loaded.dim:
            raise PseudoLabelsError(
                f"{args.load_centroids}: centroids have dimension {loaded.dim} but backbone {src.describe()} "
                f"gives {ex.dim}-d features (use the backbone/features the centroids were fitted on)")
    if need_fit and args.sample_filter == "gt-nonvoid":
        missing = next((e for e in entries if not _has_gt(root, e)), None)
        if missing is not None:
            raise InputFileError(gt_path(root, missing, "labelTrainIds"), "missing",
                                 "--sample-filter gt-nonvoid reads gtFine labels; use uniform")

    prev = read_manifest(split_dir) if split_dir.is_dir() else None
    reuse = prepare_output_dir(split_dir, STAGE, params, overwrite=opts.overwrite)
    # the mapping the semantic PNGs on disk were written with (reused only under the same one)
    sem_mapping = (prev or {}).get("semantics_mapping") if reuse else None
    gt_use: dict = {}
    failures: dict[str, str] = {}

    def note_failures(items) -> None:
        for n, m in items:
            failures.setdefault(n, m)

    # ---- centroids: load, reuse a finished fit, or fit
    fit_info: dict = {}
    if loaded is not None:
        centroids, meta = loaded.centroids, dict(loaded.metadata or {})
        fit_info = {"loaded_from": str(Path(args.load_centroids).resolve()), "fit_metadata": meta}
        if meta.get("ground_truth_use"):
            gt_use["centroids"] = f"{args.load_centroids} was fitted with ground truth: {meta['ground_truth_use']}"
        use_path = Path(args.load_centroids)
    else:
        if not need_fit:
            print(f"reusing the k-means fit in {centroids_path} (same parameters)")
            centroids, meta = existing.centroids, dict(existing.metadata)
        else:
            if args.sample_filter == "gt-nonvoid":
                msg = (f"fit sample: only patches whose nearest-downsampled gtFine trainId is not void "
                       f"(split {args.split}, reference sampling)")
                print(f"uses ground truth: {msg}")
                gt_use["sampling"] = msg
            samples, sinfo = collect_samples(root, entries, src, sample_filter=args.sample_filter,
                                             samples_per_image=args.samples_per_image, max_samples=budget,
                                             seed=args.seed, batch_size=args.batch_size, options=opts)
            note_failures((f["image"], f["error"]) for f in sinfo["failed"])
            if samples.shape[0] == 0 and failures:
                _finish(failures, "images")  # nothing could be sampled: name the failures, not k
            if k > samples.shape[0]:
                raise PseudoLabelsError(f"--k {k} is more than the {samples.shape[0]} sampled feature vectors of "
                                        f"split {args.split}; lower --k or raise --samples-per-image")
            tf = time.time()
            centroids = fit_kmeans(samples, k, args.kmeans_backend, args.seed, device=args.device)
            del samples
            meta = {"backend": resolve_backend(args.kmeans_backend), "seed": args.seed, "k": k,
                    "feature_dim": int(centroids.shape[1]), "feature_source": src.describe(),
                    "backbone": params["backbone"], "head": args.head, "fit_split": args.split,
                    "fit_seconds": round(time.time() - tf, 3), "sampling": sinfo, "fit_hash": fit_hash,
                    "fit_parameters": fit_params, "ground_truth_use": dict(gt_use)}
            save_centroids(centroids_path, centroids, None, meta)
            left = f", without {len(sinfo['failed'])} image(s) that failed" if sinfo["failed"] else ""
            print(f"fitted k-means (k={k}, {meta['backend']}) on {sinfo['n_samples']} vectors "
                  f"(budget {budget if budget is not None else 'none'}{left}) in {meta['fit_seconds']:.1f} s "
                  f"-> {centroids_path}")
        if meta.get("ground_truth_use"):
            gt_use.update(meta["ground_truth_use"])
        fit_info = {"fit_metadata": meta}
        use_path = centroids_path

    if mapping == "stored":
        gt_use["mapping"] = (f"cluster_to_class loaded from {args.load_centroids} (majority vote on ground truth "
                             f"of split {(loaded.metadata or {}).get('fit_split', 'unknown (reference file)')})")
    elif mapping != "none" and not args.fit_only:
        gt_use["mapping"] = (f"{mapping} cluster->class mapping from the pixel confusion with gtFine labelTrainIds "
                             f"of split {args.split}")

    def manifest(status: str, counts: dict | None = None, **extra) -> None:
        write_manifest(split_dir, STAGE, params, uses_ground_truth=gt_use or False,
                       inputs={"images": images_fp, "centroids": str(use_path), "features": src.describe()},
                       counts={"status": status, "images": len(entries), **(counts or {})},
                       extra={**opts.describe(), "semantics_mapping": sem_mapping, **extra})

    if args.fit_only:
        manifest("fitted (--fit-only)", fit_only=True, **fit_info)
        print(f"--fit-only: centroids in {centroids_path}; now run the shards (--shard I/N, same flags)")
        return _finish(failures, "images")

    # ---- write the manifest before the first per-image output (a changed rerun is refused)
    manifest("running")

    # ---- assignment (streamed in blocks; per-batch sums folded in as they arrive)
    acc = {"cluster_pixels": np.zeros(k, np.int64), "confusion": np.zeros((k, NUM_CLASSES), np.int64),
           "n_gt": 0, "no_gt": None, "written": 0, "reused": 0, "ok": set()}

    def fold(job, res) -> None:
        for key in ("cluster_pixels", "confusion", "n_gt", "written", "reused"):
            acc[key] = acc[key] + res[key]
        acc["no_gt"] = acc["no_gt"] or res["no_gt"]
        acc["ok"].update(res["ok"])
        note_failures(res["failed"])

    def assign(which: list[ImageEntry], reuse_raw: bool) -> None:
        jobs = [AssignJob(root, b, src, str(use_path), str(raw_root), args.upsample, reuse_raw, str(use_path),
                          opts.fail_fast) for b in _batches(which, args.batch_size)]
        note_failures(run_blocks(assign_batch, jobs, opts, "assigning clusters", len(which), fold))

    def write_semantics(which: list[ImageEntry], c2c: np.ndarray) -> int:
        nonlocal sem_mapping
        from pseudo_labels.core.runner import run_per_image

        lut = [int(v) for v in c2c]
        same = sem_mapping == lut
        if not same:
            sem_mapping = lut  # recorded before the first PNG with this mapping is written
            manifest("running")
        todo = [e for e in which if e.stem in acc["ok"]]
        mjobs = [MapJob(e, str(raw_root), str(out), tuple(lut), reuse and same) for e in todo]
        msum = run_per_image(map_image, mjobs, options=opts, desc="writing semantics",
                             name_of=lambda j: j.entry.stem)
        note_failures(msum.failed)
        return sum(bool(v) for v in msum.results)

    assign(mine, reuse)
    known_c2c = None
    if mapping == "stored":
        known_c2c = np.asarray(loaded.cluster_to_class, np.int64)
    elif mapping == "none":
        known_c2c = map_clusters(np.zeros((k, NUM_CLASSES)), "none")
    written_sem = 0
    if sharded:
        if known_c2c is not None and not raw_is_output:
            written_sem = write_semantics(mine, known_c2c)
        mine_stems = {e.stem for e in mine}
        others = [e for e in entries if e.stem not in mine_stems]
        left = [e for e in others if not (raw_root / e.relative(".png")).exists()]
        if left or failures:
            how = ("writes the semantic PNGs" if known_c2c is None and not raw_is_output
                   else "writes stats.json and miou.json")
            manifest("shard finished", {"shard_images": len(mine), "written": acc["written"],
                                        "reused": acc["reused"], "failed": len(failures)},
                     failed=[{"image": n, "error": m} for n, m in failures.items()], **fit_info)
            print(f"shard {opts.shard[0]}/{opts.shard[1]}: {acc['written']} images assigned, {acc['reused']} reused"
                  f"{f', {len(failures)} failed' if failures else ''}; {len(left)} image(s) of other shards not "
                  f"assigned yet: the shard that finds every image assigned {how} (or rerun without --shard)")
            return _finish(failures, "images")
        print(f"shard {opts.shard[0]}/{opts.shard[1]}: every image is assigned; mapping the split")
        assign(others, True)  # read back the other shards' raw clusters (their counts and confusion)

    ok = [e for e in entries if e.stem in acc["ok"]]
    have_gt = bool(ok) and acc["n_gt"] == len(ok)
    conf = acc["confusion"] if have_gt else None
    cluster_pixels = acc["cluster_pixels"]

    # ---- mapping
    if mapping == "stored":
        c2c = known_c2c
        print(f"uses ground truth: {gt_use['mapping']}")
    elif mapping == "none":
        c2c = known_c2c
    else:
        if not have_gt:
            stem = acc["no_gt"]
            missing = next((gt_path(root, e, "labelTrainIds") for e in ok if e.stem == stem),
                           Path(root) / "gtFine" / args.split)
            raise InputFileError(missing, "missing", f"--mapping {mapping} reads gtFine labels; use --mapping none")
        c2c = map_clusters(conf, mapping)
        gt_use["mapping"] = (f"{mapping} cluster->class mapping from the pixel confusion with gtFine labelTrainIds "
                             f"of split {args.split} ({len(ok)} images)")
        print(f"uses ground truth: {gt_use['mapping']}")
    if mapping != "none":
        _write_mapping(centroids_path, use_path, centroids, c2c, fit_info, loaded is not None, opts.overwrite)

    # ---- semantic PNGs
    written = acc["written"]
    reused = acc["reused"]
    if not raw_is_output:
        written = written_sem + write_semantics(ok, c2c)
        reused = len(ok) - written

    # ---- stats (reference schema) and scoring
    if raw_is_output:
        per_id = {int(i): int(n) for i, n in enumerate(cluster_pixels)}
    else:
        per_id = {c: int(cluster_pixels[c2c == c].sum()) for c in range(NUM_CLASSES)}
    write_json(split_dir / "stats.json", {"total_images": len(ok), "per_class_pixels": per_id,
                                          "num_output_classes": k if raw_is_output else NUM_CLASSES,
                                          "raw_clusters": raw_is_output})
    evaluation = None
    if have_gt:
        evaluation = _score(conf, c2c, mapping, k, args.split, len(ok))
        write_json(split_dir / "miou.json", evaluation)
        print(f"mIoU {evaluation['mIoU']:.2f} % against gtFine labelTrainIds ({evaluation['scored_mapping']}; "
              "scoring uses ground truth: evaluation only) -> " + str(split_dir / "miou.json"))

    counts = {"written": written, "reused": reused, "failed": len(failures), "k": k,
              "clusters_used": int((cluster_pixels > 0).sum())}
    manifest("finished" if not failures else "finished with failures", counts,
             run={"workers": opts.workers, "executor": opts.executor, "batch_size": args.batch_size,
                  "device": args.device, "skip_crf": bool(args.skip_crf), "crf": "none",
                  "overwrite": bool(opts.overwrite), "seconds": round(time.time() - t0, 2)},
             outputs={"per_image": str(out / args.split) + "/<city>/<stem>.png",
                      "content": "raw cluster ids" if raw_is_output else "trainIds",
                      "raw_clusters": str(raw_root / args.split),
                      "centroids": str(centroids_path if mapping != 'none' or loaded is None else use_path)},
             cluster_to_class=[int(v) for v in c2c],
             evaluation={"uses_ground_truth": True, "note": "mIoU against gtFine (scoring only)",
                         "file": str(split_dir / "miou.json")} if evaluation else None,
             failed=[{"image": n, "error": m} for n, m in failures.items()],
             **fit_info)
    if not gt_use:
        print("uses ground truth: no (label-free)")
    print(f"{written} images written, {reused} reused, {len(failures)} failed -> {out / args.split}")
    return _finish(failures, "images")


def _finish(failures: dict[str, str], what: str) -> int:
    """Exit 0, or raise naming the failed images (exit status 2) once the others are done."""
    if not failures:
        return 0
    items = list(failures.items())
    names = "; ".join(f"{n}: {m}" for n, m in items[:5])
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    raise PseudoLabelsError(f"{len(items)} {what} failed: {names}{more}; the others were finished, "
                            "rerun to retry the failed ones")


def _check_feature_files(src: FeatureSource, entries: list[ImageEntry], loaded, centroids_file) -> None:
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


def _write_mapping(centroids_path: Path, use_path: Path, centroids, c2c, fit_info: dict, loaded: bool,
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


def _score(conf: np.ndarray, c2c: np.ndarray, mapping: str, k: int, split: str, n_images: int) -> dict:
    """mIoU of the mapped output from the accumulated (k, 19) cluster confusion
    (evaluation.semantic). With --mapping none the clusters are matched for scoring only:
    Hungarian when k <= 19, majority otherwise (the DESIGN's protocol for pseudo-classes)."""
    from evaluation.semantic import miou_from_confusion

    scored = c2c
    how = f"mapping {mapping}"
    if mapping == "none":
        how = "clusters matched for scoring only: " + ("hungarian" if k <= NUM_CLASSES else "majority")
        scored = map_clusters(conf, "hungarian" if k <= NUM_CLASSES else "majority")
    cm = class_confusion(conf, scored)
    misses = np.zeros(NUM_CLASSES, np.int64)
    unmapped = (scored < 0) | (scored >= NUM_CLASSES)
    if unmapped.any():
        misses = conf[unmapped].sum(axis=0)
    res = miou_from_confusion(cm, misses)
    return {"split": split, "n_images": n_images, "k": k, "mIoU": res["mIoU"],
            "pixel_accuracy": res["pixel_accuracy"], "n_classes": res["n_classes"],
            "per_class_iou": {name: (None if np.isnan(v) else v) for name, v in zip(CLASS_NAMES, res["per_class_iou"])},
            "scored_mapping": how, "cluster_to_class": [int(v) for v in scored],
            "gt_pixels_in_unmapped_clusters": void_predicted_pixels(conf, scored),
            "ground_truth": "gtFine labelTrainIds (255 ignored); scoring is evaluation and uses ground truth",
            "resolution": "full image resolution"}


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.generate_overclustered_semantics"))
