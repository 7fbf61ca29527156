"""Depth maps per image: stereo disparity, ``.npy`` folders, monocular networks.

Pure functions on numpy arrays; file reading is limited to small helpers that turn
one input file into an array (with errors naming the file).

Units: depth in metres unless said "normalised"; disparity PNG values as stored by
Cityscapes (uint16, ``p``), camera dicts in the Cityscapes ``camera/*.json`` layout
(``{"extrinsic": {"baseline": m, ...}, "intrinsic": {"fx": px, ...}}``).

Sources
-------
- ``disparity``: :func:`depth_from_disparity` (Cityscapes stereo, SGM disparity).
- ``npy``: a folder of precomputed maps, paired by Cityscapes stem
  (:func:`index_depth_folder`, :func:`read_depth_npy`).
- ``spidepth`` / ``depth-anything``: monocular networks, see
  :class:`SPIdepthPredictor` and :class:`DepthAnythingPredictor`.

Normalisation is explicit: :func:`normalize_depth` with ``"minmax"`` (per image,
what the reference stores) or ``"none"``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import InputFileError, PseudoLabelsError

NORMALIZE_MODES = ("minmax", "none")
FILL_MODES = ("nearest", "nan")


# --------------------------------------------------------------------------- camera
def camera_baseline_fx(camera: Mapping[str, Any], source: str | os.PathLike | None = None) -> tuple[float, float]:
    """(baseline metres, fx pixels) from a Cityscapes camera dict.

    Reads ``camera["extrinsic"]["baseline"]`` and ``camera["intrinsic"]["fx"]``.
    Missing keys or non-positive / non-finite values raise :class:`InputFileError`
    naming ``source`` (the JSON path) when given, else :class:`PseudoLabelsError`.
    """
    where = str(source) if source is not None else "camera"

    def fail(problem: str) -> PseudoLabelsError:
        hint = "expected the Cityscapes camera layout {\"extrinsic\": {\"baseline\": ...}, \"intrinsic\": {\"fx\": ...}}"
        if source is not None:
            return InputFileError(source, problem, hint)
        return PseudoLabelsError(f"{where}: {problem} ({hint})")

    if not isinstance(camera, Mapping):
        raise fail(f"expected a JSON object, got {type(camera).__name__}")
    values = []
    for group, key in (("extrinsic", "baseline"), ("intrinsic", "fx")):
        block = camera.get(group)
        if not isinstance(block, Mapping) or key not in block:
            raise fail(f"missing key {group}.{key}")
        try:
            v = float(block[key])
        except (TypeError, ValueError):
            raise fail(f"{group}.{key} is not a number: {block[key]!r}") from None
        if not np.isfinite(v) or v <= 0:
            raise fail(f"{group}.{key} must be a positive number, got {v}")
        values.append(v)
    return values[0], values[1]


def read_camera(path: str | os.PathLike) -> dict:
    """Read a Cityscapes ``*_camera.json`` and check it has baseline and fx."""
    from .io import read_json

    camera = read_json(path)
    camera_baseline_fx(camera, source=path)
    return camera


# --------------------------------------------------------------------------- disparity
def disparity_to_depth_raw(disparity: np.ndarray, baseline: float, fx: float) -> tuple[np.ndarray, np.ndarray]:
    """Cityscapes disparity PNG values -> (depth metres with NaN where invalid, valid mask).

    ``disparity``: (H, W) integer PNG values ``p``. Disparity in pixels is
    ``d = (p - 1) / 256``; ``p = 0`` marks invalid pixels and ``p = 1`` is zero
    disparity (infinitely far), both invalid. ``depth = baseline * fx / d``.
    Returns ((H, W) float32, (H, W) bool).
    """
    p = np.asarray(disparity)
    if p.ndim != 2:
        raise ValueError(f"disparity must be (H, W), got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"disparity must hold integer PNG values (uint16), got {p.dtype}")
    p = p.astype(np.float64)
    valid = p > 1
    d = (p - 1.0) / 256.0
    depth = np.full(p.shape, np.nan, np.float64)
    depth[valid] = baseline * fx / d[valid]
    return depth.astype(np.float32), valid


def fill_invalid_nearest(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid pixels by the value of the nearest valid pixel (Euclidean).

    ``values`` (H, W) float, ``valid`` (H, W) bool. Ties between equally near valid
    pixels are resolved as ``scipy.ndimage.distance_transform_edt`` does
    (deterministic). Raises :class:`PseudoLabelsError` when no pixel is valid.
    """
    from scipy.ndimage import distance_transform_edt

    valid = np.asarray(valid, bool)
    if valid.all():
        return values.copy()
    if not valid.any():
        raise PseudoLabelsError("no valid pixel to fill from (every disparity value is 0 or 1)")
    _, (iy, ix) = distance_transform_edt(~valid, return_distances=True, return_indices=True)
    return values[iy, ix]


def depth_from_disparity(
    disparity: np.ndarray,
    camera: Mapping[str, Any],
    fill: str = "nearest",
    max_depth: float | None = None,
) -> np.ndarray:
    """Metric depth from a Cityscapes disparity map.

    ``disparity``: (H, W) uint16 PNG values ``p``; ``camera``: Cityscapes camera dict.
    ``depth = baseline * fx / ((p - 1) / 256)`` metres for ``p > 1``; ``p = 0``
    (no match) and ``p = 1`` (zero disparity) are invalid.

    Invalid pixels (``fill``):
    - ``"nearest"`` (default): value of the nearest valid pixel in the image plane
      (Euclidean distance transform); an image with no valid pixel raises
      :class:`PseudoLabelsError`.
    - ``"nan"``: left as NaN.
    ``max_depth`` (metres, optional) clips far values after filling.
    Returns (H, W) float32 metres.
    """
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
    baseline, fx = camera_baseline_fx(camera)
    depth, valid = disparity_to_depth_raw(disparity, baseline, fx)
    if fill == "nearest":
        depth = fill_invalid_nearest(depth, valid)
    if max_depth is not None:
        depth = np.minimum(depth, np.float32(max_depth))
    return depth.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- normalise / resize
def normalize_depth(depth: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """Normalise one depth map.

    ``"minmax"`` (the reference): ``(d - min) / (max - min)`` per image, in [0, 1];
    a constant image gives all zeros. ``"none"``: unchanged. Returns float32 (H, W).
    Non-finite values (NaN/inf) raise :class:`PseudoLabelsError` in ``"minmax"``
    (fill invalid pixels first); ``"none"`` passes them through.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize mode must be one of {NORMALIZE_MODES}, got {mode!r}")
    d = np.asarray(depth, dtype=np.float32)
    if mode == "none":
        return d.copy()
    if d.size == 0:
        return d.copy()
    if not np.isfinite(d).all():
        n = int((~np.isfinite(d)).sum())
        raise PseudoLabelsError(f"depth map has {n} non-finite values (NaN/inf); fill them before min-max normalisation")
    lo = float(d.min())
    hi = float(d.max())
    if hi <= lo:
        return np.zeros_like(d)
    out = (d.astype(np.float64) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W) depth to ``size`` = (H', W') (OpenCV, half-pixel centres); float32."""
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    h, w = int(size[0]), int(size[1])
    if (h, w) == d.shape:
        return d.copy()
    return cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- npy folders
def index_depth_folder(folder: str | os.PathLike) -> dict[str, Path]:
    """Stem -> ``.npy`` file for every depth map under ``folder`` (recursive).

    Works for the reference layout ``<folder>/<split>/<city>/<stem>.npy`` and for flat
    folders; file names may carry any suffix after the Cityscapes stem.
    """
    from .cityscapes import index_by_stem

    return index_by_stem(folder, ".npy")


def read_depth_npy(path: str | os.PathLike) -> np.ndarray:
    """Read one depth map: (H, W) or (1, H, W) / (H, W, 1) array -> (H, W) float32."""
    from .io import read_npy

    a = read_npy(path)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[2]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2:
        raise InputFileError(path, f"expected a (H, W) depth map, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise InputFileError(path, f"expected a real-valued depth map, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)
