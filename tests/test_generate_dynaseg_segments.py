"""generate-dynaseg-segments: outputs, run JSON, resume, parameters check, determinism, FSF, Cityscapes input."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from pseudo_labels.commands import module_main
from pseudo_labels.core.io import read_png

MODULE = "pseudo_labels.commands.generate_dynaseg_segments"
FAST = ["--steps", "6", "--k-range", "3", "6", "--silhouette-sample", "300", "--work-long-side", "48"]


@pytest.fixture()
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.png"):
        img = np.zeros((40, 60, 3), np.uint8)
        img[:20] = (200, 40, 40)
        img[20:, :30] = (40, 200, 40)
        img[20:, 30:] = (40, 40, 200)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / name), img[:, :, ::-1])
    return root


def test_writes_uint16_segments_stats_and_run_json(image_folder, tmp_path):
    out = tmp_path / "out"
    assert module_main(MODULE, ["--images", str(image_folder), "--out", str(out), *FAST]) == 0
    for rel in ("a", "sub/b"):
        seg = read_png(out / f"{rel}.png")
        assert seg.dtype == np.uint16 and seg.shape == (40, 60)
        stats = json.loads((out / f"{rel}.json").read_text())
        assert stats["q"] == len(np.unique(seg)) >= stats["silhouette_k"] >= 3
        assert stats["steps"] <= 6 and stats["seconds"] > 0
    run = json.loads((out / "dynaseg_run.json").read_text())
    assert run["n_images"] == 2 and run["min_q_minus_silhouette_k"] >= 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["uses_ground_truth"] is False and manifest["stage"] == "generate-dynaseg-segments"


def test_resume_other_parameters_and_overwrite(image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--images", str(image_folder), "--out", str(out), *FAST]
    assert module_main(MODULE, argv) == 0
    mtime = os.stat(out / "a.png").st_mtime_ns
    assert module_main(MODULE, argv) == 0
    assert os.stat(out / "a.png").st_mtime_ns == mtime
    assert "skipped 2" in capsys.readouterr().err
    assert module_main(MODULE, [*argv, "--mu", "10"]) == 2  # other parameters: refused
    assert "different parameters" in capsys.readouterr().err
    assert module_main(MODULE, [*argv, "--mu", "10", "--overwrite"]) == 0
    assert os.stat(out / "a.png").st_mtime_ns != mtime


def test_deterministic_across_runs_and_shards(image_folder, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert module_main(MODULE, ["--images", str(image_folder), "--out", str(a), *FAST]) == 0
    for shard in ("0/2", "1/2"):
        assert module_main(MODULE, ["--images", str(image_folder), "--out", str(b), "--shard", shard, *FAST]) == 0
    for rel in ("a.png", "sub/b.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert json.loads((b / "dynaseg_run.json").read_text())["n_images"] == 2


def test_fsf_with_builtin_features(image_folder, tmp_path):
    out = tmp_path / "fsf"
    assert module_main(MODULE, ["--images", str(image_folder), "--out", str(out), "--variant", "fsf",
                                "--backbone", "builtin", *FAST]) == 0
    stats = json.loads((out / "a.json").read_text())
    assert stats["q"] >= stats["silhouette_k"]
    assert json.loads((out / "manifest.json").read_text())["parameters"]["backbone"] == "builtin"


def test_cityscapes_input(synth_city, tmp_path):
    out = tmp_path / "cs"
    assert module_main(MODULE, ["--cityscapes-root", str(synth_city), "--split", "val", "--out", str(out), *FAST]) == 0
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 3 and all(p.parent.parent.name == "val" for p in pngs)
    assert read_png(pngs[0]).shape == (256, 512)


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert module_main(MODULE, ["--images", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    assert module_main(MODULE, ["--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    shutil.rmtree(empty)


def test_fsf_with_a_dinov2_checkpoint_and_missing_weights(image_folder, tmp_path, capsys):
    import torch

    from pseudo_labels.stages.semantic.dinov2 import build_dinov2

    torch.manual_seed(0)
    model = build_dinov2(None, None, config=dict(embed_dim=32, depth=2, num_heads=1, mlp_ratio=4.0,
                                                 patch_size=14, pos_grid=4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 32)
    torch.save(state, tmp_path / "tiny_dinov2.pth")
    out = tmp_path / "fsf_dino"
    assert module_main(MODULE, ["--images", str(image_folder), "--out", str(out), "--variant", "fsf", "--backbone",
                                "dinov2", "--weights", str(tmp_path / "tiny_dinov2.pth"), *FAST]) == 0
    stats = json.loads((out / "sub" / "b.json").read_text())
    assert stats["q"] >= stats["silhouette_k"]
    assert module_main(MODULE, ["--images", str(image_folder), "--out", str(tmp_path / "x"), "--variant", "fsf",
                                "--backbone", "dinov2_vitb14", *FAST]) == 2
    assert "--weights" in capsys.readouterr().err
