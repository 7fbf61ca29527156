"""pseudo_labels.stages.weak.pseudolabels / .sweep: generate_cam_pseudolabels(config, options) without the CLI."""

import json

import numpy as np
import pytest

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_json, read_png
from pseudo_labels.core.runner import RunOptions
from pseudo_labels.stages.weak.pseudolabels import CamLabelConfig, generate_cam_pseudolabels
from pseudo_labels.stages.weak.training import CamTrainConfig, train_cam


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    base = tmp_path_factory.mktemp("weaklabels")
    root = base / "city"
    stems = sorted(write_synthetic_city(root, 3, seed=6, size=(64, 128), split="train", class_dropout=0.5))
    tags = base / "tags.json"
    tags.write_text(json.dumps({s: ["road", "building", "car"] for s in stems}))
    train_cam(CamTrainConfig(cityscapes_root=root, out=base / "run", tags_file=tags, backbone="builtin",
                             input_size=(28, 56), epochs=2, hidden=0, seed=0, depth_subdir="disparity"))
    return root, base / "run", stems, tags


def test_label_maps_with_file_tags_use_no_ground_truth(run):
    root, run_dir, stems, tags = run
    res = generate_cam_pseudolabels(CamLabelConfig(run=run_dir, cityscapes_root=root, output_subdir="lab",
                                                   tags_file=tags, bg_threshold=0.2))
    assert res["complete"] and res["done"] == 3 and res["ground_truth_use"] == {}
    road, building, car = 0, 2, 13  # trainIds of the tags
    for s in stems:
        lab = read_png(root / "lab" / "train" / s.rsplit("_", 2)[0] / f"{s}.png")
        assert lab.shape == (64, 128) and set(np.unique(lab)) <= {road, building, car, 255}
    ev = read_json(root / "lab" / "cam_eval.json")
    assert "ground_truth_use" not in ev and ev["n_images_with_gt"] == 3 and ev["mIoU"] == pytest.approx(res["mIoU"])
    man = read_json(root / "lab" / "manifest.json")
    assert man["uses_ground_truth"] is False and man["parameters"]["tags"] == str(tags)


def test_gt_tags_are_reported(run):
    root, run_dir, _, _ = run
    res = generate_cam_pseudolabels(CamLabelConfig(run=run_dir, cityscapes_root=root, output_subdir="labgt",
                                                   tags_from_gt=True), RunOptions(shard=(0, 2)))
    assert res["complete"] is False and set(res["ground_truth_use"]) == {"tags"}
    assert not (root / "labgt" / "cam_eval.json").exists()


def test_bad_configs(run):
    root, run_dir, _, _ = run
    with pytest.raises(PseudoLabelsError, match="--output-subdir"):
        generate_cam_pseudolabels(CamLabelConfig(run=run_dir, cityscapes_root=root))
    with pytest.raises(PseudoLabelsError, match="sweep"):
        generate_cam_pseudolabels(CamLabelConfig(run=run_dir, cityscapes_root=root, sweep_deal_weights=[0.0]),
                                  RunOptions(workers=2))
    with pytest.raises(PseudoLabelsError, match="no depth map"):
        generate_cam_pseudolabels(CamLabelConfig(run=run_dir, cityscapes_root=root, output_subdir="nodepth",
                                                 refine_depth_subdir="missing"))


def test_sweep_through_the_config(run, tmp_path):
    root, run_dir, _, tags = run
    cfg = CamLabelConfig(run=run_dir, cityscapes_root=root, tags_file=tags, sweep_deal_weights=[0.0, 0.1],
                         sweep_bg_thresholds=[0.0, 0.3], sweep_out=tmp_path / "s.json")
    res = generate_cam_pseudolabels(cfg)
    assert [(r["deal_weight"], r["bg_threshold"]) for r in res["results"]] == [(0, 0), (0, 0.3), (0.1, 0), (0.1, 0.3)]
    assert res["seeds"] == [0] and res["ground_truth_use"] == {} and res["uses_ground_truth"] is False
    on_disk = json.loads((tmp_path / "s.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps(res["results"])) and "ground_truth_use" not in on_disk
    assert (tmp_path / "s_heatmap_mIoU.png").stat().st_size > 0
    assert res["best"]["mIoU_mean"] == max(r["mIoU"] for r in res["results"])
