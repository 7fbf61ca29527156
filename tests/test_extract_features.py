"""CLI ``pseudo-labels extract-features`` end to end on a tiny synthetic city."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudo_labels.cli import main
from pseudo_labels.commands import module_main
from pseudo_labels.stages.semantic.dinov2 import build_dinov2
from pseudo_labels.stages.semantic.features import BUILTIN_DIM
from pseudo_labels.core.io import read_manifest


def _outputs(out):
    return sorted((out / "val").rglob("*.npy"))


def test_builtin_end_to_end_and_resume(synth_city, tmp_path, capsys):
    out = tmp_path / "feats"
    argv = ["--cityscapes-root", str(synth_city), "--split", "val", "--backbone", "builtin", "--out", str(out)]
    assert module_main("pseudo_labels.commands.extract_features", argv) == 0
    files = _outputs(out)
    assert len(files) == 3
    for f in files:
        arr = np.load(f)
        assert arr.dtype == np.float16 and arr.shape == (BUILTIN_DIM, 23, 46)
        assert np.allclose(np.linalg.norm(arr.astype(np.float32), axis=0), 1.0, atol=2e-3)
        assert f.parent.parent.name == "val" and f.name.count("_") == 2  # <split>/<city>/<stem>.npy
    m = read_manifest(out)
    assert m["stage"] == "extract-features" and m["uses_ground_truth"] is False
    assert m["parameters"]["backbone"] == "builtin" and m["features"]["dim"] == BUILTIN_DIM
    assert m["features"]["grid"] == [23, 46] and m["counts"]["computed"] == 3

    # resume: nothing recomputed; a deleted output is recomputed alone
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()
    capsys.readouterr()
    assert main(["extract-features", "--cityscapes_root", str(synth_city), "--backbone", "builtin",
                 "--out", str(out)]) == 0
    assert "1 computed, 2 skipped" in capsys.readouterr().out
    for f in files[1:]:
        assert f.stat().st_mtime_ns == mtimes[f]
    assert files[0].exists()

    # other parameters into the same folder: refused unless --overwrite
    assert module_main("pseudo_labels.commands.extract_features", argv + ["--input-size", "28", "56"]) == 2
    assert "input_size" in capsys.readouterr().err
    assert module_main("pseudo_labels.commands.extract_features", argv + ["--input-size", "28", "56", "--overwrite"]) == 0
    assert np.load(files[1]).shape == (BUILTIN_DIM, 2, 4)


def test_dinov2_cli_and_errors(synth_city, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_dinov2(None, None, config=dict(embed_dim=32, depth=1, num_heads=1, mlp_ratio=2.0,
                                                 patch_size=14, pos_grid=4))
    state = dict(model.state_dict(), mask_token=torch.zeros(1, 32))
    weights = tmp_path / "tiny.pth"
    torch.save(state, weights)
    out = tmp_path / "dino"
    base = ["--cityscapes-root", str(synth_city), "--out", str(out), "--input-size", "28", "56"]
    # a tiny checkpoint is refused for a named architecture, with the file and the expected shape
    assert module_main("pseudo_labels.commands.extract_features", base + ["--backbone", "dinov2_vits14",
                                                                 "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "tiny.pth" in err and "embed dim 384" in err
    assert module_main("pseudo_labels.commands.extract_features", base + ["--backbone", "dinov2_vitb14"]) == 2
    assert "--weights" in capsys.readouterr().err
    # the library path accepts the tiny model (architecture read from the checkpoint)
    from pseudo_labels.commands import extract_features
    import argparse

    p = argparse.ArgumentParser()
    extract_features.add_arguments(p)
    args = p.parse_args(base + ["--backbone", "builtin", "--batch-size", "2", "--limit", "2"])
    args.backbone = "dinov2"
    args.weights = str(weights)
    assert extract_features.run(args) == 0
    files = _outputs(out)
    assert len(files) == 2 and np.load(files[0]).shape == (32, 2, 4)
    assert read_manifest(out)["features"]["uses_weights"] is True


def test_help_describes_builtin(capsys):
    with pytest.raises(SystemExit):
        main(["extract-features", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "hand-made" in text and "not a learned model" in text
    assert "--head-weights" in text and "--batch-size" in text


def test_shards_workers_and_a_corrupt_image(synth_city, tmp_path, capsys):
    import shutil

    from pseudo_labels.datasets.cityscapes import list_images

    base = ["extract-features", "--cityscapes-root", str(synth_city), "--backbone", "builtin"]
    assert main([*base, "--out", str(tmp_path / "whole")]) == 0
    assert main([*base, "--out", str(tmp_path / "sharded"), "--shard", "1/2"]) == 0
    assert len(_outputs(tmp_path / "sharded")) == 1
    assert main([*base, "--out", str(tmp_path / "sharded"), "--shard", "0/2", "--workers", "2",
                 "--batch-size", "1"]) == 0
    whole, sharded = _outputs(tmp_path / "whole"), _outputs(tmp_path / "sharded")
    assert [p.relative_to(tmp_path / "whole") for p in whole] == [p.relative_to(tmp_path / "sharded") for p in sharded]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(whole, sharded))

    root = tmp_path / "city"
    shutil.copytree(synth_city, root)
    entries = list_images(root, "val")
    entries[0].image_path.write_bytes(b"not a png")
    capsys.readouterr()
    rc = main(["extract-features", "--cityscapes-root", str(root), "--out", str(tmp_path / "bad"), "--batch-size", "2"])
    assert rc == 2
    captured = capsys.readouterr()
    assert entries[0].stem in captured.err and "1 images failed" in captured.err
    assert "2 computed" in captured.out  # its batch-mate and the rest are written
    assert sorted(p.stem for p in _outputs(tmp_path / "bad")) == sorted(e.stem for e in entries[1:])
    assert read_manifest(tmp_path / "bad")["failed"][0]["image"] == entries[0].stem
    assert main(["extract-features", "--cityscapes-root", str(root), "--out", str(tmp_path / "bad"),
                 "--fail-fast"]) == 2
