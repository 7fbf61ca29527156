"""generate-cam-pseudolabels: shared runner flags (shards, resume, overwrite, workers) and the sweep outputs."""

import json

import numpy as np
import pytest

from pseudo_labels.commands import module_main
from pseudo_labels.core.io import read_json, read_png

MOD = "pseudo_labels.commands.generate_cam_pseudolabels"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pseudo_labels.datasets.synthetic_city import write_synthetic_city

    base = tmp_path_factory.mktemp("gencam")
    root = base / "city"
    stems = write_synthetic_city(root, 4, seed=2, size=(64, 128), split="train", class_dropout=0.5)
    run = base / "run"
    assert module_main("pseudo_labels.commands.train_cam", [
        "--cityscapes-root", str(root), "--split", "train", "--backbone", "builtin", "--input-size", "56", "112",
        "--epochs", "3", "--seed", "0", "--tags-from-gt", "--depth-subdir", "disparity", "--deal-weight", "0.1",
        "--hidden", "8", "--pooling", "lse", "--out", str(run)]) == 0
    return root, run, sorted(stems)


def _gen(root, run, sub, *extra):
    return module_main(MOD, ["--run", str(run), "--cityscapes-root", str(root), "--split", "train",
                             "--output-subdir", sub, "--tags-from-gt", "--bg-threshold", "0.1", *extra])


def _pngs(root, sub):
    return {p.name: p.read_bytes() for p in sorted((root / sub).rglob("*.png"))}


def test_shards_equal_unsharded_and_resume(trained, capsys):
    root, run, stems = trained
    assert _gen(root, run, "full") == 0
    full = read_json(root / "full" / "cam_eval.json")
    assert full["complete"] and full["n_images_with_gt"] == 4 and full["done"] == 4
    # shard 0/2: half the label maps, no evaluation yet
    assert _gen(root, run, "sharded", "--shard", "0/2") == 0
    assert len(_pngs(root, "sharded")) == 2 and not (root / "sharded" / "cam_eval.json").exists()
    assert "no cam_eval.json yet" in capsys.readouterr().out
    assert _gen(root, run, "sharded", "--shard", "1/2") == 0
    assert _pngs(root, "sharded") == _pngs(root, "full")
    ev = read_json(root / "sharded" / "cam_eval.json")
    assert ev["mIoU"] == pytest.approx(full["mIoU"]) and ev["confusion"] == full["confusion"]
    # a rerun skips finished images and gives the same evaluation
    assert _gen(root, run, "full") == 0
    again = read_json(root / "full" / "cam_eval.json")
    assert again["skipped_existing"] == 4 and again["done"] == 0 and again["mIoU"] == pytest.approx(full["mIoU"])
    # other parameters into the same folder: refused, unless --overwrite
    capsys.readouterr()
    assert _gen(root, run, "full", "--bg-threshold", "0.3") == 2
    assert "bg_threshold" in capsys.readouterr().err
    assert _gen(root, run, "full", "--bg-threshold", "0.3", "--overwrite") == 0
    ov = read_json(root / "full" / "cam_eval.json")
    assert ov["done"] == 4 and ov["bg_threshold"] == 0.3
    man = read_json(root / "full" / "manifest.json")
    assert man["parameters"]["bg_threshold"] == 0.3 and man["uses_ground_truth"]


def test_worker_processes_give_the_same_labels(trained):
    root, run, _ = trained
    assert _gen(root, run, "one") == 0
    assert _gen(root, run, "two", "--workers", "2") == 0
    assert _pngs(root, "two") == _pngs(root, "one")
    for name, data in _pngs(root, "one").items():
        assert data  # non-empty PNGs
    lab = read_png(next((root / "one").rglob("*.png")))
    assert lab.dtype == np.uint8 and lab.shape == (64, 128)


def test_bad_runner_flags(trained, capsys):
    root, run, _ = trained
    assert _gen(root, run, "bad", "--shard", "2/2") == 2
    assert module_main(MOD, ["--run", str(run), "--cityscapes-root", str(root), "--split", "train",
                             "--tags-from-gt", "--sweep-deal-weights", "0", "--shard", "0/2"]) == 2
    assert "sweep" in capsys.readouterr().err


def test_sweep_writes_json_csv_heatmap(trained, tmp_path):
    root, run, _ = trained
    out = tmp_path / "sw" / "cam.json"
    assert module_main(MOD, ["--run", str(run), "--cityscapes-root", str(root), "--split", "train", "--tags-from-gt",
                             "--sweep-deal-weights", "0,0.1", "--sweep-bg-thresholds", "0,0.2",
                             "--sweep-seeds", "0,1", "--sweep-out", str(out)]) == 0
    sw = json.loads(out.read_text())
    assert len(sw["results"]) == 8 and len(sw["summary"]) == 4
    assert set(sw["best_per_deal_weight"]) == {"0", "0.1"}
    assert sw["uses_ground_truth"] and sw["depth_subdir"] == "disparity"
    assert out.with_suffix(".csv").read_text().splitlines()[0].startswith("deal_weight,seed,bg_threshold,mIoU")
    heat = out.with_name("cam_heatmap_mIoU.png")
    assert heat.exists() and sw["heatmap"] == str(heat)
    # heads are reused on a rerun (their checkpoints are not rewritten)
    ck = run / "sweep" / "w0.1_s1" / "checkpoint.pt"
    before = ck.stat().st_mtime_ns
    assert module_main(MOD, ["--run", str(run), "--cityscapes-root", str(root), "--split", "train", "--tags-from-gt",
                             "--sweep-deal-weights", "0.1", "--sweep-bg-thresholds", "0", "--sweep-seeds", "1",
                             "--sweep-out", str(tmp_path / "again.json")]) == 0
    assert ck.stat().st_mtime_ns == before


def test_summarize_cam_sweep():
    from pseudo_labels.stages.weak.sweep import summarize_cam_sweep

    rows = [{"deal_weight": w, "seed": s, "bg_threshold": t, "mIoU": m}
            for w, s, t, m in [(0, 0, 0.1, 10), (0, 1, 0.1, 14), (0, 0, 0.3, 20), (0, 1, 0.3, 22),
                               (1, 0, 0.1, 30), (1, 1, 0.1, 20), (1, 0, 0.3, 5), (1, 1, 0.3, 5)]]
    s = summarize_cam_sweep(rows)
    cell = next(r for r in s["summary"] if r["deal_weight"] == 0 and r["bg_threshold"] == 0.1)
    assert cell["mIoU_mean"] == 12 and cell["mIoU_std"] == pytest.approx(np.sqrt(8)) and cell["n_seeds"] == 2
    assert s["best_per_deal_weight"]["0"]["bg_threshold"] == 0.3
    assert s["best_per_deal_weight"]["1"]["bg_threshold"] == 0.1
    assert s["best"]["deal_weight"] == 1 and s["best"]["mIoU_mean"] == 25
