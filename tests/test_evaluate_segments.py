"""`pseudo-labels evaluate-segments`: DynaSeg's scoring of a segments folder, from the command line."""

import json

import numpy as np

from pseudo_labels.commands import module_main
from pseudo_labels.core.io import write_png
from pseudo_labels.datasets import coco_stuff


def tiny_coco_stuff(root, split="val2017"):
    (root / "curated" / split).mkdir(parents=True)
    (root / "curated" / split / coco_stuff.LIST_NAME).write_text("1\n2\n")
    for i in ("1", "2"):
        write_png(root / "images" / split / f"{i}.jpg", np.zeros((6, 8, 3), np.uint8))
        fine = np.zeros((6, 8), np.uint8)  # person (coarse 9)
        fine[3:] = 156  # sky (coarse 23)
        write_png(root / "annotations" / split / f"{i}.png", fine)
        write_png(root / "segs" / f"{i}.png", np.where(fine == 156, 5, 2).astype(np.uint16))


def test_command_scores_and_writes_json(tmp_path, capsys):
    tiny_coco_stuff(tmp_path)
    out = tmp_path / "score.json"
    rc = module_main("pseudo_labels.commands.evaluate_segments", ["--segments-dir", str(tmp_path / "segs"), "--dataset",
                     "coco-stuff-27", "--data-root", str(tmp_path), "--split", "val2017", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mIoU 100.00 over 2 of 2 images (coco-stuff-27, hungarian, ours average)" in printed
    assert "uses ground truth" in printed
    result = json.loads(out.read_text())
    assert result["uses_ground_truth"] is True and result["n_images"] == 2


def test_missing_segments_are_a_clear_error(tmp_path, capsys):
    tiny_coco_stuff(tmp_path)
    (tmp_path / "segs" / "2.png").unlink()
    rc = module_main("pseudo_labels.commands.evaluate_segments", ["--segments-dir", str(tmp_path / "segs"), "--dataset",
                     "coco-stuff-27", "--data-root", str(tmp_path), "--split", "val2017"])
    assert rc == 2 and "no segments for 1 image(s), e.g. 2" in capsys.readouterr().err


def test_official_average_drops_images_with_a_nan_metric(tmp_path, capsys):
    tiny_coco_stuff(tmp_path)  # person + sky only: things block of ids 0..11 is empty after matching -> NaN
    out = tmp_path / "official.json"
    rc = module_main("pseudo_labels.commands.evaluate_segments", ["--segments-dir", str(tmp_path / "segs"), "--dataset",
                     "coco-stuff-27", "--data-root", str(tmp_path), "--split", "val2017", "--average", "official",
                     "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["average"] == "official" and result["n_images"] == 2
    assert result["n_scored"] + result["n_skipped"] == 2
    rc = module_main("pseudo_labels.commands.evaluate_segments", ["--segments-dir", str(tmp_path / "segs"), "--dataset",
                     "coco-stuff-27", "--data-root", str(tmp_path), "--split", "val2017", "--average", "official",
                     "--mode", "dataset"])
    assert rc == 2 and "per-image Hungarian" in capsys.readouterr().err
