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



def _dynaseg_reference(gt, seg, c, t):
    """DynaSeg ClusterIoUEvaluator + get_result_metrics written out with loops (percent)."""
    from scipy.optimize import linear_sum_assignment

    hist = np.zeros((c, c))
    for g, p in zip(gt.ravel(), seg.ravel()):
        if 0 <= g < c:
            hist[g, p] += 1
    _, match = linear_sum_assignment(hist.max() - hist)
    new = np.zeros((c, c))
    for idx in range(c):
        new[match[idx]] = hist[idx]

    def metrics(h):
        tp = np.diag(h)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (tp + (h.sum(0) - tp) + (h.sum(1) - tp))
            acc = tp / (tp + (h.sum(1) - tp))
            aacc = tp.sum() / h.sum()
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {"aAcc": 100 * aacc, "mIoU": 100 * np.nanmean(iou), "mAcc": 100 * np.nanmean(acc)}

    out = metrics(new)
    out.update({k + "_th": v for k, v in metrics(new[:t, :t]).items()})
    out.update({k + "_st": v for k, v in metrics(new[t:, t:]).items()})
    return out


def test_official_image_metrics_equal_the_release_formulas():
    from evaluation.unsupervised import official_image_metrics

    rng = np.random.default_rng(5)
    for _ in range(5):
        gt = rng.integers(0, 6, (12, 12))
        gt[rng.random((12, 12)) < 0.1] = 255
        seg = np.where(rng.random((12, 12)) < 0.6, np.minimum(gt, 5), rng.integers(0, 6, (12, 12)))
        got = official_image_metrics(gt, seg, 6, 2)
        want = _dynaseg_reference(gt, seg, 6, 2)
        assert set(got) == set(want)
        for k, v in want.items():
            assert (np.isnan(v) and np.isnan(got[k])) or got[k] == pytest.approx(v, abs=1e-6), k


def test_official_average_drops_any_nan_and_ours_only_nan_miou():
    from evaluation.unsupervised import unsupervised_miou

    full = np.repeat(np.arange(4), 4).reshape(4, 4)  # classes 0..3 present
    stuff_only = np.full((4, 4), 3)  # one class: the thing block (ids 0, 1) may end up empty
    pairs = [(full, full), (stuff_only, np.full((4, 4), 3)), (full, np.full((4, 4), 9))]  # last: ids >= C
    ours = unsupervised_miou(pairs, 4, average="ours")
    official = unsupervised_miou(pairs, 4, average="official", num_thing_classes=2)
    assert ours["n_images"] == 3 and official["n_images"] + official["n_skipped"] == 3
    assert official["n_skipped"] >= 2  # the stuff-only image (NaN thing metrics) and the ids >= C image
    assert official["mIoU"] == pytest.approx(100.0) and set(official["averages"]) >= {"aAcc_th", "mIoU_st"}
    with pytest.raises(ValueError, match="average"):
        unsupervised_miou(pairs, 4, average="mean")
