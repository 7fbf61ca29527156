"""CAM head training (seeded, resumable), CAM normalisation, masks and scoring."""

import numpy as np
import pytest
import torch

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.weak.cam import (CamHead, CamHeadConfig, compute_cams, head_from_checkpoint, load_checkpoint,
                                    normalize_cams, pool_logits, predicted_tags, train_cam_head)
from pseudo_labels.stages.weak.masks import (cams_to_labels, extended_confusion, scores_from_confusion, snap_to_depth_edges,
                                      upsample_cams)


def _toy(n=8, d=4, h=6, w=8, seed=0):
    """Features where class 0 lives in channel 0 (left half) and class 1 in channel 1 (right half)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(0, 0.05, (n, d, h, w)).astype(np.float32)
    tags = np.zeros((n, 2), np.float32)
    for i in range(n):
        has0, has1 = (i % 3 != 2), (i % 3 != 1)
        tags[i] = [has0, has1]
        if has0:
            feats[i, 0, :, : w // 2] += 1
        if has1:
            feats[i, 1, :, w // 2:] += 1
    edges = np.zeros((n, 1, h, w), np.float32) - 1
    edges[:, :, :, w // 2 - 1: w // 2 + 1] = 1
    return feats, tags, edges


def _state(head):
    return {k: v.clone() for k, v in head.state_dict().items()}


def test_head_shapes_and_pooling():
    head = CamHead(4, 3)
    s = head(torch.zeros(2, 4, 5, 7))
    assert s.shape == (2, 3, 5, 7)
    x = torch.tensor([[[[0.0, 2.0]]]])
    assert float(pool_logits(x, "gap")) == pytest.approx(1.0)
    lse = float(pool_logits(x, "lse"))
    assert 1.0 < lse < 2.0
    with pytest.raises(PseudoLabelsError):
        pool_logits(x, "max")


def test_training_learns_localises_and_is_reproducible():
    feats, tags, edges = _toy()
    cfg = CamHeadConfig(num_classes=2, in_dim=4, epochs=30, lr=0.1, batch_size=4, seed=3)
    h1, hist = train_cam_head(feats, tags, cfg)
    h2, _ = train_cam_head(feats, tags, cfg)
    for k, v in _state(h1).items():
        torch.testing.assert_close(v, _state(h2)[k], rtol=0, atol=0)
    assert hist[-1]["cls_loss"] < hist[0]["cls_loss"]
    cams, logits = compute_cams(h1, feats[0])
    assert cams.shape == (2, 6, 8) and logits.shape == (2,)
    n = normalize_cams(cams, tags[0])
    assert n[0, :, :4].mean() > n[0, :, 4:].mean()  # class 0 on the left
    # with DEAL the config changes and so do the weights; DEAL without depth is an error
    cfg_d = CamHeadConfig(num_classes=2, in_dim=4, epochs=3, lr=0.1, batch_size=4, seed=3, deal_weight=0.5)
    h3, hist3 = train_cam_head(feats, tags, cfg_d, depth_edges=edges)
    assert hist3[-1]["deal_loss"] != 0
    with pytest.raises(PseudoLabelsError, match="depth"):
        train_cam_head(feats, tags, cfg_d)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    feats, tags, edges = _toy()
    full_cfg = CamHeadConfig(num_classes=2, in_dim=4, epochs=4, lr=0.05, batch_size=3, seed=1, deal_weight=0.2)
    full, _ = train_cam_head(feats, tags, full_cfg, depth_edges=edges)
    half_cfg = CamHeadConfig(**{**full_cfg.to_dict(), "epochs": 2})
    train_cam_head(feats, tags, half_cfg, depth_edges=edges, run_dir=tmp_path, meta={"x": 1})
    st = load_checkpoint(tmp_path)
    assert st["epoch"] == 2 and st["meta"] == {"x": 1} and st["optimizer"] is not None
    resumed, hist = train_cam_head(feats, tags, full_cfg, depth_edges=edges, run_dir=tmp_path)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    for k, v in _state(full).items():
        torch.testing.assert_close(v, _state(resumed)[k])
    head, cfg = head_from_checkpoint(load_checkpoint(tmp_path / "checkpoint.pt"))
    assert cfg.epochs == 4
    other = CamHeadConfig(**{**full_cfg.to_dict(), "lr": 0.5})
    with pytest.raises(PseudoLabelsError, match="other settings"):
        train_cam_head(feats, tags, other, depth_edges=edges, run_dir=tmp_path)


def test_normalize_and_predicted_tags():
    cams = np.stack([np.array([[-1.0, 2.0], [1.0, 0.0]]), np.full((2, 2), -3.0), np.ones((2, 2))])
    n = normalize_cams(cams, np.array([1, 1, 0]))
    np.testing.assert_allclose(n[0], [[0, 1], [0.5, 0]])
    assert not n[1].any() and not n[2].any()
    assert predicted_tags(np.array([-5.0, -4.0])).tolist() == [0, 1]
    assert predicted_tags(np.array([2.0, -4.0, 0.1])).tolist() == [1, 0, 1]


def test_cams_to_labels_background_conventions():
    cams = np.zeros((3, 2, 3), np.float32)
    cams[0, 0, :] = [0.9, 0.2, 0.05]
    cams[2, 1, :] = [0.5, 0.6, 0.1]
    cs = cams_to_labels(cams, 0.15, "cityscapes")
    np.testing.assert_array_equal(cs, [[0, 0, 255], [2, 2, 255]])
    voc = cams_to_labels(cams, 0.15, "voc")
    np.testing.assert_array_equal(voc, [[1, 1, 0], [3, 3, 0]])
    up = upsample_cams(cams, (4, 6))
    assert up.shape == (3, 4, 6) and up.dtype == np.float32


def test_snap_moves_boundary_onto_depth_edge():
    labels = np.zeros((20, 40), np.uint8)
    labels[:, 17:] = 1  # label boundary at column 17
    depth = np.ones((20, 40), np.float32)
    depth[:, 22:] = 10.0  # depth edge at column 22 (within the band)
    out = snap_to_depth_edges(labels, depth, band=8, sigma=0.5)
    cols = [int(np.argmax(out[r] == 1)) for r in range(20)]
    assert all(21 <= c <= 23 for c in cols), cols
    assert set(np.unique(out)) == {0, 1}
    # far from the boundary nothing changes
    np.testing.assert_array_equal(out[:, :8], labels[:, :8])
    np.testing.assert_array_equal(snap_to_depth_edges(labels, depth, band=0), labels)


def test_scores_count_void_as_miss():
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 255, 1, 1]], np.uint8)
    cm = extended_confusion(gt, pred, 2)
    assert cm.tolist() == [[1, 0, 1], [0, 2, 0]]
    sc = scores_from_confusion(cm, ("a", "b"))
    assert sc["per_class_iou"]["a"] == pytest.approx(50.0)
    assert sc["mIoU"] == pytest.approx(75.0)
    assert sc["mIoU_labelled"] == pytest.approx(100.0)
    assert sc["coverage"] == pytest.approx(75.0)


def test_cams_to_labels_only_tagged_classes_and_ties_to_background():
    cams = np.zeros((3, 1, 4), np.float32)
    cams[0] = [[0.9, 0.2, 0.3, 0.0]]
    cams[1] = [[1.0, 0.8, 0.3, 0.0]]  # class 1 is not tagged: it must never win
    cams[2] = [[0.1, 0.5, 0.3, 0.0]]
    tags = np.array([1, 0, 1])
    np.testing.assert_array_equal(cams_to_labels(cams, 0.3, "cityscapes", tags), [[0, 2, 255, 255]])
    np.testing.assert_array_equal(cams_to_labels(cams, 0.3, "voc", tags), [[1, 3, 0, 0]])
    # without tags every channel competes
    np.testing.assert_array_equal(cams_to_labels(cams, 0.3, "cityscapes"), [[1, 1, 255, 255]])
    with pytest.raises(ValueError):
        cams_to_labels(cams, 0.3, "cityscapes", np.array([1, 0]))


def test_normalize_then_upsample_keeps_peak_and_zeros():
    """Normalising at the patch grid, then bilinear upsampling: values in [0, 1], peaks near 1, untagged 0."""
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, (3, 5, 7)).astype(np.float32)
    n = normalize_cams(raw, np.array([1, 1, 0]))
    up = upsample_cams(n, (20, 28))
    assert np.all(up[:2].max(axis=(1, 2)) > 0.8) and up.max() <= 1.0 + 1e-6
    assert not up[2].any() and up.min() >= 0
