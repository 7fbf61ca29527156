"""train-cam and generate-cam-pseudolabels CLIs on a tiny synthetic city (incl. bad input and the sweep)."""

import json

import numpy as np
import pytest

from pseudo_labels.commands import module_main
from pseudo_labels.core.io import read_json, read_png


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    root = tmp_path_factory.mktemp("camcity")
    stems = write_synthetic_city(root, 3, seed=5, size=(128, 256), split="train")
    return root, sorted(stems)


def _train(root, out, *extra):
    return module_main("pseudo_labels.commands.train_cam", [
        "--cityscapes-root", str(root), "--split", "train", "--backbone", "builtin", "--input-size", "112", "224",
        "--epochs", "2", "--seed", "0", "--out", str(out), *extra])


def test_train_generate_and_sweep(city, tmp_path, capsys):
    root, stems = city
    run = tmp_path / "run"
    assert _train(root, run, "--tags-from-gt", "--depth-subdir", "disparity", "--deal_weight", "0.5") == 0
    assert "uses ground truth: image tags from gtFine labelTrainIds" in capsys.readouterr().out
    import torch

    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and set(ck) >= {"head", "optimizer", "config", "epoch", "meta"}
    assert ck["config"]["deal_weight"] == 0.5
    man = read_json(run / "manifest.json")
    assert man["uses_ground_truth"] is True and "tags" in man["ground_truth_use"]
    assert len(list((run / "features").rglob("*.npy"))) == 3
    # rerun with more epochs resumes
    assert _train(root, run, "--tags-from-gt", "--depth-subdir", "disparity", "--deal-weight", "0.5",
                  "--epochs", "3") == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 3

    assert module_main("pseudo_labels.commands.generate_cam_pseudolabels", [
        "--run", str(run), "--cityscapes-root", str(root), "--split", "train", "--output-subdir", "cam_sem",
        "--bg-threshold", "0.2", "--tags-from-gt", "--refine-depth-subdir", "disparity"]) == 0
    printed = capsys.readouterr().out
    assert "uses ground truth: image tags from gtFine" in printed and "trained with tags from ground truth" in printed
    for s in stems:
        lab = read_png(root / "cam_sem" / "train" / s.rsplit("_", 2)[0] / f"{s}.png")
        assert lab.shape == (128, 256) and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= set(range(19)) | {255}
    ev = read_json(root / "cam_sem" / "cam_eval.json")
    assert 0 <= ev["mIoU"] <= 100 and ev["n_images_with_gt"] == 3
    assert read_json(root / "cam_sem" / "manifest.json")["uses_ground_truth"] is True

    out = tmp_path / "sweep.json"
    assert module_main("pseudo_labels.commands.generate_cam_pseudolabels", [
        "--run", str(run), "--cityscapes-root", str(root), "--split", "train", "--tags-from-gt",
        "--sweep-deal-weights", "0,0.5", "--sweep-bg-thresholds", "0.1,0.3", "--sweep-seeds", "0,1",
        "--sweep-out", str(out)]) == 0
    sw = json.loads(out.read_text())
    assert len(sw["results"]) == 2 * 2 * 2 and len(sw["summary"]) == 4
    assert {"deal_weight", "bg_threshold", "seed", "mIoU"} <= set(sw["results"][0])
    assert out.with_suffix(".csv").exists()


def test_bad_input_names_the_image(city, tmp_path, capsys):
    root, stems = city
    tags = {s: ["road", "car"] for s in stems[:2]}  # third image has no tags
    f = tmp_path / "tags.json"
    f.write_text(json.dumps(tags))
    assert _train(root, tmp_path / "r1", "--tags", str(f)) == 2
    assert stems[2] in capsys.readouterr().err
    tags[stems[2]] = ["road", "unicorn"]
    f.write_text(json.dumps(tags))
    assert _train(root, tmp_path / "r2", "--tags", str(f)) == 2
    err = capsys.readouterr().err
    assert stems[2] in err and "unicorn" in err
    # DEAL on, depth missing for every image
    assert _train(root, tmp_path / "r3", "--tags-from-gt", "--depth-subdir", "no_such_depth", "--deal-weight", "1") == 2
    assert stems[0] in capsys.readouterr().err
    # DEAL on without any depth source
    assert _train(root, tmp_path / "r4", "--tags-from-gt", "--deal-weight", "1") == 2
    assert "depth" in capsys.readouterr().err
