"""Panoptic assembly and writers; cityscapesscripts' evaluator reads our output unchanged."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from pseudo_labels.datasets.cityscapes import TRAIN_ID_TO_LABEL_ID
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.instance.panoptic import assemble_panoptic, panoptic_segments

from .test_generate_depth_guided_instances import WORK, prepare_city


def test_assemble_ids_categories_and_void():
    sem = np.full((20, 30), 0, np.uint8)  # road
    sem[0:2, 0:3] = 10  # sky: 6 px < 64 -> void
    sem[5:15, 5:12] = 13  # car
    sem[5:15, 15:25] = 13  # car
    sem[16:20, 0:30] = 255
    inst = np.zeros_like(sem, np.int32)
    inst[5:15, 5:12] = 1
    inst[5:15, 15:20] = 2  # car pixels 20..24 not in an instance -> void
    pan, segs = assemble_panoptic(sem, inst, stuff_min_area=64)
    car = int(TRAIN_ID_TO_LABEL_ID[13])
    assert pan.dtype == np.int32
    assert pan[0, 0] == 0 and pan[3, 3] == 7  # road labelId 7
    assert pan[6, 6] == car * 1000 and pan[6, 16] == car * 1000 + 1 and pan[6, 22] == 0
    assert pan[17, 0] == 0
    by_id = {s["id"]: s for s in segs}
    assert by_id[7]["category_id"] == 7 and by_id[car * 1000 + 1]["category_id"] == car
    assert by_id[car * 1000]["area"] == 70 and by_id[car * 1000]["bbox"] == [5, 5, 7, 10]
    assert all(s["iscrowd"] == 0 for s in segs)


def test_segments_match_mask_statistics():
    rng = np.random.default_rng(0)
    pan = rng.choice([0, 7, 8, 26000, 26001, 24000], size=(40, 50)).astype(np.int32)
    for s in panoptic_segments(pan):
        m = pan == s["id"]
        ys, xs = np.nonzero(m)
        assert s["area"] == m.sum()
        assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


@pytest.fixture(scope="module")
def pipeline(synth_city, tmp_path_factory):
    from pseudo_labels.cli import main

    city = prepare_city(synth_city, tmp_path_factory.mktemp("pan") / "city")
    assert main(["generate-depth-guided-instances", "--semantic-dir", str(city / "sem_gt"), "--depth-dir",
                 str(city / "depth_disp"), "--output-dir", str(city / "inst"), "--min-area", "50", "--workers", "1",
                 *WORK]) == 0
    assert main(["generate-panoptic", "--semantic-dir", str(city / "sem_gt"), "--instance-dir", str(city / "inst"),
                 "--out-json", str(city / "pan.json"), "--out-folder", str(city / "pan"), "--workers", "1"]) == 0
    return city


def test_json_layout_matches_create_panoptic_imgs(pipeline):
    pred = json.loads((pipeline / "pan.json").read_text())
    gt = json.loads((pipeline / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    assert pred["categories"] == gt["categories"]
    assert {a["image_id"] for a in pred["annotations"]} == {a["image_id"] for a in gt["annotations"]}
    assert set(pred["images"][0]) == set(gt["images"][0])
    a = pred["annotations"][0]
    assert a["file_name"] == f"{a['image_id']}_panoptic.png"
    assert set(a["segments_info"][0]) == set(gt["annotations"][0]["segments_info"][0])


def test_cityscapesscripts_reads_output_and_agrees(pipeline, tmp_path):
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    from evaluation.panoptic import evaluate_panoptic_folders

    gj, gf = pipeline / "gtFine" / "cityscapes_panoptic_val.json", pipeline / "gtFine" / "cityscapes_panoptic_val"
    with contextlib.redirect_stdout(io.StringIO()):
        cs = evaluatePanoptic(str(gj), str(gf), str(pipeline / "pan.json"), str(pipeline / "pan"),
                              str(tmp_path / "r.json"))
    ours = evaluate_panoptic_folders(gj, gf, pipeline / "pan.json", pipeline / "pan")
    assert ours["n_images"] == 3
    for key, grp in (("PQ", "All"), ("PQ_things", "Things"), ("PQ_stuff", "Stuff")):
        assert ours[key] == pytest.approx(100 * cs[grp]["pq"], abs=1e-9)
    assert ours["SQ"] == pytest.approx(100 * cs["All"]["sq"], abs=1e-9)
    assert ours["RQ"] == pytest.approx(100 * cs["All"]["rq"], abs=1e-9)
    assert 0 < ours["PQ_things"] < 100


def test_evaluate_cli_reads_output(pipeline, tmp_path):
    from pseudo_labels.cli import main

    gj, gf = pipeline / "gtFine" / "cityscapes_panoptic_val.json", pipeline / "gtFine" / "cityscapes_panoptic_val"
    rc = main(["evaluate", "--gt-json", str(gj), "--gt-folder", str(gf), "--pred-json", str(pipeline / "pan.json"),
               "--pred-folder", str(pipeline / "pan"), "--out", str(tmp_path / "e.json")])
    assert rc == 0
    assert json.loads((tmp_path / "e.json").read_text())["PQ"] > 0


# --------------------------------------------------------------------------- a data set that is not Cityscapes
def _tiny_table():
    from pseudo_labels.datasets.base import make_table

    # 3 classes, one thing; panoptic ids 1..3 (0 is void in panoptic PNGs)
    return make_table("tiny", [("ground", (128, 64, 128), False), ("wall", (70, 70, 70), False),
                               ("box", (0, 0, 142), True)], category_ids={0: 1, 1: 2, 2: 3})


@pytest.fixture
def tiny_dataset(monkeypatch):
    """Registers the 3-class table as data set 'tiny' (what a new data-set module would do)."""
    import sys
    import types

    from pseudo_labels.datasets import DATASET_MODULES

    table = _tiny_table()
    module = types.ModuleType("tiny_dataset_for_tests")
    module.LABELS = table
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(DATASET_MODULES, "tiny", module.__name__)
    return table


def _tiny_scene():
    """64x128: wall above, ground below, two touching boxes (class 2) at different depths, a void strip."""
    sem = np.zeros((64, 128), np.uint8)
    sem[:24] = 1
    sem[30:50, 20:80] = 2
    sem[60:, :8] = 255
    depth = np.full((64, 128), 0.8, np.float32)
    depth[30:50, 20:50] = 0.2
    depth[30:50, 50:80] = 0.5
    return sem, depth


def test_assemble_with_a_three_class_table():
    from pseudo_labels.stages.instance.instances import check_semantic_ids, split_instances_by_depth_edges

    tiny = _tiny_table()
    sem, depth = _tiny_scene()
    assert check_semantic_ids(sem, labels=tiny) == []
    assert check_semantic_ids(np.array([[3, 18]], np.uint8), labels=tiny) == [3, 18]
    inst = split_instances_by_depth_edges(sem, depth, min_area=50, thing_classes=tiny.thing_ids)
    assert inst.max() == 2  # the depth step splits the touching boxes
    pan, segs = assemble_panoptic(sem, inst, stuff_min_area=10, labels=tiny)
    assert sorted(s["id"] for s in segs) == [1, 2, 3000, 3001]
    assert {s["category_id"] for s in segs} == {1, 2, 3}
    assert (pan[60:, :8] == 0).all() and (pan[:24] == 2).all()
    # with the Cityscapes table, class 2 is 'building' (stuff, labelId 11): no instance ids at all
    _, cs_segs = assemble_panoptic(sem, inst, stuff_min_area=10)
    assert all(s["id"] < 1000 for s in cs_segs) and 11 in {s["id"] for s in cs_segs}


def test_folder_stages_with_a_three_class_table(tiny_dataset, tmp_path):
    from pseudo_labels.core.io import read_json, read_png, rgb_to_id, write_npy, write_png
    from pseudo_labels.stages.instance.instances import InstanceConfig, generate_instances
    from pseudo_labels.stages.instance.panoptic import PanopticConfig, generate_panoptic

    sem, depth = _tiny_scene()
    stem = "tinytown_000000_000000"
    write_png(tmp_path / "sem" / f"{stem}_classes.png", sem)
    write_npy(tmp_path / "depth" / f"{stem}.npy", depth)
    run = generate_instances(InstanceConfig(str(tmp_path / "sem"), str(tmp_path / "depth"), str(tmp_path / "inst"),
                                            min_area=50, resolution=(64, 128), dataset="tiny"))
    assert run.instances == 2 and run.thing_classes == [2]
    stats = read_json(tmp_path / "inst" / "stats.json")
    assert stats["per_class_counts"] == {"box": 2}
    assert read_json(tmp_path / "inst" / "manifest.json")["parameters"]["dataset"] == "tiny"

    pan_run = generate_panoptic(PanopticConfig(str(tmp_path / "sem"), str(tmp_path / "inst"),
                                               str(tmp_path / "pan.json"), str(tmp_path / "pan"),
                                               stuff_min_area=10, dataset="tiny"))
    assert pan_run.json_written and pan_run.done == 1
    js = read_json(tmp_path / "pan.json")
    assert js["categories"] == tiny_dataset.panoptic_categories()
    pan = rgb_to_id(read_png(tmp_path / "pan" / f"{stem}_panoptic.png"))
    assert sorted(np.unique(pan).tolist()) == [0, 1, 2, 3000, 3001]
    assert sorted(s["id"] for s in js["annotations"][0]["segments_info"]) == [1, 2, 3000, 3001]

    # an id outside the table (a Cityscapes trainId) is refused, naming the file
    write_png(tmp_path / "sem" / f"{stem}_classes.png", np.where(sem == 1, 7, sem).astype(np.uint8))
    with pytest.raises(PseudoLabelsError, match=r"_classes\.png.*unknown class ids \[7\].*tiny class ids 0\.\.2"):
        generate_instances(InstanceConfig(str(tmp_path / "sem"), str(tmp_path / "depth"), str(tmp_path / "inst2"),
                                          min_area=50, resolution=(64, 128), dataset="tiny"))


def test_tables_whose_class_zero_has_panoptic_id_zero_are_shifted():
    """Class 0 with panoptic id 0 would be void, and a thing of category 0 would collide with stuff ids."""
    from pseudo_labels.datasets.base import make_table
    from pseudo_labels.stages.instance.panoptic import panoptic_categories, panoptic_ids

    table = make_table("zero", [("car", (1, 1, 1), True), ("road", (2, 2, 2), False), ("sky", (3, 3, 3), False)])
    assert [c.panoptic_id for c in table.classes] == [0, 1, 2]
    assert panoptic_ids(table).tolist() == [1, 2, 3]
    assert [c["id"] for c in panoptic_categories(table)] == [1, 2, 3]
    sem = np.ones((20, 30), np.uint8)
    sem[:5] = 2
    sem[10:15, 2:8] = 0
    sem[10:15, 20:28] = 0
    inst = np.zeros_like(sem, np.int32)
    inst[10:15, 2:8] = 1
    inst[10:15, 20:28] = 2
    pan, segs = assemble_panoptic(sem, inst, stuff_min_area=1, labels=table)
    assert sorted(s["id"] for s in segs) == [2, 3, 1000, 1001]
    assert {s["id"]: s["category_id"] for s in segs} == {2: 2, 3: 3, 1000: 1, 1001: 1}
    assert (pan != 0).all()
    assert panoptic_ids().tolist() == TRAIN_ID_TO_LABEL_ID.tolist()  # Cityscapes keeps its labelIds
