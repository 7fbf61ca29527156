"""Per-modality RGB-T features (pseudo_labels.stages.rgbt.features, command extract-rgbt-features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_manifest
from pseudo_labels.core.runner import RunOptions
from pseudo_labels.datasets import mfnet
from pseudo_labels.datasets.rgbt import read_rgbt_pair
from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt
from pseudo_labels.stages.semantic.dinov2 import build_dinov2
from pseudo_labels.stages.semantic.features import build_extractor
from pseudo_labels.stages.rgbt.features import (
    RGBTFeatureConfig, extract_rgbt_features, load_rgbt_features, rgbt_feature_path,
)

SIZE = (64, 128)


@pytest.fixture(scope="module")
def rgbt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbt")
    write_synthetic_rgbt(root, 3, seed=0, size=SIZE, split="train")
    return root


def test_both_modalities_cached_with_the_extractor_output(rgbt_root, tmp_path):
    cfg = RGBTFeatureConfig(data_root=str(rgbt_root), out=str(tmp_path), input_size=(56, 112))
    summary = extract_rgbt_features(cfg)
    assert summary.done == 6 and summary.skipped == 0 and not summary.failed
    rec = mfnet.list_images(rgbt_root, "train")[1]
    f_rgb, f_t = load_rgbt_features(tmp_path, rec)
    assert f_rgb.shape == f_t.shape == (37, 4, 8)
    rgb, thermal = read_rgbt_pair("mfnet", rec)
    ext = build_extractor("builtin", input_size=(56, 112))
    want_t = ext.extract([np.repeat(thermal[:, :, None], 3, axis=2)])[0]
    assert np.allclose(f_t, want_t, atol=2e-3)  # float16 storage
    assert np.allclose(f_rgb, ext.extract([rgb])[0], atol=2e-3)
    assert not np.allclose(f_rgb, f_t, atol=0.05)
    man = read_manifest(tmp_path / "thermal" / "train")
    assert man["parameters"]["modality"] == "thermal" and man["uses_ground_truth"] is False


def test_resume_shards_and_one_modality(rgbt_root, tmp_path):
    cfg = RGBTFeatureConfig(data_root=str(rgbt_root), out=str(tmp_path), modalities=("thermal",),
                            input_size=(56, 112))
    s0 = extract_rgbt_features(cfg, RunOptions(shard=(0, 2)))
    assert s0.done == 2 and not (tmp_path / "rgb").exists()
    s1 = extract_rgbt_features(cfg)
    assert s1.done == 1 and s1.skipped == 2
    rec = mfnet.list_images(rgbt_root, "train")[0]
    assert rgbt_feature_path(tmp_path, "thermal", rec) == tmp_path / "thermal" / "train" / f"{rec.stem}.npy"
    with pytest.raises(PseudoLabelsError, match="different parameters input_size"):
        extract_rgbt_features(RGBTFeatureConfig(data_root=str(rgbt_root), out=str(tmp_path),
                                                modalities=("thermal",), input_size=(28, 56)))


def test_bad_modality_and_bad_image(rgbt_root, tmp_path):
    with pytest.raises(PseudoLabelsError, match="--modality depth"):
        RGBTFeatureConfig(data_root=str(rgbt_root), out=str(tmp_path), modalities=("depth",))
    import shutil

    root = tmp_path / "data"
    shutil.copytree(rgbt_root, root)
    import cv2

    cv2.imwrite(str(root / "images" / "train00001D.png"), np.zeros((64, 128, 3), np.uint8))
    s = extract_rgbt_features(RGBTFeatureConfig(data_root=str(root), out=str(tmp_path / "f"), input_size=(56, 112)))
    assert s.done == 4 and len(s.failed) == 1 and "PNG has 3 channels, expected 4" in s.failed[0][1]
    with pytest.raises(PseudoLabelsError, match="1 images failed"):
        s.raise_if_failed()


def test_dinov2_local_weights(rgbt_root, tmp_path):
    torch.manual_seed(0)
    cfg = dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, patch_size=14, pos_grid=4)
    torch.save(build_dinov2(None, None, config=cfg).state_dict(), tmp_path / "tiny.pth")
    s = extract_rgbt_features(RGBTFeatureConfig(data_root=str(rgbt_root), out=str(tmp_path / "f"), backbone="dinov2",
                                                weights=str(tmp_path / "tiny.pth"), input_size=(28, 56)))
    assert s.done == 6
    f_rgb, f_t = load_rgbt_features(tmp_path / "f", mfnet.list_images(rgbt_root, "train")[0])
    assert f_rgb.shape == f_t.shape == (32, 2, 4)
    assert np.allclose(np.linalg.norm(f_t, axis=0), 1.0, atol=2e-3)
