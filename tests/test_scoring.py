"""pseudo_labels.stages.outputs.scoring: the folder-level evaluation the evaluate command calls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import write_png
from pseudo_labels.core.runner import RunOptions
from pseudo_labels.stages.outputs.scoring import EvaluateConfig, choose_engine, evaluate_folders, evaluate_semantic_dirs, format_table
from tests.test_evaluation_panoptic import assert_equal_to_cityscapes, cityscapes_reference, make_dataset


def test_evaluate_folders_writes_what_it_returns_and_equals_cityscapesscripts(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=5)
    out = tmp_path / "r" / "result.json"
    res = evaluate_folders(EvaluateConfig(str(gj), str(gf), str(pj), str(pf), str(out), engine="numpy",
                                          progress=False), RunOptions(workers=1))
    assert json.loads(out.read_text())["PQ"] == res["PQ"] and res["engine"] == "numpy"
    assert res["inputs"]["pred_json"] == str(pj) and res["seconds"] >= 0
    assert_equal_to_cityscapes(res, cityscapes_reference(gj, gf, pj, pf, tmp_path))
    table = format_table(res)
    assert "protocol: standard" in table and "Things" in table


def test_semantic_dirs_go_together_and_ray_means_numpy(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=1, seed=6)
    with pytest.raises(PseudoLabelsError, match="go together"):
        evaluate_folders(EvaluateConfig(str(gj), str(gf), str(pj), str(pf), str(tmp_path / "o.json"),
                                        gt_semantic_dir=str(tmp_path)))
    assert choose_engine("auto", RunOptions(executor="ray")) == "numpy"
    with pytest.raises(PseudoLabelsError, match="hotcoco"):
        choose_engine("hotcoco", RunOptions(executor="ray"))


def test_semantic_miou_with_a_three_class_table(tmp_path):
    from pseudo_labels.datasets.base import make_table

    tiny = make_table("tiny", [("a", (1, 1, 1), False), ("b", (2, 2, 2), False), ("c", (3, 3, 3), True)])
    gt = np.zeros((4, 6), np.uint8)
    gt[:, 3:] = 1
    gt[0, :] = 2
    gt[3, 0] = 255
    pred = gt.copy()
    pred[1, 3] = 0  # one pixel of class 1 predicted as 0
    pred[2, 5] = 9  # outside the table: a miss
    write_png(tmp_path / "gt" / "town_000000_000000_gtFine_labelTrainIds.png", gt)
    write_png(tmp_path / "pred" / "town_000000_000000_pred.png", pred)
    res = evaluate_semantic_dirs(tmp_path / "gt", tmp_path / "pred", labels=tiny)
    iou = res["per_class_iou"]
    assert list(iou) == ["a", "b", "c"]
    # class 0: 8 GT px (the 9th is void), all found, +1 FP -> 8/9; class 1: 9 GT px, 2 lost -> 7/9; class 2: perfect
    assert iou["a"] == pytest.approx(100 * 8 / 9) and iou["b"] == pytest.approx(100 * 7 / 9)
    assert iou["c"] == pytest.approx(100.0)
    assert "outside 0..2" in res["convention"]


def _downsample_set(pj, pf, out_root, factor=2):
    """The prediction set at 1/factor size (PIL nearest), written beside; returns (json, folder)."""
    from evaluation.panoptic import read_panoptic_png
    from evaluation.resize import resize_nearest

    from pseudo_labels.core.io import id_to_rgb, write_json

    data = json.loads(pj.read_text())
    anns = []
    for a in data["annotations"]:
        pan = read_panoptic_png(pf / a["file_name"])
        small = resize_nearest(pan, (pan.shape[0] // factor, pan.shape[1] // factor))
        present = set(np.unique(small).tolist())
        write_png(out_root / "small" / a["file_name"], id_to_rgb(small))
        anns.append({**a, "segments_info": [s for s in a["segments_info"] if s["id"] in present]})
    write_json(out_root / "small.json", {**data, "annotations": anns})
    return out_root / "small.json", out_root / "small"


def _upsample_set(pj, pf, gf, gj, out_root):
    """A prediction set resized (PIL nearest, evaluation.resize) to each GT PNG's size: the expected input."""
    from evaluation.panoptic import read_panoptic_png
    from evaluation.resize import resize_nearest

    from pseudo_labels.core.io import id_to_rgb

    gt = {a["image_id"]: a for a in json.loads(gj.read_text())["annotations"]}
    for a in json.loads(pj.read_text())["annotations"]:
        shape = read_panoptic_png(gf / gt[a["image_id"]]["file_name"]).shape
        write_png(out_root / "big" / a["file_name"], id_to_rgb(resize_nearest(read_panoptic_png(pf / a["file_name"]),
                                                                               shape)))
    return pj, out_root / "big"


@pytest.mark.parametrize("engine", ["auto", "numpy"])
def test_standard_scores_at_the_gt_size_and_records_the_resize(tmp_path, engine):
    """Issue 23 (a): predictions at half size are nearest-resized to the GT's size (no more 'size differs')."""
    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=8)
    sj, sf = _downsample_set(pj, pf, tmp_path)
    res = evaluate_folders(EvaluateConfig(str(gj), str(gf), str(sj), str(sf), str(tmp_path / "o.json"),
                                          engine=engine, progress=False), RunOptions(workers=1))
    assert res["prediction_resized_from"] == "96x48" and res["n_predictions_resized"] == 2
    assert res["engine"] == "numpy"
    bj, bf = _upsample_set(sj, sf, gf, gj, tmp_path)
    assert_equal_to_cityscapes(res, cityscapes_reference(gj, gf, bj, bf, tmp_path))
    ref = evaluate_folders(EvaluateConfig(str(gj), str(gf), str(sj), str(sf), str(tmp_path / "r.json"),
                                          protocol="reference", engine="numpy", progress=False))
    assert ref["protocol"] == "reference" and ref["prediction_resized_from"] == "96x48"


def test_a_prediction_of_another_aspect_ratio_is_refused(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=1, seed=9)
    from evaluation.panoptic import read_panoptic_png

    from pseudo_labels.core.io import id_to_rgb

    a = json.loads(pj.read_text())["annotations"][0]
    pan = read_panoptic_png(pf / a["file_name"])
    write_png(pf / a["file_name"], id_to_rgb(pan[:, : pan.shape[1] // 2]))
    with pytest.raises(PseudoLabelsError, match="aspect ratio"):
        evaluate_folders(EvaluateConfig(str(gj), str(gf), str(pj), str(pf), str(tmp_path / "o.json"),
                                        engine="numpy", progress=False))


def test_semantic_miou_reads_the_official_gtfine_by_suffix(tmp_path):
    """Issue 23 (b): gtFine/<split>/<city>/ with color, labelIds, instanceIds and polygons per image ->
    the labelIds are read (-> trainIds by cityscapesscripts); a half-size prediction is resized."""
    from cityscapesscripts.helpers.labels import trainId2label

    from pseudo_labels.datasets.cityscapes import label_id_to_train_id_lut

    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gtFine" / "val", tmp_path / "pred"
    expected_gt, expected_pred = [], []
    for k in range(2):
        stem = f"aachen_00000{k}_000019"
        label_ids = np.kron(rng.choice([0, 7, 8, 11, 21, 23, 24, 26], (8, 16)),
                            np.ones((4, 4), np.int64)).astype(np.uint8)
        city = gt_dir / "aachen"
        write_png(city / f"{stem}_gtFine_labelIds.png", label_ids)
        write_png(city / f"{stem}_gtFine_instanceIds.png", label_ids.astype(np.uint16) * 1000)
        write_png(city / f"{stem}_gtFine_color.png", np.zeros(label_ids.shape + (3,), np.uint8))
        (city / f"{stem}_gtFine_polygons.json").write_text('{"imgHeight": 32, "imgWidth": 64, "objects": []}')
        train = label_id_to_train_id_lut()[label_ids]
        pred = train[::2, ::2].copy()
        pred[0, :3] = trainId2label[0].trainId
        write_png(pred_dir / f"{stem}_semantic.png", pred)
        expected_gt.append(train)
        expected_pred.append(np.kron(pred, np.ones((2, 2), np.uint8)))
    res = evaluate_semantic_dirs(gt_dir, pred_dir)
    from evaluation.semantic import confusion_matrix_with_misses, miou_from_confusion

    cm, miss = (sum(x) for x in zip(*(confusion_matrix_with_misses(g, p, 19, 255)
                                      for g, p in zip(expected_gt, expected_pred))))
    assert res["mIoU"] == pytest.approx(miou_from_confusion(cm, miss)["mIoU"])
    assert res["n_images"] == 2 and res["prediction_resized_from"] == "32x16"
    # prepared trainIds win over labelIds
    write_png(gt_dir / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png", np.zeros((32, 64), np.uint8))
    assert evaluate_semantic_dirs(gt_dir, pred_dir)["mIoU"] != pytest.approx(res["mIoU"])


def test_missing_panoptic_gt_names_prepare_gt(tmp_path):
    with pytest.raises(PseudoLabelsError, match=r"needs --gt-json, --gt-folder .*pseudo-labels prepare-gt"):
        EvaluateConfig(pred_json=tmp_path / "p.json", pred_folder=tmp_path / "p", out=tmp_path / "e.json")
    with pytest.raises(PseudoLabelsError) as err:  # no GT hint where GT is not what is missing
        EvaluateConfig(protocol="stego-miou", cityscapes_root=tmp_path, out=tmp_path / "e.json")
    assert "prepare-gt" not in str(err.value)
