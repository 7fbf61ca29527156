"""CAUSE-TR cluster probe (the ``cluster_probe`` of CAUSE's ``Cluster`` module), written for this project.

CAUSE saves its ``Cluster`` module as ``cluster_tr.pth`` with the parameters
``cluster_probe`` (n_classes x reduced_dim, 27 x 90 for Cityscapes) and ``codebook``
(num_codebook x dim; at inference replaced by ``modular.npy``, so not needed here).
A segment feature is scored against the probe by cosine similarity; CAUSE's inference
(``forward_centroid(..., crf=True)``) returns ``log_softmax(alpha * cos)`` with alpha 3.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: CAUSE's temperature of the cluster log-probabilities at inference
ALPHA = 3.0


class ClusterProbe(nn.Module):
    """``cluster_probe`` (n_classes, reduced_dim) as an ``nn.Parameter`` under CAUSE's key name."""

    def __init__(self, n_classes: int = 27, reduced_dim: int = 90):
        super().__init__()
        self.cluster_probe = nn.Parameter(torch.zeros(n_classes, reduced_dim))

    @property
    def n_classes(self) -> int:
        return int(self.cluster_probe.shape[0])

    @property
    def reduced_dim(self) -> int:
        return int(self.cluster_probe.shape[1])

    def cosine(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, reduced_dim, h, w) segment features -> (B, n_classes, h, w) cosine similarities."""
        f = F.normalize(feat, dim=1)
        c = F.normalize(self.cluster_probe.to(feat.dtype), dim=1)
        return torch.einsum("bchw,nc->bnhw", f, c)

    def forward(self, feat: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
        """(B, reduced_dim, h, w) -> (B, n_classes, h, w) log-probabilities ``log_softmax(alpha * cos)``."""
        return torch.log_softmax(self.cosine(feat) * alpha, dim=1)
