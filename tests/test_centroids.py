"""The reference's base64 k=80 centroids file (kmeans_centroids_k80.b64 layout)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.semantic.centroids import (
    centroids_npz_bytes, is_base64_centroids, load_reference_centroids, restore_centroids,
)


def _reference_like(tmp_path, compressed=True):
    """A base64 text of an npz with 80 x 90 float64 ``centroids`` and uint8 ``cluster_to_class``."""
    rng = np.random.default_rng(0)
    c = rng.standard_normal((80, 90))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    c2c = rng.integers(0, 19, 80).astype(np.uint8)
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, centroids=c, cluster_to_class=c2c)
    text = base64.b64encode(buf.getvalue()).decode()
    path = tmp_path / "kmeans_centroids_k80.b64"
    path.write_text("\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + "\n")  # wrapped lines too
    return path, c, c2c


@pytest.mark.parametrize("compressed", [True, False])
def test_decode_base64_npz(tmp_path, compressed):
    path, c, c2c = _reference_like(tmp_path, compressed)
    assert is_base64_centroids(path)
    got_c, got_m = load_reference_centroids(path)
    assert got_c.dtype == np.float64 and got_c.shape == (80, 90) and got_m.dtype == np.uint8
    np.testing.assert_array_equal(got_c, c)
    np.testing.assert_array_equal(got_m, c2c)


def test_restore_writes_npz_readable_by_clustering(tmp_path):
    from pseudo_labels.stages.semantic.clustering import load_centroids

    path, c, c2c = _reference_like(tmp_path)
    out = restore_centroids(path, tmp_path / "pseudo_semantic_raw_k80" / "kmeans_centroids.npz")
    assert not is_base64_centroids(out)
    with np.load(out) as d:
        np.testing.assert_array_equal(d["centroids"], c)
        np.testing.assert_array_equal(d["cluster_to_class"], c2c)
    assert centroids_npz_bytes(out) == out.read_bytes()
    f = load_centroids(out)
    assert f.k == 80 and f.dim == 90 and f.cluster_to_class.tolist() == c2c.tolist()


def test_bad_files_are_named(tmp_path):
    (tmp_path / "x.b64").write_text("this is not base64 !!!")
    with pytest.raises(PseudoLabelsError, match=r"x\.b64: neither an \.npz nor base64"):
        load_reference_centroids(tmp_path / "x.b64")
    (tmp_path / "y.b64").write_text(base64.b64encode(b"hello world").decode())
    with pytest.raises(PseudoLabelsError, match=r"y\.b64: base64 content is not an \.npz"):
        load_reference_centroids(tmp_path / "y.b64")
    buf = io.BytesIO()
    np.savez(buf, centroids=np.zeros((80, 90)))
    (tmp_path / "z.b64").write_text(base64.b64encode(buf.getvalue()).decode())
    with pytest.raises(PseudoLabelsError, match=r"z\.b64: no \['cluster_to_class'\]"):
        load_reference_centroids(tmp_path / "z.b64")
    with pytest.raises(PseudoLabelsError, match="file not found"):
        load_reference_centroids(tmp_path / "missing.b64")


def test_load_centroids_accepts_the_base64_file(tmp_path):
    """``--load-centroids`` goes through clustering.load_centroids, which reads the .b64 too."""
    from pseudo_labels.stages.semantic.clustering import load_centroids

    path, c, c2c = _reference_like(tmp_path)
    f = load_centroids(path)
    assert f.k == 80 and f.dim == 90 and f.centroids.dtype == np.float32
    np.testing.assert_allclose(f.centroids, c, atol=1e-6)
    assert f.cluster_to_class.tolist() == c2c.tolist()
    (tmp_path / "bad.b64").write_text("???")
    with pytest.raises(PseudoLabelsError, match=r"bad\.b64"):
        load_centroids(tmp_path / "bad.b64")
