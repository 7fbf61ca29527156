"""Stage 2: k-means over-clustering of patch features and per-pixel cluster assignment.

Conventions
- Features are ``(D, h, w)`` float arrays, L2-normalised over ``D`` (as
  :mod:`pseudo_labels.stages.semantic.features` writes them); samples are ``(N, D)`` float32.
- Centroids are ``(k, D)`` float32, L2-normalised; a pixel belongs to the centroid
  of highest cosine similarity.
- Cluster maps are ``(H, W)`` int32 ids ``0..k-1``. On disk (raw cluster PNG) they are
  uint8 with 255 = void when ``k <= 255`` and uint16 with 65535 = void when ``k > 255``
  (never wrapped, unlike the reference repository).

Assignment (:func:`assign_clusters`, upsample ``similarity``): the labels of the bilinear
similarity upsampling then argmax, identical to resizing all k maps with torch (float32
rounding and ties included), computed only where they can change: a cell of output pixels
between four grid points is filled when its corners agree, mixed cells are narrowed block by
block to the centroids that can still win, and only near-ties are recomputed with torch's
own float32 arithmetic. From a 23x46 grid to 1024x2048 on one core: about 14x (k=80) and
20x (k=300) faster than the straightforward resize (``benchmarks/bench_fullres.py``).

Fit sample (memory bound): the fit reads a sample of patch vectors of the whole split,
at most :func:`fit_sample_budget` vectors in all (default 100,000, or 1000 per cluster
when k > 100), spread evenly over the images by :func:`sample_quotas` and drawn per image
with :func:`image_rng` (seed + stem), so the sample does not depend on worker counts or
order, and its size (hence the fit's memory) does not grow with the number of images.

Backends of :func:`fit_kmeans` (all deterministic for a given seed, backend and
thread count):

- ``faiss`` (default when installed): a random subsample of at most
  ``KMEANS_MAX_POINTS_PER_CENTROID`` (1000) points per centroid, greedy k-means++
  seeding on a smaller sample of it, then ``KMEANS_N_ITER`` Lloyd iterations in faiss.
  (faiss' own defaults — random init, 256 points per centroid — are ~2-10 % worse in
  inertia.)
- ``torch``: the same subsample and seeding, Lloyd iterations in torch (CPU or CUDA,
  chunked).
- ``sklearn``: ``MiniBatchKMeans`` with the reference settings
  (:data:`pseudo_labels.core.defaults.SKLEARN_KMEANS`, random_state = seed).

Measured on 1,000,000 x 90 L2-normalised points, k = 80: see
``benchmarks/bench_kmeans.py`` and ``benchmarks/results/bench_kmeans.json``.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError

BACKENDS = ("auto", "faiss", "torch", "sklearn")
UPSAMPLE_MODES = ("similarity", "labels")
CENTROIDS_NAME = "kmeans_centroids.npz"


# --------------------------------------------------------------------------- small helpers
def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-8) -> np.ndarray:
    """``x / max(||x||, eps)`` along ``axis``, as float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


def patch_grid(input_size: tuple[int, int] = defaults.FEATURE_INPUT_SIZE,
               patch_size: int = defaults.PATCH_SIZE) -> tuple[int, int]:
    """Patch grid ``(h, w)`` of a ViT input of ``input_size`` (H, W) pixels: (23, 46) at 322x644."""
    return input_size[0] // patch_size, input_size[1] // patch_size


def pool_to_grid(features: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Adaptive average pooling of ``(D, h, w)`` features to ``(D, gh, gw)`` float32.

    Maps already at or below ``grid`` are returned unchanged (the patch-grid features
    of a ViT); dense maps (the CAUSE sliding-window path, 322x644) are pooled to the
    patch grid as the reference does before fitting.
    """
    features = np.asarray(features, dtype=np.float32)
    _, h, w = features.shape
    if h <= grid[0] and w <= grid[1]:
        return features
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        pooled = F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(features))[None], grid)[0]
    return pooled.numpy()


def nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` output positions for nearest resizing of ``n_in``
    positions (pixel-centre convention, as PIL ``NEAREST`` / torch ``nearest-exact``)."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of an ``(H, W)`` label map to ``size`` = (h, w), dtype kept."""
    labels = np.asarray(labels)
    if labels.shape == tuple(size):
        return labels
    ys = nearest_indices(size[0], labels.shape[0])
    xs = nearest_indices(size[1], labels.shape[1])
    return labels[ys[:, None], xs[None, :]]


# --------------------------------------------------------------------------- sampling
def fit_sample_budget(k: int, max_samples: int | None = None) -> int | None:
    """Total number of patch vectors drawn over a whole split for the k-means fit.

    ``max_samples`` None: the default, ``max(MAX_FIT_SAMPLES, k * KMEANS_MAX_POINTS_PER_CENTROID)``
    (100,000 for k <= 100: at least as many points as the faiss / torch fit uses); 0: no total
    cap (every image gives up to its per-image cap, as the reference; memory then grows with
    the split); otherwise that number. Returns None for "no cap".
    """
    if max_samples is None:
        return max(defaults.MAX_FIT_SAMPLES, int(k) * defaults.KMEANS_MAX_POINTS_PER_CENTROID)
    if max_samples < 0:
        raise PseudoLabelsError(f"--max-samples {max_samples}: need >= 0 (0: no total cap)")
    return None if max_samples == 0 else int(max_samples)


def sample_quotas(n_images: int, budget: int | None, per_image: int) -> list[int]:
    """How many patch vectors image ``i`` of ``n_images`` may give to the fit sample.

    The ``budget`` is spread evenly over the images (``floor((i+1) B / n) - floor(i B / n)``,
    so the quotas sum to exactly B when B <= n * per_image), each at most ``per_image``;
    ``budget`` None: ``per_image`` each. The sample, and so the memory of the fit, is bounded
    by the budget whatever the number of images.
    """
    per_image = max(0, int(per_image))
    if budget is None:
        return [per_image] * n_images
    b = int(budget)
    return [min(per_image, (i + 1) * b // n_images - i * b // n_images) for i in range(n_images)]


def image_rng(seed: int, key: str) -> np.random.Generator:
    """Random generator of one image's sample: seeded by ``seed`` and the image's stem
    (``key``), so an image draws the same patches whatever the worker, shard or order."""
    if seed < 0:
        raise PseudoLabelsError(f"--seed {seed}: need a non-negative integer")
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def sample_patch_features(
    features: np.ndarray,
    n_max: int,
    rng: np.random.Generator,
    valid_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Draw at most ``n_max`` patch vectors of one image for fitting.

    features: (D, h, w) float (any float dtype; typically already on the patch grid,
    see :func:`pool_to_grid`). valid_mask: optional (h, w) bool; only those positions
    are eligible (the reference's GT-filtered sampling passes "GT trainId not void").
    Uniform choice without replacement with ``rng``; returns (n, D) float32,
    L2-normalised, n = min(n_max, eligible positions).
    """
    d, h, w = features.shape
    flat = np.asarray(features).reshape(d, h * w)
    if valid_mask is None:
        eligible = np.arange(h * w)
    else:
        valid_mask = np.asarray(valid_mask, bool)
        if valid_mask.shape != (h, w):
            raise ValueError(f"valid_mask shape {valid_mask.shape} != feature grid {(h, w)}")
        eligible = np.flatnonzero(valid_mask.ravel())
    n = min(int(n_max), eligible.size)
    if n <= 0:
        return np.zeros((0, d), np.float32)
    pick = np.sort(rng.choice(eligible.size, n, replace=False))
    return l2_normalize(flat[:, eligible[pick]].T.astype(np.float32), axis=1)


# --------------------------------------------------------------------------- k-means
def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator,
                     n_local_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; greedy variant as in scikit-learn).

    x: (n, D) float32, n >= k. Each step draws ``n_local_trials`` (default
    2 + log k) candidates with probability proportional to the squared distance to
    the nearest chosen centre and keeps the one that lowers the potential most.
    Returns (k, D) float32 rows of ``x``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(k))
    sq = np.einsum("ij,ij->i", x, x)
    centers = np.empty((k, d), np.float32)
    first = int(rng.integers(n))
    centers[0] = x[first]
    closest = np.maximum(sq + sq[first] - 2.0 * (x @ x[first]), 0.0)
    potential = float(closest.sum())
    for c in range(1, k):
        if potential <= 0.0:  # fewer distinct points than k: any point will do
            cand = rng.integers(n, size=n_local_trials)
        else:
            r = rng.random(n_local_trials) * potential
            cand = np.searchsorted(np.cumsum(closest, dtype=np.float64), r)
            cand = np.minimum(cand, n - 1)
        dist = np.maximum(sq[None, :] + sq[cand][:, None] - 2.0 * (x[cand] @ x.T), 0.0)
        dist = np.minimum(dist, closest[None, :])
        pots = dist.sum(axis=1, dtype=np.float64)
        best = int(np.argmin(pots))
        centers[c] = x[cand[best]]
        closest = dist[best]
        potential = float(pots[best])
    return centers


def _init_sample(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    m = min(n, max(defaults.KMEANS_INIT_SAMPLE, defaults.KMEANS_INIT_PER_CLUSTER * k))
    if m >= n:
        return x
    return x[np.sort(rng.choice(n, m, replace=False))]


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``faiss`` when importable, else ``torch``. Unknown names -> error."""
    if backend not in BACKENDS:
        raise PseudoLabelsError(f"unknown k-means backend {backend!r} (choose {', '.join(BACKENDS)})")
    if backend == "auto":
        try:
            import faiss  # noqa: F401

            return "faiss"
        except ImportError:  # without faiss: --kmeans-backend auto fits with the torch backend
            return "torch"
    return backend


def auto_threads() -> int:
    """CPU threads for the faiss / torch fit: the cores this process may use minus the
    current 1-minute load (at least 1). OpenMP threads on an oversubscribed machine
    spin-wait: on 2 busy cores, 1 thread fits 1M x 90 points 5-8x faster than 2."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        free = cores - os.getloadavg()[0]
    except OSError:  # pragma: no cover
        free = cores
    return max(1, min(cores, int(round(free))))


def fit_kmeans_raw(
    samples: np.ndarray,
    k: int,
    backend: str = "auto",
    seed: int = defaults.SEED,
    *,
    n_iter: int = defaults.KMEANS_N_ITER,
    device: str = "cpu",
    threads: int | None = None,
) -> np.ndarray:
    """Euclidean k-means on ``samples`` (N, D); returns the (k, D) float32 cluster means
    (not normalised). See :func:`fit_kmeans` for the public, normalised result.
    ``threads``: CPU threads of the faiss / torch backends (None: :func:`auto_threads`)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.ndim != 2:
        raise PseudoLabelsError(f"k-means samples must be (N, D), got shape {samples.shape}")
    n = samples.shape[0]
    if k < 2:
        raise PseudoLabelsError(f"k = {k}: need at least 2 clusters")
    if k > n:
        raise PseudoLabelsError(f"k = {k} is more than the {n} feature samples; lower --k or sample more")
    backend = resolve_backend(backend)
    if backend == "sklearn":
        from sklearn.cluster import MiniBatchKMeans

        params = dict(defaults.SKLEARN_KMEANS)
        params["random_state"] = seed
        km = MiniBatchKMeans(n_clusters=k, **params).fit(samples)
        return km.cluster_centers_.astype(np.float32)
    rng = np.random.default_rng(seed)
    m = min(n, defaults.KMEANS_MAX_POINTS_PER_CENTROID * k)
    train = samples if m >= n else samples[np.sort(rng.choice(n, m, replace=False))]
    init = kmeans_plus_plus(_init_sample(train, k, rng), k, rng)
    threads = auto_threads() if threads is None else max(1, int(threads))
    if backend == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        km = faiss.Kmeans(
            samples.shape[1], k, niter=n_iter, seed=seed, verbose=False,
            max_points_per_centroid=int(math.ceil(m / k)) + 1, min_points_per_centroid=1,
        )
        km.train(np.ascontiguousarray(train), init_centroids=init)
        return np.asarray(km.centroids, np.float32).reshape(k, -1)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _lloyd_torch(train, init, n_iter, device)
    finally:
        torch.set_num_threads(before)


def _lloyd_torch(x: np.ndarray, init: np.ndarray, n_iter: int, device: str,
                 chunk: int = 65536) -> np.ndarray:
    """Lloyd iterations in torch; empty clusters keep their previous centre."""
    import torch

    dev = torch.device(device)
    xt = torch.from_numpy(x).to(dev)
    c = torch.from_numpy(init.copy()).to(dev)
    k, d = c.shape
    for _ in range(n_iter):
        sums = torch.zeros(k, d, dtype=torch.float64, device=dev)
        counts = torch.zeros(k, dtype=torch.float64, device=dev)
        c_sq = (c * c).sum(1)
        for s in range(0, xt.shape[0], chunk):
            xb = xt[s: s + chunk]
            lab = torch.argmax(2.0 * (xb @ c.T) - c_sq[None, :], dim=1)
            sums.index_add_(0, lab, xb.double())
            counts.index_add_(0, lab, torch.ones_like(lab, dtype=torch.float64))
        nonempty = counts > 0
        new = c.clone()
        new[nonempty] = (sums[nonempty] / counts[nonempty, None]).float()
        if torch.equal(new, c):
            break
        c = new
    return c.cpu().numpy().astype(np.float32)


def fit_kmeans(
    samples: np.ndarray,
    k: int,
    backend: str = "auto",
    seed: int = defaults.SEED,
    *,
    n_iter: int = defaults.KMEANS_N_ITER,
    device: str = "cpu",
    threads: int | None = None,
) -> np.ndarray:
    """Fit k-means on (N, D) L2-normalised float samples; return (k, D) float32 centroids,
    L2-normalised (for cosine assignment).

    backend: ``auto`` (faiss if installed, else torch), ``faiss``, ``torch`` (``device``
    cpu or cuda) or ``sklearn`` (MiniBatchKMeans, reference settings). Deterministic
    for a given seed and backend (and, to the last bit, thread count: ``threads``, default
    :func:`auto_threads`). k < 2 or k > N -> :class:`PseudoLabelsError`.
    """
    raw = fit_kmeans_raw(samples, k, backend, seed, n_iter=n_iter, device=device, threads=threads)
    return l2_normalize(raw, axis=1)


def kmeans_inertia(x: np.ndarray, centroids: np.ndarray, chunk: int = 200_000) -> float:
    """Sum over rows of ``x`` (N, D) of the squared Euclidean distance to the nearest
    row of ``centroids`` (k, D), in float64."""
    x = np.asarray(x, np.float32)
    c = np.asarray(centroids, np.float32)
    c_sq = np.einsum("ij,ij->i", c, c)
    total = 0.0
    for s in range(0, x.shape[0], chunk):
        xb = x[s: s + chunk]
        d = np.einsum("ij,ij->i", xb, xb)[:, None] + c_sq[None, :] - 2.0 * (xb @ c.T)
        total += float(np.maximum(d.min(axis=1), 0.0).sum(dtype=np.float64))
    return total


# --------------------------------------------------------------------------- assignment
#: bound on the float32 rounding of one bilinear value, relative to max |similarity| (a few
#: ulps are 2**-21; this keeps a 32x margin): decisions closer than this are made exactly
_ROUND_TOL = 2.0 ** -16
#: torch sends outputs with H + W <= 128 to its channels-last kernel (4-term sums per pixel);
#: such small maps (and 1x1 grids) take the straightforward path, which is cheap there
_SMALL_OUTPUT = 128
#: elements (float32) of one work array of the boundary pass: memory stays bounded
_BLOCK_ELEMENTS = 1 << 20
#: sides (pixels) of the blocks mixed cells are cut into, level by level (the last: per pixel)
_BLOCK_SIDES = (16, 8, 4)
#: padded candidate counts of the boundary pass (blocks are grouped by these)
_CANDIDATE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def assign_clusters(
    features: np.ndarray,
    centroids: np.ndarray,
    out_size: tuple[int, int],
    upsample: str = "similarity",
    *,
    channel_chunk: int = 8,
) -> np.ndarray:
    """Assign every output pixel to the centroid of highest cosine similarity.

    features: (D, h, w) float (L2-normalised or not: the argmax of cosine similarity
    does not depend on the per-pixel norm). centroids: (k, D) L2-normalised.
    out_size: (H, W) of the label map (e.g. 1024x2048). Returns (H, W) int32 in 0..k-1.

    upsample:
    - ``"similarity"`` (default): the labels of resizing the (k, h, w) similarities
      bilinearly (half-pixel centres, torch ``F.interpolate``, ``channel_chunk`` maps per
      call) to (H, W), then argmax, ties to the lowest id. Bilinear resizing is linear, so
      this equals the argmax over bilinearly upsampled features; it gives smooth, sub-patch
      boundaries from a 23x46 patch grid, where nearest upsampling of labels makes
      44-pixel blocks. The labels are identical to that straightforward computation
      (:func:`_assign_clusters_straightforward`, kept for tests and benchmarks), float
      rounding included, but computed without it: a bilinear value is a convex combination
      of its four grid corners, so a cell whose corners share their argmax (by more than
      the rounding) is filled with it, and elsewhere only the centroids that can win inside
      the cell are interpolated; pixels where two of them come within the rounding are
      recomputed with torch's exact float32 arithmetic (see :func:`_upsampled_argmax_fast`).
      No (k, H, W) array; from a 23x46 grid to 1024x2048 about 14x (k=80) / 20x (k=300)
      faster than the straightforward resize on one core (``benchmarks/bench_fullres.py``),
      about 2x from a dense 322x644 map.
    - ``"labels"``: argmax at feature resolution, then nearest upsampling: the
      reference's path (it computes similarities on the dense 322x644 CAUSE map and
      nearest-upsamples the argmax to 1024x2048).
    """
    if upsample not in UPSAMPLE_MODES:
        raise PseudoLabelsError(f"unknown upsample mode {upsample!r} (choose {', '.join(UPSAMPLE_MODES)})")
    sim = _similarities(features, centroids)
    k, h, w = sim.shape
    H, W = int(out_size[0]), int(out_size[1])
    if upsample == "labels" or (h, w) == (H, W):
        labels = np.argmax(sim, axis=0).astype(np.int32)
        return resize_nearest(labels, (H, W))
    fast = _upsampled_argmax_fast(sim, (H, W), channel_chunk)
    return fast if fast is not None else _upsampled_argmax_straightforward(sim, (H, W), channel_chunk)


def _similarities(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(k, h, w) float32 dot products of the centroids with every feature vector."""
    features = np.asarray(features)
    centroids = np.asarray(centroids, np.float32)
    d, h, w = features.shape
    if centroids.ndim != 2 or centroids.shape[1] != d:
        raise PseudoLabelsError(f"features have dimension {d} but centroids are {tuple(centroids.shape)}")
    flat = features.reshape(d, h * w).astype(np.float32, copy=False)
    return (centroids @ flat).reshape(-1, h, w)


def _assign_clusters_straightforward(features: np.ndarray, centroids: np.ndarray, out_size: tuple[int, int],
                                     channel_chunk: int = 8) -> np.ndarray:
    """The straightforward ``similarity`` assignment (the reference of the fast one): all k
    similarity maps resized to ``out_size`` by torch, ``channel_chunk`` at a time, running
    argmax (ties to the lowest id). (H, W) int32."""
    sim = _similarities(features, centroids)
    H, W = int(out_size[0]), int(out_size[1])
    if sim.shape[1:] == (H, W):
        return np.argmax(sim, axis=0).astype(np.int32)
    return _upsampled_argmax_straightforward(sim, (H, W), channel_chunk)


def _upsampled_argmax_straightforward(sim: np.ndarray, out_size: tuple[int, int], channel_chunk: int = 8) -> np.ndarray:
    """argmax over k of the (k, h, w) float32 ``sim`` resized bilinearly to ``out_size``
    (torch, half-pixel centres), ``channel_chunk`` (H, W) maps at a time. (H, W) int32."""
    import torch
    import torch.nn.functional as F

    H, W = out_size
    k = sim.shape[0]
    chunk = max(1, int(channel_chunk))
    best_val = torch.full((H, W), -np.inf, dtype=torch.float32)
    best_idx = torch.zeros((H, W), dtype=torch.int32)
    sim_t = torch.from_numpy(np.ascontiguousarray(sim, dtype=np.float32))
    with torch.no_grad():
        for s in range(0, k, chunk):
            up = F.interpolate(sim_t[None, s: s + chunk], size=(H, W), mode="bilinear", align_corners=False)[0]
            val, idx = up.max(dim=0)  # first max within the chunk
            better = val > best_val  # strict: earlier chunks win ties
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx.to(torch.int32) + s, best_idx)
    return best_idx.numpy()


# ---- torch's float32 bilinear arithmetic, reproduced for the pixels that need it
def _bilinear_taps(n_in: int, n_out: int, fused: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source rows ``i0``, ``i1`` (n_out,) int64 and weights ``l0``, ``l1`` (n_out,) float32 of
    one axis, as torch's CPU bilinear kernels compute them (align_corners False, output size
    given): scale = n_in / n_out in float32, src = max(scale * (o + 0.5) - 0.5, 0) (one
    rounding when ``fused``, as an FMA-contracted build does), i0 = floor(src),
    l1 = clip(src - i0, 0, 1), l0 = 1 - l1; equal sizes copy (l0 = 1, l1 = 0).
    (PyTorch aten/src/ATen/native/UpSample.h, compute_source_index_and_lambda.)"""
    if n_in == n_out:
        i = np.arange(n_out, dtype=np.int64)
        return i, i, np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    scale = np.float32(n_in) / np.float32(n_out)
    o = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    if fused:  # the float64 product is exact, the subtraction too where src >= 0
        src = (np.float64(scale) * o.astype(np.float64) - 0.5).astype(np.float32)
    else:
        src = scale * o - np.float32(0.5)
    src = np.where(src < 0, np.float32(0), src)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    return i0, np.minimum(i0 + 1, n_in - 1), (np.float32(1) - l1).astype(np.float32), l1


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray, fused: bool) -> np.ndarray:
    """float32 ``a * b + c``: one rounding when ``fused`` (a fused multiply-add: the product is
    exact in float64, the sum is rounded to odd in float64 with its exact error (TwoSum),
    then to float32, which is then correctly rounded), else two float32 roundings."""
    if not fused:
        return (np.multiply(a, b, dtype=np.float32) + np.asarray(c, np.float32)).astype(np.float32)
    p = np.multiply(a, b, dtype=np.float64)
    c = np.asarray(c, np.float64)
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)  # s + err == p + c exactly
    inexact = err != 0
    if np.any(inexact):
        trunc = np.where((err > 0) == (s > 0), s, np.nextafter(s, 0.0))  # towards zero
        odd = (trunc.view(np.int64) | 1).view(np.float64)
        s = np.where(inexact, odd, s)
    return s.astype(np.float32)


def _bilinear_values(sim: np.ndarray, chan: np.ndarray, y: np.ndarray, x: np.ndarray, kernel: tuple[str, bool],
                     rows: tuple, cols: tuple) -> np.ndarray:
    """float32 values of channels ``chan`` (n, m) of ``sim`` (k, h, w) at output pixels
    (y, x) (n,), bit for bit as torch's CPU ``upsample_bilinear2d`` computes them with
    ``kernel`` = (kind, fused) (:func:`_torch_kernel`). ``rows`` / ``cols``: the taps
    (:func:`_bilinear_taps`) of each axis. Returns (n, m) float32.

    Kinds (PyTorch aten/src/ATen/native/cpu/UpSampleKernel.cpp): ``generic`` interpolates
    along x in rows i0 and i1, then along y: t = x0*w0 + x1*w1, v = t0*h0 + t1*h1;
    ``channels_last`` sums four products with the weights h*w: ((x00*w00 + x01*w01) +
    x10*w10) + x11*w11. ``fused``: each ``a*b + c`` rounded once, as GCC contracts them."""
    kind, fused = kernel
    yi0, yi1, h0, h1 = (t[y][:, None] for t in rows)
    xi0, xi1, w0, w1 = (t[x][:, None] for t in cols)

    def f32(v):
        return np.asarray(v, np.float32)

    x00, x01, x10, x11 = sim[chan, yi0, xi0], sim[chan, yi0, xi1], sim[chan, yi1, xi0], sim[chan, yi1, xi1]
    if kind == "generic":
        t0 = _fma32(x00, w0, f32(x01 * w1), fused)
        t1 = _fma32(x10, w0, f32(x11 * w1), fused)
        return _fma32(t0, h0, f32(t1 * h1), fused)
    w00, w01, w10, w11 = f32(h0 * w0), f32(h0 * w1), f32(h1 * w0), f32(h1 * w1)
    acc = _fma32(x00, w00, f32(x01 * w01), fused)
    acc = _fma32(x10, w10, acc, fused)
    return _fma32(x11, w11, acc, fused)


_TORCH_KERNELS: dict = {}


def _torch_kernel(channels: int) -> tuple[str, bool] | None:
    """Which float32 arithmetic torch's CPU bilinear resize uses for ``channels`` maps at a
    time in this process (it picks kernels by channel count and thread count, and builds
    differ in FMA contraction): found once by resizing a random probe (5x7 -> 70x90, an
    output above the small-output rule) and comparing bit for bit with each emulation of
    :func:`_bilinear_values`. None when none matches (then callers take the straightforward
    path)."""
    import torch
    import torch.nn.functional as F

    key = (int(channels), torch.get_num_threads(), torch.__version__)
    if key not in _TORCH_KERNELS:
        (h, w), (H, W) = (5, 7), (70, 90)
        probe = np.random.default_rng(12345).standard_normal((channels, h, w)).astype(np.float32)
        with torch.no_grad():
            ref = F.interpolate(torch.from_numpy(probe)[None], size=(H, W), mode="bilinear",
                                align_corners=False)[0].numpy().reshape(channels, -1).T
        yy, xx = np.divmod(np.arange(H * W), W)
        chan = np.broadcast_to(np.arange(channels), (H * W, channels))
        found = None
        for kernel in (("generic", True), ("generic", False), ("channels_last", True), ("channels_last", False)):
            rows, cols = _bilinear_taps(h, H, kernel[1]), _bilinear_taps(w, W, kernel[1])
            if np.array_equal(_bilinear_values(probe, chan, yy, xx, kernel, rows, cols), ref):
                found = kernel
                break
        _TORCH_KERNELS[key] = found
    return _TORCH_KERNELS[key]


def _bucket(m: np.ndarray) -> np.ndarray:
    """Padded candidate count of each count ``m`` (the smallest bucket >= m)."""
    buckets = np.asarray(_CANDIDATE_BUCKETS)
    idx = np.searchsorted(buckets, m)
    return np.where(idx < buckets.size, buckets[np.minimum(idx, buckets.size - 1)], m)


@dataclass
class _Blocks:
    """Rectangles of output pixels inside one cell each, with candidate centroids.

    a, b: (n,) cell row / column; y1, y2, x1, x2: (n,) first / last pixel row and column
    (inclusive); ids: (n, m) candidate ids in increasing order, ``pad`` (n, m) marking
    repeats of the first that fill a row up to m."""

    a: np.ndarray
    b: np.ndarray
    y1: np.ndarray
    y2: np.ndarray
    x1: np.ndarray
    x2: np.ndarray
    ids: np.ndarray
    pad: np.ndarray

    def take(self, sel, ids: np.ndarray | None = None, pad: np.ndarray | None = None) -> "_Blocks":
        """The blocks ``sel`` (index array or slice), with new candidates when given."""
        return _Blocks(self.a[sel], self.b[sel], self.y1[sel], self.y2[sel], self.x1[sel], self.x2[sel],
                       self.ids[sel] if ids is None else ids, self.pad[sel] if pad is None else pad)


def _packed(blocks: _Blocks, keep: np.ndarray):
    """Blocks with only their ``keep`` (n, m) candidates, grouped by padded count: yields
    :class:`_Blocks` whose rows keep one to m ids (id order kept)."""
    count = keep.sum(1)
    order = np.argsort(~keep, axis=1, kind="stable")
    ids = np.take_along_axis(blocks.ids, order, axis=1)
    bucket = np.minimum(_bucket(count), ids.shape[1])
    for m in np.unique(bucket):
        sel = np.flatnonzero(bucket == m)
        sub = ids[sel, :m].copy()
        pad = np.arange(m)[None, :] >= count[sel][:, None]
        sub[pad] = np.broadcast_to(sub[:, :1], sub.shape)[pad]
        yield blocks.take(sel, sub, pad)


def _split(blocks: _Blocks, side: int) -> _Blocks:
    """Cut each block into blocks of at most ``side`` x ``side`` pixels (same candidates)."""
    ny = (blocks.y2 - blocks.y1) // side + 1
    nx = (blocks.x2 - blocks.x1) // side + 1
    per = ny * nx
    parent = np.repeat(np.arange(per.size), per)
    local = np.arange(parent.size) - np.repeat(np.cumsum(per) - per, per)
    ty, tx = np.divmod(local, nx[parent])
    y1 = blocks.y1[parent] + ty * side
    x1 = blocks.x1[parent] + tx * side
    return _Blocks(blocks.a[parent], blocks.b[parent], y1, np.minimum(y1 + side - 1, blocks.y2[parent]),
                   x1, np.minimum(x1 + side - 1, blocks.x2[parent]), blocks.ids[parent], blocks.pad[parent])


def _concat(parts: list) -> "_Blocks":
    """One :class:`_Blocks` of blocks with the same candidate count."""
    if len(parts) == 1:
        return parts[0]
    return _Blocks(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("a", "b", "y1", "y2", "x1", "x2", "ids", "pad")))


def _best_two(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the first axis of ``v`` (m, ...): index of the first maximum, the maximum and the
    runner-up (equal to the maximum on ties)."""
    best = v[0].copy()
    second = np.full_like(best, -np.inf)
    idx = np.zeros(best.shape, np.int64)
    for i in range(1, len(v)):
        vi = v[i]
        np.maximum(second, np.minimum(vi, best), out=second)
        np.putmask(idx, vi > best, i)
        np.maximum(best, vi, out=best)
    return idx, best, second


class _Upsampler:
    """Float32 bilinear values of candidate channels at output pixels, block fills and the
    exact labels of near-ties; see :func:`_upsampled_argmax_fast`. Arrays of many blocks
    keep the block axis last (long inner loops)."""

    def __init__(self, sim, rows, cols, ys, xs, tol, kernel_groups, out, prefill):
        self.sim, self.rows, self.cols, self.tol, self.kernel_groups = sim, rows, cols, tol, kernel_groups
        k, h, w = sim.shape
        self.flat, self.plane = sim.reshape(-1), h * w
        self.out_flat, self.width = out.reshape(-1), out.shape[1]
        self.prefill = prefill  # (cell rows, cell cols): the label each cell was filled with
        ra0, ra1 = rows[0][ys], rows[1][ys]  # grid rows of each cell row
        cb0, cb1 = cols[0][xs], cols[1][xs]
        # flat offset (in one (h, w) plane) of each cell's corners: [row 0/1][col 0/1] (cell row, cell col)
        self.offsets = [[r[:, None] * w + c[None, :] for c in (cb0, cb1)] for r in (ra0, ra1)]

    def approx(self, blk: _Blocks, Y: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(m, ny, nx, n) float32 values of ``blk.ids`` at pixels Y (ny, n) x X (nx, n)
        (float32 rounding of any order: within tol of torch's); padding -inf."""
        j = blk.ids.T * self.plane  # (m, n)
        (g00, g01), (g10, g11) = [[self.flat.take(j + off[blk.a, blk.b])[:, None, :] for off in row]
                                  for row in self.offsets]
        w0, w1 = self.cols[2][X], self.cols[3][X]  # (nx, n)
        top = g00 * w0 + g01 * w1  # (m, nx, n): along x in grid row i0
        bot = g10 * w0 + g11 * w1
        vals = top[:, None] * self.rows[2][Y][:, None, :]  # (m, ny, nx, n)
        vals += bot[:, None] * self.rows[3][Y][:, None, :]
        if blk.pad.any():
            np.copyto(vals, -np.inf, where=blk.pad.T[:, None, None, :])
        return vals

    def corners(self, blk: _Blocks):
        """Corner test of each block: fill those with one possible winner; yield the others
        with the candidates that can still win there."""
        n, m = blk.ids.shape
        if m == 1:
            self.fill(blk, blk.ids[:, 0])
            return
        per_block = max(1, _BLOCK_ELEMENTS // (4 * m))
        for s in range(0, n, per_block):
            part = blk.take(slice(s, s + per_block))
            yield from self._corners(part)

    def _corners(self, blk: _Blocks):
        n, m = blk.ids.shape
        tol = self.tol
        v = self.approx(blk, np.stack([blk.y1, blk.y2]), np.stack([blk.x1, blk.x2])).reshape(m, 4, n)
        keep = (v.max(1) >= v.min(1).max(0) - 4 * tol).T  # (n, m): can reach the best lower bound
        best, top, second = _best_two(v)  # (4, n)
        single = keep.sum(1) == 1
        won = ((best == best[:1]).all(0) & (top - second > 4 * tol).all(0)) | single
        winner = np.where(single, np.argmax(keep, axis=1), best[0])
        if won.any():
            w = np.flatnonzero(won)
            self.fill(blk.take(w), blk.ids[w, winner[w]])
        rest = np.flatnonzero(~won)
        if rest.size:
            yield from _packed(blk.take(rest), keep[rest] & ~blk.pad[rest])

    def pixels(self, blk: _Blocks, side: int) -> None:
        """Label every pixel of blocks of at most ``side`` x ``side`` pixels."""
        n, m = blk.ids.shape
        if m == 1:
            self.fill(blk, blk.ids[:, 0])
            return
        per_block = max(1, _BLOCK_ELEMENTS // (m * side * side))
        steps = np.arange(side)[:, None]
        for s in range(0, n, per_block):
            part = blk.take(slice(s, s + per_block))
            Y = np.minimum(part.y1 + steps, part.y2)  # (side, n): repeats the last row
            X = np.minimum(part.x1 + steps, part.x2)
            idx, top, second = _best_two(self.approx(part, Y, X))  # (side, side, n)
            lab = part.ids[np.arange(len(part.a)), idx]
            near = top - second <= 4 * self.tol
            if near.any():
                iy, ix, ci = np.nonzero(near)
                lab[iy, ix, ci] = self.exact(part.ids[ci], Y[iy, ci], X[ix, ci])
            self.out_flat[(Y * self.width)[:, None, :] + X[None, :, :]] = lab

    def fill(self, blk: _Blocks, labels: np.ndarray) -> None:
        """Write one label per block (blocks already holding it are skipped)."""
        change = np.flatnonzero(labels != self.prefill[blk.a, blk.b])
        if not change.size:
            return
        y1, y2, x1, x2, labels = blk.y1[change], blk.y2[change], blk.x1[change], blk.x2[change], labels[change]
        hmax, wmax = int((y2 - y1).max()) + 1, int((x2 - x1).max()) + 1
        per_block = max(1, _BLOCK_ELEMENTS // (hmax * wmax))
        for s in range(0, len(labels), per_block):
            sl = slice(s, s + per_block)
            Y = np.minimum(y1[sl] + np.arange(hmax)[:, None], y2[sl])  # (hmax, n)
            X = np.minimum(x1[sl] + np.arange(wmax)[:, None], x2[sl])
            self.out_flat[(Y * self.width)[:, None, :] + X[None, :, :]] = labels[sl]

    def exact(self, ids: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Label of each pixel (y, x) among its candidates ``ids`` (n, m, ascending, padded
        with repeats) from torch's own float32 values: the first maximum (lowest id on ties)."""
        vals = np.empty(ids.shape, np.float32)
        for kernel, channels in self.kernel_groups:
            mask = np.isin(ids, channels)
            if mask.any():
                pix = np.nonzero(mask)[0]
                vals[mask] = _bilinear_values(self.sim, ids[mask][:, None], y[pix], x[pix], kernel,
                                              self.rows, self.cols)[:, 0]
        return ids[np.arange(len(ids)), vals.argmax(axis=1)]


def _upsampled_argmax_fast(sim: np.ndarray, out_size: tuple[int, int], channel_chunk: int = 8) -> np.ndarray | None:
    """The labels of :func:`_upsampled_argmax_straightforward` without resizing k maps.

    Exact argument. Torch's value of channel j at an output pixel is, up to float32
    rounding (below ``tol`` = :data:`_ROUND_TOL` x max|sim|), a bilinear function of the
    pixel's weights (l1 along y, l1 along x) over its four grid corners; output pixels with
    the same corners form a cell (about 44x44 pixels from a 23x46 grid), in which the weights
    grow monotonically, so over any rectangle of a cell a value is a convex combination of
    its values at the rectangle's four corner pixels.
    1. A cell whose four grid corners have the same argmax c, each by more than 2 tol, is c
       everywhere (convexity keeps s_c > s_j): filled.
    2. In the others, j can win only if its largest corner value reaches the best smallest
       corner value of any candidate (less 2 tol): the cell's candidates, in id order.
    3. Mixed cells are cut into blocks of :data:`_BLOCK_SIDES` pixels, level by level: at the
       block's corner pixels the candidates are interpolated (float32, within tol of torch)
       and the same two tests (4 tol) fill the block or narrow its candidates.
    4. In the blocks left, every pixel's candidates are interpolated; a pixel whose best
       candidate leads the next by more than 4 tol has that label under torch's rounding too;
       the others (near and exact ties) are recomputed with torch's own float32 arithmetic
       (:func:`_bilinear_values`) and take the first maximum, as the straightforward argmax.
    Returns (H, W) int32, or None where the shortcut does not apply (small outputs, 1x1
    grids, non-finite similarities, an unknown torch kernel): the caller then resizes.
    """
    k, h, w = sim.shape
    H, W = int(out_size[0]), int(out_size[1])
    if H + W <= _SMALL_OUTPUT or h * w == 1 or not np.all(np.isfinite(sim)):
        return None
    if k == 1:
        return np.zeros((H, W), np.int32)
    chunk = max(1, int(channel_chunk))
    sizes = sorted({min(chunk, k - s) for s in range(0, k, chunk)})
    kernels = {c: _torch_kernel(c) for c in sizes}
    if any(v is None for v in kernels.values()) or len({v[1] for v in kernels.values()}) > 1:
        return None
    fused = kernels[sizes[0]][1]
    rows, cols = _bilinear_taps(h, H, fused), _bilinear_taps(w, W, fused)
    # per channel: the kernel of its chunk (chunks of ``chunk`` channels, the last one shorter)
    size_of = np.minimum(chunk, k - (np.arange(k) // chunk) * chunk)
    kernel_groups = [(kernels[c], np.flatnonzero(size_of == c)) for c in sizes]

    sim = np.ascontiguousarray(sim, dtype=np.float32)
    tol = _ROUND_TOL * float(np.abs(sim).max())
    ys = np.flatnonzero(np.r_[True, rows[0][1:] != rows[0][:-1]])  # cell rows: output rows sharing i0
    xs = np.flatnonzero(np.r_[True, cols[0][1:] != cols[0][:-1]])
    ye, xe = np.r_[ys[1:], H] - 1, np.r_[xs[1:], W] - 1

    # 1. argmax and its lead over the runner-up at every grid point; uniform cells
    flat = sim.reshape(k, h * w)
    best = flat.argmax(0)
    ar = np.arange(h * w)
    rest = flat.copy()
    rest[best, ar] = -np.inf
    margin = (flat[best, ar] - rest.max(0)).reshape(h, w)
    del rest
    best = best.reshape(h, w)
    ra0, ra1, cb0, cb1 = rows[0][ys], rows[1][ys], cols[0][xs], cols[1][xs]
    corners = [(ra0, cb0), (ra0, cb1), (ra1, cb0), (ra1, cb1)]
    cb = [best[np.ix_(r, c)] for r, c in corners]
    cm = np.minimum.reduce([margin[np.ix_(r, c)] for r, c in corners])
    uniform = (cb[0] == cb[1]) & (cb[0] == cb[2]) & (cb[0] == cb[3]) & (cm > 2 * tol)
    out = np.repeat(np.repeat(cb[0].astype(np.int32), np.diff(np.r_[ys, H]), axis=0), np.diff(np.r_[xs, W]), axis=1)
    up = _Upsampler(sim, rows, cols, ys, xs, tol, kernel_groups, out, cb[0])

    # 2. candidates of the mixed cells (blocks of cells: memory bounded)
    na, nb = np.nonzero(~uniform)
    per_block = max(1, _BLOCK_ELEMENTS // k)
    for s in range(0, na.size, per_block):
        a, b = na[s: s + per_block], nb[s: s + per_block]
        c00, c01, c10, c11 = (sim[:, r[a], c[b]] for r, c in corners)  # (k, n)
        smax = np.maximum(np.maximum(c00, c01), np.maximum(c10, c11))
        smin = np.minimum(np.minimum(c00, c01), np.minimum(c10, c11))
        keep = (smax >= smin.max(0) - 2 * tol).T
        del c00, c01, c10, c11, smax, smin
        cells = _Blocks(a, b, ys[a], ye[a], xs[b], xe[b], np.broadcast_to(np.arange(k), keep.shape),
                        np.zeros(keep.shape, bool))
        todo = list(_packed(cells, keep))
        # 3. blocks, level by level (blocks with the same candidate count together); 4. pixels
        for side in _BLOCK_SIDES:
            nxt: dict[int, list] = {}
            for blk in todo:
                for sub in up.corners(_split(blk, side)):
                    nxt.setdefault(sub.ids.shape[1], []).append(sub)
            todo = [_concat(parts) for parts in nxt.values()]
        for blk in todo:
            up.pixels(blk, _BLOCK_SIDES[-1])
    return out


def cluster_png_array(clusters: np.ndarray, k: int, void_mask: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int cluster ids -> raw cluster PNG array: uint8 (255 void) when k <= 255,
    uint16 (65535 void) when k > 255. Ids outside 0..k-1 are an error (never wrapped)."""
    clusters = np.asarray(clusters)
    if clusters.size and (clusters.min() < 0 or clusters.max() >= k):
        raise ValueError(f"cluster ids outside 0..{k - 1}")
    dtype, void = (np.uint8, 255) if k <= 255 else (np.uint16, 65535)
    out = clusters.astype(dtype)
    if void_mask is not None:
        out[np.asarray(void_mask, bool)] = void
    return out


# --------------------------------------------------------------------------- centroids file
@dataclass
class CentroidsFile:
    """Contents of ``kmeans_centroids.npz``.

    centroids: (k, D) float32 L2-normalised; cluster_to_class: (k,) int trainId per
    cluster (255 unmapped) or None before mapping; metadata: backend, seed, feature
    backbone / dim, fit parameters (JSON-able dict).
    """

    centroids: np.ndarray
    cluster_to_class: np.ndarray | None = None
    metadata: dict | None = None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])


def save_centroids(path: str | os.PathLike, centroids: np.ndarray,
                   cluster_to_class: np.ndarray | None = None,
                   metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``kmeans_centroids.npz`` atomically: ``centroids`` (k, D) float32,
    ``cluster_to_class`` (k,) int64 when given, ``metadata`` as a JSON string."""
    import json

    from pseudo_labels.core.io import _json_default, atomic_path

    arrays: dict[str, np.ndarray] = {"centroids": np.asarray(centroids, np.float32)}
    if cluster_to_class is not None:
        arrays["cluster_to_class"] = np.asarray(cluster_to_class, np.int64)
    arrays["metadata"] = np.array(json.dumps(dict(metadata or {}), default=_json_default, sort_keys=True))
    with atomic_path(path) as tmp:
        write_npz_deterministic(tmp, arrays)


def write_npz_deterministic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` layout (one ``<name>.npy`` per array, stored uncompressed) with fixed zip
    timestamps: equal arrays give equal bytes, whichever run or shard writes the file."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


def load_centroids(path: str | os.PathLike) -> CentroidsFile:
    """Read a centroids file (ours, or the reference's with only ``centroids`` and
    ``cluster_to_class``, also as its base64 text ``kmeans_centroids_k80.b64``). Centroids
    that are not unit length are normalised (ours are returned exactly as stored, so a load +
    save round trip keeps the bytes). Errors name the file."""
    import io
    import json

    from pseudo_labels.stages.semantic.centroids import centroids_npz_bytes

    path = Path(path)
    try:  # an .npz, or the reference's base64 text of one (kmeans_centroids_k80.b64)
        with np.load(io.BytesIO(centroids_npz_bytes(path)), allow_pickle=False) as data:
            if "centroids" not in data:
                raise InputFileError(path, "no 'centroids' array", "expected a kmeans_centroids.npz")
            centroids = np.asarray(data["centroids"], np.float32)
            c2c = np.asarray(data["cluster_to_class"]).astype(np.int64) if "cluster_to_class" in data else None
            meta = json.loads(str(data["metadata"])) if "metadata" in data else {}
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputFileError(path, f"not a readable .npz centroids file ({exc})") from None
    if centroids.ndim != 2 or centroids.shape[0] < 2:
        raise InputFileError(path, f"centroids must be (k >= 2, D), got {centroids.shape}")
    if c2c is not None and c2c.shape != (centroids.shape[0],):
        raise InputFileError(path, f"cluster_to_class has shape {c2c.shape}, expected ({centroids.shape[0]},)")
    norms = np.linalg.norm(centroids, axis=1)
    if not np.all(np.abs(norms - 1.0) <= 1e-6):  # ours are stored normalised: kept bit for bit
        centroids = l2_normalize(centroids, axis=1)
    return CentroidsFile(centroids, c2c, meta)
