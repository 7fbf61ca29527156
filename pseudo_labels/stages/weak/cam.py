"""CAM classifier on frozen self-supervised ViT patch features (trainable patch-level head).

Model: features F (B, D, h, w) from the frozen backbone (cached per image) ->
head (1x1 conv, or 1x1 conv - ReLU - 1x1 conv when ``hidden > 0``) -> class maps
S (B, C, h, w) at patch resolution -> global average pooling -> logits (B, C).
Loss: multi-label soft margin on the image tags, plus ``deal_weight`` x DEAL
(:mod:`pseudo_labels.stages.weak.deal`) on S against the depth edges.

CAMs for masks are ``relu(S_c) / max relu(S_c)`` per class, in [0, 1], zero for
classes not in the image's tags.

Training is seeded (head init from ``torch.manual_seed(seed)``, epoch order from
``numpy.random.default_rng([seed, epoch])``) so a resumed run equals an uninterrupted one.
Checkpoint ``RUN_DIR/checkpoint.pt``: head state, optimiser state, epoch (last finished,
1-based), config, history, plus caller metadata (``meta``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.weak.deal import DEALLoss
from pseudo_labels.core.validate import validate_config

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class CamHeadConfig:
    """Hyper-parameters of the CAM head and its training loop (all stored in the checkpoint)."""

    num_classes: int
    in_dim: int
    epochs: int = defaults.CAM_EPOCHS
    lr: float = defaults.CAM_LR
    weight_decay: float = defaults.CAM_WEIGHT_DECAY
    batch_size: int = defaults.CAM_BATCH_SIZE
    hidden: int = defaults.CAM_HIDDEN
    deal_weight: float = 0.0
    deal_mu: float = defaults.DEAL_MU
    pooling: str = defaults.CAM_POOLING
    seed: int = defaults.SEED

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """Fields that must match to resume a run (everything but ``epochs``)."""
        d = self.to_dict()
        d.pop("epochs")
        return d


class CamHead(nn.Module):
    """Patch-level head: (B, D, h, w) features -> (B, C, h, w) class maps."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.Conv2d(in_dim, hidden, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, num_classes, 1, bias=False))
        else:
            # no bias: a class score must come from the patch features, not a constant offset
            self.net = nn.Conv2d(in_dim, num_classes, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


POOLINGS = ("gap", "lse")
LSE_R = 5.0


def pool_logits(cams: torch.Tensor, pooling: str = "gap") -> torch.Tensor:
    """(B, C, h, w) -> (B, C) logits: global average (``gap``) or log-mean-exp with r = 5 (``lse``,
    a smooth maximum: ``log(mean exp(r S)) / r``)."""
    if pooling == "gap":
        return cams.mean(dim=(-2, -1))
    if pooling == "lse":
        flat = cams.flatten(2) * LSE_R
        return (torch.logsumexp(flat, dim=2) - math.log(flat.shape[2])) / LSE_R
    raise PseudoLabelsError(f"unknown pooling {pooling!r} (choose {', '.join(POOLINGS)})")


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device (the feature stage's check: error when CUDA is absent)."""
    from pseudo_labels.stages.semantic.features import resolve_device as checked_device

    return torch.device(checked_device(device))


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, head: CamHead, optimizer: torch.optim.Optimizer | None,
                    epoch: int, config: CamHeadConfig, history: list, meta: Mapping[str, Any] | None = None) -> None:
    """Write the checkpoint atomically; tensors + plain values only (loads with ``weights_only=True``)."""
    from pseudo_labels.core import io as plio

    state = {
        "format": "pseudo_labels.cam/1",
        "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "config": plio.plain_values(config.to_dict()),
        "history": plio.plain_values(list(history)),
        "meta": plio.plain_values(dict(meta or {})),
    }
    plio.save_checkpoint(path, state)


def load_checkpoint(run_dir_or_file: str | os.PathLike) -> dict:
    """Read ``RUN_DIR/checkpoint.pt`` (or a checkpoint file) as a dict."""
    p = Path(run_dir_or_file)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise PseudoLabelsError(f"{p}: no CAM checkpoint (train one with: pseudo-labels train-cam --out RUN_DIR)")
    from pseudo_labels.core.io import load_checkpoint as load_tensors_only

    state = load_tensors_only(p, "CAM checkpoint")
    if not isinstance(state, dict) or "head" not in state or "config" not in state:
        raise PseudoLabelsError(f"{p}: not a CAM checkpoint of this tool")
    return state


def head_from_checkpoint(state: Mapping[str, Any]) -> tuple[CamHead, CamHeadConfig]:
    """Rebuild the trained head (eval mode, CPU) and its config from a checkpoint dict."""
    config = CamHeadConfig(**state["config"])
    head = CamHead(config.in_dim, config.num_classes, config.hidden)
    head.load_state_dict(state["head"])
    head.pooling = config.pooling
    head.eval()
    return head, config


# --------------------------------------------------------------------------- training
def _resume(ckpt_path: Path | None, head: CamHead, opt: torch.optim.Optimizer, config: CamHeadConfig,
            resume: bool, log: Callable[[str], None] | None) -> tuple[int, list[dict]]:
    """Load an existing checkpoint with the same config identity into ``head`` and ``opt``;
    returns (epochs already done, their history), (0, []) without a checkpoint."""
    if ckpt_path is None or not ckpt_path.exists():
        return 0, []
    if not resume:
        raise PseudoLabelsError(f"{ckpt_path}: a checkpoint exists (use --restart to overwrite it, or another --out)")
    state = load_checkpoint(ckpt_path)
    old = CamHeadConfig(**state["config"])
    if old.identity() != config.identity():
        diff = {k: (old.identity()[k], v) for k, v in config.identity().items() if old.identity().get(k) != v}
        raise PseudoLabelsError(
            f"{ckpt_path}: was trained with other settings {diff} (use --restart, or another --out)")
    head.load_state_dict(state["head"])
    if state.get("optimizer"):
        opt.load_state_dict(state["optimizer"])
    start = int(state["epoch"])
    if log and start:
        log(f"resuming from epoch {start} ({ckpt_path})")
    return start, list(state.get("history", []))


def _train_epoch(head: CamHead, opt: torch.optim.Optimizer, deal: DEALLoss, config: CamHeadConfig, epoch: int,
                 feats_t: torch.Tensor, tags_t: torch.Tensor, edges_t: torch.Tensor | None,
                 dev: torch.device) -> dict:
    """One epoch in the seeded order ``default_rng([seed, epoch])``; returns the mean
    ``{loss, cls_loss, deal_loss}`` over its batches."""
    n = feats_t.shape[0]
    bs = max(1, int(config.batch_size))
    head.train()
    order = np.random.default_rng([config.seed, epoch]).permutation(n)
    sums = {"loss": 0.0, "cls_loss": 0.0, "deal_loss": 0.0}
    batches = 0
    for b0 in range(0, n, bs):
        idx = torch.from_numpy(order[b0: b0 + bs])
        x = feats_t[idx].to(dev, torch.float32)
        y = tags_t[idx].to(dev)
        cams = head(x)
        cls = F.multilabel_soft_margin_loss(pool_logits(cams, config.pooling), y)
        loss = cls
        dl = torch.zeros((), device=dev)
        if config.deal_weight > 0:
            dl = deal(cams, y, depth_edges=edges_t[idx].to(dev))
            loss = cls + config.deal_weight * dl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums["loss"] += float(loss.detach())
        sums["cls_loss"] += float(cls.detach())
        sums["deal_loss"] += float(dl.detach())
        batches += 1
    return {k: v / max(batches, 1) for k, v in sums.items()}


def train_cam_head(
    features: np.ndarray,
    tags: np.ndarray,
    config: CamHeadConfig,
    *,
    depth_edges: np.ndarray | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    device: str = "cpu",
    meta: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[CamHead, list[dict]]:
    """Train the head; returns (head in eval mode on CPU, history).

    ``features``: (N, D, h, w) float16/float32 cached backbone features.
    ``tags``: (N, C) float32 multi-hot. ``depth_edges``: (N, 1, h, w) float32 sharpened
    depth edge activations (:func:`pseudo_labels.stages.weak.deal.depth_edge_activations`),
    needed when ``config.deal_weight > 0``.
    With ``run_dir``, a checkpoint is written after every epoch and, when ``resume``, an
    existing checkpoint with the same config identity is continued up to ``config.epochs``.
    History: one dict per epoch ``{epoch, loss, cls_loss, deal_loss}`` (means over batches).
    """
    n = features.shape[0]
    if tags.shape != (n, config.num_classes):
        raise ValueError(f"tags {tags.shape} do not match {n} images x {config.num_classes} classes")
    if features.shape[1] != config.in_dim:
        raise ValueError(f"features have D={features.shape[1]}, config says {config.in_dim}")
    if config.deal_weight > 0 and depth_edges is None:
        raise PseudoLabelsError("DEAL weight > 0 needs depth maps (give --depth-subdir)")
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    head = CamHead(config.in_dim, config.num_classes, config.hidden).to(dev)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    deal = DEALLoss(mu=config.deal_mu)
    ckpt_path = Path(run_dir) / CHECKPOINT_NAME if run_dir is not None else None
    start, history = _resume(ckpt_path, head, opt, config, resume, log)
    feats_t = torch.from_numpy(np.ascontiguousarray(features))
    tags_t = torch.from_numpy(np.ascontiguousarray(tags, dtype=np.float32))
    edges_t = None if depth_edges is None else torch.from_numpy(np.ascontiguousarray(depth_edges, dtype=np.float32))
    for epoch in range(start, config.epochs):
        rec = {"epoch": epoch + 1, **_train_epoch(head, opt, deal, config, epoch, feats_t, tags_t, edges_t, dev)}
        history.append(rec)
        if log:
            log(f"epoch {epoch + 1}/{config.epochs}: loss {rec['loss']:.4f} (cls {rec['cls_loss']:.4f}, "
                f"deal {rec['deal_loss']:.4f})")
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, head, opt, epoch + 1, config, history, meta)
    head = head.cpu().eval()
    head.pooling = config.pooling
    return head, history


# --------------------------------------------------------------------------- inference
@torch.no_grad()
def compute_cams(head: CamHead, features: np.ndarray, pooling: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw class maps and logits of one image.

    ``features``: (D, h, w) float. Returns (cams (C, h, w) float32, logits (C,) float32).
    ``pooling``: default the head's training pooling (``head.pooling``).
    """
    pooling = pooling or getattr(head, "pooling", "gap")
    p = next(head.parameters())
    x = torch.from_numpy(np.asarray(features, np.float32))[None].to(p.device)
    s = head(x)
    return s[0].cpu().numpy(), pool_logits(s, pooling)[0].cpu().numpy()


def normalize_cams(cams: np.ndarray, tags: np.ndarray | None = None) -> np.ndarray:
    """``relu(S_c) / max relu(S_c)`` per class and per image -> (C, h, w) float32 in [0, 1].

    The standard CAM normalisation (CAM, SEAM, WeakTr, ...): negative evidence is cut by the
    ReLU and each class map of one image is divided by its own maximum, so every tagged class
    peaks at 1 where the classifier is most sure of it, whatever its logit scale. Classes with
    ``tags[c] == 0`` (when given) and classes without positive activation are 0, so that only
    the image's tags compete in :func:`pseudo_labels.stages.weak.masks.cams_to_labels`.
    Normalising at the patch grid and then upsampling bilinearly (as
    :func:`pseudo_labels.stages.weak.masks.cam_scores_for_image` does) equals
    upsampling first up to interpolation (untagged classes stay 0, values stay in [0, 1]; a
    one-patch peak can come out slightly below 1, as bilinear samples fall between patch centres).

    Note: the normalisation makes a CAM that carries no localisation (a class present in every
    training image, whose map the classifier can keep flat) look as confident everywhere as a
    sharp one; such tags give meaningless masks. Tags must vary between images.
    """
    a = np.maximum(np.asarray(cams, np.float32), 0.0)
    mx = a.reshape(a.shape[0], -1).max(axis=1)
    out = np.where(mx[:, None, None] > 0, a / np.maximum(mx, 1e-12)[:, None, None], 0.0).astype(np.float32)
    if tags is not None:
        out *= (np.asarray(tags) > 0.5).astype(np.float32)[:, None, None]
    return out


def predicted_tags(logits: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(C,) multi-hot from logits: sigmoid(logit) > threshold (at least the top class)."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    out = (p > threshold).astype(np.float32)
    if out.sum() == 0:
        out[int(np.argmax(p))] = 1.0
    return out
