import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels

from pseudo_labels.core.runner import select_shard
from pseudo_labels.datasets import cityscapes as cs
from pseudo_labels.core.errors import PseudoLabelsError


def test_class_tables_come_from_cityscapesscripts():
    assert cs.NUM_CLASSES == 19 and len(cs.CLASS_NAMES) == 19
    assert cs.CLASS_NAMES[0] == "road" and cs.CLASS_NAMES[13] == "car"
    assert cs.THING_TRAIN_IDS == tuple(range(11, 19))
    assert cs.STUFF_TRAIN_IDS == tuple(range(11))
    lut = cs.label_id_to_train_id_lut()
    for lab in cs_labels:
        if 0 <= lab.id < 256:
            assert lut[lab.id] == (lab.trainId if 0 <= lab.trainId < 255 else 255)
    assert np.array_equal(lut[cs.TRAIN_ID_TO_LABEL_ID], np.arange(19))
    cats = cs.panoptic_categories()
    assert len(cats) == 19 and sum(c["isthing"] for c in cats) == 8
    assert {c["id"] for c in cats} == set(cs.TRAIN_ID_TO_LABEL_ID.tolist())


def test_stems_and_pairing(tmp_path):
    assert cs.stem_of("frankfurt_000000_000294_leftImg8bit.png") == "frankfurt_000000_000294"
    assert cs.stem_of("bad-honnef_000001_000002_gtFine_labelTrainIds.png") == "bad-honnef_000001_000002"
    assert cs.stem_of("readme.txt") is None
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "aachen_000001_000019_leftImg8bit.png").write_bytes(b"")
    (tmp_path / "bonn_000002_000019.png").write_bytes(b"")
    idx = cs.index_by_stem(tmp_path)
    assert set(idx) == {"aachen_000001_000019", "bonn_000002_000019"}
    (tmp_path / "aachen_000001_000019_other.png").write_bytes(b"")
    with pytest.raises(PseudoLabelsError, match="two files for image aachen_000001_000019"):
        cs.index_by_stem(tmp_path)


def test_list_images_errors(tmp_path):
    with pytest.raises(PseudoLabelsError, match="no such folder"):
        cs.list_images(tmp_path, "val")
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(PseudoLabelsError, match="no \\*_leftImg8bit.png images"):
        cs.list_images(tmp_path, "val")


def test_select_shard_partitions():
    items = list(range(10))
    parts = [select_shard(items, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == items
    assert select_shard(items, None) == items


def test_official_gtfine_is_read_by_suffix(synth_city_official, tmp_path):
    """The official gtFine folder holds four files per image: pairing by stem needs the suffix; the trainIds
    read from _labelIds equal those cityscapesscripts draws from the polygons (prepare-gt)."""
    from pseudo_labels.core.io import read_png
    from pseudo_labels.datasets.cityscapes_gt import prepare_ground_truth

    gt = synth_city_official / "gtFine" / "val"
    with pytest.raises(PseudoLabelsError, match="two files for image"):
        cs.index_by_stem(gt, ".png")
    for suffix in ("_gtFine_labelIds.png", "_gtFine_instanceIds.png", "_gtFine_color.png", "_gtFine_polygons.json"):
        assert len(cs.index_by_stem(gt, suffix)) == 3
    prepared = prepare_ground_truth(synth_city_official, "val", tmp_path / "cache", ("trainIds",))
    for e in cs.list_images(synth_city_official, "val"):
        assert not cs.gt_path(synth_city_official, e, "labelTrainIds").exists()
        assert np.array_equal(cs.read_gt_train_ids(synth_city_official, e), read_png(prepared.train_ids(e.stem)))


def test_gt_train_ids_come_from_labelids_on_the_official_layout(synth_city, synth_city_official):
    """The official zips hold no labelTrainIds: trainIds come from _labelIds through cityscapesscripts'
    table, equal to the prepared labelTrainIds of the same scenes; the weak tags read them too."""
    from pseudo_labels.datasets.cityscapes import gt_train_ids_file, list_images, read_gt_train_ids
    from pseudo_labels.stages.weak.inputs import load_tags

    official = list_images(synth_city_official, "val")
    extended = list_images(synth_city, "val")
    for eo, ee in zip(official, extended):
        assert gt_train_ids_file(synth_city_official, eo).name.endswith("_gtFine_labelIds.png")
        assert gt_train_ids_file(synth_city, ee).name.endswith("_gtFine_labelTrainIds.png")
        np.testing.assert_array_equal(read_gt_train_ids(synth_city_official, eo), read_gt_train_ids(synth_city, ee))
    tags_official = load_tags(synth_city_official, official, tags_from_gt=True)
    np.testing.assert_array_equal(tags_official, load_tags(synth_city, extended, tags_from_gt=True))
    assert tags_official.sum() > 0
