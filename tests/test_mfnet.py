"""MFNet loader (pseudo_labels.datasets.mfnet) on tiny folders written here in the real layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.datasets import label_table, mfnet
from pseudo_labels.datasets.rgbt import condition_of, read_rgbt_sample


def _write_png(path: Path, array: np.ndarray) -> None:
    """Encode with OpenCV directly (BGR(A) order on disk), independent of the code under test."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2)
    assert cv2.imwrite(str(path), np.ascontiguousarray(array))


@pytest.fixture()
def mfnet_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("00001D", "00002N", "00003N"):
        img = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)
        _write_png(tmp_path / "images" / f"{name}.png", img)
        _write_png(tmp_path / "labels" / f"{name}.png", rng.integers(0, 9, (48, 64), dtype=np.uint8))
    (tmp_path / "train.txt").write_text("00001D\n00002N\n")
    (tmp_path / "test.txt").write_text("00003N\n\n")
    return tmp_path


def test_table_has_nine_classes_in_mfnet_order():
    assert label_table("mfnet") is mfnet.LABELS
    assert mfnet.LABELS.names == ("unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail",
                                  "color_cone", "bump")
    assert mfnet.LABELS.void == 255 and mfnet.LABELS.thing_ids == (1, 2, 3)


def test_lists_split_in_order_with_labels(mfnet_root):
    recs = mfnet.list_images(mfnet_root, "train")
    assert [r.stem for r in recs] == ["00001D", "00002N"]
    assert recs[0].image_path == mfnet_root / "images" / "00001D.png"
    assert recs[1].label_path == mfnet_root / "labels" / "00002N.png"
    assert [condition_of(r.stem) for r in recs] == ["day", "night"]
    assert [r.stem for r in mfnet.list_images(mfnet_root, "test")] == ["00003N"]


def test_reads_rgb_thermal_and_label_exactly(mfnet_root):
    rec = mfnet.list_images(mfnet_root, "train")[0]
    stored = cv2.imread(str(rec.image_path), cv2.IMREAD_UNCHANGED)  # BGRA
    rgb, thermal, label = read_rgbt_sample("mfnet", rec)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, stored[:, :, 2::-1]) and np.array_equal(thermal, stored[:, :, 3])
    assert np.array_equal(label, cv2.imread(str(rec.label_path), cv2.IMREAD_UNCHANGED))


def test_write_sample_round_trip(tmp_path):
    rgb = np.arange(32 * 40 * 3, dtype=np.uint32).reshape(32, 40, 3).astype(np.uint8)
    thermal = (np.arange(32 * 40) % 251).reshape(32, 40).astype(np.uint8)
    label = np.full((32, 40), 7, np.uint8)
    mfnet.write_sample(tmp_path, "x1N", rgb, thermal, label)
    (tmp_path / "val.txt").write_text("x1N\n")
    rec = mfnet.list_images(tmp_path, "val")[0]
    r, t, lab = read_rgbt_sample("mfnet", rec)
    assert np.array_equal(r, rgb) and np.array_equal(t, thermal) and np.array_equal(lab, label)


def test_three_channel_png_is_a_clear_error(mfnet_root):
    _write_png(mfnet_root / "images" / "00001D.png", np.zeros((48, 64, 3), np.uint8))
    rec = mfnet.list_images(mfnet_root, "train")[0]
    with pytest.raises(InputFileError, match=r"00001D.png: PNG has 3 channels, expected 4"):
        mfnet.read_rgbt(rec)


def test_missing_split_list_names_the_file(mfnet_root):
    with pytest.raises(InputFileError, match=r"val.txt: split list not found.*lists present: test, train"):
        mfnet.list_images(mfnet_root, "val")


def test_missing_listed_image_names_it(mfnet_root):
    (mfnet_root / "train.txt").write_text("00001D\n00009D\n")
    with pytest.raises(InputFileError, match=r"00009D.png: image of '00009D'"):
        mfnet.list_images(mfnet_root, "train")


def test_label_ids_outside_the_table(mfnet_root):
    _write_png(mfnet_root / "labels" / "00002N.png", np.full((48, 64), 12, np.uint8))
    rec = mfnet.list_images(mfnet_root, "train")[1]
    with pytest.raises(InputFileError, match=r"00002N.png: label ids \[12\] are not classes of mfnet"):
        mfnet.read_label(rec)


def test_label_of_other_size(mfnet_root):
    _write_png(mfnet_root / "labels" / "00002N.png", np.zeros((40, 64), np.uint8))
    rec = mfnet.list_images(mfnet_root, "train")[1]
    with pytest.raises(InputFileError, match="label is 40x64 but the image is 48x64"):
        read_rgbt_sample("mfnet", rec)


def test_image_without_label(mfnet_root):
    (mfnet_root / "labels" / "00003N.png").unlink()
    rec = mfnet.list_images(mfnet_root, "test")[0]
    assert rec.label_path is None
    with pytest.raises(PseudoLabelsError, match="no label file"):
        mfnet.read_label(rec)
