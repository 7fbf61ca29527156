"""Tests of pseudo_labels.depth: disparity formula, invalid filling, normalisation, npy folders."""

import json

import numpy as np
import pytest

from pseudo_labels import depth
from pseudo_labels.errors import InputFileError, PseudoLabelsError

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
