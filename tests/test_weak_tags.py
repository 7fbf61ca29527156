"""Image-level tags: JSON / CSV files, tags from ground truth, label spaces, bad input."""

import json

import numpy as np
import pytest

from pseudo_labels.datasets.cityscapes import CLASS_NAMES
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.weak.tags import (VOC_CLASS_NAMES, class_names, image_key, read_tags_file, tags_for_images,
                                     tags_from_label_map, vector_to_names)

STEM = "aachen_000001_000019"


def test_class_tables():
    assert class_names("cityscapes") == tuple(CLASS_NAMES) and len(CLASS_NAMES) == 19
    assert class_names("voc") == VOC_CLASS_NAMES and len(VOC_CLASS_NAMES) == 20
    with pytest.raises(PseudoLabelsError):
        class_names("coco")


def test_image_key_by_stem_or_basename():
    assert image_key(f"leftImg8bit/val/aachen/{STEM}_leftImg8bit.png") == STEM
    assert image_key(STEM) == STEM
    assert image_key("dir/2007_000032.jpg") == "2007_000032"


def test_json_and_csv_files(tmp_path):
    j = tmp_path / "tags.json"
    j.write_text(json.dumps({f"{STEM}_leftImg8bit.png": ["Car", "road", "traffic_light"], "other_000002_000003": "sky|person"}))
    t = read_tags_file(j)
    assert t[STEM] == ["Car", "road", "traffic_light"]
    m = tags_for_images([STEM, "other_000002_000003"], t)
    assert vector_to_names(m[0]) == ["road", "traffic light", "car"]
    assert vector_to_names(m[1]) == ["sky", "person"]
    c = tmp_path / "tags.csv"
    c.write_text(f"image,classes\n{STEM},car;road\nx_000001_000001_leftImg8bit.png,sky|building\n")
    t2 = read_tags_file(c)
    assert t2 == {STEM: ["car", "road"], "x_000001_000001": ["sky", "building"]}
    voc = tmp_path / "voc.csv"
    voc.write_text("2007_000032.jpg,aeroplane;person\n")
    mv = tags_for_images(["2007_000032"], read_tags_file(voc), "voc")
    assert mv.shape == (1, 20) and vector_to_names(mv[0], "voc") == ["aeroplane", "person"]


def test_bad_tags_name_the_image(tmp_path):
    j = tmp_path / "tags.json"
    j.write_text(json.dumps({STEM: ["car", "spaceship"], "b_000001_000001": []}))
    t = read_tags_file(j)
    with pytest.raises(PseudoLabelsError, match=f"{STEM}.*spaceship"):
        tags_for_images([STEM], t)
    with pytest.raises(PseudoLabelsError, match="b_000001_000001.*no tags"):
        tags_for_images(["b_000001_000001"], t)
    with pytest.raises(PseudoLabelsError, match="c_000001_000001.*no tags"):
        tags_for_images(["c_000001_000001"], t)
    with pytest.raises(PseudoLabelsError, match="not found"):
        read_tags_file(tmp_path / "missing.json")


def test_tags_from_ground_truth():
    gt = np.full((10, 10), 255, np.uint8)
    gt[:5] = 0  # road, 50 px
    gt[5:, :3] = 13  # car, 15 px
    gt[9, 9] = 11  # person, 1 px
    v = tags_from_label_map(gt, "cityscapes", min_pixels=10)
    assert vector_to_names(v) == ["road", "car"]
    assert tags_from_label_map(gt, "cityscapes", min_pixels=1)[11] == 1
    voc = np.zeros((4, 4), np.uint8)
    voc[0, :] = 15  # person (VOC id 15 -> channel 14)
    assert vector_to_names(tags_from_label_map(voc, "voc"), "voc") == ["person"]
    with pytest.raises(PseudoLabelsError, match="img7"):
        tags_from_label_map(np.full((4, 4), 255, np.uint8), image="img7")
