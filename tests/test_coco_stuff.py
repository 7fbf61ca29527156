"""COCO-Stuff-27 data set: label table, fine -> coarse mapping, PiCIE curated layout."""

from __future__ import annotations

import numpy as np
import pytest

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.io import write_png
from pseudo_labels.datasets import coco_stuff, label_table


def test_label_table_and_registry():
    table = label_table("coco-stuff-27")
    assert table is coco_stuff.LABELS
    assert table.num_classes == 27 and table.thing_ids == tuple(range(12)) and table.void == 255
    assert len(set(map(tuple, table.colors.tolist()))) == 27


def test_every_fine_index_maps_to_exactly_one_coarse_class():
    fine = [f for _, _, fs in coco_stuff.COARSE_CLASSES for f in fs]
    assert sorted(fine) == list(range(182))
    lut = coco_stuff.fine_to_coarse_lut()
    # spot checks (COCO category id - 1): person 0, car 2, giraffe 24, sky-other 156, wall-wood 176, water-other 177
    assert [lut[i] for i in (0, 2, 24, 156, 176, 177)] == [9, 11, 7, 23, 18, 26]
    assert lut[255] == 255 and lut[200] == 255
    # thing fine indices (0..90) go to thing classes, stuff (91..181) to stuff classes
    assert np.all(lut[:91] < 12) and np.all((lut[91:182] >= 12) & (lut[91:182] < 27))


def write_coco(root, ids, split="val2017", images_dir="images", labels_dir="annotations"):
    (root / "curated" / split).mkdir(parents=True)
    (root / "curated" / split / coco_stuff.LIST_NAME).write_text("".join(f"{i}\n" for i in ids))
    for i in ids:
        write_png(root / images_dir / split / f"{i}.jpg", np.zeros((8, 10, 3), np.uint8))  # content irrelevant
        fine = np.full((8, 10), 255, np.uint8)
        fine[:4] = 0  # person
        fine[4:, :5] = 156  # sky-other
        write_png(root / labels_dir / split / f"{i}.png", fine)


@pytest.mark.parametrize("images_dir,labels_dir", [("images", "annotations"), ("", "stuffthingmaps")])
def test_lists_curated_images_in_both_layouts(tmp_path, images_dir, labels_dir):
    write_coco(tmp_path, ["000000000139", "000000000724"], images_dir=images_dir, labels_dir=labels_dir)
    recs = coco_stuff.list_images(tmp_path, "val2017")
    assert [r.stem for r in recs] == ["000000000139", "000000000724"]
    lab = coco_stuff.read_label(recs[0].label_path)
    assert lab.dtype == np.uint8 and np.all(lab[:4] == 9) and np.all(lab[4:, :5] == 23) and np.all(lab[4:, 5:] == 255)


def test_missing_files_and_bad_labels(tmp_path):
    with pytest.raises(PseudoLabelsError, match="curated image list"):
        coco_stuff.list_images(tmp_path, "val2017")
    write_coco(tmp_path, ["1"])
    (tmp_path / "curated" / "val2017" / coco_stuff.LIST_NAME).write_text("1\n2\n")
    with pytest.raises(PseudoLabelsError, match="missing"):
        coco_stuff.list_images(tmp_path, "val2017")
    bad = tmp_path / "bad.png"
    write_png(bad, np.full((3, 3), 200, np.uint8))
    with pytest.raises(InputFileError, match="not fine"):
        coco_stuff.read_label(bad)
