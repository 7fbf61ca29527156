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

Ground truth: ``--mapping majority|hungarian`` and ``--sample-filter gt-nonvoid`` read
gtFine labels; the command says so and records it in the manifest. ``--mapping none``
with the default uniform sampling uses no labels. No CRF is applied (the reference's
``--skip_crf`` behaviour); ``--skip-crf`` is accepted for compatibility and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import defaults
from .cityscapes import (
    CLASS_NAMES, IGNORE, NUM_CLASSES, ImageEntry, gt_path, label_id_to_train_id_lut, list_images,
)
from .cli import add_option, module_main
from .clustering import (
    BACKENDS, CENTROIDS_NAME, UPSAMPLE_MODES, assign_clusters, cluster_png_array, fit_kmeans, load_centroids,
    patch_grid, pool_to_grid, resize_nearest, resolve_backend, sample_patch_features, save_centroids,
)
from .errors import InputFileError, PseudoLabelsError
from .mapping import METHODS, apply_mapping, class_confusion, cluster_confusion, map_clusters, void_predicted_pixels

STAGE = "generate-overclustered-semantics"
RAW_HIDDEN = ".raw_clusters"
SAMPLE_FILTERS = ("uniform", "gt-nonvoid")


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .features import BACKBONES, HEADS

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
    parser.add_argument("--mapping", choices=METHODS, default=None,
                        help="cluster->class: majority (uses GT, the reference), hungarian (uses GT, one-to-one), "
                             "none (label-free: clusters stay pseudo-classes). Default: the stored mapping of "
                             "--load-centroids when it has one, else majority")
    parser.add_argument("--backbone", default="builtin", choices=BACKBONES,
                        help="feature backbone when extracting on the fly (default builtin; the reference is "
                             "dinov2_vitb14 with --head cause)")
    parser.add_argument("--weights", default=None, help="local DINOv2 checkpoint (official key layout)")
    parser.add_argument("--head", choices=HEADS, default=None, help="cause: CAUSE-TR Segment_TR head (90-d)")
    add_option(parser, "--head-weights", default=None, help="CAUSE segment_tr.pth (with --head cause)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for feature extraction and the torch "
                        "k-means backend (default cpu)")
    add_option(parser, "--batch-size", type=int, default=defaults.BATCH_SIZE, help="images per extraction batch")
    parser.add_argument("--seed", type=int, default=defaults.SEED, help="sampling and k-means seed (default 42)")
    add_option(parser, "--features-dir", default=None,
               help="read precomputed features <dir>/<split>/<city>/<stem>.npy (extract-features) instead of "
                    "extracting")
    add_option(parser, "--sample-filter", choices=SAMPLE_FILTERS, default=defaults.SAMPLE_FILTER,
               help="uniform (label-free, default) or gt-nonvoid (the reference: only patches whose "
                    "nearest-downsampled GT trainId is not void; uses ground truth)")
    add_option(parser, "--samples-per-image", type=int, default=defaults.SAMPLES_PER_IMAGE,
               help="at most this many patch vectors per image for the fit (default 2000, reference)")
    add_option(parser, "--max-samples", type=int, default=defaults.MAX_FIT_SAMPLES,
               help="at most this many vectors in all (memory bound; default 1,000,000)")
    add_option(parser, "--kmeans-backend", choices=BACKENDS, default=defaults.KMEANS_BACKEND,
               help="auto (faiss if installed, else torch), faiss, torch, or sklearn (MiniBatchKMeans with the "
                    "reference settings)")
    parser.add_argument("--upsample", choices=UPSAMPLE_MODES, default=defaults.UPSAMPLE,
                        help="similarity (default: bilinear similarities then argmax) or labels (argmax at feature "
                             "resolution then nearest, the reference path)")
    parser.add_argument("--workers", type=int, default=1, help="processes for per-image assignment (default 1)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images of the split (0: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute everything even if the output folder holds results of other parameters")
    add_option(parser, "--skip-crf", action="store_true",
               help="accepted for compatibility with the reference; no CRF is ever applied (this is the default)")


def parameters_of(args: argparse.Namespace, k: int | None, mapping: str) -> dict:
    """Parameters that determine the outputs (config hash); run-only options excluded."""
    return {
        "split": args.split, "k": k, "raw_clusters": bool(args.raw_clusters),
        "load_centroids": str(Path(args.load_centroids).resolve()) if args.load_centroids else None,
        "mapping": mapping, "backbone": None if args.features_dir else args.backbone,
        "weights": args.weights, "head": args.head, "head_weights": args.head_weights, "seed": args.seed,
        "features_dir": str(Path(args.features_dir).resolve()) if args.features_dir else None,
        "sample_filter": args.sample_filter, "samples_per_image": args.samples_per_image,
        "max_samples": args.max_samples, "kmeans_backend": resolve_backend(args.kmeans_backend),
        "upsample": args.upsample, "limit": args.limit,
    }


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
        from .features import build_extractor

        _EXTRACTORS[key] = build_extractor(src.backbone, src.weights, src.head, src.device,
                                           head_weights=src.head_weights, batch_size=src.batch_size)
    return _EXTRACTORS[key]


def feature_file(src: FeatureSource, entry: ImageEntry) -> Path:
    return Path(src.features_dir) / entry.relative(".npy")


def load_feature_batch(src: FeatureSource, entries: list[ImageEntry]) -> list[np.ndarray]:
    """(D, h, w) float32 features of each entry, extracted (one batch) or read from disk."""
    from .features import load_features
    from .io import read_image_rgb

    if src.features_dir:
        return [load_features(feature_file(src, e)) for e in entries]
    images = [read_image_rgb(e.image_path) for e in entries]
    return _extractor(src).extract(images)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of a PNG from its header (the image itself is not decoded)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror})") from None
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        if path.suffix.lower() != ".png":
            from .io import read_image_rgb

            return read_image_rgb(path).shape[:2]
        raise InputFileError(path, "not a readable PNG image")
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def read_gt_train_ids(root: str, entry: ImageEntry) -> np.ndarray | None:
    """gtFine trainIds (H, W) uint8 of an image: ``labelTrainIds`` or, failing that,
    ``labelIds`` mapped with cityscapesscripts' table; None when neither exists."""
    from .io import read_png

    p = gt_path(root, entry, "labelTrainIds")
    if p.exists():
        return read_png(p)
    p = gt_path(root, entry, "labelIds")
    if p.exists():
        return label_id_to_train_id_lut()[read_png(p)]
    return None


# --------------------------------------------------------------------------- per-image work
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


_CENTROIDS: dict = {}


def _centroids(path: str) -> np.ndarray:
    if path not in _CENTROIDS:
        _CENTROIDS.clear()
        _CENTROIDS[path] = load_centroids(path).centroids
    return _CENTROIDS[path]


def assign_batch(job: AssignJob) -> list[dict]:
    """Assign every pixel of each image of ``job``; write its raw cluster PNG; return per
    image ``{stem, reused, cluster_pixels (k,), confusion (k, 19) or None}``.
    An existing raw PNG is reused when ``job.reuse`` (resume)."""
    from .io import read_png, write_png

    centroids = _centroids(job.centroids_path)
    k = centroids.shape[0]
    todo, out = [], {}
    for e in job.entries:
        raw_path = Path(job.raw_dir) / e.relative(".png")
        if job.reuse and raw_path.exists():
            clusters = read_png(raw_path).astype(np.int64)
            out[e.stem] = _image_result(job.root, e, clusters, k, reused=True)
        else:
            todo.append(e)
    if todo:
        feats = load_feature_batch(job.source, todo)
        for e, f in zip(todo, feats):
            if f.shape[0] != centroids.shape[1]:
                where = feature_file(job.source, e) if job.source.features_dir else job.source.describe()
                raise PseudoLabelsError(
                    f"{where}: features have dimension {f.shape[0]} but the centroids in {job.centroids_name} "
                    f"have {centroids.shape[1]} (use the backbone/features the centroids were fitted on)")
            clusters = assign_clusters(f, centroids, image_size(e.image_path), job.upsample)
            write_png(Path(job.raw_dir) / e.relative(".png"), cluster_png_array(clusters, k))
            out[e.stem] = _image_result(job.root, e, clusters, k, reused=False)
    return [out[e.stem] for e in job.entries]


def _image_result(root: str, e: ImageEntry, clusters: np.ndarray, k: int, reused: bool) -> dict:
    valid = clusters[(clusters >= 0) & (clusters < k)]
    gt = read_gt_train_ids(root, e)
    conf = None
    if gt is not None:
        if gt.shape != clusters.shape:
            gt = resize_nearest(gt, clusters.shape)
        conf = cluster_confusion(clusters, gt, k)
    return {"stem": e.stem, "reused": reused, "cluster_pixels": np.bincount(valid.ravel(), minlength=k),
            "confusion": conf}


@dataclass(frozen=True)
class MapJob:
    entry: ImageEntry
    raw_dir: str
    out_dir: str
    cluster_to_class: tuple[int, ...]
    reuse: bool


def map_image(job: MapJob) -> bool:
    """Raw cluster PNG -> semantic trainId PNG (uint8, 255 void). Returns True if written."""
    from .io import read_png, write_png

    out_path = Path(job.out_dir) / job.entry.relative(".png")
    if job.reuse and out_path.exists():
        return False
    clusters = read_png(Path(job.raw_dir) / job.entry.relative(".png")).astype(np.int64)
    write_png(out_path, apply_mapping(clusters, np.asarray(job.cluster_to_class)))
    return True


# --------------------------------------------------------------------------- fit
def collect_samples(root: str, entries: list[ImageEntry], src: FeatureSource, *, sample_filter: str,
                    samples_per_image: int, max_samples: int, seed: int, batch_size: int) -> tuple[np.ndarray, dict]:
    """Stream all images once and keep a bounded sample of patch features.

    Features are pooled to the ViT patch grid (dense maps, as the reference), then at most
    min(samples_per_image, max_samples // n_images) vectors per image are drawn (seeded).
    Returns ((N, D) float32 L2-normalised, info dict).
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    per_image = max(1, min(samples_per_image, max_samples // len(entries)))
    grid = patch_grid()
    parts, dim, no_gt = [], None, []
    bar = tqdm(total=len(entries), desc="sampling features", unit="img", file=sys.stderr, leave=False)
    for s in range(0, len(entries), max(1, batch_size)):
        chunk = entries[s: s + batch_size]
        for e, f in zip(chunk, load_feature_batch(src, chunk)):
            if dim is None:
                dim = f.shape[0]
            elif f.shape[0] != dim:
                where = feature_file(src, e) if src.features_dir else e.image_path
                raise PseudoLabelsError(f"{where}: features have dimension {f.shape[0]}, earlier images {dim}")
            pooled = pool_to_grid(f, grid)
            mask = None
            if sample_filter == "gt-nonvoid":
                gt = read_gt_train_ids(root, e)
                if gt is None:
                    raise InputFileError(gt_path(root, e, "labelTrainIds"), "missing",
                                         "--sample-filter gt-nonvoid reads gtFine labels; use uniform")
                mask = resize_nearest(gt, pooled.shape[1:]) != IGNORE
            parts.append(sample_patch_features(pooled, per_image, rng, mask))
            bar.update(1)
    bar.close()
    samples = np.concatenate(parts) if parts else np.zeros((0, dim or 0), np.float32)
    return samples, {"n_samples": int(samples.shape[0]), "per_image": per_image, "dim": dim,
                     "grid": list(pooled.shape[1:])}


# --------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    from .io import config_hash, fingerprint_files, prepare_output_dir, read_json, write_json, write_manifest
    from .runner import run_per_image

    t0 = time.time()
    root = str(args.cityscapes_root)
    if not Path(root).is_dir():
        raise PseudoLabelsError(f"{root}: dataset root not found")
    for name in ("batch_size", "samples_per_image", "max_samples"):
        if getattr(args, name) < 1:
            raise PseudoLabelsError(f"--{name.replace('_', '-')} must be >= 1")
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
    mapping = args.mapping or ("stored" if loaded is not None and loaded.cluster_to_class is not None else "majority")
    out = Path(root) / (args.output_subdir or (f"pseudo_semantic_raw_k{k}" if args.raw_clusters
                                               else f"pseudo_semantic_overclustered_k{k}"))
    split_dir = out / args.split
    raw_is_output = bool(args.raw_clusters) or mapping == "none"
    raw_root = out if raw_is_output else out / RAW_HIDDEN

    entries = list_images(root, args.split)
    if args.limit > 0:
        entries = entries[: args.limit]
    src = FeatureSource(args.features_dir, args.backbone, args.weights, args.head, args.head_weights,
                        args.device, args.batch_size)
    if args.features_dir:
        _check_feature_files(src, entries, loaded, args.load_centroids)
    elif args.backbone != "builtin" or args.head:
        _extractor(src)  # fail early on missing weights / CUDA

    params = parameters_of(args, k, mapping)
    reuse = prepare_output_dir(split_dir, STAGE, params, overwrite=args.overwrite)
    gt_use: dict = {}

    # ---- centroids: load, reuse a finished fit, or fit
    centroids_path = out / CENTROIDS_NAME
    fit_info: dict = {}
    if loaded is not None:
        centroids, meta = loaded.centroids, dict(loaded.metadata or {})
        fit_info = {"loaded_from": str(Path(args.load_centroids).resolve()), "fit_metadata": meta}
        if meta.get("ground_truth_use"):
            gt_use["centroids"] = f"{args.load_centroids} was fitted with ground truth: {meta['ground_truth_use']}"
        use_path = Path(args.load_centroids)
    else:
        fit_params = {**{k_: params[k_] for k_ in ("k", "seed", "backbone", "weights", "head", "head_weights",
                                                  "features_dir", "sample_filter", "samples_per_image",
                                                  "max_samples", "kmeans_backend", "limit")},
                      "fit_split": args.split,
                      "images": fingerprint_files(e.image_path for e in entries)}
        fit_hash = config_hash(fit_params)
        existing = load_centroids(centroids_path) if centroids_path.exists() else None
        if existing is not None and (existing.metadata or {}).get("fit_hash") == fit_hash and not args.overwrite:
            print(f"reusing the k-means fit in {centroids_path} (same parameters)")
            centroids, meta = existing.centroids, dict(existing.metadata)
        else:
            if existing is not None and not args.overwrite:
                raise PseudoLabelsError(
                    f"{centroids_path}: holds a k-means fit of other parameters (another split or settings); "
                    "use another --output-subdir, --load-centroids to apply it, or --overwrite to refit")
            if args.sample_filter == "gt-nonvoid":
                msg = (f"fit sample: only patches whose nearest-downsampled gtFine trainId is not void "
                       f"(split {args.split}, reference sampling)")
                print(f"uses ground truth: {msg}")
                gt_use["sampling"] = msg
            samples, sinfo = collect_samples(root, entries, src, sample_filter=args.sample_filter,
                                             samples_per_image=args.samples_per_image,
                                             max_samples=args.max_samples, seed=args.seed,
                                             batch_size=args.batch_size)
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
            print(f"fitted k-means (k={k}, {meta['backend']}) on {sinfo['n_samples']} vectors in "
                  f"{meta['fit_seconds']:.1f} s -> {centroids_path}")
        if meta.get("ground_truth_use"):
            gt_use.update(meta["ground_truth_use"])
        fit_info = {"fit_metadata": meta}
        use_path = centroids_path

    # ---- write the manifest before the first per-image output (a changed rerun is refused)
    write_manifest(split_dir, STAGE, params, uses_ground_truth=gt_use or False,
                   counts={"status": "running", "images": len(entries)})

    # ---- assignment
    bs = max(1, args.batch_size)
    jobs = [AssignJob(root, tuple(entries[s: s + bs]), src, str(use_path), str(raw_root), args.upsample,
                      reuse, str(use_path)) for s in range(0, len(entries), bs)]
    summary = run_per_image(assign_batch, jobs, workers=args.workers, desc="assigning clusters",
                            name_of=lambda j: j.entries[0].stem, fail_fast=True)
    summary.raise_if_failed()
    results = [r for batch in summary.results for r in batch]
    reused = sum(r["reused"] for r in results)
    cluster_pixels = np.sum([r["cluster_pixels"] for r in results], axis=0)
    have_gt = all(r["confusion"] is not None for r in results)
    conf = np.sum([r["confusion"] for r in results], axis=0) if have_gt else None

    # ---- mapping
    if mapping == "stored":
        c2c = np.asarray(loaded.cluster_to_class, np.int64)
        gt_use["mapping"] = (f"cluster_to_class loaded from {args.load_centroids} (majority vote on ground truth "
                             f"of split {(loaded.metadata or {}).get('fit_split', 'unknown (reference file)')})")
        print(f"uses ground truth: {gt_use['mapping']}")
    elif mapping == "none":
        c2c = map_clusters(np.zeros((k, NUM_CLASSES)), "none")
    else:
        if not have_gt:
            missing = next(gt_path(root, e, "labelTrainIds") for e, r in zip(entries, results)
                           if r["confusion"] is None)
            raise InputFileError(missing, "missing", f"--mapping {mapping} reads gtFine labels; use --mapping none")
        c2c = map_clusters(conf, mapping)
        gt_use["mapping"] = (f"{mapping} cluster->class mapping from the pixel confusion with gtFine labelTrainIds "
                             f"of split {args.split} ({len(entries)} images)")
        print(f"uses ground truth: {gt_use['mapping']}")
    if mapping != "none":
        _write_mapping(centroids_path, use_path, centroids, c2c, fit_info, loaded is not None, args.overwrite)

    # ---- semantic PNGs
    written = len(results) - reused
    if not raw_is_output:
        mjobs = [MapJob(e, str(raw_root), str(out), tuple(int(v) for v in c2c), reuse) for e in entries]
        msum = run_per_image(map_image, mjobs, workers=args.workers, desc="writing semantics",
                             name_of=lambda j: j.entry.stem, fail_fast=True)
        msum.raise_if_failed()
        written = sum(bool(v) for v in msum.results)

    # ---- stats (reference schema) and scoring
    if raw_is_output:
        per_id = {int(i): int(n) for i, n in enumerate(cluster_pixels)}
    else:
        per_id = {c: int(cluster_pixels[c2c == c].sum()) for c in range(NUM_CLASSES)}
    write_json(split_dir / "stats.json", {"total_images": len(entries), "per_class_pixels": per_id,
                                          "num_output_classes": k if raw_is_output else NUM_CLASSES,
                                          "raw_clusters": raw_is_output})
    evaluation = None
    if have_gt:
        evaluation = _score(conf, c2c, mapping, k, args.split, len(entries))
        write_json(split_dir / "miou.json", evaluation)
        print(f"mIoU {evaluation['mIoU']:.2f} % against gtFine labelTrainIds ({evaluation['scored_mapping']}; "
              "scoring uses ground truth: evaluation only) -> " + str(split_dir / "miou.json"))

    counts = {"status": "finished", "images": len(entries), "written": written, "reused": reused, "k": k,
              "clusters_used": int((cluster_pixels > 0).sum())}
    write_manifest(split_dir, STAGE, params, uses_ground_truth=gt_use or False,
                   inputs={"images": fingerprint_files(e.image_path for e in entries),
                           "centroids": str(use_path), "features": src.describe()},
                   counts=counts,
                   extra={"run": {"workers": args.workers, "batch_size": args.batch_size, "device": args.device,
                                  "skip_crf": bool(args.skip_crf), "crf": "none", "overwrite": bool(args.overwrite),
                                  "seconds": round(time.time() - t0, 2)},
                          "outputs": {"per_image": str(out / args.split) + "/<city>/<stem>.png",
                                      "content": "raw cluster ids" if raw_is_output else "trainIds",
                                      "raw_clusters": str(raw_root / args.split),
                                      "centroids": str(centroids_path if mapping != 'none' or loaded is None
                                                       else use_path)},
                          "cluster_to_class": [int(v) for v in c2c],
                          "evaluation": {"uses_ground_truth": True, "note": "mIoU against gtFine (scoring only)",
                                         "file": str(split_dir / "miou.json")} if evaluation else None,
                          **fit_info})
    if not gt_use:
        print("uses ground truth: no (label-free)")
    print(f"{written} images written, {reused} reused -> {out / args.split}")
    return 0


def _check_feature_files(src: FeatureSource, entries: list[ImageEntry], loaded, centroids_file) -> None:
    """Every feature file exists, is (D, h, w) and (with loaded centroids) of their dimension:
    checked from the .npy headers before anything is written."""
    dim = loaded.dim if loaded is not None else None
    for e in entries:
        p = feature_file(src, e)
        if not p.exists():
            raise InputFileError(p, "feature file missing", "run extract-features for this split first")
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputFileError(p, f"not a readable .npy array ({exc})") from None
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
