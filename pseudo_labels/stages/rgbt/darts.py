"""DARTS fusion head: RGB + thermal frozen features -> one fused code per patch, trained with
STEGO-style feature-correlation losses within and across the two modalities.

Our implementation of the description in "Distilling Auxiliary RGB-T Features for Unsupervised
Semantic Segmentation" (DARTS; no code is public): frozen self-supervised ViT features of both
modalities, a fusion module with self- and cross-attention inside one dual-modal ViT block,
then a linear fusion, trained with intra-modal (RGB-RGB, T-T) and inter-modal (RGB-T)
correlation losses. The loss arithmetic is STEGO's (Hamilton et al. 2022, ``ContrastiveCorrelationLoss``):
for two images x, y and S sampled patches of each, with F the frozen features and C the code,

    fd = corr(F(x), F(y))   (S x S cosine similarities; no gradient)
    cd = corr(C(x), C(y))
    L  = mean( -clamp(cd, min=0) * (fd - shift) )

over three kinds of pairs: the image with itself (``pos_intra``), with one of its K nearest
neighbours in the training set (``pos_inter``, the KNN positives) and with a random other
image of the batch (``neg_inter``), weighted and shifted per kind.

Shapes: features (B, D, h, w) float32 (D may differ per modality, grids must match); tokens
(B, h*w, width); code (B, code_dim, h, w). Ids: modality 0 = rgb, 1 = thermal.

Choices the description leaves open, and ours (also in ``reports/rgbt_darts.md``):

1. Block layout: pre-norm; per modality m: ``x_m += SelfAttn_m(LN(x_m))``, then
   ``x_m += CrossAttn_m(LN(x_m), LN(x_other))`` (queries own modality, keys/values the other,
   both modalities updated from the same pre-cross-attention states), then ``x_m += MLP_m(LN(x_m))``.
   Separate weights per modality; one block (depth 1); width 64, 2 heads, MLP ratio 2 (small enough
   for a shared CPU; ``--width`` / ``--heads`` change it).
2. Inputs: per-modality linear projection D -> width plus a learned modality embedding; no
   positional embedding (the frozen features carry position; attention is over all patches).
3. Linear fusion: ``code = W [x_rgb ; x_thermal] + b`` (2 width -> code_dim = 64; STEGO uses 70).
4. What each loss correlates: every term trains the fused code ``cd = corr(code(x), code(y))``;
   the targets differ: RGB-RGB ``fd = corr(F_rgb(x), F_rgb(y))``, T-T ``fd = corr(F_t(x), F_t(y))``,
   RGB-T ``fd = (corr(F_rgb(x), F_t(y)) + corr(F_t(x), F_rgb(y))) / 2`` (cross-modal agreement).
   Term weights ``w_rgb``, ``w_thermal``, ``w_cross`` (default 1, 1, 1).
5. Target normalisation: STEGO's pointwise centring (each row of fd minus its mean), then, unlike
   STEGO, division by the std of fd over the batch (``standardize=True``), so that shifts are in
   units of that std and do not depend on the backbone's similarity scale (the hand-made
   ``builtin`` features have cosines near 1 everywhere; STEGO's shifts are tuned to DINO ViT-S/8).
   Shifts default to STEGO's Cityscapes values (pos_intra 0.25, pos_inter 0.20, neg_inter 0.25),
   weights likewise (0.46, 0.18, 0.72); zero clamp on cd as STEGO (``zero_clamp: True``).
6. Sampling: ``feature_samples``**2 = 121 patch positions per image, drawn uniformly at random
   from the patch grid each step (STEGO samples continuous coordinates with bilinear
   ``grid_sample``; we take patch centres). One negative image per sample (STEGO: 5).
7. KNN positives: K = 7 (STEGO ``num_neighbors``) nearest training images by cosine similarity
   of the mean-pooled, L2-normalised features; ``knn_modality`` both (default: concatenation of
   the pooled RGB and thermal vectors), rgb or thermal. Self excluded.
8. Optimiser: Adam, lr 5e-4 (STEGO), batch 8 images, 2D dropout 0.1 on the frozen input features
   (STEGO), seeded (torch + numpy); steps given by the caller. ``crop`` > 0 trains on random
   crop x crop windows of the patch grid (STEGO trains on image crops; cheaper attention), the
   labels are then made on the whole grid.
9. ``rgb_reliability`` (off by default, ours): the RGB-RGB and RGB-T terms of each image are
   weighted by the agreement of its RGB and thermal self-correlations (:func:`rgb_reliability`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.validate import validate_config

CHECKPOINT_NAME = "darts_head.pt"
RUN_CONFIG_NAME = "darts_config.json"
LOSS_LOG_NAME = "losses.json"
KNN_MODALITIES = ("both", "rgb", "thermal")


@dataclass(frozen=True)
class DartsLossConfig:
    """Weights and shifts of the correlation losses (see the module docstring, choices 4-6)."""

    w_rgb: float = 1.0
    w_thermal: float = 1.0
    w_cross: float = 1.0
    pos_intra_weight: float = 0.46
    pos_inter_weight: float = 0.18
    neg_inter_weight: float = 0.72
    pos_intra_shift: float = 0.25
    pos_inter_shift: float = 0.20
    neg_inter_shift: float = 0.25
    feature_samples: int = 11
    zero_clamp: bool = True
    standardize: bool = True
    rgb_reliability: bool = False

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


@dataclass(frozen=True)
class DartsModelConfig:
    """Sizes of the fusion head (choices 1-3)."""

    dim_rgb: int
    dim_thermal: int
    width: int = 64
    heads: int = 2
    mlp_ratio: float = 2.0
    code_dim: int = 64
    input_dropout: float = 0.1

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


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
            self.proj = nn.ModuleList([nn.Linear(c.dim_rgb, c.width), nn.Linear(c.dim_thermal, c.width)])
            self.modality_embed = nn.Parameter(torch.zeros(2, c.width))
            nn.init.normal_(self.modality_embed, std=0.02)
            self.drop = nn.Dropout2d(c.input_dropout)
            self.block = DualModalBlock(c.width, c.heads, c.mlp_ratio)
            self.norm = nn.LayerNorm(2 * c.width)
            self.fuse = nn.Linear(2 * c.width, c.code_dim)

        def forward(self, f_rgb, f_thermal):
            b, _, h, w = f_rgb.shape
            if f_thermal.shape[-2:] != (h, w):
                raise PseudoLabelsError(f"RGB grid {(h, w)} != thermal grid {tuple(f_thermal.shape[-2:])}")
            xs = [self.proj[m](self.drop(f).flatten(2).transpose(1, 2)) + self.modality_embed[m]
                  for m, f in enumerate((f_rgb, f_thermal))]
            xs = self.block(xs)
            code = self.fuse(self.norm(torch.cat(xs, dim=-1)))  # (B, h*w, code_dim)
            return code.transpose(1, 2).reshape(b, -1, h, w)

    return DartsHead(cfg)


# --------------------------------------------------------------------------- losses
def _corr(a, b):
    """(B, D, S) x (B, D, S) -> (B, S, S) cosine similarities."""
    import torch.nn.functional as F

    return (F.normalize(a, dim=1, eps=1e-10).transpose(1, 2) @ F.normalize(b, dim=1, eps=1e-10))


def target_correlation(fx, fy, standardize: bool = True):
    """STEGO's pointwise-centred feature correlation of two (B, D, S) samples, (B, S, S);
    with ``standardize`` divided by its std over the batch (choice 5). No gradient."""
    import torch

    with torch.no_grad():
        fd = _corr(fx, fy)
        fd = fd - fd.mean(dim=2, keepdim=True)
        if standardize:
            fd = fd / fd.std().clamp_min(1e-6)
    return fd


def correlation_term(fd, cx, cy, shift: float, zero_clamp: bool = True, weights=None):
    """STEGO's ``-clamp(cd) * (fd - shift)`` averaged: fd (B, S, S) target, cx / cy (B, K, S) codes;
    ``weights`` (B,) optional per-image weights (mean over images of weight x term)."""
    cd = _corr(cx, cy)
    cd = cd.clamp(min=0.0) if zero_clamp else cd
    per_image = -(cd * (fd - shift)).mean(dim=(1, 2))
    return per_image.mean() if weights is None else (per_image * weights).mean()


def rgb_reliability(fr, ft):
    """(B,) per-image weight of the RGB targets: the Pearson correlation, clamped to [0, 1], of the
    image's RGB and thermal self-correlation matrices (choice 9). Low where RGB disagrees with
    thermal about which patches belong together (dark, noisy night frames). No gradient."""
    import torch

    with torch.no_grad():
        a, b = _corr(fr, fr).flatten(1), _corr(ft, ft).flatten(1)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)
    return r.clamp(0.0, 1.0)


def darts_loss(feats: dict, codes: dict, cfg: DartsLossConfig) -> tuple:
    """Total loss and its parts for one batch.

    ``feats[kind] = (f_rgb, f_thermal)`` sampled frozen features (B, D, S) and ``codes[kind]``
    the sampled fused code (B, K, S), for kind in ``anchor``, ``pos`` (KNN neighbours),
    ``neg`` (random other images). Returns (loss tensor, {part name: float}).
    """
    pairs = {"pos_intra": ("anchor", cfg.pos_intra_weight, cfg.pos_intra_shift),
             "pos_inter": ("pos", cfg.pos_inter_weight, cfg.pos_inter_shift),
             "neg_inter": ("neg", cfg.neg_inter_weight, cfg.neg_inter_shift)}
    fr, ft = feats["anchor"]
    total = 0.0
    parts: dict[str, float] = {}
    reliability = rgb_reliability(fr, ft) if cfg.rgb_reliability else None
    if reliability is not None:
        parts["rgb_reliability"] = float(reliability.mean())
    for pair, (kind, weight, shift) in pairs.items():
        gr, gt = feats[kind]
        targets = {"rgb": (cfg.w_rgb, target_correlation(fr, gr, cfg.standardize)),
                   "thermal": (cfg.w_thermal, target_correlation(ft, gt, cfg.standardize))}
        if cfg.w_cross:
            cross = (target_correlation(fr, gt, cfg.standardize) + target_correlation(ft, gr, cfg.standardize)) / 2
            targets["cross"] = (cfg.w_cross, cross)
        for name, (w_mod, fd) in targets.items():
            if not w_mod:
                continue
            w_img = reliability if name in ("rgb", "cross") else None
            term = correlation_term(fd, codes["anchor"], codes[kind], shift, cfg.zero_clamp, w_img)
            total = total + weight * w_mod * term
            parts[f"{name}_{pair}"] = float(term.detach())
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
    (``features``: root written by ``extract-rgbt-features``) and write the run to ``out``."""

    data_root: str
    features: str
    out: str
    dataset: str = "mfnet"
    split: str = "train"
    steps: int = 300
    batch_size: int = 8
    lr: float = 5e-4
    knn: int = 7
    knn_modality: str = "both"
    seed: int = 0
    device: str = "cpu"
    width: int = 64
    heads: int = 2
    code_dim: int = 64
    threads: int = 0  # CPU threads of torch (0: cores not busy, see clustering.auto_threads)
    crop: int = 0  # train on random crop x crop windows of the patch grid (0: the whole grid)
    loss: DartsLossConfig = field(default_factory=DartsLossConfig)
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)

    def parameters(self) -> dict:
        p = asdict(self)
        p.pop("progress")
        p.pop("threads")
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


def _train_step(head, optimizer, batch: dict, cfg: DartsTrainConfig, gen, rng: np.random.Generator) -> dict:
    import torch

    fa, fp = batch["anchor"], batch["pos"]
    ca, cp = head(*fa), head(*fp)
    b = ca.shape[0]
    hw = ca.shape[2] * ca.shape[3]
    s = cfg.loss.feature_samples ** 2
    pa = torch.randint(0, hw, (b, s), generator=gen).to(ca.device)
    po = torch.randint(0, hw, (b, s), generator=gen).to(ca.device)
    perm = torch.from_numpy(_derangement(b, rng)).to(ca.device)
    feats = {"anchor": tuple(_gather(f, pa) for f in fa), "pos": tuple(_gather(f, po) for f in fp),
             "neg": tuple(_gather(f[perm], po) for f in fa)}
    codes = {"anchor": _gather(ca, pa), "pos": _gather(cp, po), "neg": _gather(ca[perm], po)}
    loss, parts = darts_loss(feats, codes, cfg.loss)
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
    device = resolve_device(config.device)
    records, f_rgb, f_thermal = load_split_features(config.data_root, config.dataset, config.split, config.features)
    if len(records) < 2:
        raise PseudoLabelsError(f"split {config.split}: {len(records)} image(s); DARTS needs at least 2 "
                                "(negatives are other images)")
    out = Path(config.out)
    plio.prepare_output_dir(out, "train-darts", config.parameters(), overwrite=True)
    torch.manual_seed(config.seed)
    neighbours = knn_neighbours(pooled_features(f_rgb, f_thermal, config.knn_modality), config.knn)
    model_cfg = DartsModelConfig(int(f_rgb.shape[1]), int(f_thermal.shape[1]), config.width, config.heads,
                                 code_dim=config.code_dim)
    head = build_head(model_cfg).to(device).train()
    threads_before = torch.get_num_threads()
    if device == "cpu":
        from pseudo_labels.stages.semantic.clustering import auto_threads

        torch.set_num_threads(config.threads if config.threads > 0 else auto_threads())
    try:
        log, seconds = _train_loop(head, records, f_rgb, f_thermal, neighbours, config, device)
    finally:
        torch.set_num_threads(threads_before)
    summary = {"stage": "train-darts", "images": len(records), "steps": config.steps, "seconds": round(seconds, 3),
               "seconds_per_step": round(seconds / config.steps, 5), "final_loss": log[-1]["loss"],
               "grid": list(f_rgb.shape[2:]), "device": device}
    _write_run(out, head, model_cfg, config, summary, log)
    return summary


def _train_loop(head, records, f_rgb, f_thermal, neighbours, config: DartsTrainConfig, device: str):
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
        row = _train_step(head, optimizer, batch, config, gen, rng)
        if step % config.log_every == 0 or step == config.steps or step == 1:
            log.append({"step": step, **{k: round(v, 6) for k, v in row.items()}})
            bar.set_postfix(loss=f"{row['loss']:.4f}")
    return log, time.time() - t0


def _write_run(out: Path, head, model_cfg: DartsModelConfig, config: DartsTrainConfig, summary: dict,
               log: list) -> None:
    from pseudo_labels.core import io as plio

    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    plio.save_checkpoint(out / CHECKPOINT_NAME, state)  # tensors only; metadata in RUN_CONFIG_NAME (JSON)
    plio.write_json(out / RUN_CONFIG_NAME, {"model": asdict(model_cfg), "train": config.parameters(),
                                            "summary": summary})
    plio.write_json(out / LOSS_LOG_NAME, log)
    plio.write_manifest(out, "train-darts", config.parameters(), uses_ground_truth=False,
                        counts={"images": summary["images"], "steps": summary["steps"]},
                        extra={"summary": summary})


def load_darts_run(run: str | Path, device: str = "cpu") -> tuple:
    """(head in eval mode on ``device``, run config dict) of a ``train-darts`` output folder."""
    run = Path(run)
    cfg_path, ckpt = run / RUN_CONFIG_NAME, run / CHECKPOINT_NAME
    for p in (cfg_path, ckpt):
        if not p.is_file():
            raise InputFileError(p, "not found", "give the --out folder of a finished train-darts run")
    from pseudo_labels.core.io import read_json

    info = read_json(cfg_path)
    head = build_head(DartsModelConfig(**info["model"]))
    from pseudo_labels.core.io import load_checkpoint as load_tensors_only

    state = load_tensors_only(ckpt, "DARTS checkpoint")
    try:
        head.load_state_dict(state)
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
