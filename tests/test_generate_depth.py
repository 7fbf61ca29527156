"""End-to-end tests of the generate-depth CLI on tiny Cityscapes-layout folders."""

import json

import numpy as np
import pytest

from pseudo_labels import cli
from pseudo_labels.core.io import read_manifest, write_png

CAMERA = {"extrinsic": {"baseline": 0.21}, "intrinsic": {"fx": 2260.0}}
STEMS = ["aachen_000000_000019", "aachen_000001_000019", "bonn_000002_000019"]


def make_city(root, size=(16, 24), stems=STEMS, split="val"):
    rng = np.random.default_rng(0)
    truth = {}
    for s in stems:
        city = s.split("_")[0]
        write_png(root / "leftImg8bit" / split / city / f"{s}_leftImg8bit.png",
                  rng.integers(0, 255, size + (3,), dtype=np.uint8))
        disp = rng.integers(257, 20000, size).astype(np.uint16)
        disp[0, :3] = 0
        write_png(root / "disparity" / split / city / f"{s}_disparity.png", disp)
        cam = root / "camera" / split / city / f"{s}_camera.json"
        cam.parent.mkdir(parents=True, exist_ok=True)
        cam.write_text(json.dumps(CAMERA))
        truth[s] = 0.21 * 2260.0 / ((disp.astype(np.float64) - 1) / 256)
    return truth


def test_cli_disparity_end_to_end_and_resume(tmp_path, capsys):
    truth = make_city(tmp_path)
    args = ["generate-depth", "--cityscapes_root", str(tmp_path), "--split", "val", "--source", "disparity",
            "--output-subdir", "depth_disp", "--normalize", "none"]
    assert cli.main(args) == 0
    out = tmp_path / "depth_disp"
    for s in STEMS:
        d = np.load(out / "val" / s.split("_")[0] / f"{s}.npy")
        assert d.dtype == np.float32 and d.shape == (16, 24)
        np.testing.assert_allclose(d[1:], truth[s][1:], rtol=1e-5)
        assert np.isfinite(d).all()
    m = read_manifest(out)
    assert m["stage"] == "generate-depth" and m["uses_ground_truth"] is False
    assert m["counts"]["done"] == 3 and m["parameters"]["source"] == "disparity"
    # resume: nothing recomputed
    assert cli.main(args) == 0
    assert read_manifest(out)["counts"]["skipped"] == 3
    # other parameters into the same folder: clear error, exit 2
    assert cli.main(args[:-1] + ["minmax"]) == 2
    assert "different" in capsys.readouterr().err


def test_cli_minmax_output_size_and_workers(tmp_path):
    make_city(tmp_path)
    out = tmp_path / "out"
    assert cli.main(["generate-depth", "--cityscapes-root", str(tmp_path), "--source", "disparity",
                     "--output-dir", str(out), "--output-size", "8x12", "--workers", "2"]) == 0
    d = np.load(out / "val" / "bonn" / "bonn_000002_000019.npy")
    assert d.shape == (8, 12) and d.min() == 0 and d.max() == pytest.approx(1.0)


def test_cli_missing_disparity_names_file(tmp_path, capsys):
    make_city(tmp_path)
    (tmp_path / "disparity" / "val" / "bonn" / "bonn_000002_000019_disparity.png").unlink()
    rc = cli.main(["generate-depth", "--cityscapes-root", str(tmp_path), "--source", "disparity",
                   "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "bonn_000002_000019_disparity.png" in capsys.readouterr().err


def test_cli_npy_source_flat_folder(tmp_path, capsys):
    make_city(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, s in enumerate(STEMS):
        np.save(flat / f"{s}_leftImg8bit.npy", np.arange(12, dtype=np.float64).reshape(3, 4) * (i + 1))
    out = tmp_path / "depth_npy"
    assert cli.main(["generate-depth", "--cityscapes-root", str(tmp_path), "--source", "npy",
                     "--input-dir", str(flat), "--output-dir", str(out)]) == 0
    d = np.load(out / "val" / "aachen" / f"{STEMS[1]}.npy")
    np.testing.assert_allclose(d, np.arange(12).reshape(3, 4) / 11.0, rtol=1e-6)
    (flat / f"{STEMS[2]}_leftImg8bit.npy").unlink()
    assert cli.main(["generate-depth", "--cityscapes-root", str(tmp_path), "--source", "npy",
                     "--input-dir", str(flat), "--output-dir", str(tmp_path / "o2")]) == 2
    assert STEMS[2] in capsys.readouterr().err


def test_cli_network_sources_need_their_paths(tmp_path, capsys):
    make_city(tmp_path, stems=STEMS[:1])
    for src, flag in (("spidepth", "--weights"), ("depth-anything", "--model-dir"), ("npy", "--input-dir")):
        assert cli.main(["generate-depth", "--cityscapes-root", str(tmp_path), "--source", src,
                         "--output-dir", str(tmp_path / "o")]) == 2
        assert flag in capsys.readouterr().err


def test_module_help_mentions_default_preprocessing(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate-depth", "--help"])
    out = capsys.readouterr().out
    assert "--spidepth-preprocess" in out and "full-frame" in out and "--output_dir" in out


def test_cli_spidepth_tiny_weights(tmp_path):
    torch = pytest.importorskip("torch")
    from refs.spidepth import SPIdepth, SPIdepthConfig

    torch.manual_seed(0)
    SPIdepth(SPIdepthConfig(backbone="convnextv2_atto", decoder_channels=(16, 16, 8, 8), model_dim=8, patch_size=8,
                            query_nums=4, dim_out=8, dim_feedforward=16, input_size=(64, 128))).save_official(tmp_path / "w")
    make_city(tmp_path, stems=STEMS[:2])
    for mode in ("spidepth", "full-frame"):
        out = tmp_path / f"depth_{mode}"
        assert cli.main(["generate-depth", "--cityscapes-root", str(tmp_path), "--source", "spidepth",
                         "--weights", str(tmp_path / "w"), "--output-dir", str(out),
                         "--spidepth_preprocess", mode]) == 0
        d = np.load(out / "val" / "aachen" / f"{STEMS[0]}.npy")
        assert d.shape == (16, 24) and d.dtype == np.float32 and 0 <= d.min() and d.max() <= 1
        m = read_manifest(out)
        assert m["parameters"]["spidepth_preprocess"] == mode and m["parameters"]["flip"] is True


def test_cli_depth_anything_tiny_model(tmp_path):
    from tests.test_depth import save_tiny_depth_anything

    folder = save_tiny_depth_anything(tmp_path / "da")
    make_city(tmp_path, stems=STEMS[:1])
    out = tmp_path / "depth_da"
    assert cli.main(["generate-depth", "--cityscapes-root", str(tmp_path), "--source", "depth-anything",
                     "--model_dir", str(folder), "--output-dir", str(out), "--normalize", "none"]) == 0
    d = np.load(out / "val" / "aachen" / f"{STEMS[0]}.npy")
    assert d.shape == (16, 24) and d.min() >= 1.0 - 1e-6


def test_disparity_recovers_synth_depth_within_quantisation(synth_city, tmp_path):
    from pseudo_labels.datasets.synthetic_city import generate_scene, image_seed, stem_for

    out = tmp_path / "depth"
    assert cli.main(["generate-depth", "--cityscapes-root", str(synth_city), "--source", "disparity",
                     "--output-dir", str(out), "--normalize", "none"]) == 0
    for i in range(3):
        stem = stem_for(i, "val")
        scene = generate_scene(image_seed(0, i, "val"), (256, 512))
        d = np.load(out / "val" / stem.split("_")[0] / f"{stem}.npy")
        assert d.shape == (256, 512) and np.isfinite(d).all()
        valid = scene.disparity > 1
        assert valid.mean() > 0.5
        disp_px = (scene.disparity[valid].astype(np.float64) - 1) / 256
        rel = np.abs(d[valid] - scene.depth[valid]) / scene.depth[valid]
        assert np.all(rel <= 0.5 / 256 / disp_px + 1e-5)


def test_library_entry_point_and_overwrite(tmp_path):
    from pseudo_labels.core.runner import RunOptions
    from pseudo_labels.stages.instance.depth import DepthConfig, generate_depth_maps

    make_city(tmp_path, stems=STEMS[:2])
    out = tmp_path / "o"
    cfg = DepthConfig(str(tmp_path), "disparity", str(out))
    s = generate_depth_maps(cfg)
    assert s.done == 2
    assert generate_depth_maps(cfg, RunOptions()).skipped == 2
    cfg_none = DepthConfig(str(tmp_path), "disparity", str(out), normalize="none")
    s = generate_depth_maps(cfg_none, RunOptions(overwrite=True))
    assert s.done == 2 and np.load(out / "val" / "aachen" / f"{STEMS[0]}.npy").max() > 1
    assert generate_depth_maps(cfg_none, RunOptions(shard=(1, 2))).skipped == 1
