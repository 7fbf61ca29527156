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

:func:`generate_depth_maps` (:class:`DepthConfig`) is the folder-level stage behind
``pseudo-labels generate-depth``: listing, manifest, resume, runner and atomic writes.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.validate import validate_config

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
    from pseudo_labels.core.io import read_json

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
    from pseudo_labels.datasets.cityscapes import index_by_stem

    return index_by_stem(folder, ".npy")


def read_depth_npy(path: str | os.PathLike) -> np.ndarray:
    """Read one depth map: (H, W) or (1, H, W) / (H, W, 1) array -> (H, W) float32; NaN / Inf is
    an error naming the file."""
    from pseudo_labels.core.io import read_npy

    a = read_npy(path, finite=True, what="depth map")
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[2]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2:
        raise InputFileError(path, f"expected a (H, W) depth map, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise InputFileError(path, f"expected a real-valued depth map, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- monocular networks
def crop_rows_kept(height: int, crop_fraction: float) -> int:
    """Rows kept from the top when the bottom ``crop_fraction`` is cut (SPIdepth: ``h * 3 // 4``)."""
    if not 0.0 <= crop_fraction < 1.0:
        raise ValueError(f"crop_fraction must be in [0, 1), got {crop_fraction}")
    return max(1, int(np.floor(height * (1.0 - crop_fraction) + 1e-9)))


def spidepth_input(image: np.ndarray, input_size: tuple[int, int], crop_fraction: float) -> tuple[np.ndarray, int]:
    """Network input for SPIdepth: (3, h, w) float32 RGB in [0, 1] and the rows kept.

    ``image`` (H, W, 3) uint8 RGB. The bottom ``crop_fraction`` of the rows is cut
    (0 for the full frame), the rest resized to ``input_size`` (h, w) with Lanczos
    (PIL), as SPIdepth's data loader does; no mean/std normalisation.
    """
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    kept = crop_rows_kept(image.shape[0], crop_fraction)
    pil = Image.fromarray(np.ascontiguousarray(image[:kept]))
    h, w = int(input_size[0]), int(input_size[1])
    resized = np.asarray(pil.resize((w, h), Image.LANCZOS), dtype=np.float32) / 255.0
    return np.ascontiguousarray(resized.transpose(2, 0, 1)), kept


def paste_prediction(pred: np.ndarray, image_size: tuple[int, int], rows_kept: int) -> np.ndarray:
    """Prediction (h', w') of the top ``rows_kept`` rows -> (H, W) float32 full frame.

    Resized bilinearly to (rows_kept, W); rows below (the cropped ego-car region) repeat
    the last predicted row, so every pixel is finite.
    """
    H, W = int(image_size[0]), int(image_size[1])
    top = resize_depth(np.asarray(pred, np.float32), (rows_kept, W))
    if rows_kept >= H:
        return top
    out = np.empty((H, W), np.float32)
    out[:rows_kept] = top
    out[rows_kept:] = top[-1]
    return out


def _torch_device(device: str):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise PseudoLabelsError("--device cuda: no CUDA device is available (use --device cpu)")
    return torch.device(device)


class SPIdepthPredictor:
    """SPIdepth on one image at a time: (H, W, 3) uint8 -> (H, W) float32 depth.

    ``preprocess``:
    - ``"spidepth"`` (default): what the network was trained and evaluated on for
      Cityscapes: bottom ``crop_fraction`` (25 %) of the rows removed (ego car), the rest
      resized to the network's input size (320x1024 for the released model);
      the prediction is pasted back, cropped rows repeat the last predicted row.
    - ``"full-frame"``: the whole frame resized to the input size (no crop).
    ``flip``: average with the prediction of the mirrored image (as SPIdepth's
    ``test_simple_SQL_config.py``). Output units: the network's depth (bin centres in
    [min_depth, max_depth]); self-supervised, so correct only up to a global scale.
    """

    def __init__(self, model, input_size: tuple[int, int] | None = None, preprocess: str = "spidepth",
                 flip: bool | None = None, device: str = "cpu", crop_fraction: float | None = None):
        from pseudo_labels.core import defaults

        if preprocess not in ("spidepth", "full-frame"):
            raise ValueError(f"preprocess must be 'spidepth' or 'full-frame', got {preprocess!r}")
        self.device = _torch_device(device)
        self.model = model.to(self.device).eval()
        self.input_size = tuple(input_size or model.config.input_size)
        self.preprocess = preprocess
        self.flip = defaults.SPIDEPTH_FLIP if flip is None else bool(flip)
        if crop_fraction is None:
            crop_fraction = defaults.SPIDEPTH_CITYSCAPES_CROP_FRACTION
        self.crop_fraction = crop_fraction if preprocess == "spidepth" else 0.0

    @classmethod
    def from_weights(cls, weights: str | os.PathLike, device: str = "cpu", preprocess: str = "spidepth",
                     **kwargs) -> "SPIdepthPredictor":
        from refs.spidepth import load_spidepth

        path = Path(weights)
        if not path.exists():
            raise InputFileError(path, "SPIdepth weights not found", "give the folder with encoder.pth and depth.pth")
        try:
            model = load_spidepth(path)
        except Exception as exc:  # corrupt pickles raise many kinds of errors
            raise InputFileError(path, f"cannot load SPIdepth weights ({type(exc).__name__}: {exc})") from None
        return cls(model, device=device, preprocess=preprocess, **kwargs)

    def predict(self, image: np.ndarray) -> np.ndarray:
        import torch

        x, kept = spidepth_input(image, self.input_size, self.crop_fraction)
        t = torch.from_numpy(x)[None].to(self.device)
        with torch.no_grad():
            y = self.model(t)
            if self.flip:
                y = 0.5 * (y + torch.flip(self.model(torch.flip(t, dims=[-1])), dims=[-1]))
        pred = y[0, 0].float().cpu().numpy()
        return paste_prediction(pred, image.shape[:2], kept)


def depth_from_relative_disparity(disparity: np.ndarray, max_ratio: float = 100.0) -> np.ndarray:
    """Relative inverse depth (e.g. Depth Anything) -> relative depth, (H, W) float32.

    ``depth = max(disp) / max(disp, max(disp) / max_ratio)``: the nearest pixel gets 1,
    everything is in [1, max_ratio] (far / sky pixels, whose disparity is ~0 or below,
    are clipped at ``max_ratio``). The network's disparity is defined only up to scale
    and shift, so this is relative depth, not metres. A map with no positive value
    raises :class:`PseudoLabelsError`.
    """
    d = np.asarray(disparity, np.float64)
    if not np.isfinite(d).all():
        raise PseudoLabelsError("relative disparity has non-finite values")
    top = float(d.max()) if d.size else 0.0
    if top <= 0:
        raise PseudoLabelsError("relative disparity has no positive value; cannot invert it")
    return (top / np.maximum(d, top / float(max_ratio))).astype(np.float32)


class DepthAnythingPredictor:
    """Depth Anything (V2) via ``transformers`` from a local folder: (H, W, 3) uint8 -> (H, W) float32.

    The processor resizes/normalises as configured in the folder; the prediction is
    resized bilinearly to the image size. Relative models predict inverse depth,
    converted with :func:`depth_from_relative_disparity`; metric models
    (``depth_estimation_type == "metric"``) predict metres and are used as they are.
    """

    def __init__(self, model, processor, device: str = "cpu", max_ratio: float | None = None):
        from pseudo_labels.core import defaults

        self.device = _torch_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.max_ratio = defaults.DEPTH_ANYTHING_MAX_RATIO if max_ratio is None else float(max_ratio)
        self.metric = getattr(model.config, "depth_estimation_type", "relative") == "metric"

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, device: str = "cpu", **kwargs) -> "DepthAnythingPredictor":
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise InputFileError(path, "no config.json: not a transformers model folder",
                                 "save one with save_pretrained, e.g. depth-anything/Depth-Anything-V2-Small-hf")
        try:
            processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
            model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InputFileError(path, f"cannot load the depth model ({exc})") from None
        return cls(model, processor, device=device, **kwargs)

    def predict(self, image: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        inputs = self.processor(images=image, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            pred = self.model(**inputs).predicted_depth  # (B, h, w)
            pred = F.interpolate(pred[:, None].float(), size=image.shape[:2], mode="bilinear", align_corners=False)
        out = pred[0, 0].cpu().numpy()
        if self.metric:
            return out.astype(np.float32)
        return depth_from_relative_disparity(out, self.max_ratio)


# --------------------------------------------------------------------------- folder level (generate-depth)
STAGE = "generate-depth"
SOURCES = ("disparity", "npy", "spidepth", "depth-anything")
NETWORK_SOURCES = ("spidepth", "depth-anything")


@dataclass(frozen=True)
class DepthConfig:
    """What ``generate-depth`` computes: one float32 map per image of ``split`` under ``cityscapes_root``.

    ``source``: one of :data:`SOURCES`; ``output_dir``: maps go to
    ``<output_dir>/<split>/<city>/<stem>.npy``; ``input_dir`` (``npy``), ``weights`` (``spidepth``:
    folder with encoder.pth and depth.pth) and ``model_dir`` (``depth-anything``: local transformers
    folder) name the source's inputs. ``normalize``: ``minmax`` (per image to [0, 1]) or ``none``
    (metres / network units); ``output_size`` (H, W) of the written maps (default: the input's size).
    """

    cityscapes_root: str
    source: str
    output_dir: str
    split: str = "val"
    input_dir: str | None = None
    weights: str | None = None
    model_dir: str | None = None
    normalize: str = defaults.DEPTH_NORMALIZE
    output_size: tuple[int, int] | None = None
    spidepth_preprocess: str = defaults.SPIDEPTH_PREPROCESS
    flip: bool = defaults.SPIDEPTH_FLIP
    device: str = "cpu"

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)

    def resolved(self) -> "DepthConfig":
        """Checked copy with absolute model paths and a tuple ``output_size`` (what the workers get)."""
        if self.source not in SOURCES:
            raise PseudoLabelsError(f"unknown depth source {self.source!r} (choose from {', '.join(SOURCES)})")
        if self.source == "spidepth" and not self.weights:
            raise PseudoLabelsError("--source spidepth needs --weights (folder with encoder.pth and depth.pth)")
        if self.source == "depth-anything" and not self.model_dir:
            raise PseudoLabelsError("--source depth-anything needs --model-dir (local transformers folder)")
        if self.device == "cuda" and self.source in NETWORK_SOURCES:
            import torch

            if not torch.cuda.is_available():
                raise PseudoLabelsError("--device cuda: no CUDA device is available (use --device cpu)")
        return replace(
            self,
            output_size=tuple(self.output_size) if self.output_size else None,
            weights=str(Path(self.weights).resolve()) if self.weights else None,
            model_dir=str(Path(self.model_dir).resolve()) if self.model_dir else None,
            flip=bool(self.flip),
        )

    def parameters(self) -> dict:
        """The manifest's ``parameters`` (what changes the maps; options of other sources are None)."""
        s = self.source
        return {
            "split": self.split,
            "source": s,
            "normalize": self.normalize,
            "output_size": list(self.output_size) if self.output_size else None,
            "input_dir": str(Path(self.input_dir).resolve()) if self.input_dir and s == "npy" else None,
            "weights": self.weights if s == "spidepth" else None,
            "model_dir": self.model_dir if s == "depth-anything" else None,
            "spidepth_preprocess": self.spidepth_preprocess if s == "spidepth" else None,
            "flip": self.flip if s == "spidepth" else None,
            "depth_anything_max_ratio": defaults.DEPTH_ANYTHING_MAX_RATIO if s == "depth-anything" else None,
            "disparity_fill": defaults.DISPARITY_FILL if s == "disparity" else None,
        }


@dataclass(frozen=True)
class DepthJob:
    """Everything one image needs (picklable)."""

    stem: str
    out_path: str
    image_path: str
    disparity_path: str = ""
    camera_path: str = ""
    npy_path: str = ""


_PREDICTORS: dict = {}


def _predictor(cfg: DepthConfig):
    """One network per process, loaded on first use."""
    key = (cfg.source, cfg.weights, cfg.model_dir, cfg.device, cfg.spidepth_preprocess, cfg.flip)
    if key not in _PREDICTORS:
        if cfg.source == "spidepth":
            _PREDICTORS[key] = SPIdepthPredictor.from_weights(
                cfg.weights, device=cfg.device, preprocess=cfg.spidepth_preprocess, flip=cfg.flip)
        else:
            _PREDICTORS[key] = DepthAnythingPredictor.from_pretrained(cfg.model_dir, device=cfg.device)
    return _PREDICTORS[key]


def compute_depth(job: DepthJob, cfg: DepthConfig) -> np.ndarray:
    """The (H, W) float32 depth map of one image, normalised as configured (no writing)."""
    from pseudo_labels.core.io import read_image_rgb, read_png

    if cfg.source == "disparity":
        disparity = read_png(job.disparity_path)
        camera = read_camera(job.camera_path)
        try:
            d = depth_from_disparity(disparity, camera)
        except (PseudoLabelsError, ValueError) as exc:
            raise PseudoLabelsError(f"{job.disparity_path}: {exc}") from None
    elif cfg.source == "npy":
        d = read_depth_npy(job.npy_path)
    else:
        d = _predictor(cfg).predict(read_image_rgb(job.image_path))
    if cfg.output_size is not None:
        d = resize_depth(d, cfg.output_size)
    try:
        return normalize_depth(d, cfg.normalize)
    except PseudoLabelsError as exc:
        raise PseudoLabelsError(f"{job.stem}: {exc}") from None


def process_depth_job(job: DepthJob, cfg: DepthConfig) -> tuple[int, int]:
    """Compute and write one map atomically; returns its shape."""
    from pseudo_labels.core.io import write_npy

    d = compute_depth(job, cfg)
    write_npy(job.out_path, d.astype(np.float32, copy=False))
    return d.shape


def _depth_job_done(job: DepthJob) -> bool:
    return os.path.exists(job.out_path)


def _depth_job_name(job: DepthJob) -> str:
    return job.stem


def plan_depth_jobs(cfg: DepthConfig, shard: tuple[int, int] | None = None) -> list[DepthJob]:
    """One :class:`DepthJob` per image of the split (this shard's); missing inputs raise an error naming them."""
    from pseudo_labels.core.runner import select_shard
    from pseudo_labels.datasets.cityscapes import camera_path, disparity_path, list_images

    root, source, input_dir = cfg.cityscapes_root, cfg.source, cfg.input_dir
    entries = select_shard(list_images(root, cfg.split), shard)
    npy_index = {}
    if source == "npy":
        if not input_dir:
            raise PseudoLabelsError("--source npy needs --input-dir (folder of <stem>*.npy depth maps)")
        npy_index = index_depth_folder(input_dir)
    jobs, missing = [], []
    for e in entries:
        kw = {}
        if source == "disparity":
            dp, cp = disparity_path(root, e), camera_path(root, e)
            missing += [str(p) for p in (dp, cp) if not p.is_file()]
            kw = dict(disparity_path=str(dp), camera_path=str(cp))
        elif source == "npy":
            if e.stem not in npy_index:
                missing.append(f"{e.stem} (no {e.stem}*.npy under {input_dir})")
            kw = dict(npy_path=str(npy_index.get(e.stem, "")))
        jobs.append(DepthJob(e.stem, str(Path(cfg.output_dir) / e.relative(".npy")), str(e.image_path), **kw))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise PseudoLabelsError(
            f"--source {source}: missing input for {len(missing)} file(s) of split '{cfg.split}': "
            + "; ".join(missing[:5]) + more
        )
    return jobs


def _depth_inputs(cfg: DepthConfig, jobs: list[DepthJob]) -> dict:
    from pseudo_labels.core.io import fingerprint_files

    inputs = {"cityscapes_root": str(Path(cfg.cityscapes_root).resolve()),
              "images": fingerprint_files(j.image_path for j in jobs)}
    if cfg.source == "disparity":
        inputs["disparity"] = fingerprint_files(j.disparity_path for j in jobs)
        inputs["camera"] = fingerprint_files(j.camera_path for j in jobs)
    elif cfg.source == "npy":
        inputs["npy"] = fingerprint_files(j.npy_path for j in jobs)
    return inputs


def generate_depth_maps(config: DepthConfig, options=None):
    """Write one float32 depth map per image of the split to ``<output_dir>/<split>/<city>/<stem>.npy``
    plus a manifest; finished maps are kept (resume). ``options``: a
    :class:`~pseudo_labels.core.runner.RunOptions` (network sources always run in one process).
    Returns the runner's ``RunSummary``; raises :class:`PseudoLabelsError` if any image failed.
    The library entry point of ``pseudo-labels generate-depth``.
    """
    from pseudo_labels.core.io import prepare_output_dir, write_manifest
    from pseudo_labels.core.runner import RunOptions, run_per_image

    options = options or RunOptions()
    cfg = config.resolved()
    if cfg.source in NETWORK_SOURCES:
        options = replace(options, workers=1)
    # the folder holds one <split>/ per split (val, then train, as the reference's depth_spidepth):
    # the split is not a parameter of the maps, so one folder takes every split with the same parameters
    parameters = {k: v for k, v in cfg.parameters().items() if k != "split"}
    jobs = plan_depth_jobs(cfg, options.shard)
    resume = prepare_output_dir(cfg.output_dir, STAGE, parameters, overwrite=options.overwrite)
    summary = run_per_image(functools.partial(process_depth_job, cfg=cfg), jobs, options=options,
                            desc=f"depth ({cfg.source})", name_of=_depth_job_name,
                            is_done=_depth_job_done if resume else None)
    write_manifest(
        cfg.output_dir, STAGE, parameters,
        uses_ground_truth=False,  # disparity is a sensor input (stereo), not labels
        inputs=_depth_inputs(cfg, jobs),
        counts={"images": len(jobs), "done": summary.done, "skipped": summary.skipped,
                "failed": len(summary.failed)},
        extra={"split": cfg.split, "shard": list(options.shard) if options.shard else None},
    )
    summary.raise_if_failed("depth maps")
    return summary
