"""CAUSE-TR segmentation head (Segment_TR), written for this project.

Module and parameter names follow the CAUSE repository (ByungKwanLee/
Causal-Unsupervised-Segmentation, ``modules/segment.py`` / ``modules/segment_module.py``)
so that its ``segment_tr.pth`` loads with ``load_state_dict(strict=True)``:

- ``head`` / ``head_ema``: a one-layer transformer decoder. The queries are the backbone
  tokens vector-quantised to the modularity codebook (nearest codeword by cosine), with a
  learned position embedding ``query_pos`` (num_queries x dim); self-attention, then
  cross-attention to the backbone tokens, then a ReLU MLP, each with a post-LayerNorm;
  the result is added to the backbone tokens and reduced to ``reduced_dim`` (90) by
  ``f1`` (1x1 conv) + ``f2`` (1x1 conv, ReLU, 1x1 conv).
- ``projection_head`` / ``projection_head_ema``: 1x1 conv ``f`` to ``projection_dim``
  (training only); ``linear``: 1x1 conv ``f`` to ``n_classes`` (linear probe).

The codebook is not in ``segment_tr.pth``: CAUSE stores it as
``CAUSE/<dataset>/modularity/<backbone>/<num_codebook>/modular.npy`` and assigns it to
``head.codebook`` and ``head_ema.codebook``; here it is a non-persistent buffer set with
:meth:`SegmentTR.set_codebook`. Inference uses ``head_ema`` (as CAUSE's test scripts).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def tokens_to_map(x: torch.Tensor) -> torch.Tensor:
    """(B, P, D) tokens of a square grid -> (B, D, g, g), g = sqrt(P) (row-major patches)."""
    b, p, d = x.shape
    g = int(round(math.sqrt(p)))
    if g * g != p:
        raise ValueError(f"{p} tokens do not form a square grid")
    return x.transpose(1, 2).reshape(b, d, g, g)


def quantize(feat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Replace each token (B, P, D) by its nearest codeword by cosine similarity."""
    sim = F.normalize(feat, dim=-1) @ F.normalize(codebook, dim=-1).t()
    return codebook[sim.argmax(dim=-1)]


class TRDecoder(nn.Module):
    """One decoder layer + reduction to ``reduced_dim`` (names as CAUSE's ``TRDecoder``)."""

    def __init__(self, dim: int, reduced_dim: int, hidden_dim: int = 2048, nhead: int = 1, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.f1 = nn.Conv2d(dim, reduced_dim, 1)
        self.f2 = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, reduced_dim, 1))

    def forward(self, query: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """query, memory (B, P, D), pos (P, D) -> (B, reduced_dim, g, g)."""
        q = query + pos
        x = self.norm1(query + self.dropout1(self.self_attn(q, q, query, need_weights=False)[0]))
        x = self.norm2(x + self.dropout2(self.multihead_attn(x + pos, memory, memory, need_weights=False)[0]))
        x = x + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        x = tokens_to_map(memory + self.norm3(x))
        return self.f1(x) + self.f2(x)


class Decoder(nn.Module):
    """Codebook-quantised queries + :class:`TRDecoder` (names as CAUSE's ``Decoder``)."""

    def __init__(self, dim: int, reduced_dim: int, num_queries: int, hidden_dim: int = 2048):
        super().__init__()
        self.query_pos = nn.Parameter(torch.randn(num_queries, dim))
        self.tr = TRDecoder(dim, reduced_dim, hidden_dim)
        self.register_buffer("codebook", torch.zeros(0, dim), persistent=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, P, D) backbone tokens -> (B, reduced_dim, g, g)."""
        if self.codebook.shape[0] == 0:
            raise RuntimeError("CAUSE head used without a codebook (set_codebook)")
        query = quantize(feat, self.codebook.to(feat.dtype))
        return self.tr(query, feat, self.query_pos.to(feat.dtype))


class ProjectionSegment(nn.Module):
    """1x1 convolution ``f`` (names as CAUSE's ``ProjectionSegment``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.f = nn.Conv2d(in_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class SegmentTR(nn.Module):
    """CAUSE Segment_TR: student and EMA decoder heads, projection heads, linear probe."""

    def __init__(self, dim: int = 768, reduced_dim: int = 90, num_queries: int = 23 * 23,
                 projection_dim: int = 2048, n_classes: int = 27, hidden_dim: int = 2048):
        super().__init__()
        self.dim, self.reduced_dim, self.num_queries = dim, reduced_dim, num_queries
        self.crop_grid = int(round(math.sqrt(num_queries)))
        self.dropout = nn.Dropout(p=0.1)
        self.head = Decoder(dim, reduced_dim, num_queries, hidden_dim)
        self.projection_head = ProjectionSegment(reduced_dim, projection_dim)
        self.head_ema = Decoder(dim, reduced_dim, num_queries, hidden_dim)
        self.projection_head_ema = ProjectionSegment(reduced_dim, projection_dim)
        self.linear = ProjectionSegment(reduced_dim, n_classes)

    def set_codebook(self, codebook: torch.Tensor | np.ndarray) -> None:
        """Set the (num_codebook, dim) modularity codebook of both heads."""
        cb = torch.as_tensor(np.asarray(codebook, np.float32) if isinstance(codebook, np.ndarray) else codebook)
        if cb.ndim != 2 or cb.shape[1] != self.dim:
            raise ValueError(f"codebook must be (n, {self.dim}), got {tuple(cb.shape)}")
        cb = cb.float().to(self.head.query_pos.device)
        self.head.codebook = cb
        self.head_ema.codebook = cb

    def forward_ema(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, num_queries, dim) patch tokens -> (B, reduced_dim, g, g) EMA head features."""
        return self.head_ema(feat)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.forward_ema(feat)


def config_from_state_dict(state: dict) -> dict:
    """Constructor arguments of :class:`SegmentTR` read from a state dict's shapes."""
    qp = state["head_ema.query_pos"]
    return dict(
        dim=int(qp.shape[1]),
        num_queries=int(qp.shape[0]),
        reduced_dim=int(state["head_ema.tr.f1.weight"].shape[0]),
        hidden_dim=int(state["head_ema.tr.linear1.weight"].shape[0]),
        projection_dim=int(state["projection_head_ema.f.weight"].shape[0]),
        n_classes=int(state["linear.f.weight"].shape[0]),
    )


def find_codebook(head_weights: str | os.PathLike) -> Path | None:
    """The modularity codebook belonging to a CAUSE ``segment_tr.pth``, if it can be found.

    Looks for ``modular.npy`` next to the head file, then in CAUSE's layout:
    ``CAUSE/<dataset>/<backbone>/<n>/segment_tr.pth`` ->
    ``CAUSE/<dataset>/modularity/<backbone>/<n>/modular.npy``.
    """
    p = Path(head_weights)
    candidates = [p.parent / "modular.npy"]
    if len(p.parts) >= 4:
        n, backbone, dataset_dir = p.parent.name, p.parent.parent.name, p.parent.parent.parent
        candidates.append(dataset_dir / "modularity" / backbone / n / "modular.npy")
    return next((c for c in candidates if c.is_file()), None)
