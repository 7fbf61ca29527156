"""pseudo-labels generate-crm-pseudolabels: label PNGs, manifest, evaluation, resume, modalities, shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pseudo_labels.cli import main
from pseudo_labels.core.io import read_png
from pseudo_labels.stages.rgbt import crm
from tests.test_train_crm import SIZE, write_rgbt_fixture
from tests.rgbt_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)




@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, run folder) of a student trained 2 epochs on noisy pseudo-labels."""
    root = write_rgbt_fixture(tmp_path_factory.mktemp("rgbt"))
    run = root.parent / "run"
    crm.train_crm(crm.CRMTrainConfig(data_root=str(root), dataset="mfnet", out=str(run), labels_dir="pseudo",
                                     epochs=2, mask_patch_size=16, progress=False))
    return root, run


def test_labels_manifest_and_evaluation(trained, capsys):
    root, run = trained
    rc = main(["generate-crm-pseudolabels", "--run", str(run), "--split", "test", "--output-subdir", "crm_test"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "done 4, skipped 0" in printed and "mIoU against ground truth" in printed
    assert "uses ground truth: no" in printed
    out = root / "crm_test"
    names = (root / "test.txt").read_text().split()
    for n in names:
        lab = read_png(out / "test" / f"{n}.png")
        assert lab.shape == SIZE and lab.dtype == np.uint8 and lab.max() < 9
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "generate-crm-pseudolabels" and man["uses_ground_truth"] is False
    assert man["parameters"]["modality"] == "both" and man["parameters"]["checkpoint_epoch"] == 2
    ev = json.loads((out / crm.EVAL_NAME).read_text())
    assert set(ev["scores"]) == {"overall", "day", "night"}
    assert ev["scores"]["day"]["n_images"] + ev["scores"]["night"]["n_images"] == 4
    assert set(ev["scores"]["overall"]["per_class_iou"]) >= {"unlabeled", "car", "person"}
    # the evaluation equals scoring the written PNGs directly
    from pseudo_labels.datasets.mfnet import LABELS
    confs = {n: crm.label_confusion(read_png(root / "labels" / f"{n}.png"), read_png(out / "test" / f"{n}.png"), 9)
             for n in names}
    direct = crm.scores_by_condition(confs, {n: "x" for n in names}, LABELS.names)
    assert ev["scores"]["overall"]["mIoU"] == pytest.approx(direct["overall"]["mIoU"])


def test_rerun_skips_finished_images_and_other_settings_need_overwrite(trained, capsys):
    root, run = trained
    args = ["generate-crm-pseudolabels", "--run", str(run), "--split", "test", "--output-dir", str(root / "again")]
    assert main(args) == 0
    first = {p.name: p.stat().st_mtime_ns for p in (root / "again" / "test").glob("*.png")}
    capsys.readouterr()
    assert main(args) == 0
    assert "done 0, skipped 4" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (root / "again" / "test").glob("*.png")} == first
    assert main(args + ["--modality", "rgb"]) == 2
    assert "different parameters modality" in capsys.readouterr().err
    assert main(args + ["--modality", "rgb", "--overwrite"]) == 0


def test_dropped_modality_predictions(trained):
    root, run = trained
    res = {}
    for m in ("both", "rgb", "thermal"):
        res[m] = crm.generate_crm_pseudolabels(crm.CRMLabelConfig(run=str(run), output_dir=str(root / f"m_{m}"),
                                                                  split="test", modality=m))
        assert res[m]["modality"] == m and "overall" in res[m]["scores"]
    model, cfg = crm.student_from_checkpoint(crm.load_checkpoint(run))
    sample = crm.list_samples(root, "mfnet", "test")[0]
    arrays = crm.read_modalities(sample, cfg.modalities)
    only_rgb = crm.predict_labels(model, arrays, cfg, "rgb")
    arrays2 = dict(arrays, thermal=255 - arrays["thermal"])
    assert np.array_equal(only_rgb, crm.predict_labels(model, arrays2, cfg, "rgb"))  # thermal really dropped
    assert np.array_equal(read_png(root / "m_rgb" / sample.relative), only_rgb)


def test_shards_write_the_evaluation_when_the_last_one_finishes(trained):
    root, run = trained
    out = root / "sharded"
    from pseudo_labels.core.runner import RunOptions
    cfg = crm.CRMLabelConfig(run=str(run), output_dir=str(out), split="test")
    r0 = crm.generate_crm_pseudolabels(cfg, RunOptions(shard=(0, 2)))
    assert "scores" not in r0 and not (out / crm.EVAL_NAME).exists()
    r1 = crm.generate_crm_pseudolabels(cfg, RunOptions(shard=(1, 2)))
    assert r0["done"] + r1["done"] == 4 and "scores" in r1
    whole = crm.generate_crm_pseudolabels(crm.CRMLabelConfig(run=str(run), output_dir=str(root / "whole"),
                                                             split="test"))
    for p in (root / "whole" / "test").glob("*.png"):
        assert p.read_bytes() == (out / "test" / p.name).read_bytes()
    assert whole["scores"]["overall"]["mIoU"] == pytest.approx(r1["scores"]["overall"]["mIoU"])


def test_gt_trained_student_is_recorded_and_cityscapes_layout(synth_city_train_val, tmp_path, capsys):
    root = synth_city_train_val
    run = tmp_path / "run"
    crm.train_crm(crm.CRMTrainConfig(data_root=str(root), dataset="cityscapes", out=str(run), labels="gt", epochs=1,
                                     input_size=(64, 128), progress=False))
    rc = main(["generate-crm-pseudolabels", "--run", str(run), "--split", "val", "--output-dir", str(tmp_path / "o")])
    assert rc == 0
    assert "uses ground truth: yes" in capsys.readouterr().out
    pngs = sorted((tmp_path / "o" / "val").rglob("*.png"))
    assert len(pngs) == 3 and all(p.parent.parent.name == "val" for p in pngs)  # <split>/<city>/<stem>.png
    assert read_png(pngs[0]).shape == (256, 512)  # predicted at 64x128, written at the image size
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["uses_ground_truth"] is True
    assert main(["generate-crm-pseudolabels", "--run", str(run), "--output-dir", str(tmp_path / "p"),
                 "--modality", "thermal"]) == 2
    assert "trained on ['rgb']" in capsys.readouterr().err
