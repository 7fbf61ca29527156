"""The generate-darts-semantics command (pseudo_labels.generate_darts_semantics)."""

from __future__ import annotations

import json

import pytest

from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt
from pseudo_labels.stages import darts
from pseudo_labels.stages.rgbt_features import RGBTFeatureConfig, extract_rgbt_features


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen_darts")
    write_synthetic_rgbt(root / "data", 4, seed=1, size=(64, 128), split="test")
    extract_rgbt_features(RGBTFeatureConfig(data_root=str(root / "data"), out=str(root / "feats"), split="test",
                                            input_size=(56, 112)))
    darts.train_darts(darts.DartsTrainConfig(data_root=str(root / "data"), features=str(root / "feats"),
                                             out=str(root / "run"), split="test", steps=2, batch_size=2, knn=1,
                                             width=16, code_dim=8, progress=False, threads=1))
    return root


def test_command(setup, tmp_path, capsys):
    from pseudo_labels.cli import main

    assert main(["generate-darts-semantics", "--data-root", str(setup / "data"), "--run", str(setup / "run"),
                 "--split", "test", "--k", "12", "--mapping", "majority", "--ignore-unlabeled",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "majority: mIoU" in text and "uses ground truth: yes (majority mapping)" in text
    scores = json.loads((tmp_path / "scores.json").read_text())["scores"]
    assert "unlabeled" not in scores["majority"]["classes"]
