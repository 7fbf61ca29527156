"""DynaSeg library: weights, losses, silhouette phase, no collapse, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.refine import dynaseg
from pseudo_labels.stages.refine.dynaseg import DynaSegParams


def blocks_image(n_rows: int = 2, n_cols: int = 2, size=(48, 64), noise: float = 6.0, seed: int = 0) -> np.ndarray:
    """An RGB image of n_rows x n_cols flat colour blocks with Gaussian noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.zeros((h, w, 3), np.float64)
    colors = rng.integers(0, 256, size=(n_rows * n_cols, 3))
    for i in range(n_rows):
        for j in range(n_cols):
            img[i * h // n_rows:(i + 1) * h // n_rows, j * w // n_cols:(j + 1) * w // n_cols] = colors[i * n_cols + j]
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)


def test_dynamic_weight_scf_and_fsf():
    assert dynaseg.dynamic_weight("scf", 10, 50.0) == pytest.approx(5.0)
    assert dynaseg.dynamic_weight("fsf", 10, 15.0) == pytest.approx(10 / 15)
    assert dynaseg.dynamic_weight("scf", 20, 50.0) < dynaseg.dynamic_weight("scf", 10, 50.0)  # fewer labels: smoother
    assert dynaseg.dynamic_weight("fsf", 20, 15.0) > dynaseg.dynamic_weight("fsf", 10, 15.0)
    with pytest.raises(PseudoLabelsError):
        dynaseg.dynamic_weight("xyz", 3, 1.0)


def test_continuity_loss_value_and_gradient():
    rng = np.random.default_rng(0)
    r_np = rng.normal(size=(1, 4, 5, 6)).astype(np.float32)
    expected = np.abs(np.diff(r_np, axis=2)).mean() + np.abs(np.diff(r_np, axis=3)).mean()
    r = torch.tensor(r_np, requires_grad=True)
    loss = dynaseg.continuity_loss(r)
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert r.grad is not None and r.grad.abs().sum() > 0
    detached = dynaseg.continuity_loss(torch.tensor(r_np, requires_grad=True), detached=True)
    assert detached.item() == pytest.approx(float(expected), rel=1e-5)
    assert not detached.requires_grad  # the reference's variant adds no gradient


def test_detached_continuity_makes_the_weight_irrelevant():
    """With L_con detached, mu changes nothing (the reference code's behaviour); with gradient it does."""
    x = dynaseg.scf_input(blocks_image(), (48, 64))
    runs = {}
    for cont in ("detached", "gradient"):
        for mu in (1.0, 1000.0):
            p = DynaSegParams(steps=8, continuity=cont, mu=mu, seed=3)
            runs[cont, mu] = dynaseg.train_segments(x, p, k_floor=1).labels
    assert np.array_equal(runs["detached", 1.0], runs["detached", 1000.0])
    assert not np.array_equal(runs["gradient", 1.0], runs["gradient", 1000.0])


@pytest.mark.parametrize("n_blobs", [3, 5])
def test_silhouette_phase_finds_the_number_of_blobs(n_blobs):
    rng = np.random.default_rng(n_blobs)
    centres = rng.normal(scale=10.0, size=(n_blobs, 3))
    points = np.concatenate([c + rng.normal(scale=0.3, size=(400, 3)) for c in centres])
    phase = dynaseg.silhouette_k(points, (3, 8), seed=0, silhouette_sample=500, fit_sample=2000)
    assert phase.k == n_blobs
    assert set(phase.scores) == set(range(3, 9))
    again = dynaseg.silhouette_k(points, (3, 8), seed=0, silhouette_sample=500, fit_sample=2000)
    assert again.scores == phase.scores


def test_silhouette_phase_with_fewer_distinct_points_than_k():
    points = np.repeat(np.eye(3, dtype=np.float32), 50, axis=0)  # 3 distinct values
    phase = dynaseg.silhouette_k(points, (3, 26))
    assert phase.k == 3 and set(phase.scores) == {3}


def test_training_without_floor_collapses_but_result_never_below_silhouette_k():
    """A strong continuity weight merges labels; the silhouette floor keeps >= k segments."""
    img = blocks_image(2, 3, size=(40, 60), seed=1)
    x = dynaseg.scf_input(img, img.shape[:2])
    params = DynaSegParams(steps=60, mu=5000.0, lr=0.2, seed=0, k_min=3, k_max=8)
    free = dynaseg.train_segments(x, params, k_floor=1)
    assert min(free.q_history) < 3  # without a floor the segmentation collapses
    result = dynaseg.dynaseg_segments(x, img.shape[:2], params)
    assert result.n_segments >= result.silhouette_k >= 3
    assert len(np.unique(result.segments)) == result.n_segments


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segments_never_collapse_on_varied_images(seed):
    img = blocks_image(1 + seed % 2, 2 + seed, size=(36, 52), noise=4.0 + 10 * seed, seed=seed)
    params = DynaSegParams(steps=40, seed=seed, k_max=10)
    result = dynaseg.dynaseg_segments(dynaseg.scf_input(img, img.shape[:2]), img.shape[:2], params)
    assert result.n_segments >= result.silhouette_k
    assert result.segments.dtype == np.int32 and result.segments.shape == img.shape[:2]
    assert np.array_equal(np.unique(result.segments), np.arange(result.n_segments))


def test_deterministic_for_a_fixed_seed_and_upsampled_to_output_size():
    img = blocks_image(2, 2, size=(64, 96), seed=4)
    params = DynaSegParams(steps=10, seed=7, work_long_side=48, k_max=6)
    x = dynaseg.scf_input(img, dynaseg.work_size(img.shape[:2], params.work_long_side))
    assert x.shape == (3, 32, 48)
    a = dynaseg.dynaseg_segments(x, img.shape[:2], params)
    b = dynaseg.dynaseg_segments(x, img.shape[:2], params)
    assert a.segments.shape == (64, 96)
    assert np.array_equal(a.segments, b.segments) and a.q_history == b.q_history


def test_fsf_input_is_upsampled_and_standardised():
    feats = np.random.default_rng(0).normal(size=(5, 4, 6)).astype(np.float32) * 3 + 1
    x = dynaseg.fsf_input(feats, (8, 12))
    assert x.shape == (5, 8, 12)
    assert np.allclose(x.mean(axis=(1, 2)), 0, atol=1e-5) and np.allclose(x.std(axis=(1, 2)), 1, atol=1e-4)


def test_work_size_and_params_validation():
    assert dynaseg.work_size((512, 1024), 512) == (256, 512)
    assert dynaseg.work_size((100, 50), 512) == (100, 50)  # never upscaled
    with pytest.raises(PseudoLabelsError):
        DynaSegParams(variant="abc")
    with pytest.raises(PseudoLabelsError):
        DynaSegParams(k_min=5, k_max=4)
    with pytest.raises(PseudoLabelsError):
        DynaSegParams(max_labels=10, k_max=26)


def test_score_segments_on_a_tiny_coco_stuff_folder(tmp_path):
    from pseudo_labels.core.io import write_png
    from pseudo_labels.datasets import coco_stuff

    split = "val2017"
    (tmp_path / "curated" / split).mkdir(parents=True)
    (tmp_path / "curated" / split / coco_stuff.LIST_NAME).write_text("1\n2\n")
    for i in ("1", "2"):
        write_png(tmp_path / "images" / split / f"{i}.jpg", np.zeros((6, 8, 3), np.uint8))
        fine = np.zeros((6, 8), np.uint8)  # person (coarse 9)
        fine[3:] = 156  # sky (coarse 23)
        fine[0, 0] = 255
        write_png(tmp_path / "annotations" / split / f"{i}.png", fine)
        write_png(tmp_path / "segs" / f"{i}.png", np.where(fine == 156, 5, 2).astype(np.uint16))
    perfect = dynaseg.score_segments(tmp_path / "segs", "coco-stuff-27", tmp_path, split)
    assert perfect["mIoU"] == pytest.approx(100.0) and perfect["protocol"] == "hungarian" and perfect["n_images"] == 2
    write_png(tmp_path / "segs" / "2.png", np.zeros((6, 8), np.uint16))  # one segment for two classes
    worse = dynaseg.score_segments(tmp_path / "segs", "coco-stuff-27", tmp_path, split)
    assert worse["per_image"][0] == pytest.approx(100.0) and worse["per_image"][1] < 60
    overlap = dynaseg.score_segments(tmp_path / "segs", "coco-stuff-27", tmp_path, split, protocol="best-overlap")
    assert 0 < overlap["mIoU"] < 100
    with pytest.raises(PseudoLabelsError):
        dynaseg.score_segments(tmp_path / "nothing", "coco-stuff-27", tmp_path, split)
