"""The train-darts command (pseudo_labels.commands.train_darts)."""

from __future__ import annotations

import json

import pytest

from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt
from pseudo_labels.stages.rgbt import darts
from pseudo_labels.stages.rgbt.features import RGBTFeatureConfig, extract_rgbt_features


@pytest.fixture(scope="module")
def feats_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_darts")
    write_synthetic_rgbt(root / "data", 3, seed=0, size=(64, 128), split="train")
    extract_rgbt_features(RGBTFeatureConfig(data_root=str(root / "data"), out=str(root / "feats"), input_size=(56, 112)))
    return root


def test_command(feats_root, tmp_path, capsys):
    from pseudo_labels.cli import main

    out = tmp_path / "run"
    assert main(["train-darts", "--data-root", str(feats_root / "data"), "--features", str(feats_root / "feats"),
                 "--out", str(out), "--steps", "2", "--batch-size", "2", "--knn", "1", "--width", "16",
                 "--w-cross", "0", "--rgb-reliability", "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "2 steps" in text and "uses ground truth: no" in text
    cfg = json.loads((out / darts.RUN_CONFIG_NAME).read_text())
    assert cfg["train"]["loss"]["w_cross"] == 0.0 and cfg["train"]["loss"]["rgb_reliability"] is True
    assert "cross_pos_intra" not in darts.loss_log(out)[0] and "rgb_reliability" in darts.loss_log(out)[0]
