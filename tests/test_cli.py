import subprocess
import sys

import pytest

from pseudo_labels import cli
from pseudo_labels.core import arguments
from pseudo_labels.core.errors import PseudoLabelsError


def test_every_subcommand_module_exists_and_has_help(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0, name
        out = capsys.readouterr().out
        assert "usage: pseudo-labels " + name in out


def test_underscore_aliases():
    import argparse

    p = argparse.ArgumentParser()
    arguments.add_option(p, "--cityscapes-root", required=True)
    assert p.parse_args(["--cityscapes_root", "x"]).cityscapes_root == "x"
    assert p.parse_args(["--cityscapes-root", "y"]).cityscapes_root == "y"


def test_parse_shard():
    assert arguments.parse_shard("1/4") == (1, 4)
    assert arguments.parse_shard(None) is None
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(PseudoLabelsError):
            arguments.parse_shard(bad)


def test_top_level_help_and_unknown():
    r = subprocess.run([sys.executable, "-m", "pseudo_labels.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "generate-overclustered-semantics" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pseudo_labels.cli", "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2
