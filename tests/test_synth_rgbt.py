"""The synth-rgbt command (pseudo_labels.commands.synth_rgbt)."""

from __future__ import annotations

from pseudo_labels.datasets import mfnet


def test_command(tmp_path, capsys):
    from pseudo_labels.cli import main

    assert main(["synth-rgbt", "--out", str(tmp_path), "--n", "2", "--seed", "0", "--size", "64", "128",
                 "--split", "test"]) == 0
    assert "wrote 2 RGB-T frames (1 night" in capsys.readouterr().out
    assert len(mfnet.list_images(tmp_path, "test")) == 2
    assert main(["synth-rgbt", "--out", str(tmp_path), "--n", "0"]) == 2
    assert "--n 0" in capsys.readouterr().err
