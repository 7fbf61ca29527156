"""PST900 loader (pseudo_labels.datasets.pst900): separate rgb/, thermal/, labels/ folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets import label_table, pst900
from pseudo_labels.datasets.rgbt import list_rgbt_images, read_rgbt_sample, thermal_to_uint8


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = array[:, :, ::-1]
    assert cv2.imwrite(str(path), np.ascontiguousarray(array))


@pytest.fixture()
def pst_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    for name in ("32_bag", "7_drill"):
        base = tmp_path / "train"
        _write(base / "rgb" / f"{name}.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
        _write(base / "thermal" / f"{name}.png", rng.integers(0, 256, (30, 40), dtype=np.uint8))
        _write(base / "labels" / f"{name}.png", rng.integers(0, 5, (30, 40), dtype=np.uint8))
    return tmp_path


def test_table():
    assert label_table("pst900").names == ("background", "fire_extinguisher", "backpack", "hand_drill", "survivor")


def test_lists_and_reads_split_folder(pst_root):
    recs = list_rgbt_images("pst900", pst_root, "train")
    assert [r.stem for r in recs] == ["32_bag", "7_drill"]
    rgb, thermal, label = read_rgbt_sample("pst900", recs[1])
    assert np.array_equal(rgb, cv2.imread(str(recs[1].image_path))[:, :, ::-1])
    assert np.array_equal(thermal, cv2.imread(str(recs[1].extra["thermal"]), cv2.IMREAD_UNCHANGED))
    assert label.max() <= 4 and label.shape == (30, 40)


def test_flat_layout_with_split_list(pst_root):
    flat = pst_root / "train"
    (flat / "val.txt").write_text("7_drill\n")
    assert [r.stem for r in pst900.list_images(flat, "val")] == ["7_drill"]


def test_size_mismatch_names_the_thermal_file(pst_root):
    _write(pst_root / "train" / "thermal" / "7_drill.png", np.zeros((20, 40), np.uint8))
    rec = pst900.list_images(pst_root, "train")[1]
    with pytest.raises(InputFileError, match=r"thermal/7_drill.png: thermal image is 20x40 but the RGB image"):
        pst900.read_rgbt(rec)


def test_missing_thermal_and_missing_split(pst_root):
    (pst_root / "train" / "thermal" / "32_bag.png").unlink()
    with pytest.raises(InputFileError, match="thermal image of '32_bag' not found"):
        pst900.list_images(pst_root, "train")
    with pytest.raises(PseudoLabelsError, match="no test/rgb/ folder"):
        pst900.list_images(pst_root, "test")


def test_sixteen_bit_thermal_is_scaled_per_image():
    t = np.linspace(1000, 2000, 200 * 10).reshape(200, 10).astype(np.uint16)
    out = thermal_to_uint8(t)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone
    with pytest.raises(InputFileError, match="different channels"):
        thermal_to_uint8(np.random.default_rng(0).integers(0, 255, (4, 4, 3), dtype=np.uint8), "t.png")
