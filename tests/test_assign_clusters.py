"""Exactness of the fast per-pixel assignment (issue 27).

``assign_clusters`` (upsample ``similarity``) must give the labels of the straightforward
computation, float rounding included: all k similarity maps resized bilinearly by torch
(half-pixel centres) ``channel_chunk`` at a time, then argmax with ties to the lowest id.
The reference here is written independently of the module (torch only).
"""

from __future__ import annotations

import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from pseudo_labels.stages.semantic import clustering
from pseudo_labels.stages.semantic.clustering import assign_clusters, l2_normalize, resize_nearest


def straightforward(features, centroids, out_size, chunk=8):
    """Similarities, every map resized by torch (chunk maps per call), running argmax."""
    d, h, w = features.shape
    sim = (np.asarray(centroids, np.float32) @ features.reshape(d, h * w).astype(np.float32)).reshape(-1, h, w)
    if (h, w) == tuple(out_size):
        return sim.argmax(0)
    s = torch.from_numpy(sim)
    best_v = torch.full(tuple(out_size), -np.inf)
    best_i = torch.zeros(tuple(out_size), dtype=torch.int64)
    for c in range(0, sim.shape[0], chunk):
        up = F.interpolate(s[None, c: c + chunk], size=tuple(out_size), mode="bilinear", align_corners=False)[0]
        v, i = up.max(0)
        better = v > best_v
        best_v, best_i = torch.where(better, v, best_v), torch.where(better, i + c, best_i)
    return best_i.numpy()


def smooth_features(d, h, w, sigma, seed):
    f = np.random.default_rng(seed).standard_normal((d, h, w)).astype(np.float32)
    f = ndimage.gaussian_filter(f, (0, sigma, sigma))
    return l2_normalize(f, axis=0)


def centroids_of(k, d, seed):
    return l2_normalize(np.random.default_rng(seed).standard_normal((k, d)), axis=1)


def check(features, centroids, out_size, chunk=8):
    out = assign_clusters(features, centroids, out_size, channel_chunk=chunk)
    ref = straightforward(features, centroids, out_size, chunk)
    assert out.dtype == np.int32 and out.shape == tuple(out_size)
    np.testing.assert_array_equal(out, ref)
    return out


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("k,grid,out_size,sigma", [
    (80, (12, 23), (301, 517), 1.5),   # smooth, odd output
    (300, (9, 17), (130, 200), 1.0),
    (80, (23, 46), (256, 512), 0.0),   # noisy (white) features on the real grid
    (2, (7, 11), (131, 257), 0.0),     # k = 2, odd grid and output
    (1000, (5, 6), (97, 113), 0.0),    # k = 1000
    (7, (13, 5), (60, 141), 0.0),      # downsampling rows, upsampling columns
    (5, (10, 12), (10, 300), 0.0),     # one axis copied (same size)
])
def test_equal_to_straightforward(k, grid, out_size, sigma):
    d = 24
    f = smooth_features(d, *grid, sigma, seed=k) if sigma else \
        np.random.default_rng(k).standard_normal((d, *grid)).astype(np.float32)
    out = check(f, centroids_of(k, d, seed=k + 1), out_size)
    if k >= 80:
        assert len(np.unique(out)) > 10  # many boundaries crossed


def test_float16_features_unnormalised():
    f = (3.0 * smooth_features(16, 11, 19, 1.0, seed=3)).astype(np.float16)
    check(f, centroids_of(40, 16, seed=4), (250, 390))


def test_exact_ties_go_to_lowest_id():
    f = smooth_features(8, 9, 14, 1.0, seed=5)
    c = centroids_of(6, 8, seed=6)
    c = np.concatenate([c[:3], c[1:2], c[3:], c[1:2]])  # centroid 1 repeated as 3 and 7
    out = check(f, c, (170, 250))
    assert not np.isin(out, [3, 7]).any() and (out == 1).any()
    # all-zero features: every similarity 0, every pixel ties -> 0
    np.testing.assert_array_equal(check(np.zeros((8, 9, 14), np.float32), c, (170, 250)), 0)


def test_near_ties_decided_by_torch_rounding():
    """Two centroids a few ulps apart: their upsampled values cross in float32 rounding, so
    only the exact reproduction of torch's arithmetic gives the same labels."""
    f = smooth_features(12, 10, 16, 1.0, seed=7)
    base = centroids_of(5, 12, seed=8)
    near = base[2] + np.float32(3e-7) * np.random.default_rng(9).standard_normal(12).astype(np.float32)
    c = np.concatenate([base, near[None]]).astype(np.float32)
    out = check(f, c, (200, 333))
    assert (out == 2).any() and (out == 5).any()  # both sides of the near-tie win somewhere


def test_chunk_kernels(one_thread):
    """With one thread torch resizes 3-map chunks with another kernel (4-term sums): k = 19 in
    chunks of 8 ends with 3 maps; chunks of 3 and of 1 as well."""
    f = smooth_features(10, 8, 13, 1.0, seed=10)
    c = centroids_of(19, 10, seed=11)
    for chunk in (8, 3, 1):
        check(f, c, (150, 260), chunk)


def test_small_outputs_and_one_by_one_grid():
    f = np.random.default_rng(12).standard_normal((6, 5, 7)).astype(np.float32)
    c = centroids_of(9, 6, seed=13)
    check(f, c, (37, 53))       # H + W <= 128: torch's channels-last kernel, straightforward path
    check(f[:, :1, :1], c, (90, 150))
    check(f, c, (5, 7))         # same size: plain argmax


def test_labels_mode_unchanged():
    f = np.random.default_rng(14).standard_normal((6, 23, 46)).astype(np.float32)
    c = centroids_of(30, 6, seed=15)
    lab = np.argmax(np.einsum("kd,dhw->khw", c, f), axis=0)
    out = assign_clusters(f, c, (1024, 2048), upsample="labels")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, resize_nearest(lab, (1024, 2048)))


def test_memory_bounded():
    """No (k, H, W) array: k = 300 at 512x1024 would be 629 MB of float32."""
    f = np.random.default_rng(16).standard_normal((16, 23, 46)).astype(np.float32)
    c = centroids_of(300, 16, seed=17)
    assign_clusters(f, c, (64, 128))  # warm up (torch kernel probes)
    tracemalloc.start()
    try:
        assign_clusters(f, c, (512, 1024))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80e6


def nearest_float32(x: Fraction) -> np.float32:
    """x rounded to float32, to nearest, ties to even."""
    guess = np.float32(float(x))
    cands = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    errs = [abs(Fraction(float(c)) - x) for c in cands]
    best = min(errs)
    ties = [c for c, e in zip(cands, errs) if e == best]
    return min(ties, key=lambda c: int(np.array(c).view(np.int32)) & 1)


def test_fma32_is_correctly_rounded():
    rng = np.random.default_rng(18)
    a = rng.standard_normal(3000).astype(np.float32)
    b = rng.random(3000).astype(np.float32)
    c = (rng.standard_normal(3000) * 10.0 ** rng.integers(-12, 3, 3000)).astype(np.float32)
    # products that land next to a float32 midpoint, c tiny: double rounding would go wrong
    a[:1000] = np.float32(1 + 2 ** -23)
    b[:1000] = np.float32(1 + 2 ** -1)
    got = clustering._fma32(a, b, c, fused=True)
    want = np.array([nearest_float32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                     for x, y, z in zip(a, b, c)], np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("size", [(1024, 2048), (97, 131), (40, 500)])
def test_bilinear_values_bit_exact(size):
    """The emulation of torch's float32 arithmetic equals F.interpolate bit for bit."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, 23, 46)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=size, mode="bilinear", align_corners=False)[0].numpy()
    kernel = clustering._torch_kernel(2)
    assert kernel is not None
    rows = clustering._bilinear_taps(23, size[0], kernel[1])
    cols = clustering._bilinear_taps(46, size[1], kernel[1])
    y = rng.integers(0, size[0], 20000)
    xx = rng.integers(0, size[1], 20000)
    chan = np.tile(np.arange(2), (y.size, 1))
    got = clustering._bilinear_values(x, chan, y, xx, kernel, rows, cols)
    np.testing.assert_array_equal(got, ref[:, y, xx].T)
