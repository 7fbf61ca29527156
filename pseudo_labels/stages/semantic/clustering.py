"""Stage 2: k-means over-clustering of patch features and per-pixel cluster assignment.

Conventions
- Features are ``(D, h, w)`` float arrays, L2-normalised over ``D`` (as
  :mod:`pseudo_labels.stages.semantic.features` writes them); samples are ``(N, D)`` float32.
- Centroids are ``(k, D)`` float32, L2-normalised; a pixel belongs to the centroid
  of highest cosine similarity.
- Cluster maps are ``(H, W)`` int32 ids ``0..k-1``. On disk (raw cluster PNG) they are
  uint8 with 255 = void when ``k <= 255`` and uint16 with 65535 = void when ``k > 255``
  (never wrapped, unlike the reference repository).

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
    - ``"similarity"`` (default): the (k, h, w) similarities are resized bilinearly
      (half-pixel centres) to (H, W), then argmax. Bilinear resizing is linear, so this
      equals the argmax over bilinearly upsampled features; it gives smooth, sub-patch
      boundaries from a 23x46 patch grid, where nearest upsampling of labels makes
      44-pixel blocks. Memory-bounded: ``channel_chunk`` similarity maps of (H, W) at a
      time with a running max (exactly the full argmax; ties -> lowest id).
    - ``"labels"``: argmax at feature resolution, then nearest upsampling: the
      reference's path (it computes similarities on the dense 322x644 CAUSE map and
      nearest-upsamples the argmax to 1024x2048).
    """
    if upsample not in UPSAMPLE_MODES:
        raise PseudoLabelsError(f"unknown upsample mode {upsample!r} (choose {', '.join(UPSAMPLE_MODES)})")
    features = np.asarray(features)
    centroids = np.asarray(centroids, np.float32)
    d, h, w = features.shape
    if centroids.ndim != 2 or centroids.shape[1] != d:
        raise PseudoLabelsError(f"features have dimension {d} but centroids are {tuple(centroids.shape)}")
    H, W = int(out_size[0]), int(out_size[1])
    flat = features.reshape(d, h * w).astype(np.float32, copy=False)
    sim = (centroids @ flat).reshape(-1, h, w)  # (k, h, w)
    if upsample == "labels" or (h, w) == (H, W):
        labels = np.argmax(sim, axis=0).astype(np.int32)
        return resize_nearest(labels, (H, W))
    import torch
    import torch.nn.functional as F

    k = sim.shape[0]
    best_val = torch.full((H, W), -np.inf, dtype=torch.float32)
    best_idx = torch.zeros((H, W), dtype=torch.int32)
    sim_t = torch.from_numpy(sim)
    with torch.no_grad():
        for s in range(0, k, channel_chunk):
            up = F.interpolate(sim_t[None, s: s + channel_chunk], size=(H, W), mode="bilinear",
                               align_corners=False)[0]
            val, idx = up.max(dim=0)  # first max within the chunk
            better = val > best_val  # strict: earlier chunks win ties
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx.to(torch.int32) + s, best_idx)
    return best_idx.numpy()


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
