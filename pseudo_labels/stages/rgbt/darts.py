"""DARTS fusion head: RGB + thermal frozen features -> one fused code per patch, trained with
STEGO-style feature-correlation losses within and across the two modalities.

"Distilling Auxiliary RGB-T Features for Unsupervised Semantic Segmentation" (DARTS). The
defaults (``variant="official"``) follow the released code, smeenapadnekar/DARTS at commit
5b5edcfc0c3021b5f12b0989ff3816f83a019c95 (``src/modules.py`` ``ContrastiveCorrelationLoss`` and
``DinoFeaturizer``, ``src/train_segmentation.py``, ``src/configs/train_config.yml``); our code is
written from those facts, and ``tests/test_darts.py`` checks the loss against an independent
computation to 1e-6. For two images x, y, S sampled patches of each, F frozen features, C the code:

    fd = corr(F(x), F(y))          (S x S cosine similarities; no gradient; no centring)
    cd = corr(C(x), C(y))
    l(shift) = mean( -clamp(cd, min=0) * (fd - shift) )

per modality term m in {rgb, thermal, cross} with its own block of weights and shifts:

    L_m = w_intra_m l(x, x) + w_inter_m l(x, knn(x)) + w_neg_m mean_n l(x, neg_n(x))
    L   = 1.0 L_rgb + 0.4 L_thermal + 0.5 L_cross

F is the RGB features for ``rgb``, the thermal features for ``thermal`` and their mean
``(F_rgb + F_t) / 2`` for ``cross`` (the released code correlates averaged features); 5
negatives per term, each a random derangement of the batch, drawn independently for each term;
``pointwise: False``, ``zero_clamp: True``, ``stabalize: False`` (no centring, no
standardisation, cd clamped below at 0 only). The frozen target features pass a 2-D dropout
(p 0.1) in training, as the released featuriser returns them (``dropout: True``).

Which official: in the released loss the *thermal anchor* slot is filled with the KNN-positive
RGB features (``signal_th = feats_pos`` in ``train_segmentation.py``); the paper describes the
thermal features of the anchor image there, and we follow the paper (``thermal`` terms correlate
the anchor's thermal features).

Weights and shifts (:data:`LOSS_PRESETS`): the released ``train_config.yml`` has one block per
data set; the KP block is active, the MFNET and PST900 blocks are commented out. ``mfnet`` (the
default) and ``pst900`` take their blocks, ``kp`` the active one.

Head (:func:`build_head`), official: the two modalities' tokens at the backbone width (width 0 =
the RGB feature size) go through one dual-modal block; the fused map is
``alpha_rgb * x_rgb + alpha_t * x_t`` with learned per-channel weights (initialised uniform in
[0, 1) as the release); code = ``linear(dropout(fused)) + nonlinear(dropout(fused))`` with a
1x1 linear head and a 1x1-ReLU-1x1 head, code size 100. The release's fusion block is GeminiFusion
(6 heads, MLP ratio 4); ours is a stand-in: pre-norm self-attention per modality, then
cross-attention (queries own modality, keys / values the other), then an MLP (ratio 4), separate
weights per modality, a per-modality projection (identity when the size already matches) plus a
learned modality embedding, heads = the largest of 6..1 that divides the width.

Our earlier choices, ``variant="ours"`` (``train-darts --variant ours``; ``reports/rgbt_darts.md``
compares them): one block of STEGO Cityscapes weights (0.46 / 0.18 / 0.72, shifts 0.25 / 0.20 /
0.25) shared by the modalities, multipliers 1 / 1 / 1; the target row-centred (STEGO's
pointwise) and divided by its batch std (so shifts do not depend on the backbone's similarity
scale, e.g. the hand-made ``builtin`` features whose cosines are near 1); cross target the mean
of ``corr(F_rgb(x), F_t(y))`` and ``corr(F_t(x), F_rgb(y))``; 1 negative shared by the terms;
no target dropout; head of width 64, 2 heads, MLP ratio 2, input dropout 0.1, concatenation ->
LayerNorm -> linear to a 64-d code.

Both variants: ``feature_samples``**2 = 121 patch positions per image drawn uniformly from the
patch grid (the release samples continuous coordinates bilinearly; we take patch centres); KNN
positives K = 7 by cosine similarity of mean-pooled L2-normalised features (``knn_modality``);
Adam lr 5e-4, batch 8 (the release: 16), seeded; ``crop`` > 0 trains on random crop x crop windows
of the patch grid; ``rgb_reliability`` (off, ours) weights the RGB and cross terms of each image
by how well its RGB and thermal self-correlations agree (:func:`rgb_reliability`).

Shapes: features (B, D, h, w) float32 (grids must match; the ``cross`` target of the official
variant needs D equal for both modalities); tokens (B, h*w, width); code (B, code_dim, h, w).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError

CHECKPOINT_NAME = "darts_head.pt"
RUN_CONFIG_NAME = "darts_config.json"
LOSS_LOG_NAME = "losses.json"
KNN_MODALITIES = ("both", "rgb", "thermal")
VARIANTS = ("official", "ours")
TERMS = ("rgb", "thermal", "cross")
PAIRS = ("pos_intra", "pos_inter", "neg_inter")
NORMALISATIONS = ("none", "stego-pointwise", "row-centred-standardised")
CROSS_TARGETS = ("mean-features", "mean-correlations")
OFFICIAL_REPO = "smeenapadnekar/DARTS@5b5edcfc0c3021b5f12b0989ff3816f83a019c95"


@dataclass(frozen=True)
class TermWeights:
    """One block of STEGO weights and shifts (image with itself, with a KNN positive, with a negative)."""

    pos_intra_weight: float
    pos_inter_weight: float
    neg_inter_weight: float
    pos_intra_shift: float
    pos_inter_shift: float
    neg_inter_shift: float

    def of(self, pair: str) -> tuple[float, float]:
        return getattr(self, f"{pair}_weight"), getattr(self, f"{pair}_shift")


# train_config.yml blocks (rgb: *, thermal: *_th, cross: *_rgb_th), in TermWeights order
_OFFICIAL_BLOCKS = {
    "mfnet": ((1.0, 0.577453483136995, 0.9058762625226623, 0.46, 0.18, 0.21),
              (1.0, 1.0, 1.0, 0.36, 0.18, 0.31),
              (0.5, 0.0, 0.0, 0.51, 0.21, 0.41)),
    "pst900": ((1.0, 0.5, 0.9, 0.35, 0.18, 0.1),
               (1.0, 1.0, 1.0, 0.46, 0.18, 0.41),
               (0.5, 0.0, 0.0, 0.21, 0.21, 0.41)),
    "kp": ((1.0, 1.0, 0.9, 0.46, 0.28, 0.41),
           (1.0, 0.577453483136995, 0.9058762625226623, 0.46, 0.18, 0.31),
           (0.5, 0.0, 0.5, 0.51, 0.31, 0.41)),
}
_OURS_BLOCK = (0.46, 0.18, 0.72, 0.25, 0.20, 0.25)  # STEGO Cityscapes, shared by the modalities


@dataclass(frozen=True)
class DartsLossConfig:
    """The loss (see the module docstring). Defaults: the released MFNet setting."""

    rgb: TermWeights = TermWeights(*_OFFICIAL_BLOCKS["mfnet"][0])
    thermal: TermWeights = TermWeights(*_OFFICIAL_BLOCKS["mfnet"][1])
    cross: TermWeights = TermWeights(*_OFFICIAL_BLOCKS["mfnet"][2])
    w_rgb: float = 1.0
    w_thermal: float = 0.4
    w_cross: float = 0.5
    feature_samples: int = 11
    neg_samples: int = 5
    negatives_per_term: bool = True  # independent negatives for each term (release) or one set shared
    normalisation: str = "none"
    cross_target: str = "mean-features"
    zero_clamp: bool = True
    stabilize: bool = False  # the release's ``stabalize``: cd also clamped above at 0.8
    target_dropout: float = 0.1
    rgb_reliability: bool = False

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise PseudoLabelsError(f"normalisation {self.normalisation!r}: choose {', '.join(NORMALISATIONS)}")
        if self.cross_target not in CROSS_TARGETS:
            raise PseudoLabelsError(f"cross target {self.cross_target!r}: choose {', '.join(CROSS_TARGETS)}")
        if self.neg_samples < 1 or self.feature_samples < 1:
            raise PseudoLabelsError("--neg-samples and --feature-samples must be >= 1")

    def weights(self, term: str) -> TermWeights:
        return getattr(self, term)

    def multiplier(self, term: str) -> float:
        return getattr(self, f"w_{term}")

    @classmethod
    def from_dict(cls, d: dict) -> "DartsLossConfig":
        d = dict(d)
        for t in TERMS:
            if isinstance(d.get(t), dict):
                d[t] = TermWeights(**d[t])
        return cls(**d)


LOSS_PRESETS = ("mfnet", "pst900", "kp", "ours")


def loss_preset(name: str) -> DartsLossConfig:
    """The loss of a preset: a released weight block (``mfnet``, ``pst900``, ``kp``) with the
    release's conventions, or ``ours`` (our earlier choices, module docstring)."""
    if name in _OFFICIAL_BLOCKS:
        rgb, th, cross = (TermWeights(*b) for b in _OFFICIAL_BLOCKS[name])
        return DartsLossConfig(rgb=rgb, thermal=th, cross=cross)
    if name == "ours":
        block = TermWeights(*_OURS_BLOCK)
        return DartsLossConfig(rgb=block, thermal=block, cross=block, w_rgb=1.0, w_thermal=1.0, w_cross=1.0,
                               neg_samples=1, negatives_per_term=False, normalisation="row-centred-standardised",
                               cross_target="mean-correlations", target_dropout=0.0)
    raise PseudoLabelsError(f"loss preset {name!r}: choose {', '.join(LOSS_PRESETS)}")


def default_preset(variant: str, dataset: str) -> str:
    """``ours`` for the ours variant; else the released block of the data set (``kp``'s for others)."""
    if variant not in VARIANTS:
        raise PseudoLabelsError(f"--variant {variant!r}: choose {', '.join(VARIANTS)}")
    if variant == "ours":
        return "ours"
    return dataset if dataset in _OFFICIAL_BLOCKS else "kp"


@dataclass(frozen=True)
class DartsModelConfig:
    """Sizes of the fusion head. Defaults: the official layout (width 0 = the RGB feature size)."""

    dim_rgb: int
    dim_thermal: int
    width: int = 0
    heads: int = 0  # 0: the largest of 6..1 that divides the width
    mlp_ratio: float = 4.0
    code_dim: int = 100
    input_dropout: float = 0.0
    code_dropout: float = 0.1
    fusion: str = "weighted-sum"  # or "concat-linear" (ours)
    nonlinear_head: bool = True

    @property
    def resolved_width(self) -> int:
        return int(self.width or self.dim_rgb)

    @property
    def resolved_heads(self) -> int:
        if self.heads:
            return int(self.heads)
        return next(h for h in range(6, 0, -1) if self.resolved_width % h == 0)

    @classmethod
    def from_dict(cls, d: dict) -> "DartsModelConfig":
        """Read a stored config; runs written before the official layout get the old head."""
        d = dict(d)
        if "fusion" not in d:
            d.update(fusion="concat-linear", nonlinear_head=False, code_dropout=0.0)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def model_preset(variant: str, dim_rgb: int, dim_thermal: int, **overrides) -> DartsModelConfig:
    """The head of a variant; ``overrides`` with value None are ignored."""
    base = (DartsModelConfig(dim_rgb, dim_thermal) if variant == "official" else
            DartsModelConfig(dim_rgb, dim_thermal, width=64, heads=2, mlp_ratio=2.0, code_dim=64, input_dropout=0.1,
                             code_dropout=0.0, fusion="concat-linear", nonlinear_head=False))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def build_head(cfg: DartsModelConfig):
    """The fusion head (a ``torch.nn.Module``): ``head(f_rgb, f_thermal) -> code`` (B, code_dim, h, w)."""
    import torch
    from torch import nn

    class DualModalBlock(nn.Module):
        def __init__(self, width: int, heads: int, mlp_ratio: float):
            super().__init__()
            hidden = int(width * mlp_ratio)
            self.ln_self = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
            self.ln_q = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
            self.ln_kv = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
            self.ln_mlp = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
            self.self_attn = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=True) for _ in range(2))
            self.cross_attn = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=True) for _ in range(2))
            self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
                                     for _ in range(2))

        def forward(self, xs: list) -> list:
            xs = list(xs)
            for m in range(2):
                h = self.ln_self[m](xs[m])
                xs[m] = xs[m] + self.self_attn[m](h, h, h, need_weights=False)[0]
            before = list(xs)
            for m in range(2):
                q, kv = self.ln_q[m](before[m]), self.ln_kv[m](before[1 - m])
                xs[m] = before[m] + self.cross_attn[m](q, kv, kv, need_weights=False)[0]
            return [x + self.mlp[m](self.ln_mlp[m](x)) for m, x in enumerate(xs)]

    class DartsHead(nn.Module):
        def __init__(self, c: DartsModelConfig):
            super().__init__()
            self.config = c
            w = c.resolved_width
            if c.fusion not in ("weighted-sum", "concat-linear"):
                raise PseudoLabelsError(f"fusion {c.fusion!r}: choose weighted-sum or concat-linear")
            if w % c.resolved_heads:
                raise PseudoLabelsError(f"--heads {c.resolved_heads} does not divide the width {w}")
            self.proj = nn.ModuleList([nn.Identity() if d == w and c.fusion == "weighted-sum" else nn.Linear(d, w)
                                       for d in (c.dim_rgb, c.dim_thermal)])
            self.modality_embed = nn.Parameter(torch.zeros(2, w))
            nn.init.normal_(self.modality_embed, std=0.02)
            self.drop = nn.Dropout2d(c.input_dropout)
            self.block = DualModalBlock(w, c.resolved_heads, c.mlp_ratio)
            if c.fusion == "weighted-sum":
                self.alpha = nn.Parameter(torch.rand(2, w))  # per-channel modality weights (release: torch.rand)
                self.code_drop = nn.Dropout(c.code_dropout)
                self.linear = nn.Linear(w, c.code_dim)
                self.nonlinear = (nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, c.code_dim))
                                  if c.nonlinear_head else None)
            else:
                self.norm = nn.LayerNorm(2 * w)
                self.fuse = nn.Linear(2 * w, c.code_dim)

        def forward(self, f_rgb, f_thermal):
            b, _, h, w = f_rgb.shape
            if f_thermal.shape[-2:] != (h, w):
                raise PseudoLabelsError(f"RGB grid {(h, w)} != thermal grid {tuple(f_thermal.shape[-2:])}")
            xs = [self.proj[m](self.drop(f).flatten(2).transpose(1, 2)) + self.modality_embed[m]
                  for m, f in enumerate((f_rgb, f_thermal))]
            xs = self.block(xs)
            if self.config.fusion == "weighted-sum":
                fused = self.alpha[0] * xs[0] + self.alpha[1] * xs[1]  # (B, h*w, width)
                code = self.linear(self.code_drop(fused))
                if self.nonlinear is not None:  # a second, independent dropout draw, as the release
                    code = code + self.nonlinear(self.code_drop(fused))
            else:
                code = self.fuse(self.norm(torch.cat(xs, dim=-1)))  # (B, h*w, code_dim)
            return code.transpose(1, 2).reshape(b, -1, h, w)

    return DartsHead(cfg)


# --------------------------------------------------------------------------- losses
def _corr(a, b):
    """(B, D, S) x (B, D, S) -> (B, S, S) cosine similarities."""
    import torch.nn.functional as F

    return (F.normalize(a, dim=1, eps=1e-10).transpose(1, 2) @ F.normalize(b, dim=1, eps=1e-10))


def target_correlation(fx, fy, normalisation: str = "none"):
    """Feature correlation of two (B, D, S) samples, (B, S, S), no gradient. ``none`` (release):
    raw cosines; ``stego-pointwise``: each row minus its mean, plus the global mean back (STEGO's
    ``pointwise``); ``row-centred-standardised`` (ours): each row minus its mean, divided by the
    batch std."""
    import torch

    with torch.no_grad():
        fd = _corr(fx, fy)
        if normalisation == "stego-pointwise":
            old = fd.mean()
            fd = fd - fd.mean(dim=2, keepdim=True)
            fd = fd - fd.mean() + old
        elif normalisation == "row-centred-standardised":
            fd = fd - fd.mean(dim=2, keepdim=True)
            fd = fd / fd.std().clamp_min(1e-6)
        elif normalisation != "none":
            raise PseudoLabelsError(f"normalisation {normalisation!r}: choose {', '.join(NORMALISATIONS)}")
    return fd


def correlation_term(fd, cx, cy, shift: float, zero_clamp: bool = True, weights=None, stabilize: bool = False):
    """STEGO's ``-clamp(cd) * (fd - shift)`` averaged: fd (B, S, S) target, cx / cy (B, K, S) codes;
    ``weights`` (B,) optional per-image weights (mean over images of weight x term);
    ``stabilize``: cd also clamped above at 0.8."""
    cd = _corr(cx, cy)
    cd = cd.clamp(min=0.0 if zero_clamp else -9999.0, max=0.8 if stabilize else None)
    per_image = -(cd * (fd - shift)).mean(dim=(1, 2))
    return per_image.mean() if weights is None else (per_image * weights).mean()


def rgb_reliability(fr, ft):
    """(B,) per-image weight of the RGB targets: the Pearson correlation, clamped to [0, 1], of the
    image's RGB and thermal self-correlation matrices (ours). Low where RGB disagrees with
    thermal about which patches belong together (dark, noisy night frames). No gradient."""
    import torch

    with torch.no_grad():
        a, b = _corr(fr, fr).flatten(1), _corr(ft, ft).flatten(1)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)
    return r.clamp(0.0, 1.0)


def _target(term: str, x: tuple, y: tuple, cfg: DartsLossConfig):
    """The (B, S, S) target of a term for samples x = (f_rgb, f_t), y = (f_rgb, f_t)."""
    n = cfg.normalisation
    if term == "rgb":
        return target_correlation(x[0], y[0], n)
    if term == "thermal":
        return target_correlation(x[1], y[1], n)
    if cfg.cross_target == "mean-features":
        if x[0].shape[1] != x[1].shape[1]:
            raise PseudoLabelsError(f"the RGB-T target averages the features: RGB has {x[0].shape[1]} channels, "
                                    f"thermal {x[1].shape[1]}; extract both with one backbone or use --variant ours")
        return target_correlation((x[0] + x[1]) / 2, (y[0] + y[1]) / 2, n)
    return (target_correlation(x[0], y[1], n) + target_correlation(x[1], y[0], n)) / 2


def darts_loss(samples: dict, cfg: DartsLossConfig) -> tuple:
    """Total loss and its parts for one batch.

    ``samples["anchor"]`` and ``samples["pos"]`` (KNN neighbours): ``(f_rgb, f_t, code)`` with
    sampled frozen features (B, D, S) and fused code (B, K, S); ``samples["neg"][term]``: a list
    of such triples of permuted batches (the negatives of that term, term in rgb / thermal /
    cross). Returns (loss tensor, {"<term>_<pair>": float}).
    """
    anchor, pos = samples["anchor"], samples["pos"]
    a_feats, a_code = anchor[:2], anchor[2]
    total = 0.0
    parts: dict[str, float] = {}
    reliability = rgb_reliability(*a_feats) if cfg.rgb_reliability else None
    if reliability is not None:
        parts["rgb_reliability"] = float(reliability.mean())
    for term in TERMS:
        mult = cfg.multiplier(term)
        if not mult:
            continue
        block = cfg.weights(term)
        w_img = reliability if term in ("rgb", "cross") else None
        others = {"pos_intra": [anchor], "pos_inter": [pos], "neg_inter": samples["neg"][term]}
        for pair in PAIRS:
            weight, shift = block.of(pair)
            vals = [correlation_term(_target(term, a_feats, o[:2], cfg), a_code, o[2], shift, cfg.zero_clamp,
                                     w_img, cfg.stabilize) for o in others[pair]]
            value = sum(vals) / len(vals)
            parts[f"{term}_{pair}"] = float(value.detach())
            if weight:
                total = total + mult * weight * value
    return total, parts


# --------------------------------------------------------------------------- KNN positives
def knn_neighbours(pooled: np.ndarray, k: int) -> np.ndarray:
    """(N, K') int64 indices of the K' = min(k, N - 1) most cosine-similar other rows of ``pooled`` (N, D)."""
    x = np.asarray(pooled, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    kk = max(1, min(int(k), x.shape[0] - 1))
    return np.argsort(-sim, axis=1, kind="stable")[:, :kk]


def pooled_features(f_rgb: np.ndarray, f_thermal: np.ndarray, modality: str = "both") -> np.ndarray:
    """(N, D') global image vectors for the KNN: mean over the grid, L2-normalised, per modality."""
    def pool(f):
        v = f.astype(np.float32).mean(axis=(2, 3))
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-8)

    if modality == "rgb":
        return pool(f_rgb)
    if modality == "thermal":
        return pool(f_thermal)
    if modality == "both":
        return np.concatenate([pool(f_rgb), pool(f_thermal)], axis=1)
    raise PseudoLabelsError(f"--knn-modality {modality!r}: choose {', '.join(KNN_MODALITIES)}")


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class DartsTrainConfig:
    """What ``train-darts`` does: train the head on the cached features of ``split``
    (``features``: root written by ``extract-rgbt-features``) and write the run to ``out``.

    ``variant``: ``official`` (release defaults) or ``ours``; ``loss`` None takes the variant's
    preset for the data set (:func:`default_preset`); ``width`` / ``heads`` / ``code_dim`` None
    take the variant's head (:func:`model_preset`)."""

    data_root: str
    features: str
    out: str
    dataset: str = "mfnet"
    split: str = "train"
    variant: str = "official"
    steps: int = 300
    batch_size: int = 8
    lr: float = 5e-4
    knn: int = 7
    knn_modality: str = "both"
    seed: int = 0
    device: str = "cpu"
    width: int | None = None
    heads: int | None = None
    code_dim: int | None = None
    threads: int = 0  # CPU threads of torch (0: cores not busy, see clustering.auto_threads)
    crop: int = 0  # train on random crop x crop windows of the patch grid (0: the whole grid)
    loss: DartsLossConfig | None = None
    log_every: int = 10
    progress: bool = True

    def resolved_loss(self) -> DartsLossConfig:
        return self.loss if self.loss is not None else loss_preset(default_preset(self.variant, self.dataset))

    def parameters(self) -> dict:
        p = asdict(self)
        p.pop("progress")
        p.pop("threads")
        p["loss"] = asdict(self.resolved_loss())
        p["official_code"] = OFFICIAL_REPO
        p["data_root"] = str(Path(self.data_root).resolve())
        p["features"] = str(Path(self.features).resolve())
        p["out"] = str(Path(self.out).resolve())
        return p


def load_split_features(data_root: str, dataset: str, split: str, features: str,
                        records: Sequence | None = None) -> tuple[list, np.ndarray, np.ndarray]:
    """(records, f_rgb (N, D_r, h, w) float16, f_thermal (N, D_t, h, w) float16) of a split's cache."""
    from pseudo_labels.datasets.rgbt import list_rgbt_images
    from pseudo_labels.stages.rgbt.features import load_rgbt_features

    records = list(records) if records is not None else list_rgbt_images(dataset, data_root, split)
    pairs = [load_rgbt_features(features, r) for r in records]
    grids = {p[0].shape[1:] for p in pairs}
    if len(grids) > 1:
        raise PseudoLabelsError(f"{features}: feature grids differ between images {sorted(grids)[:3]}; "
                                "extract with a fixed --input-size H W")
    return records, np.stack([p[0] for p in pairs]).astype(np.float16), np.stack([p[1] for p in pairs]).astype(np.float16)


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of 0..n-1 without fixed points (n >= 2): a random shift of a random order."""
    order = rng.permutation(n)
    shift = int(rng.integers(1, n))
    perm = np.empty(n, np.int64)
    perm[order] = order[(np.arange(n) + shift) % n]
    return perm


def _crop_window(grid: tuple, crop: int, rng: np.random.Generator) -> tuple:
    """Index of a random ``crop`` x ``crop`` window of an (N, D, h, w) stack (everything when 0 or too big)."""
    h, w = int(grid[0]), int(grid[1])
    if crop <= 0 or (crop >= h and crop >= w):
        return (slice(None),)
    ch, cw = min(crop, h), min(crop, w)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return (slice(None), slice(None), slice(y, y + ch), slice(x, x + cw))


def _gather(t, positions):
    """(B, C, h, w) -> (B, C, S) at flat positions (B, S)."""
    flat = t.flatten(2)
    return flat.gather(2, positions[:, None, :].expand(-1, flat.shape[1], -1))


def _train_step(head, optimizer, batch: dict, cfg: DartsTrainConfig, loss_cfg: DartsLossConfig, gen,
                rng: np.random.Generator) -> dict:
    import torch
    import torch.nn.functional as F

    fa, fp = batch["anchor"], batch["pos"]
    ca, cp = head(*fa), head(*fp)
    if loss_cfg.target_dropout > 0:  # the release's featuriser returns dropped-out targets
        fa = tuple(F.dropout2d(f, loss_cfg.target_dropout, training=True) for f in fa)
        fp = tuple(F.dropout2d(f, loss_cfg.target_dropout, training=True) for f in fp)
    b = ca.shape[0]
    hw = ca.shape[2] * ca.shape[3]
    s = loss_cfg.feature_samples ** 2
    pa = torch.randint(0, hw, (b, s), generator=gen).to(ca.device)
    po = torch.randint(0, hw, (b, s), generator=gen).to(ca.device)

    def negatives() -> list:
        out = []
        for _ in range(loss_cfg.neg_samples):
            perm = torch.from_numpy(_derangement(b, rng)).to(ca.device)
            out.append((*(_gather(f[perm], po) for f in fa), _gather(ca[perm], po)))
        return out

    shared = None if loss_cfg.negatives_per_term else negatives()
    samples = {"anchor": (*(_gather(f, pa) for f in fa), _gather(ca, pa)),
               "pos": (*(_gather(f, po) for f in fp), _gather(cp, po)),
               "neg": {t: shared if shared is not None else negatives() for t in TERMS}}
    loss, parts = darts_loss(samples, loss_cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), **parts}


def train_darts(config: DartsTrainConfig) -> dict:
    """Train the head; write ``<out>/darts_head.pt``, ``darts_config.json``, ``losses.json`` and a
    manifest (no ground truth is read). Returns the run summary (also in ``darts_config.json``)."""
    import torch

    from pseudo_labels.core import io as plio
    from pseudo_labels.stages.semantic.features import resolve_device

    if config.steps < 1 or config.batch_size < 2 or config.knn < 1:
        raise PseudoLabelsError("--steps >= 1, --batch-size >= 2 and --knn >= 1 are needed")
    loss_cfg = config.resolved_loss()
    device = resolve_device(config.device)
    records, f_rgb, f_thermal = load_split_features(config.data_root, config.dataset, config.split, config.features)
    if len(records) < 2:
        raise PseudoLabelsError(f"split {config.split}: {len(records)} image(s); DARTS needs at least 2 "
                                "(negatives are other images)")
    out = Path(config.out)
    plio.prepare_output_dir(out, "train-darts", config.parameters(), overwrite=True)
    torch.manual_seed(config.seed)
    neighbours = knn_neighbours(pooled_features(f_rgb, f_thermal, config.knn_modality), config.knn)
    model_cfg = model_preset(config.variant, int(f_rgb.shape[1]), int(f_thermal.shape[1]), width=config.width,
                             heads=config.heads, code_dim=config.code_dim)
    head = build_head(model_cfg).to(device).train()
    threads_before = torch.get_num_threads()
    if device == "cpu":
        from pseudo_labels.stages.semantic.clustering import auto_threads

        torch.set_num_threads(config.threads if config.threads > 0 else auto_threads())
    try:
        log, seconds = _train_loop(head, records, f_rgb, f_thermal, neighbours, config, loss_cfg, device)
    finally:
        torch.set_num_threads(threads_before)
    summary = {"stage": "train-darts", "variant": config.variant, "images": len(records), "steps": config.steps,
               "seconds": round(seconds, 3), "seconds_per_step": round(seconds / config.steps, 5),
               "final_loss": log[-1]["loss"], "grid": list(f_rgb.shape[2:]), "device": device}
    _write_run(out, head, model_cfg, config, summary, log)
    return summary


def _train_loop(head, records, f_rgb, f_thermal, neighbours, config: DartsTrainConfig, loss_cfg: DartsLossConfig,
                device: str):
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
    to_t = lambda a: torch.from_numpy(a.astype(np.float32)).to(device)  # noqa: E731
    log, t0 = [], time.time()
    bar = tqdm(range(1, config.steps + 1), desc="train-darts", disable=not config.progress, leave=False)
    for step in bar:
        idx = rng.choice(len(records), config.batch_size, replace=len(records) < config.batch_size)
        pos = np.array([rng.choice(neighbours[i]) for i in idx])
        ca, cp = _crop_window(f_rgb.shape[2:], config.crop, rng), _crop_window(f_rgb.shape[2:], config.crop, rng)
        batch = {"anchor": (to_t(f_rgb[idx][ca]), to_t(f_thermal[idx][ca])),
                 "pos": (to_t(f_rgb[pos][cp]), to_t(f_thermal[pos][cp]))}
        row = _train_step(head, optimizer, batch, config, loss_cfg, gen, rng)
        if step % config.log_every == 0 or step == config.steps or step == 1:
            log.append({"step": step, **{k: round(v, 6) for k, v in row.items()}})
            bar.set_postfix(loss=f"{row['loss']:.4f}")
    return log, time.time() - t0


def _write_run(out: Path, head, model_cfg: DartsModelConfig, config: DartsTrainConfig, summary: dict,
               log: list) -> None:
    import torch

    from pseudo_labels.core import io as plio

    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    with plio.atomic_path(out / CHECKPOINT_NAME) as tmp:
        torch.save(state, tmp)
    plio.write_json(out / RUN_CONFIG_NAME, {"model": asdict(model_cfg), "train": config.parameters(),
                                            "summary": summary})
    plio.write_json(out / LOSS_LOG_NAME, log)
    plio.write_manifest(out, "train-darts", config.parameters(), uses_ground_truth=False,
                        counts={"images": summary["images"], "steps": summary["steps"]},
                        extra={"summary": summary})


def load_darts_run(run: str | Path, device: str = "cpu") -> tuple:
    """(head in eval mode on ``device``, run config dict) of a ``train-darts`` output folder."""
    import torch

    run = Path(run)
    cfg_path, ckpt = run / RUN_CONFIG_NAME, run / CHECKPOINT_NAME
    for p in (cfg_path, ckpt):
        if not p.is_file():
            raise InputFileError(p, "not found", "give the --out folder of a finished train-darts run")
    from pseudo_labels.core.io import read_json

    info = read_json(cfg_path)
    head = build_head(DartsModelConfig.from_dict(info["model"]))
    try:
        head.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(ckpt, f"does not fit the head in {RUN_CONFIG_NAME} ({type(exc).__name__}: {exc})") from None
    return head.to(device).eval(), info


def fused_codes(head, f_rgb: np.ndarray, f_thermal: np.ndarray, device: str = "cpu",
                batch_size: int = 16) -> np.ndarray:
    """(N, code_dim, h, w) float32 L2-normalised fused codes of (N, D, h, w) feature stacks."""
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(f_rgb), batch_size):
            a = torch.from_numpy(np.asarray(f_rgb[s:s + batch_size], np.float32)).to(device)
            b = torch.from_numpy(np.asarray(f_thermal[s:s + batch_size], np.float32)).to(device)
            out.append(torch.nn.functional.normalize(head(a, b), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def loss_log(run: str | Path) -> list:
    """The JSON loss log of a run."""
    return json.loads((Path(run) / LOSS_LOG_NAME).read_text())
