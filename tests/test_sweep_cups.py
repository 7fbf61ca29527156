"""`sweep --protocol cups`: every cell equals `evaluate --protocol cups` of the pipeline's output for it."""

from __future__ import annotations

import json

import pytest

from pseudo_labels.cli import main
from pseudo_labels.stages.outputs.scoring import EvaluateConfig, evaluate_folders

from .test_generate_depth_guided_instances import WORK, prepare_city


@pytest.fixture(scope="module")
def city(synth_city, tmp_path_factory):
    return prepare_city(synth_city, tmp_path_factory.mktemp("sweep_cups") / "city")


def _pipeline_cups(city, tmp, tau, amin, num_classes):
    inst, pan = tmp / f"i_{tau}_{amin}", tmp / f"p_{tau}_{amin}"
    assert main(["generate-depth-guided-instances", "--semantic-dir", str(city / "sem_gt"), "--depth-dir",
                 str(city / "depth_disp"), "--output-dir", str(inst), "--grad-threshold", tau, "--min-area", amin,
                 "--workers", "1", *WORK]) == 0
    assert main(["generate-panoptic", "--semantic-dir", str(city / "sem_gt"), "--instance-dir", str(inst),
                 "--out-json", str(pan / "pan.json"), "--out-folder", str(pan), "--workers", "1"]) == 0
    return evaluate_folders(EvaluateConfig(protocol="cups", cityscapes_root=str(city), pred_json=str(pan / "pan.json"),
                                           pred_folder=str(pan), out=str(tmp / f"e_{tau}_{amin}.json"),
                                           num_classes=num_classes, progress=False))


@pytest.mark.parametrize("num_classes", [27, 19])
def test_every_cups_cell_equals_evaluate_cups_of_the_pipeline(city, tmp_path, num_classes):
    out = tmp_path / "sweep.json"
    assert main(["sweep", "--cityscapes-root", str(city), "--semantic-subdir", "sem_gt", "--depth-subdir",
                 "depth_disp", "--grad-thresholds", "0.05", "0.2", "--min-areas", "30", "200", "--protocol", "cups",
                 "--num-classes", str(num_classes), "--workers", "1", "--out", str(out), *WORK]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == "cups" and res["num_classes"] == num_classes and res["n_images"] == 3
    assert out.with_suffix(".csv").exists()
    rows = [r for r in res["results"] if r["mode"] == "depth-guided"]
    assert len(rows) == 4 and any(r["mode"] == "cc-only" for r in res["results"])
    for r in rows[:: 3 if num_classes == 19 else 1]:
        want = _pipeline_cups(city, tmp_path, str(r["grad_threshold"]), str(r["min_area"]), num_classes)
        for key in ("PQ", "SQ", "RQ", "PQ_stuff", "PQ_things", "SQ_things", "RQ_things", "mIoU", "accuracy"):
            assert r[key] == pytest.approx(want[key], abs=1e-9), (r["grad_threshold"], r["min_area"], key)
        assert list(r["assignment"].values()) == [a["class"] for a in want["assignment"]]
        for name, pc in want["per_class"].items():
            assert (r["per_class"][name]["TP"], r["per_class"][name]["FP"], r["per_class"][name]["FN"]) == \
                (pc["TP"], pc["FP"], pc["FN"])
    assert res["best"]["PQ"] == max(r["PQ"] for r in rows)
