"""Depth-guided splitting: the fast implementation equals a straightforward one, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.instance.instances import (
    connected_component_instances,
    depth_gradient_magnitude,
    resize_semantic,
    split_instances_by_depth_edges,
)

THINGS = tuple(range(11, 19))


# --------------------------------------------------------------------------- the slow way
def reference_split(semantic, depth, grad_threshold=0.20, min_area=1000, sigma=1.0, dilation_iters=3,
                    connectivity=4, thing_classes=THINGS, min_new=10):
    """Straightforward DESIGN.md steps 1-4 with full-image masks per component (test oracle)."""
    d = depth.astype(np.float64)
    if sigma > 0:
        d = ndimage.gaussian_filter(d, sigma)
    g = np.sqrt(ndimage.sobel(d, axis=1) ** 2 + ndimage.sobel(d, axis=0) ** 2)
    edges = g > grad_threshold
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    assigned = np.zeros(semantic.shape, bool)
    found = []
    for c in sorted(thing_classes):
        m = semantic == c
        if m.sum() < min_area:
            continue
        lab, n = ndimage.label(m & ~edges, structure=structure)
        comps = []
        for k in range(1, n + 1):
            cm = lab == k
            if cm.sum() >= min_area:
                comps.append((cm, int(cm.sum())))
        comps.sort(key=lambda t: -t[1])
        for cm, _ in comps:
            if dilation_iters > 0:
                final = cm | (ndimage.binary_dilation(cm, iterations=dilation_iters) & m & ~assigned)
            else:
                final = cm
            a = int(final.sum())
            if a < min_area:
                continue
            assigned |= final
            found.append((final, a))
    found.sort(key=lambda t: -t[1])
    out = np.zeros(semantic.shape, np.int32)
    k = 0
    for mask, _ in found:
        new = mask & (out == 0)
        if new.sum() < min_new:
            continue
        k += 1
        out[new] = k
    return out


def random_case(rng, h, w):
    """Blocky semantic map with touching same-class objects, and a piecewise depth."""
    sem = rng.choice([0, 2, 8, 10, 255], size=(h // 8 + 1, w // 8 + 1)).astype(np.uint8)
    sem = np.kron(sem, np.ones((8, 8), np.uint8))[:h, :w]
    depth = np.full((h, w), 0.5, np.float32) + rng.normal(0, 0.002, (h, w)).astype(np.float32)
    n = int(rng.integers(3, 25))
    for _ in range(n):
        c = int(rng.choice([11, 13, 13, 13, 14, 17, 18]))
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        hh, ww = int(rng.integers(3, h // 2 + 4)), int(rng.integers(3, w // 2 + 4))
        sem[y:y + hh, x:x + ww] = c
        depth[y:y + hh, x:x + ww] = rng.uniform(0, 1)
    # thin lines of another thing class and noise pixels (tiny classes)
    sem[rng.random((h, w)) < 0.002] = 12
    return sem, depth


@pytest.mark.parametrize("seed", range(40))
def test_fast_equals_reference_random(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(40, 120)), int(rng.integers(40, 160))
    sem, depth = random_case(rng, h, w)
    params = dict(
        grad_threshold=float(rng.choice([0.02, 0.1, 0.2, 0.5])),
        min_area=int(rng.choice([1, 10, 30, 100, 400])),
        sigma=float(rng.choice([0.0, 0.7, 1.0, 2.0])),
        dilation_iters=int(rng.choice([0, 1, 3, 6])),
        connectivity=int(rng.choice([4, 8])),
    )
    want = reference_split(sem, depth, **params)
    got = split_instances_by_depth_edges(sem, depth, **params)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want, err_msg=str(params))


def test_ties_in_label_order_and_overlapping_reclaim():
    # two equal-size car components separated by a 1-px edge column; the dilation of the
    # first reclaims pixels of the second, which then loses them at placement.
    sem = np.zeros((20, 41), np.uint8)
    sem[2:18, 2:39] = 13
    depth = np.zeros((20, 41), np.float32)
    depth[:, 20:] = 1.0  # step edge between columns 19 and 20
    for dil in (0, 1, 3):
        for conn in (4, 8):
            got = split_instances_by_depth_edges(sem, depth, 0.2, 50, 1.0, dil, conn)
            want = reference_split(sem, depth, 0.2, 50, 1.0, dil, conn)
            np.testing.assert_array_equal(got, want)
    got = split_instances_by_depth_edges(sem, depth, 0.2, 50, 1.0, 3)
    assert got.max() == 2
    assert set(np.unique(got[sem != 13])) == {0}


def test_tiny_class_and_min_new_pixels():
    sem = np.zeros((30, 30), np.uint8)
    sem[5:8, 5:8] = 11  # 9 px: below min_area
    sem[10:25, 10:25] = 13
    depth = np.zeros((30, 30), np.float32)
    out = split_instances_by_depth_edges(sem, depth, min_area=10)
    assert out[6, 6] == 0 and out[15, 15] == 1 and out.max() == 1


def test_constant_depth_is_connected_components():
    rng = np.random.default_rng(3)
    sem, _ = random_case(rng, 64, 96)
    depth = np.full(sem.shape, 7.0, np.float32)
    out = split_instances_by_depth_edges(sem, depth, min_area=10, dilation_iters=0)
    cc = connected_component_instances(sem, min_area=10)
    np.testing.assert_array_equal(out, cc)


def test_nan_depth_and_size_mismatch_raise():
    sem = np.full((10, 10), 13, np.uint8)
    depth = np.zeros((10, 10), np.float32)
    depth[3, 3] = np.nan
    with pytest.raises(PseudoLabelsError, match="NaN"):
        split_instances_by_depth_edges(sem, depth)
    with pytest.raises(PseudoLabelsError, match="differ"):
        split_instances_by_depth_edges(sem, np.zeros((5, 5), np.float32))


def test_gradient_matches_scipy_and_is_not_divided_by_8():
    d = np.zeros((9, 9), np.float32)
    d[:, 5:] = 1.0
    g = depth_gradient_magnitude(d, sigma=0)
    assert g.dtype == np.float32 and g.max() == pytest.approx(4.0)  # 1+2+1, not 4/8


def test_gradient_input_and_normalize():
    rng = np.random.default_rng(5)
    sem, depth = random_case(rng, 64, 64)
    g = depth_gradient_magnitude(depth * 10 + 3, 1.0, dtype=np.float64)
    a = split_instances_by_depth_edges(sem, None, 2.0, 20, gradient=g)
    b = split_instances_by_depth_edges(sem, depth * 10 + 3, 2.0, 20)
    np.testing.assert_array_equal(a, b)
    c = split_instances_by_depth_edges(sem, depth * 10 + 3, 0.2, 20, normalize="minmax")
    lo, hi = (depth * 10 + 3).min(), (depth * 10 + 3).max()
    e = reference_split(sem, ((depth * 10 + 3).astype(np.float64) - lo) / (hi - lo), 0.2, 20)
    np.testing.assert_array_equal(c, e)


def test_resize_semantic_matches_pil_nearest():
    from PIL import Image

    rng = np.random.default_rng(0)
    a = rng.integers(0, 19, (100, 150)).astype(np.uint8)
    for size in ((50, 75), (37, 101), (200, 300)):
        want = np.asarray(Image.fromarray(a).resize(size[::-1], Image.NEAREST))
        np.testing.assert_array_equal(resize_semantic(a, size), want)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.5])
def test_cropped_gradient_is_bit_identical_where_things_are(sigma):
    from pseudo_labels.stages.instance.instances import depth_edges, thing_box

    rng = np.random.default_rng(int(sigma * 10))
    depth = rng.random((120, 200)).astype(np.float32)
    sem = np.zeros((120, 200), np.uint8)
    sem[40:70, 60:130] = 13
    sem[50:52, 140:150] = 11
    g = depth_gradient_magnitude(depth, sigma, dtype=np.float64)
    for tau in (0.5, 1.0, 2.0):
        e = depth_edges(depth, sem, tau, sigma)
        box = thing_box(sem, THINGS)
        np.testing.assert_array_equal(e[box], (g > tau)[box])
        np.testing.assert_array_equal(split_instances_by_depth_edges(sem, depth, tau, 20, sigma),
                                      reference_split(sem, depth, tau, 20, sigma))


def _reference_cc_only(sem: np.ndarray, things=range(11, 19), min_area: int = 10) -> np.ndarray:
    """The reference's ``cc_only_instances`` (scipy label, default 4-connectivity) followed by its evaluator's
    placement (an instance takes untaken pixels, skipped below 10 new), written out independently."""
    from scipy import ndimage

    instances = []
    for cls in sorted(things):
        m = sem == cls
        if m.sum() < min_area:
            continue
        lab, n = ndimage.label(m)
        for i in range(1, n + 1):
            cc = lab == i
            if cc.sum() >= min_area:
                instances.append((cc, float(cc.sum())))
    instances.sort(key=lambda x: -x[1])
    out = np.zeros(sem.shape, np.int32)
    k = 0
    for cc, _ in instances:
        new = cc & (out == 0)
        if new.sum() < 10:
            continue
        k += 1
        out[new] = k
    return out


@pytest.mark.parametrize("seed", range(4))
def test_components_only_equals_reference_cc_only(seed):
    """``depth = "none"`` (and the sweep's CC-only row): the reference's k=300 CC-only instances, id for id."""
    rng = np.random.default_rng(40 + seed)
    sem = rng.choice([0, 11, 13, 13, 18, 255], size=(30, 45)).astype(np.uint8)
    sem = np.kron(sem, np.ones((3, 3), np.uint8))  # components from 9 px up, many touching
    sem[rng.random(sem.shape) < 0.05] = 13  # specks below the 10-pixel minimum
    got = connected_component_instances(sem)
    np.testing.assert_array_equal(got, _reference_cc_only(sem))
    assert got.max() > 5
