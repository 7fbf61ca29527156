"""Stage 1: dense self-supervised features per image.

:func:`build_extractor` returns a :class:`FeatureExtractor` whose ``extract`` maps a list
of RGB images ((H, W, 3) uint8, any size) to a list of (D, h, w) float32 feature maps,
L2-normalised over D, at the extractor's native output grid:

- ``builtin``: a deterministic, hand-made (not learned) extractor for the demo and the
  tests: per 14x14 patch colour statistics in three colour spaces, texture / gradient
  energy and blurred spatial context. Needs no weights. Output: the patch grid.
- ``dinov2_vits14`` / ``dinov2_vitb14`` / ``dinov2_vitl14``: DINOv2 ViT/14 built with
  ``timm`` and loaded from a local checkpoint in the official DINOv2 key layout; the patch
  tokens after the final norm. Output: the patch grid (23 x 46 at 322 x 644).
  ``dinov2`` (architecture read from the checkpoint's shapes) exists for tests and
  non-standard sizes.
- head ``cause``: the CAUSE-TR Segment_TR EMA head (90-d) on DINOv2 tokens of 322 x 322
  sliding windows (stride 161, last window flush with the border), averaged with the
  horizontally flipped crop, upsampled bilinearly to the crop and overlaps averaged.
  Output: dense, one vector per pixel of the resized input (90 x 322 x 644).

Preprocessing (as the reference): resize to ``input_size`` (default 322 x 644; an int
means "short side to this, both sides floored to a multiple of 14"), bilinear with
antialiasing as PIL does, rounded to 8 bit; ImageNet mean / std.
"""

from __future__ import annotations

import abc

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.runner import RunOptions, RunSummary
from pseudo_labels.stages.semantic.dinov2 import DINOV2_ARCHS, build_dinov2, dinov2_patch_tokens
from pseudo_labels.core.validate import validate_config

BACKBONES = ("builtin", *DINOV2_ARCHS)
HEADS = ("cause",)


# --------------------------------------------------------------------------- preprocessing
def resized_shape(image_hw: tuple[int, int], input_size: int | Sequence[int] = defaults.FEATURE_INPUT_SIZE,
                  patch: int = defaults.PATCH_SIZE) -> tuple[int, int]:
    """Network input (H, W) for an image of (H, W) pixels.

    ``input_size`` (h, w): exactly that size. An int s: scale so the short side is s
    (rounded), then floor both sides to a multiple of ``patch`` (the reference rule:
    1024 x 2048 with s = 322 -> 322 x 644).
    """
    if isinstance(input_size, (int, np.integer)):
        h, w = image_hw
        scale = int(input_size) / min(h, w)
        out = (int(round(h * scale)) // patch * patch, int(round(w * scale)) // patch * patch)
    else:
        out = (int(input_size[0]), int(input_size[1]))
    if out[0] < patch or out[1] < patch:
        raise PseudoLabelsError(f"input size {out} is smaller than one {patch}x{patch} patch")
    return out


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W, 3) uint8 to ``size`` (h, w), antialiased like PIL; uint8 out."""
    import torch
    import torch.nn.functional as F

    if image.shape[:2] == tuple(size):
        return np.ascontiguousarray(image)
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return t[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def normalize_image(image: np.ndarray):
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 torch tensor, ImageNet mean/std normalised."""
    import torch

    mean = torch.tensor(defaults.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(defaults.IMAGENET_STD).view(3, 1, 1)
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return (t - mean) / std


def _check_image(image: np.ndarray, i: int) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise PseudoLabelsError(f"image {i}: expected (H, W, 3) uint8 RGB, got {desc}")


def l2_normalize(feats: np.ndarray, axis: int = 0, eps: float = 1e-8) -> np.ndarray:
    """L2-normalise ``feats`` along ``axis`` (float32 out; zero vectors stay zero)."""
    feats = np.asarray(feats, np.float32)
    norm = np.sqrt((feats * feats).sum(axis=axis, keepdims=True))
    return feats / np.maximum(norm, eps)


# --------------------------------------------------------------------------- device
def resolve_device(device: str) -> str:
    """Validate ``device`` ("cpu", "cuda", "cuda:N"); raise if CUDA is asked for but absent."""
    import torch

    device = str(device or "cpu")
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise PseudoLabelsError(
                f"--device {device}: CUDA is not available (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu"
            )
        return device
    raise PseudoLabelsError(f"--device {device!r}: choose cpu or cuda")


# --------------------------------------------------------------------------- extractor base
class FeatureExtractor(abc.ABC):
    """Maps RGB images to L2-normalised feature maps.

    Attributes: ``name`` (backbone[+head]), ``dim`` (D), ``uses_weights`` (loads a
    learned checkpoint), ``input_size``, ``device``, ``batch_size``, ``dense`` (True:
    one vector per pixel of the resized input; False: one per 14x14 patch).
    """

    name: str = ""
    dim: int = 0
    uses_weights: bool = False
    dense: bool = False

    def __init__(self, input_size=defaults.FEATURE_INPUT_SIZE, device: str = "cpu",
                 batch_size: int = defaults.BATCH_SIZE):
        if not isinstance(input_size, (int, np.integer)):
            input_size = tuple(int(v) for v in input_size)
            if len(input_size) != 2 or any(v % defaults.PATCH_SIZE for v in input_size):
                raise PseudoLabelsError(
                    f"--input-size {input_size}: need two values, each a multiple of {defaults.PATCH_SIZE}")
        self.input_size = input_size
        self.device = device
        self.batch_size = max(1, int(batch_size))

    def output_grid(self, image_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        """(h, w) of the output for an image of ``image_hw`` (default: a Cityscapes frame)."""
        h, w = resized_shape(image_hw or defaults.SYNTH_SIZE, self.input_size)
        return (h, w) if self.dense else (h // defaults.PATCH_SIZE, w // defaults.PATCH_SIZE)

    def describe(self) -> dict:
        """Parameters for manifests."""
        return {"backbone": self.name, "dim": self.dim, "dense": self.dense,
                "input_size": self.input_size, "uses_weights": self.uses_weights}

    def extract(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[np.ndarray]:
        """list of (H, W, 3) uint8 -> list of (D, h, w) float32, L2-normalised over D."""
        images = list(images)
        for i, im in enumerate(images):
            _check_image(im, i)
        bs = max(1, int(batch_size or self.batch_size))
        prepared = [resize_image(im, resized_shape(im.shape[:2], self.input_size)) for im in images]
        out: list[np.ndarray] = []
        i = 0
        while i < len(prepared):
            # a batch holds images of one size only
            j = i + 1
            while j < len(prepared) and j - i < bs and prepared[j].shape == prepared[i].shape:
                j += 1
            out.extend(self._extract_batch(prepared[i:j]))
            i = j
        return out

    @abc.abstractmethod
    def _extract_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Features of a batch of same-size prepared images (each backbone implements it)."""


# --------------------------------------------------------------------------- builtin
def _patch_mean(x: np.ndarray, p: int) -> np.ndarray:
    """(H, W, C) -> (H//p, W//p, C) mean over p x p patches."""
    h, w = x.shape[0] // p, x.shape[1] // p
    x = x[: h * p, : w * p]
    return x.reshape(h, p, w, p, -1).mean(axis=(1, 3))


POS_WEIGHT = 0.5  # weight of the row-position channel (road low, sky high)


def builtin_features(image: np.ndarray, patch: int = defaults.PATCH_SIZE) -> np.ndarray:
    """Hand-made patch features of one resized image.

    ``image`` (H, W, 3) uint8 RGB, H and W multiples of ``patch``. Returns
    (BUILTIN_DIM, H/patch, W/patch) float32, L2-normalised over D. Deterministic, no
    learned parameters: Lab / chromaticity / HSV colour means, Lab standard deviations,
    gradient and Laplacian energy, and the same statistics blurred over neighbouring
    patches (context) and the row position, each group scaled by a fixed weight; a constant channel keeps
    dark, flat patches apart after normalisation.
    """
    import cv2

    rgb = image.astype(np.float32) / 255.0
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)  # L 0..100, a/b about -128..127
    lab_n = np.stack([lab[..., 0] / 100.0 - 0.5, lab[..., 1] / 60.0, lab[..., 2] / 60.0], -1)
    s = rgb.sum(-1, keepdims=True) + 1e-3
    chroma = (rgb / s - 1.0 / 3.0) * 3.0
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # H degrees, S, V in 0..1
    hue = np.deg2rad(hsv[..., 0])
    sat = hsv[..., 1]
    hsv_f = np.stack([sat * np.cos(hue), sat * np.sin(hue), sat - 0.3, hsv[..., 2] - 0.5], -1)

    lum = lab[..., 0] / 100.0
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    lap = cv2.Laplacian(cv2.GaussianBlur(lum, (0, 0), 1.0), cv2.CV_32F)
    tex = np.stack([np.abs(gx), np.abs(gy), np.abs(lap) * 4.0], -1)

    m_lab = _patch_mean(lab_n, patch)
    m_sq = _patch_mean(lab_n * lab_n, patch)
    sd_lab = np.sqrt(np.maximum(m_sq - m_lab * m_lab, 0.0))
    m_chroma = _patch_mean(chroma, patch)
    m_hsv = _patch_mean(hsv_f, patch)
    m_tex = np.log1p(_patch_mean(tex, patch) * 8.0)
    orient = (m_tex[..., 0] - m_tex[..., 1])[..., None]

    local = np.concatenate([m_lab * 1.5, m_chroma * 1.0, m_hsv * 1.0, sd_lab * 4.0, m_tex * 0.8, orient], -1)
    ctx_in = np.concatenate([m_lab, m_chroma, m_tex], -1)
    ctx1 = cv2.GaussianBlur(ctx_in, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    ctx3 = cv2.GaussianBlur(ctx_in, (0, 0), 3.0, borderType=cv2.BORDER_REFLECT)
    if ctx1.ndim == 2:  # a 1-patch-wide grid loses its channel axis in OpenCV
        ctx1, ctx3 = ctx1.reshape(ctx_in.shape), ctx3.reshape(ctx_in.shape)
    const = np.full(m_lab.shape[:2] + (1,), 0.5, np.float32)
    rows = np.linspace(-0.5, 0.5, m_lab.shape[0], dtype=np.float32)
    ypos = np.broadcast_to(rows[:, None, None], const.shape) * POS_WEIGHT
    feats = np.concatenate([local, ctx1 * 0.5, ctx3 * 0.3, const, ypos], -1).astype(np.float32)
    return l2_normalize(np.ascontiguousarray(feats.transpose(2, 0, 1)), axis=0)


#: channels of :func:`builtin_features`: local 3+3+4+3+3+1, context 2 x 9, constant 1, row position 1
BUILTIN_DIM = 17 + 18 + 1 + 1


class BuiltinExtractor(FeatureExtractor):
    """Deterministic hand-made features (no weights): see :func:`builtin_features`."""

    name = "builtin"
    dim = BUILTIN_DIM
    uses_weights = False
    dense = False

    def _extract_batch(self, images):
        return [builtin_features(im) for im in images]


class _TorchExtractor(FeatureExtractor):
    def _autocast(self):
        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def _to_batch(self, images):
        import torch

        return torch.stack([normalize_image(im) for im in images]).to(self.device)


class DinoV2Extractor(_TorchExtractor):
    """DINOv2 patch tokens (after the final norm) as (D, H/14, W/14) maps."""

    dense = False

    def __init__(self, model, name: str, uses_weights: bool, **kw):
        super().__init__(**kw)
        self.model = model.to(self.device)
        self.name = name
        self.dim = int(model.embed_dim)
        self.uses_weights = uses_weights

    def _extract_batch(self, images):
        import torch

        with torch.inference_mode(), self._autocast():
            tok = dinov2_patch_tokens(self.model, self._to_batch(images))
        tok = torch.nn.functional.normalize(tok.float(), dim=-1).permute(0, 3, 1, 2)
        return [np.ascontiguousarray(t) for t in tok.cpu().numpy()]


# --------------------------------------------------------------------------- CAUSE sliding windows
def window_positions(size: int, crop: int = defaults.CAUSE_CROP, stride: int = defaults.CAUSE_STRIDE) -> list[int]:
    """Start offsets of sliding windows along one axis (reference layout).

    ``range(0, size - crop, stride)`` plus a last window flush with the border; a single
    window at 0 when ``size <= crop`` (the crop is then reflect-padded).
    """
    if size <= crop:
        return [0]
    return sorted(set(range(0, size - crop, stride)) | {size - crop})


def sliding_window_dense(
    image,
    crop_fn: Callable,
    dim: int,
    crop: int = defaults.CAUSE_CROP,
    stride: int = defaults.CAUSE_STRIDE,
    flip: bool = True,
    max_crops: int = 16,
):
    """Dense features of a batch by sliding windows.

    ``image`` (B, 3, H, W) float tensor; ``crop_fn`` maps (N, 3, crop, crop) to
    (N, dim, gh, gw). With ``flip`` each crop's output is averaged with that of its
    horizontally flipped copy (flipped back). Window outputs are upsampled bilinearly
    (align_corners False) to the crop and overlapping windows averaged.
    Returns (B, dim, H, W) float32 (not normalised). At most ``max_crops`` crops
    (flips included) go through ``crop_fn`` at once.
    """
    import torch
    import torch.nn.functional as F

    b, _, hgt, wid = image.shape
    ys, xs = window_positions(hgt, crop, stride), window_positions(wid, crop, stride)
    windows = [(y, x) for y in ys for x in xs]
    crops = []
    for y, x in windows:
        c = image[:, :, y:y + crop, x:x + crop]
        ch, cw = c.shape[-2:]
        if ch < crop or cw < crop:
            c = F.pad(c, (0, crop - cw, 0, crop - ch), mode="reflect")
        crops.append(c)
    crops_t = torch.cat(crops, 0)  # (n_win * B, 3, crop, crop), window-major
    if flip:
        crops_t = torch.cat([crops_t, crops_t.flip(-1)], 0)
    outs = [crop_fn(crops_t[i:i + max_crops]).float() for i in range(0, crops_t.shape[0], max(1, max_crops))]
    out = torch.cat(outs, 0)
    if flip:
        half = out.shape[0] // 2
        out = (out[:half] + out[half:].flip(-1)) / 2
    out = F.interpolate(out, size=(crop, crop), mode="bilinear", align_corners=False)
    acc = torch.zeros(b, dim, hgt, wid, dtype=torch.float32, device=out.device)
    cnt = torch.zeros(1, 1, hgt, wid, dtype=torch.float32, device=out.device)
    for n, (y, x) in enumerate(windows):
        ch, cw = min(crop, hgt - y), min(crop, wid - x)
        acc[:, :, y:y + ch, x:x + cw] += out[n * b:(n + 1) * b, :, :ch, :cw]
        cnt[:, :, y:y + ch, x:x + cw] += 1
    return acc / cnt.clamp(min=1)


class CauseExtractor(_TorchExtractor):
    """CAUSE-TR: DINOv2 tokens of 322x322 windows -> Segment_TR EMA head -> dense 90-d map."""

    dense = True

    def __init__(self, backbone_model, head, name: str, uses_weights: bool, **kw):
        super().__init__(**kw)
        self.model = backbone_model.to(self.device)
        self.head = head.to(self.device).eval()
        self.name = name
        self.dim = int(head.reduced_dim)
        self.uses_weights = uses_weights
        self.crop = head.crop_grid * defaults.PATCH_SIZE
        if int(backbone_model.embed_dim) != int(head.dim):
            raise PseudoLabelsError(
                f"CAUSE head expects {head.dim}-d backbone tokens but the backbone gives {backbone_model.embed_dim} "
                "(the official head is trained on DINOv2 ViT-B/14: --backbone dinov2_vitb14)")

    def crop_features(self, crops):
        """(N, 3, crop, crop) normalised images -> (N, 90, g, g) head_ema output."""
        import torch

        with self._autocast():
            tok = dinov2_patch_tokens(self.model, crops)
        n, gh, gw, d = tok.shape
        return self.head.forward_ema(tok.reshape(n, gh * gw, d).float()).to(torch.float32)

    def _extract_batch(self, images):
        import torch

        with torch.inference_mode():
            dense = sliding_window_dense(self._to_batch(images), self.crop_features, self.dim,
                                         crop=self.crop, stride=self.crop // 2,
                                         max_crops=max(2, 2 * self.batch_size))
            dense = torch.nn.functional.normalize(dense, dim=1)
        return [np.ascontiguousarray(f) for f in dense.cpu().numpy()]


# --------------------------------------------------------------------------- factory
def build_extractor(
    backbone: str,
    weights: str | os.PathLike | None = None,
    head: str | None = None,
    device: str = "cpu",
    input_size: int | Sequence[int] = defaults.FEATURE_INPUT_SIZE,
    head_weights: str | os.PathLike | None = None,
    *,
    codebook: str | os.PathLike | None = None,
    batch_size: int = defaults.BATCH_SIZE,
    random_weights: bool = False,
) -> FeatureExtractor:
    """Build a feature extractor (see the module docstring).

    ``weights``: local DINOv2 checkpoint (official key layout); required for DINOv2
    unless ``random_weights`` (benchmarks). ``head="cause"`` needs ``head_weights``
    (CAUSE ``segment_tr.pth``) and the modularity codebook (``codebook``, default: found
    next to the head file in the CAUSE layout, see :func:`refs.cause.find_codebook`).
    ``device`` "cpu" or "cuda" (fp16 autocast). Raises :class:`PseudoLabelsError` on
    unknown names, missing / wrong files, or CUDA requested but absent.
    """
    device = resolve_device(device)
    kw = dict(input_size=input_size, device=device, batch_size=batch_size)
    if head is not None and head not in HEADS:
        raise PseudoLabelsError(f"--head {head!r}: unknown head (choose from {', '.join(HEADS)})")
    if backbone == "builtin":
        if head is not None:
            raise PseudoLabelsError("--head cause needs a DINOv2 backbone (--backbone dinov2_vitb14), not builtin")
        if weights is not None:
            raise PseudoLabelsError("--backbone builtin takes no --weights (it has no learned parameters)")
        return BuiltinExtractor(**kw)
    if backbone not in DINOV2_ARCHS and backbone != "dinov2":
        raise PseudoLabelsError(f"--backbone {backbone!r}: unknown (choose from {', '.join(BACKBONES)})")
    if weights is None and not random_weights:
        raise PseudoLabelsError(
            f"--backbone {backbone} needs --weights PATH: a local DINOv2 checkpoint in the official layout "
            f"(e.g. {backbone}_pretrain.pth from facebookresearch/dinov2); nothing is downloaded")
    model = build_dinov2(weights, None if backbone == "dinov2" else backbone)
    uses = weights is not None
    if head is None:
        return DinoV2Extractor(model, backbone, uses, **kw)
    from pseudo_labels.stages.semantic.cause import build_segment_tr

    if head_weights is None and not random_weights:
        raise PseudoLabelsError("--head cause needs --head-weights PATH (CAUSE segment_tr.pth)")
    seg = build_segment_tr(head_weights, codebook=codebook, dim=int(model.embed_dim))
    return CauseExtractor(model, seg, f"{backbone}+cause", uses or head_weights is not None, **kw)


# --------------------------------------------------------------------------- storage
def save_features(path: str | os.PathLike, feats: np.ndarray) -> None:
    """Write one image's (D, h, w) features as float16 ``.npy`` (atomically)."""
    from pseudo_labels.core.io import write_npy

    feats = np.asarray(feats)
    if feats.ndim != 3:
        raise ValueError(f"features must be (D, h, w), got shape {feats.shape}")
    write_npy(path, feats.astype(np.float16))


def load_features(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read (D, h, w) features written by :func:`save_features` as float32.

    ``mmap``: return the file memory-mapped, read-only, in its stored dtype (float16):
    only the parts a caller touches are read (e.g. the sampled patches of the k-means fit).
    """
    from pseudo_labels.core.io import read_npy

    if mmap:
        path = Path(path)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise InputFileError(path, "file not found") from None
        except (ValueError, OSError, EOFError) as exc:
            raise InputFileError(path, f"not a readable .npy array ({exc})") from None
    else:
        arr = read_npy(path, finite=True, what="feature map")
    if arr.ndim != 3:
        raise InputFileError(path, f"expected a (D, h, w) feature array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputFileError(path, f"expected float features, got {arr.dtype}")
    return arr if mmap else arr.astype(np.float32)


def feature_path(features_dir: str | os.PathLike, entry) -> Path:
    """``<features_dir>/<split>/<city>/<stem>.npy`` of an :class:`~pseudo_labels.datasets.cityscapes.ImageEntry`."""
    return Path(features_dir) / entry.relative(".npy")


# --------------------------------------------------------------------------- folder stage (extract-features)
STAGE = "extract-features"


@dataclass(frozen=True)
class FeatureConfig:
    """What ``extract-features`` computes: features of every image of ``split`` under
    ``cityscapes_root`` into ``<out>/<split>/<city>/<stem>.npy`` (see the module docstring
    for backbones, heads and ``input_size``: (H, W) or one int, the short side)."""

    cityscapes_root: str
    out: str
    split: str = "val"
    backbone: str = "builtin"
    weights: str | None = None
    head: str | None = None
    head_weights: str | None = None
    codebook: str | None = None
    device: str = "cpu"
    batch_size: int = defaults.BATCH_SIZE
    input_size: int | tuple[int, int] = defaults.FEATURE_INPUT_SIZE
    limit: int = 0  # only the first N images of the split (0: all), applied before sharding

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, (int, np.integer)):  # a list from a config file: hashable tuple
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        validate_config(self)  # one check for flags and TOML (issue 24)

    def parameters(self) -> dict:
        """The parameters that determine the output values (the manifest's config hash)."""
        resolved = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
        size = self.input_size
        return {"split": self.split, "backbone": self.backbone, "weights": resolved(self.weights),
                "head": self.head, "head_weights": resolved(self.head_weights), "codebook": resolved(self.codebook),
                "input_size": list(size) if isinstance(size, tuple) else size}

    def extractor(self) -> "ExtractorConfig":
        return ExtractorConfig(self.backbone, self.weights, self.head, self.head_weights, self.codebook,
                               self.device, self.input_size, self.batch_size)


def input_size_of(values: Sequence[int]) -> int | tuple[int, int]:
    """``--input-size`` values -> (H, W) for two values, the short side for one."""
    values = list(values)
    if len(values) == 1:
        return int(values[0])
    if len(values) == 2:
        return (int(values[0]), int(values[1]))
    raise PseudoLabelsError(f"--input-size {values}: give H W or a single short side")


@dataclass(frozen=True)
class ExtractorConfig:
    """The arguments of :func:`build_extractor` (hashable: one extractor per process and config)."""

    backbone: str
    weights: str | None
    head: str | None
    head_weights: str | None
    codebook: str | None
    device: str
    input_size: int | tuple[int, int]
    batch_size: int


_EXTRACTORS: dict = {}


def extractor_of(cfg: ExtractorConfig) -> FeatureExtractor:
    """The extractor of ``cfg``, built once per process (the previous one is dropped)."""
    if cfg not in _EXTRACTORS:
        _EXTRACTORS.clear()
        _EXTRACTORS[cfg] = build_extractor(
            cfg.backbone, cfg.weights, head=cfg.head, device=cfg.device, input_size=cfg.input_size,
            head_weights=cfg.head_weights, codebook=cfg.codebook, batch_size=cfg.batch_size)
    return _EXTRACTORS[cfg]


@dataclass(frozen=True)
class ExtractJob:
    """One batch of images: extract and write their features (picklable)."""

    entries: tuple
    out: str
    config: ExtractorConfig
    fail_fast: bool


def extract_batch(job: ExtractJob) -> dict:
    """Read, extract and write one batch. An unreadable image fails alone (named in the result,
    or raised at once with ``fail_fast``); the others of the batch are still written.
    Returns ``{done: int, failed: [(stem, message)], grid: [h, w] or None}``."""
    from pseudo_labels.core.io import read_image_rgb
    from pseudo_labels.core.runner import error_message

    images, failed = [], []
    for e in job.entries:
        try:
            images.append((e, read_image_rgb(e.image_path)))
        except Exception as exc:  # noqa: BLE001 - reported per image
            msg = error_message(exc)
            if job.fail_fast:
                raise PseudoLabelsError(msg if e.stem in msg else f"{e.stem}: {msg}") from None
            failed.append((e.stem, msg))
    grid = None
    if images:
        feats = extractor_of(job.config).extract([im for _, im in images], batch_size=job.config.batch_size)
        for (e, _), f in zip(images, feats):
            save_features(feature_path(job.out, e), f)
            grid = list(f.shape[1:])
    return {"done": len(images), "failed": failed, "grid": grid}


@dataclass
class FeatureRunSummary(RunSummary):
    """:class:`~pseudo_labels.core.runner.RunSummary` of :func:`extract_features_folder`:
    ``done`` images computed, ``skipped`` already there, ``failed`` [(stem, message)]."""

    out: str = ""
    seconds: float = 0.0
    shard: tuple[int, int] | None = None

    def line(self) -> str:
        rate = f", {self.done / self.seconds:.2f} img/s" if self.done and self.seconds > 0 else ""
        shard = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        return (f"{STAGE}{shard}: {self.done} computed, {self.skipped} skipped (already done), "
                f"{len(self.failed)} failed{rate} -> {self.out}")

    def raise_if_failed(self, what: str = "images", hint: str = "the others were written, rerun to retry the "
                                                                "failed ones") -> None:
        super().raise_if_failed(what, hint)


def _feature_grid(out: Path, entries: list, extractor: FeatureExtractor) -> list[int] | None:
    """(h, w) of the features: from a written file, else predicted from the first image."""
    from pseudo_labels.core.io import read_image_rgb

    for e in entries:
        if feature_path(out, e).exists():
            return list(np.load(feature_path(out, e), mmap_mode="r").shape[1:])
    if entries:
        try:
            return list(extractor.output_grid(read_image_rgb(entries[0].image_path).shape[:2]))
        except PseudoLabelsError:
            return None
    return None


def extract_features_folder(config: FeatureConfig, options: RunOptions | None = None) -> FeatureRunSummary:
    """Features of every image of ``config.split`` (this shard's part) into ``config.out``,
    with a manifest; finished files are reused (resume) unless ``options.overwrite``.
    Failed images are named in the summary (call ``raise_if_failed``); the others are written."""
    import time

    from pseudo_labels.core.io import fingerprint_files, prepare_output_dir, write_manifest
    from pseudo_labels.core.runner import batch_name, run_per_image
    from pseudo_labels.datasets.cityscapes import list_images

    opts = options or RunOptions()
    if config.batch_size < 1:
        raise PseudoLabelsError("--batch-size must be >= 1")
    out = Path(config.out)
    params = config.parameters()
    entries = list_images(config.cityscapes_root, config.split)
    if config.limit and config.limit > 0:
        entries = entries[: config.limit]
    entries = opts.select(entries)
    cfg = config.extractor()
    extractor = extractor_of(cfg)  # wrong weights / CUDA fail here, before anything is written
    reuse = prepare_output_dir(out, STAGE, params, overwrite=opts.overwrite)
    inputs = {"cityscapes_root": str(Path(config.cityscapes_root).resolve()),
              "images": fingerprint_files(e.image_path for e in entries)}
    features_info = {**extractor.describe(), "dtype": "float16", "layout": "<split>/<city>/<stem>.npy, (D, h, w)"}
    # the manifest comes first: a changed rerun into this folder is refused even after a kill
    write_manifest(out, STAGE, params, uses_ground_truth=False, inputs=inputs,
                   counts={"status": "running", "images": len(entries)},
                   extra={"features": features_info, **opts.describe()})
    todo = [e for e in entries if not (reuse and feature_path(out, e).exists())]
    t0 = time.time()
    jobs = [ExtractJob(tuple(todo[i:i + config.batch_size]), str(out), cfg, opts.fail_fast)
            for i in range(0, len(todo), config.batch_size)]
    runs = run_per_image(extract_batch, jobs, options=opts, desc="features", name_of=lambda j: batch_name(j.entries))
    summary = FeatureRunSummary(results=[], skipped=len(entries) - len(todo), failed=list(runs.failed), out=str(out),
                                seconds=time.time() - t0, shard=opts.shard)
    grid = None
    for r in runs.results:
        if r is not None:
            summary.done += r["done"]
            summary.failed.extend(r["failed"])
            grid = grid or r["grid"]
    grid = grid or _feature_grid(out, entries, extractor)
    failed = summary.failed
    write_manifest(
        out, STAGE, params, uses_ground_truth=False, inputs=inputs,
        counts={"status": "finished" if not failed else "finished with failures", "images": len(entries),
                "computed": summary.done, "skipped": summary.skipped, "failed": len(failed)},
        extra={"features": {**features_info, "grid": grid}, "device": extractor.device, "batch_size": config.batch_size,
               "runner": {"workers": opts.workers, "executor": opts.executor}, **opts.describe(),
               "failed": [{"image": n, "error": m} for n, m in failed],
               "seconds": round(summary.seconds, 3)},
    )
    return summary
