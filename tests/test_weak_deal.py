"""DEAL (depth edge alignment loss): values on hand-made inputs and the direction of its gradient."""

import math

import numpy as np
import pytest
import torch

from pseudo_labels.core.defaults import DEAL_MU
from pseudo_labels.stages.weak.deal import (DEAL_EPS, DEALLoss, deal_loss, depth_edge_activations, resample_depth,
                                     sobel_magnitude)

# sharpened value of an edge map at its minimum (eps) and at its maximum (~1 - eps)
T_LOW = math.tanh(DEAL_MU + math.log(DEAL_EPS / (1 - DEAL_EPS)))  # ~ -0.99999
S_HIGH = math.tanh(DEAL_MU + math.log((1 - DEAL_EPS) / DEAL_EPS))  # ~ +1


def _rows(values, h=4):
    """(1, 1, h, w) tensor with every row equal to ``values``."""
    return torch.tensor([values] * h, dtype=torch.float64)[None, None]


def test_sobel_of_a_step_by_hand():
    # step between columns 0|1 -> |Sobel x| = (1+2+1) * 1 = 4 at columns 0 and 1 (replicate padding)
    m = sobel_magnitude(_rows([0, 1, 1, 1, 1, 1]))[0, 0]
    np.testing.assert_allclose(m.numpy(), np.tile([4, 4, 0, 0, 0, 0], (4, 1)), atol=1e-5)


def test_value_flat_cam_flat_depth():
    # no edges anywhere: a' = d' = tanh(mu + logit(eps)) everywhere -> L = -T_LOW^2
    cams = torch.full((1, 1, 4, 6), 0.3, dtype=torch.float64)
    depth = torch.full((1, 4, 6), 7.0, dtype=torch.float64)
    val = deal_loss(cams, torch.ones(1, 1), depth)
    assert float(val) == pytest.approx(-T_LOW ** 2, abs=1e-6)


def test_value_aligned_and_misaligned_steps_by_hand():
    depth = _rows([0, 0, 0, 0, 1, 1])[:, 0]  # edge magnitude 4 at columns 3, 4
    aligned = _rows([5, 5, 5, 5, 9, 9])  # same edge columns, other contrast
    misaligned = _rows([0, 1, 1, 1, 1, 1])  # edge at columns 0, 1
    tags = torch.ones(1, 1)
    # aligned: a' = d' (+S at edges, T elsewhere) -> mean of (2 S^2 + 4 T^2) / 6
    assert float(deal_loss(aligned, tags, depth)) == pytest.approx(-(2 * S_HIGH ** 2 + 4 * T_LOW ** 2) / 6, abs=1e-5)
    # misaligned: a' = [S S T T T T], d' = [T T T S S T] -> products [ST ST TT TS TS TT]
    expected = -(4 * S_HIGH * T_LOW + 2 * T_LOW ** 2) / 6
    assert float(deal_loss(misaligned, tags, depth)) == pytest.approx(expected, abs=1e-5)
    assert expected > 0.3  # misalignment is penalised


def test_tag_weighting_over_present_classes():
    depth = _rows([0, 0, 0, 0, 1, 1])[:, 0]
    aligned = _rows([5, 5, 5, 5, 9, 9])
    misaligned = _rows([0, 1, 1, 1, 1, 1])
    cams = torch.cat([aligned, misaligned], dim=1)  # (1, 2, 4, 6)
    l_al = float(deal_loss(aligned, torch.ones(1, 1), depth))
    l_mis = float(deal_loss(misaligned, torch.ones(1, 1), depth))
    assert float(deal_loss(cams, torch.tensor([[1.0, 0.0]]), depth)) == pytest.approx(l_al, abs=1e-9)
    assert float(deal_loss(cams, torch.tensor([[0.0, 1.0]]), depth)) == pytest.approx(l_mis, abs=1e-9)
    assert float(deal_loss(cams, torch.tensor([[1.0, 1.0]]), depth)) == pytest.approx((l_al + l_mis) / 2, abs=1e-9)
    # batch mean over images
    two = deal_loss(torch.cat([cams, cams]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.cat([depth, depth]))
    assert float(two) == pytest.approx((l_al + l_mis) / 2, abs=1e-9)


def test_value_matches_numpy_formula_on_random_input():
    rng = np.random.default_rng(0)
    cams = rng.normal(size=(2, 3, 7, 9))
    depth = rng.uniform(1, 50, size=(2, 7, 9))
    tags = np.array([[1, 0, 1], [0, 1, 0]], float)

    def np_edges(x):  # x (h, w)
        p = np.pad(x, 1, mode="edge")
        kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
        gx = sum(kx[i, j] * p[i:i + x.shape[0], j:j + x.shape[1]] for i in range(3) for j in range(3))
        gy = sum(kx.T[i, j] * p[i:i + x.shape[0], j:j + x.shape[1]] for i in range(3) for j in range(3))
        g = np.sqrt(gx ** 2 + gy ** 2 + 1e-12)
        s = DEAL_EPS + (1 - 2 * DEAL_EPS) * (g - g.min()) / (g.max() - g.min() + 1e-8)
        return np.tanh(DEAL_MU + np.log(s / (1 - s)))

    total = 0.0
    for b in range(2):
        d = np_edges(depth[b])
        per = [(np_edges(cams[b, k]) * d).mean() for k in range(3)]
        total += -np.dot(tags[b], per) / tags[b].sum()
    expected = total / 2
    got = DEALLoss()(torch.from_numpy(cams), torch.from_numpy(tags), torch.from_numpy(depth))
    assert float(got) == pytest.approx(expected, abs=1e-9)


def test_depth_resampled_bicubic_to_cam_size():
    depth = torch.rand(1, 32, 64)
    r = resample_depth(depth, (8, 16))
    assert r.shape == (1, 1, 8, 16)
    ref = torch.nn.functional.interpolate(depth[:, None], size=(8, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(r, ref)
    cams = torch.rand(1, 2, 8, 16)
    a = deal_loss(cams, torch.ones(1, 2), depth)
    b = deal_loss(cams, torch.ones(1, 2), depth_edges=depth_edge_activations(depth, (8, 16)))
    assert float(a) == pytest.approx(float(b), abs=1e-6)


def _edge_share(cam: torch.Tensor, cols) -> float:
    """Share of the CAM's Sobel edge energy lying in the given columns."""
    m = sobel_magnitude(cam)[0, 0]
    return float(m[:, cols].sum() / m.sum())


def test_gradient_pulls_cam_edges_toward_the_depth_edge():
    torch.manual_seed(0)
    h, w = 12, 16
    depth = torch.zeros(1, h, w)
    depth[..., 8:] = 10.0  # depth step between columns 7 | 8
    # CAM: a soft ramp with a weak step at the wrong place (columns 3 | 4)
    cam = (torch.linspace(0, 1, w).repeat(h, 1) + 0.5 * (torch.arange(w) >= 4).float())[None, None]
    cam = (cam + 0.01 * torch.randn(1, 1, h, w)).requires_grad_(True)
    tags = torch.ones(1, 1)
    loss0 = deal_loss(cam, tags, depth)
    share0 = _edge_share(cam.detach(), [7, 8])
    loss0.backward()
    with torch.no_grad():
        stepped = cam - 0.05 * cam.grad / cam.grad.abs().max()
    loss1 = deal_loss(stepped, tags, depth)
    assert float(loss1) < float(loss0.detach())
    assert _edge_share(stepped, [7, 8]) > share0
    # the CAM difference across the depth edge grows in magnitude
    jump0 = float((cam[0, 0, :, 8] - cam[0, 0, :, 7]).abs().mean())
    jump1 = float((stepped[0, 0, :, 8] - stepped[0, 0, :, 7]).abs().mean())
    assert jump1 > jump0
