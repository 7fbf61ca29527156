"""The generate-darts-semantics command (pseudo_labels.commands.generate_darts_semantics)."""

from __future__ import annotations

import json

import pytest

from tests.rgbt_fixtures import small_darts_run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return small_darts_run(tmp_path_factory.mktemp("gen_darts"))


def test_command(setup, tmp_path, capsys):
    from pseudo_labels.cli import main

    assert main(["generate-darts-semantics", "--data-root", str(setup / "data"), "--run", str(setup / "run"),
                 "--split", "test", "--k", "12", "--mapping", "majority", "--ignore-unlabeled",
                 "--train-split", "test", "--probe-steps", "10", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "majority: mIoU" in text and "[stego]" in text and "uses ground truth: yes (majority mapping)" in text
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["protocol"] == "official" and saved["parameters"]["train_split"] == "test"
    scores = saved["scores"]
    assert "unlabeled" not in scores["majority"]["classes"]
