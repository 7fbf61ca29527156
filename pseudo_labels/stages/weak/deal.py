"""DEAL: Depth Edge Alignment Loss (Schmidt, Belagiannis, Nalpantidis 2025, arXiv 2509.17702).

Written from the paper's definition:

1. the depth map D is resampled (bicubic) to the CAM resolution (h, w);
2. edge maps: Sobel gradient magnitude of every class CAM a_k and of the depth d;
3. each edge map is scaled to (0, 1) -- here per map (per image, per class) by min-max and an
   affine squeeze into ``[eps, 1 - eps]`` (eps = 1e-4) so the logit is finite:
   ``eps + (1 - 2 eps) (g - min) / (max - min + 1e-8)`` (a squeeze, not a clamp, so flat
   regions still receive gradient);
4. sharpening: ``x' = tanh(mu + logit(x))`` with mu = 2.5 (:data:`pseudo_labels.core.defaults.DEAL_MU`),
   so clear edges go to ~+1 and flat areas to ~-1 (the sign flips at x = sigmoid(-mu) ~ 0.076);
5. ``L = -1/(h w) sum_ij  (1 / sum_k y_k) sum_k y_k a'_kij d'_ij``  (y = image tags),
   averaged over the images of the batch (images without tags contribute 0).

Minimising L makes CAM edges coincide with depth edges and CAMs flat where depth is flat.
Sobel uses replicate padding (no artificial border edges); the magnitude is
``sqrt(gx^2 + gy^2 + 1e-12)`` (finite gradient at zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pseudo_labels.core.defaults import DEAL_MU

#: clamp for edge maps scaled to (0, 1) before the logit
DEAL_EPS = 1e-4

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = _SOBEL_X.t().contiguous()


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of every channel: (B, K, h, w) -> (B, K, h, w), same dtype.

    3x3 Sobel (not divided by 8), replicate padding, ``sqrt(gx^2 + gy^2 + 1e-12)``.
    """
    b, k, h, w = x.shape
    flat = x.reshape(b * k, 1, h, w)
    pad = F.pad(flat, (1, 1, 1, 1), mode="replicate")
    kern = torch.stack([_SOBEL_X, _SOBEL_Y]).unsqueeze(1).to(x.device, x.dtype)  # (2,1,3,3)
    g = F.conv2d(pad, kern)
    mag = torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2 + 1e-12)
    return mag.reshape(b, k, h, w)


def scale_unit(x: torch.Tensor, eps: float = DEAL_EPS) -> torch.Tensor:
    """Min-max scale each (h, w) map of (B, K, h, w) into [eps, 1 - eps] (affine, no clamp)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return eps + (1.0 - 2.0 * eps) * (x - lo) / (hi - lo + 1e-8)


def sharpen(x: torch.Tensor, mu: float = DEAL_MU) -> torch.Tensor:
    """``tanh(mu + logit(x))`` for x in (0, 1); output in (-1, 1)."""
    return torch.tanh(mu + torch.log(x) - torch.log1p(-x))


def edge_activations(x: torch.Tensor, mu: float = DEAL_MU, eps: float = DEAL_EPS) -> torch.Tensor:
    """Sharpened, unit-scaled Sobel edge maps of (B, K, h, w) -> (B, K, h, w) in (-1, 1)."""
    return sharpen(scale_unit(sobel_magnitude(x), eps), mu)


def resample_depth(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Depth (B, H, W) or (B, 1, H, W) -> (B, 1, h, w) by bicubic interpolation (floating dtype kept)."""
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if not depth.is_floating_point():
        depth = depth.float()
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=size, mode="bicubic", align_corners=False)


def depth_edge_activations(depth: torch.Tensor, size: tuple[int, int], mu: float = DEAL_MU,
                           eps: float = DEAL_EPS) -> torch.Tensor:
    """d' of the paper: depth (B, H, W) -> (B, 1, h, w) sharpened edge activations at CAM size.

    Has no parameters; compute it once per image and pass it to :class:`DEALLoss` as
    ``depth_edges`` to save time.
    """
    return edge_activations(resample_depth(depth, size), mu, eps)


def deal_loss(cams: torch.Tensor, tags: torch.Tensor, depth: torch.Tensor | None = None, *,
              depth_edges: torch.Tensor | None = None, mu: float = DEAL_MU,
              eps: float = DEAL_EPS) -> torch.Tensor:
    """The DEAL value (scalar tensor, in [-1, 1]).

    ``cams``: (B, C, h, w) class activation maps (any real range; only edges matter).
    ``tags``: (B, C) multi-hot (0/1 floats; soft weights also accepted).
    ``depth``: (B, H, W) or (B, 1, H, W) depth (any unit; resampled bicubic to (h, w)),
    or ``depth_edges`` (B, 1, h, w) from :func:`depth_edge_activations`.
    """
    if depth_edges is None:
        if depth is None:
            raise ValueError("deal_loss needs depth or depth_edges")
        depth_edges = depth_edge_activations(depth, tuple(cams.shape[-2:]), mu, eps)
    a = edge_activations(cams, mu, eps)  # (B, C, h, w)
    y = tags.to(cams.dtype)
    weights = y / y.sum(dim=1, keepdim=True).clamp_min(1e-8)  # (B, C)
    agreement = (a * depth_edges.to(cams.dtype)).mean(dim=(-2, -1))  # (B, C): mean over pixels
    return -(weights * agreement).sum(dim=1).mean()


class DEALLoss(nn.Module):
    """Torch loss module of :func:`deal_loss` (``forward(cams, tags, depth=None, depth_edges=None)``)."""

    def __init__(self, mu: float = DEAL_MU, eps: float = DEAL_EPS):
        super().__init__()
        self.mu = float(mu)
        self.eps = float(eps)

    def forward(self, cams: torch.Tensor, tags: torch.Tensor, depth: torch.Tensor | None = None,
                depth_edges: torch.Tensor | None = None) -> torch.Tensor:
        return deal_loss(cams, tags, depth, depth_edges=depth_edges, mu=self.mu, eps=self.eps)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, eps={self.eps}"
