"""Tests of pseudo_labels.stages.outputs.export: panoptic input checks, CUPS rules, COCO panoptic export."""

import json

import numpy as np
import pytest

from pseudo_labels.core import io
from pseudo_labels.stages.outputs import export
from pseudo_labels.datasets.cityscapes import THING_TRAIN_IDS, panoptic_categories
from pseudo_labels.core.errors import PseudoLabelsError

STEMS = ("aachen_000000_000019", "bochum_000000_000313")


def scene(h=32, w=64, n_cars=2, seed=0):
    """(pan ids int64, segments) with road, sky, n_cars cars (26000+k), a person, a crowd person region."""
    pan = np.zeros((h, w), np.int64)
    pan[h // 2:, :] = 7  # road (trainId 0)
    pan[: h // 4, :] = 23  # sky (trainId 10)
    segs = [{"id": 7, "category_id": 7, "iscrowd": 0}, {"id": 23, "category_id": 23, "iscrowd": 0}]
    cw = max(1, (w - 8) // max(n_cars, 1))
    for k in range(n_cars):
        r, c = divmod(k, 1)
        pan[h // 4: h // 2, k * cw % (w - 8): k * cw % (w - 8) + max(1, cw)] = 26000 + k
        segs.append({"id": 26000 + k, "category_id": 26, "iscrowd": 0})
    pan[h - 6:h - 2, w - 6:w - 2] = 24001  # person
    pan[h - 6:h - 2, 0:3] = 24  # crowd person
    segs += [{"id": 24001, "category_id": 24, "iscrowd": 0}, {"id": 24, "category_id": 24, "iscrowd": 1}]
    present = set(np.unique(pan).tolist())
    segs = [s for s in segs if s["id"] in present]
    return pan, segs


def write_panoptic(root, stems=STEMS, scenes=None, name="pred"):
    """Write a Cityscapes-panoptic prediction (PNG folder + sibling JSON); return (folder, json)."""
    folder = root / name
    anns = []
    for i, stem in enumerate(stems):
        pan, segs = scenes[i] if scenes else scene(seed=i)
        io.write_png(folder / f"{stem}_gtFine_panoptic.png", io.id_to_rgb(pan))
        anns.append({"image_id": stem, "file_name": f"{stem}_gtFine_panoptic.png", "segments_info": segs})
    js = root / f"{name}.json"
    io.write_json(js, {"images": [{"id": s, "file_name": f"{s}_leftImg8bit.png"} for s in stems],
                       "annotations": anns, "categories": panoptic_categories()})
    return folder, js


def test_panoptic_to_semantic_instances_ids():
    pan, segs = scene()
    to_train, isthing = export.category_tables(panoptic_categories())
    sem, inst = export.panoptic_to_semantic_instances(pan, segs, to_train, isthing)
    assert sem.dtype == np.uint8 and inst.dtype == np.int32
    assert (sem[pan == 7] == 0).all() and (sem[pan == 23] == 10).all() and (sem[pan == 0] == 255).all()
    assert (sem[pan == 26000] == 13).all() and (sem[pan == 24] == 11).all()
    # instances 1..N for non-crowd things in segment-id order; stuff/void/crowd -> 0
    assert (inst[pan == 24001] == 1).all() and (inst[pan == 26000] == 2).all() and (inst[pan == 26001] == 3).all()
    assert (inst[np.isin(pan, [0, 7, 23, 24])] == 0).all()


def test_category_ids_may_be_train_ids():
    to_train, isthing = export.category_tables(panoptic_categories(use_train_id=True))
    assert to_train[13] == 13 and isthing[13] and not isthing[0]


def test_default_json_is_sibling(tmp_path):
    folder, js = write_panoptic(tmp_path)
    inp = export.load_panoptic_input(folder)
    assert inp.json_path == js and [im.stem for im in inp.images] == sorted(STEMS)


def test_mismatched_json_and_png_name_the_image(tmp_path):
    folder, js = write_panoptic(tmp_path)
    data = json.loads(js.read_text())
    inp = export.load_panoptic_input(folder, js)
    # segment in the PNG, not in the JSON
    im = inp.images[0]
    with pytest.raises(PseudoLabelsError, match=f"image {im.stem}: segment ids .* not in the JSON"):
        export.read_panoptic_image(inp, export.PanopticImage(im.stem, im.png_path, im.segments[1:]))
    # segment in the JSON, not in the PNG
    extra = im.segments + [{"id": 26099, "category_id": 26, "iscrowd": 0}]
    with pytest.raises(PseudoLabelsError, match=f"image {im.stem}: segments \\[26099\\] of the JSON have no pixel"):
        export.read_panoptic_image(inp, export.PanopticImage(im.stem, im.png_path, extra))
    # missing PNG
    (folder / f"{STEMS[1]}_gtFine_panoptic.png").unlink()
    with pytest.raises(PseudoLabelsError, match=f"no PNG for image {STEMS[1]}"):
        export.load_panoptic_input(folder, js)
    assert data["annotations"]


def test_resize_nearest_matches_torch_interpolate():
    import torch
    import torch.nn.functional as F

    a = np.arange(32 * 64).reshape(32, 64)
    size = export.scaled_size(a.shape, 0.625)
    assert size == (20, 40)
    ref = F.interpolate(torch.tensor(a)[None, None].float(), scale_factor=0.625, mode="nearest")[0, 0].long().numpy()
    assert np.array_equal(export.resize_nearest(a, size), ref)


def test_cups_thing_stuff_rule():
    # cups/data/pseudo_label_dataset.py PseudoLabelDataset.__init__: ratio inside/all, sorted, normalised,
    # number of things = (p > threshold).argmin()
    inside = np.array([0, 0, 50, 40, 0])
    all_ = np.array([100, 100, 50, 50, 10])
    things, stuff = export.cups_thing_stuff_split(inside, all_, 0.08)
    assert set(things) == {2, 3} and set(stuff) == {0, 1, 4}
    lo, hi = export.cups_threshold_interval(inside, all_, [2, 3])
    assert lo == 0.0 and hi == pytest.approx(0.8 / 1.8, rel=1e-5)
    # quirk of argmin: when every class exceeds the threshold, CUPS takes NO thing class
    assert export.cups_thing_stuff_split(np.array([5, 5]), np.array([5, 5]), 0.08)[0] == ()


def test_class_distributions_like_thingstuff_splitter():
    # cups/thingstuff_split.py ThingStuffSplitter.update: bincounts of semantic, of semantic inside
    # instances, and of the class of each instance
    sem = np.array([[0, 13, 13], [13, 11, 255]], np.uint8)
    inst = np.array([[0, 1, 1], [2, 3, 0]])
    d = export.class_distributions(sem, inst)
    assert d["all"][[0, 11, 13]].tolist() == [1, 1, 3] and d["all"].sum() == 5
    assert d["inside"][[0, 11, 13]].tolist() == [0, 1, 3]
    assert d["per_object"][13] == 2 and d["per_object"][11] == 1


def test_coco_export_round_trip_scores_perfect(tmp_path):
    from panopticapi.evaluation import pq_compute

    folder, js = write_panoptic(tmp_path)
    inp = export.load_panoptic_input(folder, js)
    out = tmp_path / "coco"
    counts = export.write_coco_panoptic(inp, out)
    data = json.loads((out / "panoptic.json").read_text())
    assert counts["images"] == 2
    assert [im["id"] for im in data["images"]] == [1, 2]
    assert all(isinstance(a["image_id"], int) for a in data["annotations"])
    assert [im["stem"] for im in data["images"]] == sorted(STEMS)
    assert STEMS[0] in data["images"][0]["file_name"]
    cats = {c["id"]: c for c in data["categories"]}
    assert cats[26]["isthing"] == 1 and cats[7]["isthing"] == 0
    seg = data["annotations"][0]["segments_info"][0]
    pan0, _ = scene()
    assert seg["area"] == int((pan0 == seg["id"]).sum())
    ys, xs = np.nonzero(pan0 == seg["id"])
    assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    res = pq_compute(str(out / "panoptic.json"), str(out / "panoptic.json"), str(out / "panoptic"), str(out / "panoptic"))
    assert res["All"]["pq"] == pytest.approx(1.0)
    assert res["Things"]["pq"] == pytest.approx(1.0) and res["Stuff"]["pq"] == pytest.approx(1.0)


def test_coco_export_readable_by_hotcoco(tmp_path):
    from hotcoco.panoptic import pq_compute

    folder, js = write_panoptic(tmp_path)
    out = tmp_path / "coco"
    export.write_coco_panoptic(export.load_panoptic_input(folder, js), out)
    res = pq_compute(str(out / "panoptic.json"), str(out / "panoptic.json"), str(out / "panoptic"), str(out / "panoptic"))
    assert res["All"]["pq"] == pytest.approx(1.0)


def test_coco_refuses_non_empty_folder(tmp_path):
    folder, js = write_panoptic(tmp_path)
    out = tmp_path / "coco"
    out.mkdir()
    (out / "other.txt").write_text("x")
    inp = export.load_panoptic_input(folder, js)
    with pytest.raises(PseudoLabelsError, match="not empty.*--overwrite"):
        export.write_coco_panoptic(inp, out)
    export.write_coco_panoptic(inp, out, overwrite=True)
    assert (out / "panoptic.json").exists()


def test_thing_train_ids_are_cityscapes_things():
    assert THING_TRAIN_IDS == tuple(range(11, 19))


def test_synth_city_ground_truth_exports(synth_city, tmp_path):
    """The synthetic city's panoptic GT (as a prediction) goes through both exports."""
    from panopticapi.evaluation import pq_compute

    from pseudo_labels.datasets.cityscapes import panoptic_gt

    gt_json, gt_dir = panoptic_gt(synth_city, "val")
    inp = export.load_panoptic_input(gt_dir, gt_json)
    assert inp.json_path == gt_json
    export.write_coco_panoptic(inp, tmp_path / "coco")
    c = tmp_path / "coco"
    res = pq_compute(str(c / "panoptic.json"), str(c / "panoptic.json"), str(c / "panoptic"), str(c / "panoptic"))
    assert res["All"]["pq"] == pytest.approx(1.0)
    # CUPS: synth has no leftImg8bit_sequence, so the image check must say so
    with pytest.raises(PseudoLabelsError, match="leftImg8bit_sequence"):
        export.write_cups_folder(inp, tmp_path / "cups", cityscapes_root=synth_city)
    res = export.write_cups_folder(inp, tmp_path / "cups2", cityscapes_root=synth_city, check_images=False)
    assert res["split"] == "val" and res["cups_config"]["DATA.DATASET"] == "cityscapes_val"
    for im in inp.images:
        _, sem, inst = export.read_panoptic_image(inp, im)
        sem = export.void_unmatched_things(sem, inst)
        s = export.read_cups_pair(tmp_path / "cups2" / f"{im.stem}_leftImg8bit_semantic.png",
                                  tmp_path / "cups2" / f"{im.stem}_leftImg8bit_instance.png")
        assert np.array_equal(s.semantic, export.resize_nearest(sem, s.semantic.shape))


def test_export_coco_subcommand_with_underscore_flags(tmp_path):
    from pseudo_labels.cli import main

    folder, js = write_panoptic(tmp_path)
    out = tmp_path / "c"
    assert main(["export-coco", "--panoptic_dir", str(folder), "--panoptic_json", str(js), "--out", str(out)]) == 0
    man = io.read_manifest(out)
    assert man["stage"] == "export-coco" and man["counts"]["images"] == 2 and man["uses_ground_truth"] is False
    # a second run refuses the now non-empty folder with one line
    assert main(["export-coco", "--panoptic-dir", str(folder), "--out", str(out)]) == 2


def test_folder_level_exports_write_manifests(tmp_path):
    from pseudo_labels.core.runner import RunOptions

    folder, js = write_panoptic(tmp_path)
    counts = export.export_coco(export.CocoExportConfig(str(folder), str(tmp_path / "coco"), name="pl"),
                                RunOptions())
    assert counts["images"] == 2 and counts["json"] == "pl.json" and (tmp_path / "coco" / "pl").is_dir()
    man = io.read_manifest(tmp_path / "coco")
    assert man["parameters"] == {"name": "pl"} and man["inputs"]["panoptic_json"] == str(js)
    assert man["inputs"]["panoptic_pngs"]["n_files"] == 2

    res = export.export_cups(export.CupsExportConfig(str(folder), str(tmp_path / "cups"), target="cups-fork"))
    man = io.read_manifest(tmp_path / "cups")
    assert man["stage"] == "convert-to-cups-format" and man["counts"] == json.loads(json.dumps(res["counts"]))
    assert man["parameters"]["target"] == "cups-fork" and man["parameters"]["image_check"] is False
    assert sorted(res["cups_config"]["thing_classes"]) == sorted(THING_TRAIN_IDS)
