"""DynaSeg: per-image unsupervised segmentation with a dynamically weighted loss.

Guermazi, Ksantini, Khan, "DynaSeg: A deep dynamic fusion method for unsupervised image
segmentation incorporating feature similarity and spatial continuity", Image and Vision
Computing 2024 (reference code: RyersonMultimediaLab/DynaSeg). One small network is
trained on one image and its argmax channel is the segment of each pixel:

- network: M blocks of (3x3 conv, ReLU, BatchNorm) with p channels, a 1x1 conv to
  ``max_labels`` channels and a BatchNorm; the response map r is (max_labels, H, W);
- loss: ``L = L_sim + w * L_con``; ``L_sim`` = cross-entropy of r against its own
  per-pixel argmax, ``L_con`` = mean |r(y+1, x) - r(y, x)| + mean |r(y, x+1) - r(y, x)|;
- dynamic weight: SCF (network on pixels) ``w = mu / q``; FSF (network on pretrained
  features) ``w = q / mu``; q = the number of distinct labels of the current step,
  never below the silhouette k;
- silhouette phase: the cluster count k in 3..26 with the best silhouette score of a
  k-means of the input is a floor for q, and training stops when q reaches it; the labels
  kept are the last ones with at least k segments, so a result never has fewer than k
  segments (it never collapses into one).

Continuity loss in the reference code (RyersonMultimediaLab/DynaSeg at commit
afc0f39debf0c953318ade5c284b4562bf61c0ef): the BSD500 / VOC script
(``tools/DynaSeg_SCF_BSD_VOC.py``) keeps its gradient, as the paper writes the loss; that is
``continuity="gradient"`` (default). Only the COCO path
(``Dynamicsegnet/models/architectures/my_custom_architecture_optimal_clusters.py``) computes
``L_con`` on detached responses (no gradient reaches the network from it, so w has no effect
there). ``"detached"`` detaches ``L_con`` but is otherwise our loop, which differs from that
COCO path in two more ways: the COCO path takes the argmax target from the responses *before*
the last BatchNorm (the cross-entropy and ``L_con`` use the normalised ones), and its weight
uses the label count of the previous image's training (``qdy`` is updated after the T steps),
where ours uses the current step's count. Scoring (``score_segments``): the release keeps, per
image, the training epoch whose mIoU against the ground truth is best (its validation hook) - an
oracle choice that reads labels; we keep the last state and do not do that.

Speed (the reference runs full k-means with 10 restarts on every pixel and a silhouette
on all pixels, quadratic in pixels, for each of 24 k): here the silhouette is computed on
a sample of pixels (what ``sklearn.metrics.silhouette_score(sample_size=n)`` does), with
the sample's distance matrix computed once and shared by all k; k-means is faiss, fitted
on a pixel sample, seeded from one greedy k-means++ run for the largest k (its first k
centres are a k-means++ seeding for k), and the network trains at a working resolution
(long side ``work_long_side``); responses are upsampled bilinearly to the output size.

Arrays: images (H, W, 3) uint8 RGB; features (D, h, w) float32; segment maps (H, W)
int32 with ids 0..n-1 (written as uint16 PNG). Everything runs on CPU, deterministic for
a fixed seed and thread count.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudo_labels.core.errors import PseudoLabelsError

VARIANTS = ("scf", "fsf")
CONTINUITY_MODES = ("gradient", "detached")
STAGE = "generate-dynaseg-segments"
RUN_JSON = "dynaseg_run.json"

from pseudo_labels.core.defaults import (  # noqa: E402
    DYNASEG_N_BLOCKS as N_BLOCKS, DYNASEG_CHANNELS as CHANNELS, DYNASEG_MAX_LABELS as MAX_LABELS, DYNASEG_STEPS as STEPS, DYNASEG_LR as LR, DYNASEG_MOMENTUM as MOMENTUM, DYNASEG_MU as MU, DYNASEG_K_RANGE as K_RANGE, DYNASEG_SILHOUETTE_SAMPLE as SILHOUETTE_SAMPLE, DYNASEG_KMEANS_FIT_SAMPLE as KMEANS_FIT_SAMPLE, DYNASEG_KMEANS_ITER as KMEANS_ITER, DYNASEG_WORK_LONG_SIDE as WORK_LONG_SIDE, DYNASEG_SEED as SEED,
)


@dataclass(frozen=True)
class DynaSegParams:
    """Hyper-parameters of one DynaSeg run (see the module docstring)."""

    variant: str = "scf"
    steps: int = STEPS
    n_blocks: int = N_BLOCKS
    channels: int = CHANNELS
    max_labels: int = MAX_LABELS
    mu: float | None = None  # None: MU[variant]
    lr: float = LR
    momentum: float = MOMENTUM
    continuity: str = "gradient"
    k_min: int = K_RANGE[0]
    k_max: int = K_RANGE[1]
    silhouette_sample: int = SILHOUETTE_SAMPLE
    kmeans_fit_sample: int = KMEANS_FIT_SAMPLE
    kmeans_iter: int = KMEANS_ITER
    work_long_side: int = WORK_LONG_SIDE
    seed: int = SEED
    threads: int = 1

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise PseudoLabelsError(f"--variant {self.variant!r}: choose scf or fsf")
        if self.continuity not in CONTINUITY_MODES:
            raise PseudoLabelsError(f"--continuity {self.continuity!r}: choose gradient or detached")
        if not 2 <= self.k_min <= self.k_max:
            raise PseudoLabelsError(f"silhouette k range {self.k_min}..{self.k_max}: need 2 <= k_min <= k_max")
        if self.max_labels < self.k_max:
            raise PseudoLabelsError(f"--max-labels {self.max_labels} must be at least k_max {self.k_max}")
        if self.steps < 0 or self.n_blocks < 1 or self.channels < 1 or self.work_long_side < 8:
            raise PseudoLabelsError("need steps >= 0, n_blocks >= 1, channels >= 1, work_long_side >= 8")

    @property
    def mu_value(self) -> float:
        return float(MU[self.variant] if self.mu is None else self.mu)


def dynamic_weight(variant: str, q: int, mu: float) -> float:
    """Weight of the continuity loss: SCF ``mu / q``, FSF ``q / mu`` (q = distinct labels)."""
    if variant == "scf":
        return float(mu) / max(int(q), 1)
    if variant == "fsf":
        return max(int(q), 1) / float(mu)
    raise PseudoLabelsError(f"unknown DynaSeg variant {variant!r}")


# --------------------------------------------------------------------------- silhouette phase
@dataclass
class SilhouettePhase:
    """Result of :func:`silhouette_k`: best k and the score of every k tried."""

    k: int
    scores: dict[int, float]
    seconds: float


def _sample_rows(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if m >= n else np.sort(rng.choice(n, m, replace=False))


def _nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (centroids * centroids).sum(1)[None, :] - 2.0 * (x @ centroids.T)
    return np.argmin(d, axis=1)


def silhouette_k(points: np.ndarray, k_range: tuple[int, int] = K_RANGE, *, seed: int = SEED,
                 silhouette_sample: int = SILHOUETTE_SAMPLE, fit_sample: int = KMEANS_FIT_SAMPLE,
                 n_iter: int = KMEANS_ITER, threads: int = 1) -> SilhouettePhase:
    """The k in ``k_range`` (inclusive) whose k-means of ``points`` has the best silhouette.

    points: (N, D) float (pixels or features). k-means (faiss, ``n_iter`` Lloyd steps) is
    fitted on ``fit_sample`` random rows, seeded with the first k centres of one greedy
    k-means++ run for the largest k; the silhouette (Euclidean) is scored on
    ``silhouette_sample`` other random rows with one shared distance matrix. k values with
    more clusters than distinct sampled points are skipped; k with fewer than 2 non-empty
    clusters on the silhouette sample score -1. Ties: the smallest k.
    """
    import faiss
    from sklearn.metrics import pairwise_distances, silhouette_score

    from pseudo_labels.stages.semantic.clustering import kmeans_plus_plus

    t0 = time.perf_counter()
    x = np.ascontiguousarray(np.asarray(points, np.float32).reshape(len(points), -1))
    rng = np.random.default_rng(seed)
    fit = np.ascontiguousarray(x[_sample_rows(len(x), fit_sample, rng)])
    sil = np.ascontiguousarray(x[_sample_rows(len(x), silhouette_sample, rng)])
    n_distinct = len(np.unique(fit, axis=0)) if len(fit) <= 50000 else len(fit)
    k_lo, k_hi = int(k_range[0]), min(int(k_range[1]), n_distinct)
    if k_hi < k_lo:
        return SilhouettePhase(k=max(1, n_distinct), scores={}, seconds=time.perf_counter() - t0)
    seeds = kmeans_plus_plus(fit, k_hi, rng)
    distances = pairwise_distances(sil, metric="euclidean", n_jobs=1)
    faiss.omp_set_num_threads(max(1, int(threads)))
    scores: dict[int, float] = {}
    for k in range(k_lo, k_hi + 1):
        km = faiss.Kmeans(fit.shape[1], k, niter=n_iter, seed=seed, verbose=False,
                          max_points_per_centroid=len(fit) + 1, min_points_per_centroid=1)
        km.train(fit, init_centroids=np.ascontiguousarray(seeds[:k]))
        labels = _nearest_centroid(sil, np.asarray(km.centroids, np.float32).reshape(k, -1))
        if len(np.unique(labels)) < 2:
            scores[k] = -1.0
        else:
            scores[k] = float(silhouette_score(distances, labels, metric="precomputed"))
    best = max(scores, key=lambda kk: (scores[kk], -kk))
    return SilhouettePhase(k=int(best), scores=scores, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- network
def build_network(in_channels: int, channels: int, max_labels: int, n_blocks: int):
    """``n_blocks`` x (3x3 conv, ReLU, BatchNorm) with ``channels``, then 1x1 conv to
    ``max_labels`` and BatchNorm (torch ``nn.Sequential``)."""
    import torch.nn as nn

    layers: list = []
    c_in = in_channels
    for _ in range(n_blocks):
        layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(channels)]
        c_in = channels
    layers += [nn.Conv2d(channels, max_labels, 1), nn.BatchNorm2d(max_labels)]
    return nn.Sequential(*layers)


def continuity_loss(responses, detached: bool = False):
    """Mean absolute difference of vertically plus horizontally neighbouring responses.

    responses: (1, C, H, W) tensor. ``detached``: computed on a detached copy (the
    reference code's variant: a number without gradient).
    """
    r = responses.detach() if detached else responses
    return (r[:, :, 1:, :] - r[:, :, :-1, :]).abs().mean() + (r[:, :, :, 1:] - r[:, :, :, :-1]).abs().mean()


@dataclass
class TrainResult:
    """Labels at the working resolution and how training went."""

    responses: object  # (max_labels, h, w) float32 tensor of the kept state
    labels: np.ndarray  # (h, w) int64 argmax of ``responses``
    n_labels: int
    steps_run: int
    q_history: list[int] = field(default_factory=list)
    stopped_at_floor: bool = False


def train_segments(x: np.ndarray, params: DynaSegParams, k_floor: int) -> TrainResult:
    """Train the network on one input ``x`` (D, h, w) float32 for ``params.steps`` steps.

    Stops early when the number of distinct labels reaches ``k_floor`` (the reference's
    minimum-label stop). The returned state is the last one (before an update, or after
    the final step) with at least ``k_floor`` labels; only when even the untrained network
    has fewer is that first state returned (the caller falls back to the k-means labels).
    """
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(params.threads)))
    try:
        return _train(x, params, k_floor)
    finally:
        torch.set_num_threads(threads_before)


def _train(x: np.ndarray, params: DynaSegParams, k_floor: int) -> TrainResult:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(params.seed)
    inp = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None]
    net = build_network(inp.shape[1], params.channels, params.max_labels, params.n_blocks)
    opt = torch.optim.SGD(net.parameters(), lr=params.lr, momentum=params.momentum)
    mu = params.mu_value
    kept, history, steps_run, at_floor = None, [], 0, False
    for _ in range(params.steps):
        opt.zero_grad()
        r = net(inp)
        flat = r[0].reshape(r.shape[1], -1).T
        target = flat.argmax(1)
        q = int(torch.unique(target).numel())
        history.append(q)
        if kept is None or q >= k_floor:
            kept = (r[0].detach().clone(), q)
        if q <= k_floor:
            at_floor = True
            break
        w = dynamic_weight(params.variant, max(q, k_floor), mu)
        loss = F.cross_entropy(flat, target) + w * continuity_loss(r, params.continuity == "detached")
        loss.backward()
        opt.step()
        steps_run += 1
    if not at_floor:
        with torch.no_grad():
            r = net(inp)[0]
        q = int(torch.unique(r.argmax(0)).numel())
        history.append(q)
        if kept is None or q >= k_floor:
            kept = (r.clone(), q)
    responses, q = kept
    return TrainResult(responses, responses.argmax(0).numpy().astype(np.int64), q, steps_run, history, at_floor)


# --------------------------------------------------------------------------- inputs and outputs
def work_size(hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(h, w) with the long side at most ``long_side`` (aspect kept, never upscaled)."""
    h, w = int(hw[0]), int(hw[1])
    s = min(1.0, long_side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def scf_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, h, w) float32 at ``size``, ImageNet-normalised (area resize)."""
    import cv2

    from pseudo_labels.core import defaults

    if image.ndim != 3 or image.shape[2] != 3:
        raise PseudoLabelsError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[:2] != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    x = image.astype(np.float32) / 255.0
    x = (x - np.array(defaults.IMAGENET_MEAN, np.float32)) / np.array(defaults.IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def fsf_input(features: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(D, h0, w0) features -> (D, h, w) float32 at ``size`` (bilinear, half-pixel centres),
    each channel standardised to mean 0, std 1 over the image."""
    import torch
    import torch.nn.functional as F

    f = torch.from_numpy(np.ascontiguousarray(features, np.float32))[None]
    if tuple(f.shape[-2:]) != tuple(size):
        f = F.interpolate(f, size=tuple(size), mode="bilinear", align_corners=False)
    x = f[0].numpy()
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return np.ascontiguousarray((x - mean) / np.maximum(std, 1e-6), np.float32)


def upsample_labels(responses, used: np.ndarray, size: tuple[int, int], chunk: int = 8) -> np.ndarray:
    """Argmax over the ``used`` channels of ``responses`` (C, h, w) upsampled bilinearly to
    ``size``; returns (H, W) int64 channel ids. Memory: ``chunk`` channel maps at a time."""
    import torch
    import torch.nn.functional as F

    H, W = int(size[0]), int(size[1])
    used_t = torch.as_tensor(np.asarray(used, np.int64))
    best_val = torch.full((H, W), -float("inf"))
    best_idx = torch.zeros((H, W), dtype=torch.int64)
    with torch.no_grad():
        for s in range(0, len(used_t), chunk):
            ids = used_t[s: s + chunk]
            up = F.interpolate(responses[ids][None], size=(H, W), mode="bilinear", align_corners=False)[0]
            val, idx = up.max(0)
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, ids[idx], best_idx)
    return best_idx.numpy()


def resize_labels_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) int64 label map at ``size`` (OpenCV INTER_NEAREST, top-left convention; unchanged when it fits)."""
    import cv2

    if labels.shape == tuple(size):
        return labels
    return cv2.resize(labels.astype(np.int32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(np.int64)


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 0..n-1 in increasing order of the old ids; (H, W) int32."""
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


@dataclass
class DynaSegResult:
    """Segments of one image and what the run did."""

    segments: np.ndarray  # (H, W) int32, ids 0..n-1
    n_segments: int
    silhouette_k: int
    silhouette_scores: dict[int, float]
    steps: int
    q_history: list[int]
    fallback: str  # "" or why the k-means labels were used
    seconds: float
    seconds_silhouette: float

    def stats(self) -> dict:
        return {"q": self.n_segments, "silhouette_k": self.silhouette_k, "steps": self.steps,
                "seconds": round(self.seconds, 4), "seconds_silhouette": round(self.seconds_silhouette, 4),
                "q_history": self.q_history, "fallback": self.fallback,
                "silhouette_scores": {str(k): round(v, 6) for k, v in self.silhouette_scores.items()}}


def dynaseg_segments(net_input: np.ndarray, out_size: tuple[int, int], params: DynaSegParams) -> DynaSegResult:
    """Segments of one image from its network input (D, h, w) float32 (:func:`scf_input`
    or :func:`fsf_input`), upsampled to ``out_size`` (H, W). Guarantees at least the
    silhouette k segments (or every distinct input value when the image has fewer)."""
    import torch

    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(params.threads)))
    try:
        d, h, w = net_input.shape
        pixels = net_input.reshape(d, -1).T
        phase = silhouette_k(pixels, (params.k_min, params.k_max), seed=params.seed,
                             silhouette_sample=params.silhouette_sample, fit_sample=params.kmeans_fit_sample,
                             n_iter=params.kmeans_iter, threads=params.threads)
        floor = phase.k
        trained = train_segments(net_input, params, floor)
        fallback = ""
        if trained.n_labels >= floor:
            used = np.unique(trained.labels)
            labels = upsample_labels(trained.responses, used, out_size)
            if len(np.unique(labels)) < floor:  # a thin segment vanished in the upsampling
                labels = resize_labels_nearest(trained.labels, out_size)
        else:
            fallback = f"network gave {trained.n_labels} < {floor} labels; k-means labels used"
            labels = resize_labels_nearest(_kmeans_labels(pixels, floor, params).reshape(h, w), out_size)
    finally:
        torch.set_num_threads(threads_before)
    segments = relabel_consecutive(labels)
    return DynaSegResult(segments, int(segments.max()) + 1, floor, phase.scores, trained.steps_run,
                         trained.q_history, fallback, time.perf_counter() - t0, phase.seconds)


def _kmeans_labels(pixels: np.ndarray, k: int, params: DynaSegParams) -> np.ndarray:
    from pseudo_labels.stages.semantic.clustering import fit_kmeans_raw

    x = np.ascontiguousarray(pixels, np.float32)
    rng = np.random.default_rng(params.seed)
    fit = x[_sample_rows(len(x), params.kmeans_fit_sample, rng)]
    centroids = fit_kmeans_raw(fit, k, "faiss", params.seed, n_iter=params.kmeans_iter, threads=params.threads)
    return np.concatenate([_nearest_centroid(x[s: s + 65536], centroids) for s in range(0, len(x), 65536)])


# --------------------------------------------------------------------------- folder level
@dataclass(frozen=True)
class DynaSegConfig:
    """What ``generate-dynaseg-segments`` does: which images, which variant, where to write.

    Images: ``images_dir`` (every jpg/jpeg/png/bmp below it, output at the same relative
    path with ``.png``) or ``cityscapes_root`` + ``split`` (output
    ``<split>/<city>/<stem>.png``). FSF needs a feature ``backbone`` (``builtin`` or
    ``dinov2_*`` with local ``weights``; CAUSE with ``head="cause"`` + ``head_weights``).
    """

    out_dir: str
    images_dir: str | None = None
    cityscapes_root: str | None = None
    split: str = "val"
    params: DynaSegParams = DynaSegParams()
    backbone: str = "builtin"
    weights: str | None = None
    head: str | None = None
    head_weights: str | None = None
    feature_short_side: int = 322


@dataclass(frozen=True)
class SegmentJob:
    """One image (picklable)."""

    key: str
    image_path: str
    out_png: str
    out_json: str


def image_seed(seed: int, key: str) -> int:
    """Per-image seed from the run seed and the image's key (same in every shard / worker)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def plan_segment_jobs(config: DynaSegConfig) -> list[SegmentJob]:
    """One job per input image, sorted; missing folders raise :class:`PseudoLabelsError`."""
    out = Path(config.out_dir)
    if (config.images_dir is None) == (config.cityscapes_root is None):
        raise PseudoLabelsError("give exactly one of --images DIR or --cityscapes-root R (with --split)")
    pairs: list[tuple[str, Path, Path]] = []
    if config.cityscapes_root is not None:
        from pseudo_labels.datasets.cityscapes import list_images

        for e in list_images(config.cityscapes_root, config.split):
            pairs.append((e.stem, e.image_path, e.relative(".png")))
    else:
        from pseudo_labels.datasets.image_folders import list_image_folder

        for r in list_image_folder(config.images_dir):
            pairs.append((r.stem, r.image_path, Path(r.stem + ".png")))
    return [SegmentJob(key, str(img), str(out / rel), str(out / rel.with_suffix(".json"))) for key, img, rel in pairs]


_EXTRACTORS: dict = {}


def _extractor(config: DynaSegConfig):
    key = (config.backbone, config.weights, config.head, config.head_weights, config.feature_short_side)
    if key not in _EXTRACTORS:
        from pseudo_labels.stages.semantic.features import build_extractor

        _EXTRACTORS[key] = build_extractor(config.backbone, config.weights, config.head, "cpu",
                                           int(config.feature_short_side), config.head_weights, batch_size=1)
    return _EXTRACTORS[key]


def network_input(image: np.ndarray, config: DynaSegConfig) -> np.ndarray:
    """SCF: normalised pixels; FSF: features of the configured backbone; at the working size."""
    size = work_size(image.shape[:2], config.params.work_long_side)
    if config.params.variant == "scf":
        return scf_input(image, size)
    feats = _extractor(config).extract([image])[0]
    return fsf_input(feats, size)


def segment_one(job: SegmentJob, config: DynaSegConfig) -> dict:
    """Segment one image; write its stats JSON then its uint16 PNG (atomically, PNG last)."""
    from dataclasses import replace

    from pseudo_labels.core.io import read_image_rgb, write_json, write_png

    image = read_image_rgb(job.image_path)
    params = replace(config.params, seed=image_seed(config.params.seed, job.key))
    result = dynaseg_segments(network_input(image, config), image.shape[:2], params)
    if result.n_segments > 65535:
        raise PseudoLabelsError(f"{job.image_path}: {result.n_segments} segments do not fit a uint16 PNG")
    stats = {"image": job.key, **result.stats()}
    write_json(job.out_json, stats)
    write_png(job.out_png, result.segments.astype(np.uint16))
    return stats


def _is_done(job: SegmentJob) -> bool:
    return os.path.exists(job.out_png) and os.path.exists(job.out_json)


def _job_name(job: SegmentJob) -> str:
    return job.key


def run_parameters(config: DynaSegConfig) -> dict:
    """Everything that changes the outputs (for the manifest / resume check)."""
    p = asdict(config.params)
    p.pop("threads")  # results are checked equal for one thread count; recorded in the run JSON
    out = {**p, "split": config.split if config.cityscapes_root else None}
    if config.params.variant == "fsf":
        out.update(backbone=config.backbone, weights=config.weights, head=config.head,
                   head_weights=config.head_weights, feature_short_side=config.feature_short_side)
    return out


def generate_dynaseg_segments(config: DynaSegConfig, options) -> dict:
    """Segment every image of the configured input into ``config.out_dir`` (resume, shards,
    workers / Ray from ``options``), write the manifest and the run JSON; returns the run
    JSON's content (``images``: per-image q, silhouette k, steps, seconds)."""
    from pseudo_labels.core.io import fingerprint_files, prepare_output_dir, read_json, write_json, write_manifest
    from pseudo_labels.core.runner import run_per_image

    if config.params.variant == "scf" and (config.weights or config.head):
        raise PseudoLabelsError("--weights / --head are for --variant fsf (SCF trains on pixels)")
    jobs = options.select(plan_segment_jobs(config))
    parameters = run_parameters(config)
    resume = prepare_output_dir(config.out_dir, STAGE, parameters, overwrite=options.overwrite)
    if config.params.variant == "fsf":
        _extractor(config)  # fail early (missing weights) before any image
    import functools

    summary = run_per_image(functools.partial(segment_one, config=config), jobs, desc=f"dynaseg ({config.params.variant})",
                            name_of=_job_name, is_done=_is_done if resume else None, options=options)
    inputs = {"images": fingerprint_files(j.image_path for j in jobs)}
    write_manifest(config.out_dir, STAGE, parameters, uses_ground_truth=False, inputs=inputs,
                   counts={"images": len(jobs), "done": summary.done, "skipped": summary.skipped,
                           "failed": len(summary.failed)}, extra={"shard": list(options.shard) if options.shard else None})
    per_image = [read_json(p) for p in sorted(Path(config.out_dir).rglob("*.json"))
                 if p.name not in (RUN_JSON, "manifest.json") and not p.name.startswith(".")]
    run = {"stage": STAGE, "parameters": parameters, "threads": config.params.threads,
           "n_images": len(per_image), "images": per_image,
           "mean_seconds": float(np.mean([s["seconds"] for s in per_image])) if per_image else None,
           "min_q_minus_silhouette_k": min((s["q"] - s["silhouette_k"] for s in per_image), default=None),
           "summary": summary.line()}
    write_json(Path(config.out_dir) / RUN_JSON, run)
    summary.raise_if_failed("images")
    return run


def silhouette_range(values: Sequence[int]) -> tuple[int, int]:
    """``--k-range LO HI`` -> (LO, HI) checked."""
    lo, hi = (int(v) for v in values)
    if not 2 <= lo <= hi:
        raise PseudoLabelsError(f"--k-range {lo} {hi}: need 2 <= LO <= HI")
    return lo, hi


# --------------------------------------------------------------------------- scoring (evaluation against GT)
SCORED_DATASETS = ("coco-stuff-27", "voc2012", "bsd500")
PROTOCOLS = ("hungarian", "best-overlap")


def _segments_by_stem(folder: str | os.PathLike) -> dict[str, Path]:
    root = Path(folder)
    if not root.is_dir():
        raise PseudoLabelsError(f"{root}: segments folder not found")
    return {p.stem: p for p in sorted(root.rglob("*.png")) if not p.name.startswith(".")}


COCO_THING_CLASSES = 12  # DynaSeg configs: ClusterIoUEvaluator(num_thing_classes=12, num_stuff_classes=15)


def score_segments(segments_dir: str | os.PathLike, dataset: str, root: str | os.PathLike, split: str, *,
                   protocol: str | None = None, mode: str = "image", absent: str = "match",
                   average: str = "ours") -> dict:
    """Score segment PNGs (named by image id, e.g. from ``--images <root>/images/val2017``)
    against a data set's ground truth with DynaSeg's protocols (:mod:`evaluation.unsupervised`).

    ``dataset``: ``coco-stuff-27`` (default protocol ``hungarian``, 27 classes), ``voc2012``
    (``best-overlap``, as the reference scores VOC; ``hungarian`` over 21 classes also
    works) or ``bsd500`` (``best-overlap`` over all human segmentations). Segments of
    another size than the GT are resized (nearest). ``average`` (hungarian, per image):
    ``ours`` (skip images with a NaN mIoU) or ``official`` (the release's per-image metrics and
    averaging, :func:`evaluation.unsupervised.official_image_metrics`; things = the first 12
    ids for COCO-Stuff-27). Reads ground truth (evaluation).
    """
    from evaluation.unsupervised import best_overlap_miou, unsupervised_miou
    from pseudo_labels.core.io import read_png
    from pseudo_labels.datasets import coco_stuff, image_folders

    if dataset not in SCORED_DATASETS:
        raise PseudoLabelsError(f"dataset {dataset!r}: choose from {', '.join(SCORED_DATASETS)}")
    protocol = protocol or ("hungarian" if dataset == "coco-stuff-27" else "best-overlap")
    if protocol not in PROTOCOLS or (dataset == "bsd500" and protocol != "best-overlap"):
        raise PseudoLabelsError(f"protocol {protocol!r} does not apply to {dataset}")
    if average == "official" and (protocol != "hungarian" or mode != "image"):
        raise PseudoLabelsError("--average official is the per-image Hungarian protocol (--protocol hungarian "
                                "--mode image)")
    if dataset == "coco-stuff-27":
        records, read, n_classes = coco_stuff.list_images(root, split), coco_stuff.read_label, 27
    elif dataset == "voc2012":
        records, read, n_classes = image_folders.list_voc(root, split), image_folders.read_voc_label, 21
    else:
        records, read, n_classes = image_folders.list_bsd(root, split), image_folders.read_bsd_segmentations, 0
    segs = _segments_by_stem(segments_dir)
    missing = [r.stem for r in records if r.stem not in segs]
    if missing:
        raise PseudoLabelsError(f"{segments_dir}: no segments for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    gts, maps = [], []
    for r in records:
        gt = read(r) if dataset == "bsd500" else read(r.label_path)
        shape = (gt[0] if dataset == "bsd500" else gt).shape
        gts.append(gt)
        maps.append(resize_labels_nearest(read_png(segs[r.stem]).astype(np.int64), shape))
    if protocol == "best-overlap":
        annotations = gts if dataset == "bsd500" else [[g] for g in gts]
        result = best_overlap_miou(annotations, maps, ignore=None if dataset == "bsd500" else 255)
    else:
        things = COCO_THING_CLASSES if dataset == "coco-stuff-27" else None
        result = unsupervised_miou(zip(gts, maps), n_classes, mode=mode, absent=absent, average=average,
                                   num_thing_classes=things)
    result.update(dataset=dataset, split=split, protocol=protocol, n_scored=result.get("n_images", len(records)),
                  n_images=len(records), uses_ground_truth=True)
    return result
