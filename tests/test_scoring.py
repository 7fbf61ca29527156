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
