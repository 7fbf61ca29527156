"""The reference's published k-means centroids: ``kmeans_centroids_k80.b64``.

The reference repository (qbit-glitch/monocular_ups) ships "the exact k=80 centroids that
produced PQ=26.74" as a base64 text file (``pseudo_labels/kmeans_centroids_k80.b64``) of an
``.npz`` with ``centroids`` (80 x 90 float64, CAUSE 90-d feature space) and
``cluster_to_class`` (80 uint8 trainIds); its ``restore_centroids_k80.py`` decodes it into
``kmeans_centroids.npz``. Here either form is read directly: :func:`centroids_npz_bytes`
gives the npz bytes of a ``.npz`` or a base64 file, :func:`load_reference_centroids` the
two arrays, :func:`restore_centroids` writes the ``.npz`` the reference writes.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.io import read_bytes
from pseudo_labels.datasets.base import LabelTable

_ZIP_MAGIC = b"PK\x03\x04"


def is_base64_centroids(path: str | os.PathLike) -> bool:
    """True when ``path`` is a text file (base64), not an ``.npz`` (zip) file."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head != _ZIP_MAGIC and len(head) > 0


def centroids_npz_bytes(path: str | os.PathLike) -> bytes:
    """The ``.npz`` bytes of a centroids file: the file itself, or its base64 content decoded.

    Raises :class:`InputFileError` naming the file when it is missing, not base64, or the
    decoded bytes are not an ``.npz``.
    """
    path = Path(path)
    data = read_bytes(path)
    if data.startswith(_ZIP_MAGIC):
        return data
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputFileError(path, f"neither an .npz nor base64 text ({exc})",
                             "expected kmeans_centroids.npz or kmeans_centroids_k80.b64") from None
    if not decoded.startswith(_ZIP_MAGIC):
        raise InputFileError(path, "base64 content is not an .npz archive")
    return decoded


def load_reference_centroids(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids, cluster_to_class)`` as stored: (k, D) float and (k,) integer, from a
    ``.npz`` or its base64 text. Errors name the file (missing keys, shapes)."""
    path = Path(path)
    try:
        with np.load(io.BytesIO(centroids_npz_bytes(path)), allow_pickle=False) as data:
            missing = [k for k in ("centroids", "cluster_to_class") if k not in data]
            if missing:
                raise InputFileError(path, f"no {missing} array in the npz (keys {sorted(data.files)})")
            centroids, c2c = np.asarray(data["centroids"]), np.asarray(data["cluster_to_class"])
    except (ValueError, OSError, EOFError) as exc:
        raise InputFileError(path, f"not a readable centroids npz ({exc})") from None
    if centroids.ndim != 2 or not np.issubdtype(centroids.dtype, np.floating):
        raise InputFileError(path, f"centroids must be a (k, D) float array, got {centroids.shape} {centroids.dtype}")
    if c2c.shape != (centroids.shape[0],) or not np.issubdtype(c2c.dtype, np.integer):
        raise InputFileError(path, f"cluster_to_class must be ({centroids.shape[0]},) integers, got {c2c.shape} {c2c.dtype}")
    return centroids, c2c


def restore_centroids(b64_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write the ``kmeans_centroids.npz`` (``centroids``, ``cluster_to_class``, dtypes kept)
    that the reference's ``restore_centroids_k80.py`` writes; atomic. Returns ``out_path``."""
    from pseudo_labels.core.io import atomic_path

    centroids, c2c = load_reference_centroids(b64_path)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, centroids=centroids, cluster_to_class=c2c)
    return out_path


def load_cluster_lut(folder: str | os.PathLike, split: str, labels: LabelTable | None = None
                     ) -> tuple[np.ndarray | None, int | None]:
    """(cluster -> class-id LUT, k) from ``folder/kmeans_centroids.npz`` or (None, None).

    The LUT is None when the per-image maps already hold class ids, as the manifest of
    ``generate-overclustered-semantics`` (``outputs.content``) says; without a manifest
    (the reference layout) maps next to a mapped centroids file are raw cluster ids.
    Clusters mapped outside the table's classes become void.
    """
    from pseudo_labels.core.io import read_manifest
    from pseudo_labels.datasets import cityscapes

    labels = labels or cityscapes.LABELS
    folder = Path(folder)
    f = folder / "kmeans_centroids.npz"
    if not f.exists():
        return None, None
    manifest = read_manifest(folder / split) or {}
    already_mapped = manifest.get("outputs", {}).get("content") == "trainIds"
    with np.load(f) as z:
        if already_mapped:
            return None, int(len(z["centroids"]))
        if "cluster_to_class" not in z:
            raise PseudoLabelsError(f"{f}: no cluster_to_class array (map the clusters first)")
        c2c = np.asarray(z["cluster_to_class"]).astype(np.int64)
    k = len(c2c)
    lut = np.full(max(256, k + 1), labels.void, np.uint8)
    lut[:k] = np.where((c2c >= 0) & (c2c < labels.num_classes), c2c, labels.void)
    if k < 255:
        lut[255] = labels.void
    return lut, k
