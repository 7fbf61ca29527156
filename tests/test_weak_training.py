"""pseudo_labels.stages.weak.training / .inputs: train_cam(config) without the CLI, depth and tag inputs."""

import json

import numpy as np
import pytest

from pseudo_labels.core import defaults
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_json
from pseudo_labels.stages.weak.inputs import depth_index, load_depth, load_tags, transform_depth
from pseudo_labels.stages.weak.training import CamTrainConfig, train_cam, train_cam_run


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    root = tmp_path_factory.mktemp("weaktrain")
    stems = sorted(write_synthetic_city(root, 3, seed=4, size=(64, 128), split="train", class_dropout=0.5))
    tags = root / "tags.json"
    tags.write_text(json.dumps({s: ["road", "car"] if i % 2 else ["road", "building"] for i, s in enumerate(stems)}))
    return root, stems, tags


def _config(root, out, **kw):
    return CamTrainConfig(cityscapes_root=root, out=out, backbone="builtin", input_size=(28, 56), epochs=2,
                          hidden=0, seed=1, **kw)


def test_config_defaults_come_from_core_defaults(tmp_path):
    c = CamTrainConfig(cityscapes_root=tmp_path, out=tmp_path / "run")
    assert (c.epochs, c.lr, c.batch_size, c.hidden, c.pooling, c.deal_weight, c.seed) == (
        defaults.CAM_EPOCHS, defaults.CAM_LR, defaults.CAM_BATCH_SIZE, defaults.CAM_HIDDEN, defaults.CAM_POOLING,
        defaults.CAM_DEAL_WEIGHT, defaults.SEED)
    assert tuple(c.input_size) == defaults.FEATURE_INPUT_SIZE and c.split == "train"


def test_train_cam_with_a_tags_file_reads_no_ground_truth(city, tmp_path):
    root, stems, tags = city
    res = train_cam(_config(root, tmp_path / "a", tags_file=tags))
    assert res["uses_ground_truth"] is False and res["epochs"] == 2 and res["n_images"] == 3
    man = read_json(tmp_path / "a" / "manifest.json")
    assert man["uses_ground_truth"] is False and man["parameters"]["tags"] == str(tags)
    # the keyword wrapper is the same run: same losses
    again = train_cam_run(root, "train", tmp_path / "b", tags_file=tags, backbone="builtin", input_size=(28, 56),
                          epochs=2, hidden=0, seed=1)
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in res["history"]]
    # with GT tags the result says so
    gt = train_cam(_config(root, tmp_path / "c", tags_from_gt=True, feature_cache=tmp_path / "a" / "features"))
    assert "gtFine" in gt["uses_ground_truth"]["tags"]
    assert not (tmp_path / "c" / "features").exists()  # the shared cache was used


def test_train_cam_checks_settings_before_work(city, tmp_path):
    root, _, tags = city
    with pytest.raises(PseudoLabelsError, match="needs depth"):
        train_cam(_config(root, tmp_path / "r", tags_file=tags, deal_weight=0.5))
    with pytest.raises(PseudoLabelsError, match=">= 0"):
        train_cam(_config(root, tmp_path / "r", tags_file=tags, deal_weight=-1, depth_subdir="disparity"))
    with pytest.raises(PseudoLabelsError, match="exactly one"):
        train_cam(_config(root, tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_depth_inputs(city, tmp_path):
    root, stems, _ = city
    from pseudo_labels.datasets.cityscapes import list_images

    entries = list_images(root, "train")
    disp = load_depth(root, entries[0], "disparity")
    assert disp.ndim == 2 and disp.dtype == np.float32 and np.isfinite(disp).all() and disp.min() > 0
    folder = root / "depth_npy" / "train" / "x"
    folder.mkdir(parents=True)
    np.save(folder / f"{stems[0]}.npy", np.full((4, 8), 2.0, np.float32))
    index = depth_index(root, "depth_npy")
    assert set(index) == {stems[0]} and depth_index(root, "disparity") is None and depth_index(root, None) is None
    assert load_depth(root, entries[0], "depth_npy", index).shape == (4, 8)
    with pytest.raises(PseudoLabelsError, match=stems[1]):
        load_depth(root, entries[1], "depth_npy", index)
    d = np.array([[0.0, 1.0], [np.e, 4.0]], np.float32)
    np.testing.assert_allclose(transform_depth(d, "log"), [[np.log(1e-3), 0.0], [1.0, np.log(4.0)]], rtol=1e-6)
    np.testing.assert_allclose(transform_depth(d, "inverse"), [[1e3, 1.0], [1 / np.e, 0.25]], rtol=1e-6)
    with pytest.raises(PseudoLabelsError, match="depth-transform"):
        transform_depth(d, "sqrt")


def test_tags_from_gt_follow_the_min_pixels(city):
    root, _, _ = city
    from pseudo_labels.datasets.cityscapes import list_images

    entries = list_images(root, "train")
    few = load_tags(root, entries, tags_from_gt=True, min_pixels=1)
    many = load_tags(root, entries, tags_from_gt=True, min_pixels=2000)
    assert few.shape == (3, 19) and few.dtype == np.float32
    assert (many <= few).all() and many.sum() < few.sum()


def test_cli_without_gt_tags_prints_no_ground_truth_line(city, tmp_path, capsys):
    root, _, tags = city
    assert module_main("pseudo_labels.commands.train_cam", [
        "--cityscapes-root", str(root), "--tags", str(tags), "--backbone", "builtin", "--input_size", "28", "56",
        "--epochs", "1", "--hidden", "0", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trained 1 epochs on 3 images") and "uses ground truth" not in out
