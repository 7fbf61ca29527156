"""Unsupervised mIoU (DynaSeg protocols) against independent brute-force computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from evaluation.unsupervised import (best_overlap_miou, hungarian_miou, segment_confusion, unsupervised_miou)


def brute_force_image_miou(gt, seg, num_classes, ignore=255, absent="match"):
    """Try every injective class -> segment assignment (loops only), keep the one with the
    most matched pixels, score IoU per class from pixel sets; mean over non-NaN classes."""
    valid = (gt != ignore) & (gt < num_classes)
    classes = list(range(num_classes)) if absent == "match" else [c for c in range(num_classes) if np.any(valid & (gt == c))]
    segments = list(range(int(seg.max()) + 1))
    n = min(len(classes), len(segments))
    best, best_assign = -1, None
    for cls_subset in itertools.combinations(classes, n):
        for perm in itertools.permutations(segments, n):
            total = sum(int(np.sum(valid & (gt == c) & (seg == s))) for c, s in zip(cls_subset, perm))
            if total > best:
                best, best_assign = total, dict(zip(cls_subset, perm))
    ious = []
    for c in range(num_classes):
        g = valid & (gt == c)
        if c in best_assign:
            p = valid & (seg == best_assign[c])
            union = np.sum(g | p)
            ious.append(np.sum(g & p) / union if union else np.nan)
        else:
            ious.append(0.0 if g.any() else np.nan)
    return 100 * np.nanmean(ious), best


def random_case(seed, c=3, k=4, shape=(12, 14)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, c, size=shape)
    gt[rng.random(shape) < 0.1] = 255
    # segments correlated with gt so that the matching matters
    seg = np.where(rng.random(shape) < 0.6, gt % k, rng.integers(0, k, size=shape))
    seg[gt == 255] = rng.integers(0, k, size=int((gt == 255).sum()))
    return gt, seg


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("c,k", [(3, 4), (4, 3), (3, 3)])
@pytest.mark.parametrize("absent", ["match", "skip"])
def test_per_image_hungarian_equals_brute_force(seed, c, k, absent):
    gt, seg = random_case(seed, c, k)
    if seed % 2:
        gt[gt == c - 1] = 0  # one class absent from the GT
    expected, _ = brute_force_image_miou(gt, seg, c, absent=absent)
    got = hungarian_miou(segment_confusion(gt, seg, c), absent)
    assert got["mIoU"] == pytest.approx(expected, abs=1e-9)


def test_dataset_mode_pools_before_matching():
    a = random_case(1, 3, 3)
    b = random_case(2, 3, 3)
    gt = np.concatenate([a[0], b[0]])
    seg = np.concatenate([a[1], b[1]])
    expected, _ = brute_force_image_miou(gt, seg, 3)
    got = unsupervised_miou([a, b], 3, mode="dataset")
    assert got["mIoU"] == pytest.approx(expected, abs=1e-9)
    per_image = unsupervised_miou([a, b], 3, mode="image")
    singles = [brute_force_image_miou(g, s, 3)[0] for g, s in (a, b)]
    assert per_image["per_image"] == pytest.approx(singles) and per_image["mIoU"] == pytest.approx(np.mean(singles))


def test_reference_square_case_equals_the_reordered_histogram():
    """K == C: the reference re-orders the histogram by the matching and takes diag / (row + col - diag)."""
    from scipy.optimize import linear_sum_assignment

    gt, seg = random_case(5, 4, 4, shape=(30, 30))
    hist = segment_confusion(gt, seg, 4).astype(float)
    rows, cols = linear_sum_assignment(hist.max() - hist)
    tp = hist[rows, cols]
    iou = tp / (hist.sum(1)[rows] + hist.sum(0)[cols] - tp)
    assert hungarian_miou(hist.astype(np.int64))["mIoU"] == pytest.approx(100 * np.nanmean(iou))


def test_perfect_relabelled_segments_score_100():
    gt = np.repeat(np.arange(5), 20).reshape(10, 10)
    seg = (gt * 7 + 3) % 5  # a permutation of the class ids
    assert unsupervised_miou([(gt, seg)], 5, mode="image")["mIoU"] == pytest.approx(100.0)
    assert unsupervised_miou([(gt, seg)], 27, mode="image", absent="skip")["mIoU"] == pytest.approx(100.0)
    # absent classes matched to nothing: K=5 < C=27, so absent classes stay NaN even under "match"
    assert unsupervised_miou([(gt, seg)], 27, mode="image", absent="match")["mIoU"] == pytest.approx(100.0)


def test_image_without_labelled_pixels_is_skipped():
    gt = np.full((4, 4), 255)
    seg = np.zeros((4, 4), np.int64)
    good = (np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64))
    r = unsupervised_miou([(gt, seg), good], 3, mode="image", absent="skip")
    assert r["n_skipped"] == 1 and r["mIoU"] == pytest.approx(100.0)


def test_best_overlap_equals_a_loop_over_labels_and_segments():
    rng = np.random.default_rng(3)
    seg = rng.integers(0, 5, size=(15, 15))
    gts = [rng.integers(1, 4, size=(15, 15)), np.where(rng.random((15, 15)) < 0.7, seg + 1, 9)]
    ious = []
    for g in gts:
        for lab in np.unique(g):
            best = 0.0
            for s in np.unique(seg):
                inter = np.sum((g == lab) & (seg == s))
                union = np.sum(g == lab) + np.sum(seg == s) - inter
                best = max(best, inter / union)
            ious.append(best)
    r = best_overlap_miou([gts], [seg])
    assert r["mIoU"] == pytest.approx(100 * np.mean(ious)) and r["n_labels"] == len(ious)


def test_confusion_validates_inputs():
    with pytest.raises(ValueError):
        segment_confusion(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError):
        segment_confusion(np.zeros((2, 2)), -np.ones((2, 2)), 2)
    with pytest.raises(ValueError):
        unsupervised_miou([], 2, mode="xyz")
