"""Tests of pseudo_labels.stages.instance.depth: disparity formula, invalid filling, normalisation, npy folders."""

import json

import numpy as np
import pytest

from pseudo_labels.stages.instance import depth
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError

CAMERA = {"extrinsic": {"baseline": 0.2, "x": 1.7}, "intrinsic": {"fx": 2000.0, "fy": 2000.0, "u0": 1000, "v0": 500}}


def test_disparity_formula_hand_values():
    # p = 257 -> d = 1 px -> 0.2 * 2000 / 1 = 400 m; p = 513 -> 2 px -> 200 m; p = 25601 -> 100 px -> 4 m
    p = np.array([[257, 513], [25601, 1025]], np.uint16)
    d = depth.depth_from_disparity(p, CAMERA)
    assert d.dtype == np.float32 and d.shape == (2, 2)
    np.testing.assert_allclose(d, [[400.0, 200.0], [4.0, 100.0]], rtol=1e-6)


def test_invalid_pixels_filled_from_nearest_valid():
    p = np.full((5, 6), 2561, np.uint16)  # 10 px -> 40 m
    p[:, 3:] = 5121  # 20 px -> 20 m
    p[2, 1] = 0  # invalid: neighbours are 40 m
    p[0, 5] = 1  # zero disparity -> invalid, neighbours 20 m
    d = depth.depth_from_disparity(p, CAMERA)
    assert np.isfinite(d).all()
    assert d[2, 1] == pytest.approx(40.0) and d[0, 5] == pytest.approx(20.0)
    raw = depth.depth_from_disparity(p, CAMERA, fill="nan")
    assert np.isnan(raw[2, 1]) and np.isnan(raw[0, 5]) and np.isfinite(raw).sum() == 28


def test_invalid_column_block_filled_and_all_invalid_errors():
    p = np.zeros((4, 4), np.uint16)
    p[:, 0] = 257
    d = depth.depth_from_disparity(p, CAMERA)
    np.testing.assert_allclose(d, 400.0)
    with pytest.raises(PseudoLabelsError, match="no valid pixel"):
        depth.depth_from_disparity(np.ones((3, 3), np.uint16), CAMERA)


def test_disparity_rejects_float_and_3d():
    with pytest.raises(ValueError):
        depth.depth_from_disparity(np.ones((3, 3), np.float32), CAMERA)
    with pytest.raises(ValueError):
        depth.depth_from_disparity(np.ones((3, 3, 1), np.uint16), CAMERA)


def test_camera_errors_name_file(tmp_path):
    path = tmp_path / "x_camera.json"
    path.write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fy": 1.0}}))
    with pytest.raises(InputFileError, match=r"x_camera\.json.*intrinsic\.fx"):
        depth.read_camera(path)
    path.write_text(json.dumps({"extrinsic": {"baseline": -1}, "intrinsic": {"fx": 10}}))
    with pytest.raises(InputFileError, match="baseline must be a positive"):
        depth.read_camera(path)
    with pytest.raises(InputFileError, match="not found"):
        depth.read_camera(tmp_path / "missing.json")
    with pytest.raises(PseudoLabelsError, match="extrinsic.baseline"):
        depth.depth_from_disparity(np.full((2, 2), 300, np.uint16), {"intrinsic": {"fx": 1.0}})
    path.write_text(json.dumps(CAMERA))
    assert depth.camera_baseline_fx(depth.read_camera(path)) == (0.2, 2000.0)


def test_normalize_minmax_and_edge_cases():
    d = np.array([[2.0, 4.0], [6.0, 10.0]], np.float32)
    n = depth.normalize_depth(d, "minmax")
    assert n.dtype == np.float32
    np.testing.assert_allclose(n, [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(depth.normalize_depth(np.full((3, 3), 7.0), "minmax"), np.zeros((3, 3)))
    assert depth.normalize_depth(d, "none") is not d
    np.testing.assert_array_equal(depth.normalize_depth(d, "none"), d)
    bad = d.copy()
    bad[0, 0] = np.nan
    with pytest.raises(PseudoLabelsError, match="non-finite"):
        depth.normalize_depth(bad, "minmax")
    with pytest.raises(ValueError):
        depth.normalize_depth(d, "zscore")


def test_resize_depth_bilinear():
    d = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    r = depth.resize_depth(d, (4, 4))
    assert r.shape == (4, 4) and r.dtype == np.float32
    np.testing.assert_allclose(r[0], [0, 0.25, 0.75, 1.0])


@pytest.mark.parametrize("nested", [True, False])
def test_npy_folder_pairing(tmp_path, nested):
    stems = ["aachen_000000_000019", "bonn_000001_000002"]
    for i, s in enumerate(stems):
        sub = tmp_path / "val" / s.split("_")[0] if nested else tmp_path
        sub.mkdir(parents=True, exist_ok=True)
        name = f"{s}.npy" if nested else f"{s}_leftImg8bit_depth.npy"
        np.save(sub / name, np.full((1, 3, 4), i, np.float64))
    index = depth.index_depth_folder(tmp_path)
    assert sorted(index) == stems
    a = depth.read_depth_npy(index[stems[1]])
    assert a.shape == (3, 4) and a.dtype == np.float32 and a[0, 0] == 1


def test_npy_bad_shape_names_file(tmp_path):
    np.save(tmp_path / "a_000000_000000.npy", np.zeros((2, 3, 4)))
    with pytest.raises(InputFileError, match="a_000000_000000.npy"):
        depth.read_depth_npy(tmp_path / "a_000000_000000.npy")


# --------------------------------------------------------------------------- SPIdepth
torch = pytest.importorskip("torch")

TINY = dict(backbone="convnextv2_atto", decoder_channels=(32, 16, 16, 8), model_dim=8, patch_size=8,
            query_nums=4, dim_out=8, dim_feedforward=32, input_size=(64, 128))


@pytest.fixture(scope="module")
def tiny_spidepth(tmp_path_factory):
    from refs.spidepth import SPIdepth, SPIdepthConfig

    torch.manual_seed(0)
    model = SPIdepth(SPIdepthConfig(**TINY)).eval()
    folder = tmp_path_factory.mktemp("spidepth")
    model.save_official(folder)
    return model, folder


def test_spidepth_official_key_layout_and_round_trip(tiny_spidepth):
    from refs.spidepth import load_spidepth, read_checkpoints

    model, folder = tiny_spidepth
    enc, dec = read_checkpoints(folder)
    # encoder.pth: timm features_only backbone under "encoder.", U-Net decoder under "decoder."; plus height/width
    assert enc["height"] == 64 and enc["width"] == 128
    for k in ("encoder.stem_0.weight", "encoder.stages_0.blocks.0.mlp.grn.weight", "decoder.blocks.0.conv1.conv.weight",
              "decoder.blocks.3.conv2.bn.running_mean", "decoder.final_conv.weight"):
        assert k in enc, k
    # depth.pth: the query head, no prefix
    for k in ("positional_encodings", "embedding_convPxP.weight", "transformer_encoder.layers.3.linear1.weight",
              "conv3x3.weight", "bins_regressor.4.weight", "convert_to_prob.0.weight"):
        assert k in dec, k
    assert dec["positional_encodings"].shape == (500, 8)
    loaded = load_spidepth(folder)
    assert loaded.config.backbone == "convnextv2_atto" and loaded.config.decoder_channels == (32, 16, 16, 8)
    assert (loaded.config.patch_size, loaded.config.query_nums, loaded.config.dim_out) == (8, 4, 8)
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, loaded(x))
    assert y.shape == (2, 1, 32, 64)
    assert float(y.min()) >= 0.01 and float(y.max()) <= 80.0


def test_spidepth_single_file_with_prefixes_and_mismatch(tiny_spidepth, tmp_path):
    from refs.spidepth import SPIdepth, SPIdepthConfig, load_spidepth

    model, folder = tiny_spidepth
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "all.pth")
    assert load_spidepth(tmp_path / "all.pth").config.model_dim == 8
    other = SPIdepth(SPIdepthConfig(**{**TINY, "model_dim": 16}))
    enc, dec = other.official_state_dicts()
    with pytest.raises((KeyError, RuntimeError)):
        model.load_official(enc, dec)


def test_spidepth_cityscapes_architecture_shapes():
    """The released Cityscapes config: ConvNeXtV2-Huge U-Net, decoder 1024/512/256/128, 32-d, 5x16 patches."""
    from refs.spidepth import SPIdepth, SPIdepthConfig

    with torch.device("meta"):
        m = SPIdepth(SPIdepthConfig())
    assert [b.conv1.conv.in_channels for b in m.encoder.decoder.blocks] == [2816 + 1408, 1024 + 704, 512 + 352, 256]
    assert m.depth_decoder.bins_regressor[0].in_features == 32 * 64
    assert m.config.input_size == (320, 1024)


def test_spidepth_preprocessing_crop_and_paste(tiny_spidepth):
    model, _ = tiny_spidepth
    img = np.random.default_rng(1).integers(0, 255, (40, 96, 3), dtype=np.uint8)
    x, kept = depth.spidepth_input(img, (64, 128), 0.25)
    assert kept == 30 and x.shape == (3, 64, 128) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert depth.crop_rows_kept(1024, 0.25) == 1024 * 3 // 4
    pred = depth.SPIdepthPredictor(model, preprocess="spidepth").predict(img)
    assert pred.shape == (40, 96) and pred.dtype == np.float32 and np.isfinite(pred).all()
    np.testing.assert_array_equal(pred[30:], np.broadcast_to(pred[29], (10, 96)))
    full = depth.SPIdepthPredictor(model, preprocess="full-frame", flip=False).predict(img)
    assert full.shape == (40, 96) and not np.array_equal(full[35], full[29])


def test_spidepth_predictor_missing_weights(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        depth.SPIdepthPredictor.from_weights(tmp_path / "nope")
    (tmp_path / "encoder.pth").write_bytes(b"junk")
    with pytest.raises(PseudoLabelsError):
        depth.SPIdepthPredictor.from_weights(tmp_path)


# --------------------------------------------------------------------------- Depth Anything
def save_tiny_depth_anything(folder):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    bb = Dinov2Config(image_size=56, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=32, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=bb, patch_size=14, reassemble_hidden_size=16,
                              neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8, head_hidden_size=8)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def test_depth_anything_tiny_local_folder(tmp_path):
    folder = save_tiny_depth_anything(tmp_path / "da")
    pred = depth.DepthAnythingPredictor.from_pretrained(folder)
    img = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    out = pred.predict(img)
    assert out.shape == (30, 50) and out.dtype == np.float32
    assert out.min() >= 1.0 - 1e-6 and out.max() <= 100.0 + 1e-4
    with pytest.raises(InputFileError, match="config.json"):
        depth.DepthAnythingPredictor.from_pretrained(tmp_path / "empty")


def test_depth_from_relative_disparity():
    d = depth.depth_from_relative_disparity(np.array([[4.0, 2.0], [0.0, -1.0]]), max_ratio=10)
    np.testing.assert_allclose(d, [[1.0, 2.0], [10.0, 10.0]])
    with pytest.raises(PseudoLabelsError):
        depth.depth_from_relative_disparity(np.zeros((2, 2)))
