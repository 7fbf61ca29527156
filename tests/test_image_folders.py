"""VOC 2012 and BSD500 folder layouts, written tiny in their real formats."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.io import write_png
from pseudo_labels.datasets import image_folders, label_table


def voc_palette() -> list[int]:
    pal = []
    for i in range(256):
        pal += list(image_folders.voc_color(i))
    return pal


def test_voc_table_and_palette():
    table = label_table("voc2012")
    assert table.num_classes == 21 and table.names[0] == "background" and table.names[15] == "person"
    assert image_folders.voc_color(1) == (128, 0, 0) and image_folders.voc_color(15) == (192, 128, 128)
    assert table.thing_ids == tuple(range(1, 21))


def test_voc_layout_and_palette_labels(tmp_path):
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    (tmp_path / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "JPEGImages" / "2007_000033.jpg")
    ids = np.zeros((6, 8), np.uint8)
    ids[2:4, 2:6] = 15
    ids[0, :] = 255
    lab = Image.fromarray(ids, mode="P")
    lab.putpalette(voc_palette())
    (tmp_path / "SegmentationClass").mkdir()
    lab.save(tmp_path / "SegmentationClass" / "2007_000033.png")
    recs = image_folders.list_voc(tmp_path, "val")
    assert len(recs) == 1 and recs[0].stem == "2007_000033"
    assert np.array_equal(image_folders.read_voc_label(recs[0].label_path), ids)
    # the same labels saved as RGB colours read back to the same ids
    rgb = tmp_path / "rgb.png"
    lab.convert("RGB").save(rgb)
    assert np.array_equal(image_folders.read_voc_label(rgb), ids)


def test_voc_bad_label_values(tmp_path):
    p = tmp_path / "bad.png"
    Image.fromarray(np.full((3, 3), 40, np.uint8), mode="L").save(p)
    with pytest.raises(InputFileError):
        image_folders.read_voc_label(p)


def test_bsd_mat_layout(tmp_path):
    from scipy.io import savemat

    (tmp_path / "images" / "test").mkdir(parents=True)
    (tmp_path / "groundTruth" / "test").mkdir(parents=True)
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "images" / "test" / "100007.jpg")
    segs = [np.arange(35, dtype=np.uint16).reshape(5, 7) % 3 + 1, np.ones((5, 7), np.uint16)]
    cells = np.empty((1, 2), dtype=object)
    for i, s in enumerate(segs):
        cells[0, i] = {"Segmentation": s, "Boundaries": np.zeros_like(s, dtype=bool)}
    savemat(tmp_path / "groundTruth" / "test" / "100007.mat", {"groundTruth": cells})
    recs = image_folders.list_bsd(tmp_path, "test")
    got = image_folders.read_bsd_segmentations(recs[0])
    assert len(got) == 2 and all(np.array_equal(g, s) for g, s in zip(got, segs))


def test_bsd_csv_layout_as_read_by_calculate_miou(tmp_path):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "groundTruth" / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "val" / "12003.jpg")
    for i in (1, 0):
        np.savetxt(tmp_path / "groundTruth" / "val" / f"12003-{i}.csv", np.full((4, 4), i + 1), delimiter=",", fmt="%d")
    recs = image_folders.list_bsd(tmp_path, "val")
    got = image_folders.read_bsd_segmentations(recs[0])
    assert [int(g[0, 0]) for g in got] == [1, 2]  # ordered by the annotation index
    (tmp_path / "images" / "val" / "99.jpg").write_bytes(b"")
    with pytest.raises(PseudoLabelsError, match="no annotation"):
        image_folders.list_bsd(tmp_path, "val")


def test_generic_image_folder_pairs_by_relative_path(tmp_path):
    write_png(tmp_path / "img" / "a" / "x.png", np.zeros((2, 2, 3), np.uint8))
    write_png(tmp_path / "lab" / "a" / "x.png", np.zeros((2, 2), np.uint8))
    recs = image_folders.list_image_folder(tmp_path / "img", tmp_path / "lab")
    assert recs[0].stem == "a/x" and recs[0].label_path == tmp_path / "lab" / "a" / "x.png"
    write_png(tmp_path / "img" / "y.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(PseudoLabelsError, match="no label file"):
        image_folders.list_image_folder(tmp_path / "img", tmp_path / "lab")
