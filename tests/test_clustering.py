"""k-means backends, assignment, raw cluster PNG dtype and the centroids file."""

import numpy as np
import pytest

from pseudo_labels.stages.semantic.clustering import (
    assign_clusters, cluster_png_array, fit_kmeans, fit_kmeans_raw, kmeans_inertia, l2_normalize,
    load_centroids, pool_to_grid, resize_nearest, sample_patch_features, save_centroids,
)
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError


def blobs(n=3000, d=8, g=6, seed=0):
    rng = np.random.default_rng(seed)
    means = l2_normalize(rng.standard_normal((g, d)), axis=1)
    x = means[rng.integers(g, size=n)] + 0.05 * rng.standard_normal((n, d))
    return l2_normalize(x, axis=1)


@pytest.mark.parametrize("backend", ["faiss", "torch", "sklearn"])
def test_backend_deterministic_normalised(backend):
    x = blobs()
    a = fit_kmeans(x, 6, backend, seed=3)
    b = fit_kmeans(x, 6, backend, seed=3)
    assert a.shape == (6, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    # well-separated blobs: every blob gets its own centroid
    assert np.max(x @ a.T, axis=1).min() > 0.9


def test_backends_agree_in_quality_with_sklearn():
    x = blobs(n=5000, d=16, g=12, seed=1)
    sk = kmeans_inertia(x, fit_kmeans_raw(x, 10, "sklearn"))
    for backend in ("faiss", "torch"):
        assert kmeans_inertia(x, fit_kmeans_raw(x, 10, backend)) <= 1.01 * sk


def test_k2_and_k1000():
    x = blobs(n=3000, d=4, g=3)
    assert fit_kmeans(x, 2).shape == (2, 4)
    c = fit_kmeans(x, 1000, "auto", seed=0)
    assert c.shape == (1000, 4) and np.isfinite(c).all()
    c = fit_kmeans(x, 1000, "torch", seed=0)
    assert c.shape == (1000, 4) and np.isfinite(c).all()


@pytest.mark.parametrize("k", [1, 0, 101])
def test_bad_k(k):
    with pytest.raises(PseudoLabelsError):
        fit_kmeans(blobs(n=100), k)


def test_unknown_backend():
    with pytest.raises(PseudoLabelsError):
        fit_kmeans(blobs(n=100), 3, "nope")


def test_sample_patch_features_uniform_and_masked():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((5, 4, 6)).astype(np.float16)
    s = sample_patch_features(f, 10, np.random.default_rng(1))
    assert s.shape == (10, 5) and s.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1, atol=1e-4)
    np.testing.assert_array_equal(s, sample_patch_features(f, 10, np.random.default_rng(1)))
    mask = np.zeros((4, 6), bool)
    mask[0, :3] = True
    s = sample_patch_features(f, 10, np.random.default_rng(1), mask)
    assert s.shape == (3, 5)
    want = l2_normalize(f.astype(np.float32)[:, 0, :3].T, axis=1)
    np.testing.assert_allclose(s, want, atol=1e-5)


def test_pool_to_grid():
    f = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    p = pool_to_grid(f, (2, 2))
    assert p.shape == (2, 2, 2)
    assert p[0, 0, 0] == f[0, :2, :2].mean()
    assert pool_to_grid(f, (4, 4)) is not None and pool_to_grid(f, (8, 8)).shape == f.shape


def test_assign_labels_mode_is_nearest_of_argmax():
    rng = np.random.default_rng(0)
    c = l2_normalize(rng.standard_normal((7, 5)), axis=1)
    f = rng.standard_normal((5, 3, 4)).astype(np.float32)
    lab = np.argmax(np.einsum("kd,dhw->khw", c, f), axis=0)
    out = assign_clusters(f, c, (6, 8), upsample="labels")
    assert out.dtype == np.int32 and out.shape == (6, 8)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(lab, 2, 0), 2, 1))


def test_assign_similarity_chunked_equals_full():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    c = l2_normalize(rng.standard_normal((11, 6)), axis=1)
    f = l2_normalize(rng.standard_normal((6, 5, 7)), axis=0)
    sim = torch.from_numpy(np.einsum("kd,dhw->khw", c, f).astype(np.float32))[None]
    full = F.interpolate(sim, size=(37, 53), mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    for chunk in (1, 3, 64):
        np.testing.assert_array_equal(assign_clusters(f, c, (37, 53), channel_chunk=chunk), full)
    # the same output size as the features: plain argmax
    np.testing.assert_array_equal(assign_clusters(f, c, (5, 7)), sim[0].argmax(0).numpy())


def test_assign_dim_mismatch():
    with pytest.raises(PseudoLabelsError):
        assign_clusters(np.zeros((4, 2, 2), np.float32), np.eye(3, 5, dtype=np.float32), (4, 4))


def test_cluster_png_dtype_never_wraps():
    cl = np.array([[0, 254], [100, 1]])
    a = cluster_png_array(cl, 255)
    assert a.dtype == np.uint8
    cl = np.array([[0, 299], [256, 255]])
    b = cluster_png_array(cl, 300, void_mask=np.array([[0, 0], [0, 1]], bool))
    assert b.dtype == np.uint16
    np.testing.assert_array_equal(b, [[0, 299], [256, 65535]])
    with pytest.raises(ValueError):
        cluster_png_array(np.array([[300]]), 300)


def test_resize_nearest_pixel_centres():
    lab = np.arange(4).reshape(2, 2)
    np.testing.assert_array_equal(resize_nearest(lab, (4, 4)), np.repeat(np.repeat(lab, 2, 0), 2, 1))
    big = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(big, (2, 2)), big[1::2, 1::2])


def test_centroids_roundtrip_and_reference_file(tmp_path):
    c = l2_normalize(np.random.default_rng(0).standard_normal((4, 3)), axis=1)
    save_centroids(tmp_path / "a.npz", c, np.array([0, 1, 255, 2]), {"backend": "faiss", "seed": 42})
    got = load_centroids(tmp_path / "a.npz")
    np.testing.assert_allclose(got.centroids, c, atol=1e-6)
    assert got.cluster_to_class.tolist() == [0, 1, 255, 2] and got.metadata["seed"] == 42
    np.savez(tmp_path / "ref.npz", centroids=c * 3, cluster_to_class=np.array([0, 1, 2, 3], np.uint8))
    ref = load_centroids(tmp_path / "ref.npz")
    np.testing.assert_allclose(ref.centroids, c, atol=1e-6)
    assert ref.metadata == {}
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(InputFileError, match="bad.npz"):
        load_centroids(tmp_path / "bad.npz")


def test_fit_sample_budget_and_quotas():
    from pseudo_labels.core import defaults
    from pseudo_labels.stages.semantic.clustering import fit_sample_budget, sample_quotas

    assert fit_sample_budget(80) == defaults.MAX_FIT_SAMPLES
    assert fit_sample_budget(500) == 500 * defaults.KMEANS_MAX_POINTS_PER_CENTROID
    assert fit_sample_budget(80, 0) is None and fit_sample_budget(80, 1234) == 1234
    with pytest.raises(PseudoLabelsError):
        fit_sample_budget(80, -1)
    # the budget is spread evenly and sums to exactly the budget, whatever the number of images
    for n in (1, 7, 100, 500, 3001):
        q = sample_quotas(n, 100_000, 2000)
        assert len(q) == n and max(q) - min(q) <= 1 and max(q) <= 2000
        assert sum(q) == min(100_000, 2000 * n)
    assert sample_quotas(3, None, 2000) == [2000] * 3
    assert sum(sample_quotas(10, 3, 2000)) == 3  # fewer samples than images


def test_image_rng_depends_on_seed_and_stem_only():
    from pseudo_labels.stages.semantic.clustering import image_rng

    a = image_rng(42, "aachen_000000_000019").integers(1 << 30, size=4)
    assert np.array_equal(a, image_rng(42, "aachen_000000_000019").integers(1 << 30, size=4))
    assert not np.array_equal(a, image_rng(43, "aachen_000000_000019").integers(1 << 30, size=4))
    assert not np.array_equal(a, image_rng(42, "aachen_000001_000019").integers(1 << 30, size=4))
    with pytest.raises(PseudoLabelsError):
        image_rng(-1, "x")


def test_centroids_file_bytes_are_deterministic(tmp_path):
    import time

    c = l2_normalize(np.random.default_rng(0).standard_normal((4, 3)), axis=1)
    save_centroids(tmp_path / "a.npz", c, np.arange(4), {"k": 4})
    time.sleep(1.1)  # zip entries carry a timestamp: fixed, so equal content gives equal bytes
    save_centroids(tmp_path / "b.npz", c, np.arange(4), {"k": 4})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_centroids(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.cluster_to_class, np.arange(4))
    assert back.metadata == {"k": 4} and np.load(tmp_path / "a.npz")["centroids"].dtype == np.float32


def test_auto_backend_without_faiss_fits_with_torch(monkeypatch):
    """The ``except ImportError`` path of resolve_backend: auto falls back to torch and still fits."""
    import sys

    from pseudo_labels.stages.semantic.clustering import resolve_backend

    assert resolve_backend("auto") == "faiss"
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert resolve_backend("auto") == "torch"
    c = fit_kmeans(blobs(n=300), 3, "auto")
    assert c.shape[0] == 3 and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
