"""The extract-rgbt-features command (pseudo_labels.commands.extract_rgbt_features)."""

from __future__ import annotations

import pytest

from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt


@pytest.fixture(scope="module")
def rgbt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbt_cmd")
    write_synthetic_rgbt(root, 3, seed=0, size=(64, 128), split="train")
    return root


def test_command(rgbt_root, tmp_path, capsys):
    from pseudo_labels.cli import main

    argv = ["extract-rgbt-features", "--data-root", str(rgbt_root), "--split", "train", "--modality", "rgb",
            "--input-size", "56", "112", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "3 feature files written" in capsys.readouterr().out
    assert main(argv) == 0
    assert "3 skipped" in capsys.readouterr().out
    assert main(["extract-rgbt-features", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "train.txt: split list not found" in capsys.readouterr().err
