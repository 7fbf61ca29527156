"""`pseudo-labels evaluate` end to end (synthetic city + perturbed prediction), bad input, mIoU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pseudo_labels.datasets.cityscapes import panoptic_gt
from pseudo_labels.cli import main
from tests.test_evaluation_panoptic import (
    ENGINES,
    assert_equal_to_cityscapes,
    assert_same_counts,
    cityscapes_reference,
    make_dataset,
    perturb,
    write_set,
)

ROOT = Path(__file__).resolve().parents[1]


def _args(gj, gf, pj, pf, out, *more):
    return ["evaluate", "--gt-json", str(gj), "--gt-folder", str(gf), "--pred-json", str(pj),
            "--pred-folder", str(pf), "--out", str(out), *more]


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_end_to_end_equals_cityscapesscripts(tmp_path, capsys, engine):
    gj, gf, pj, pf = make_dataset(tmp_path, n=3, seed=11)
    out = tmp_path / "res" / "result.json"
    assert main(_args(gj, gf, pj, pf, out, "--engine", engine)) == 0
    res = json.loads(out.read_text())
    for k in ("PQ", "SQ", "RQ", "PQ_stuff", "PQ_things", "per_class", "protocol", "n_images", "engine"):
        assert k in res
    assert res["protocol"] == "standard" and res["n_images"] == 3 and res["engine"] == engine
    assert_equal_to_cityscapes(res, cityscapes_reference(gj, gf, pj, pf, tmp_path))
    text = capsys.readouterr().out
    assert "Things" in text and "Stuff" in text and "car" in text and "protocol: standard" in text
    assert f"engine: {engine}" in text


def test_cli_engines_agree_and_numpy_runs_through_the_runner(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=4, seed=17)
    results = {}
    for engine, workers in (("auto", "1"), ("numpy", "1"), ("numpy", "2")):
        out = tmp_path / f"{engine}{workers}.json"
        assert main(_args(gj, gf, pj, pf, out, "--engine", engine, "--workers", workers, "--quiet")) == 0
        results[engine, workers] = json.loads(out.read_text())
    assert results["numpy", "2"]["engine"] == "numpy"
    for r in results.values():
        assert_same_counts(r, results["numpy", "1"])
        assert r["PQ"] == pytest.approx(results["numpy", "1"]["PQ"], abs=1e-12)
    # a bad image under the runner: exit 2, one line naming the image
    pred = json.loads(pj.read_text())
    pred["annotations"][2]["segments_info"].pop()
    q = tmp_path / "bad.json"
    q.write_text(json.dumps(pred))
    for workers in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "pseudo_labels.commands.evaluate", *_args(gj, gf, q, pf, tmp_path / "x.json")[1:],
                               "--engine", "numpy", "--workers", workers, "--quiet"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert pred["annotations"][2]["image_id"] in proc.stderr and "not in the prediction JSON" in proc.stderr


def test_cli_engine_errors(tmp_path, capsys):
    gj, gf, pj, pf = make_dataset(tmp_path, n=1, seed=18)
    out = tmp_path / "r.json"
    assert main(_args(gj, gf, pj, pf, out, "--engine", "hotcoco", "--protocol", "reference")) == 2
    assert "only the standard protocol" in capsys.readouterr().err
    assert main(_args(gj, gf, pj, pf, out, "--engine", "hotcoco", "--executor", "ray")) == 2
    assert "cannot use --executor ray" in capsys.readouterr().err
    assert main(_args(gj, gf, pj, pf, out, "--workers", "0")) == 2
    assert not out.exists()
    assert main(_args(gj, gf, pj, pf, out, "--protocol", "reference", "--quiet")) == 0
    assert json.loads(out.read_text())["engine"] == "numpy"  # auto: hotcoco has no reference protocol


def test_cli_ray_executor_uses_the_numpy_engine(tmp_path):
    ray = pytest.importorskip("ray")
    gj, gf, pj, pf = make_dataset(tmp_path, n=3, seed=19)
    out = tmp_path / "ray.json"
    try:
        assert main(_args(gj, gf, pj, pf, out, "--executor", "ray", "--workers", "2", "--quiet")) == 0
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    res = json.loads(out.read_text())
    assert res["engine"] == "numpy"
    assert_equal_to_cityscapes(res, cityscapes_reference(gj, gf, pj, pf, tmp_path))


def test_cli_reference_protocol_and_underscore_flags(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=12)
    out = tmp_path / "ref.json"
    argv = ["evaluate", "--gt_json", str(gj), "--gt_folder", str(gf), "--pred_json", str(pj), "--pred_folder", str(pf),
            "--out", str(out), "--protocol", "reference", "--workers", "2", "--quiet"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["protocol"] == "reference"


def test_cli_bad_input_exit_2(tmp_path, capsys):
    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=13)
    pred = json.loads(pj.read_text())
    stem = pred["annotations"][0]["image_id"]
    pred["annotations"] = pred["annotations"][1:]
    q = tmp_path / "partial.json"
    q.write_text(json.dumps(pred))
    out = tmp_path / "r.json"
    assert main(_args(gj, gf, q, pf, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and stem in err[0]
    assert not out.exists()
    assert main(_args(gj, gf, q, pf, out, "--allow-missing", "--quiet")) == 0
    assert json.loads(out.read_text())["n_missing"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert main(_args(gj, gf, bad, pf, out)) == 2
    assert "malformed" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=1, seed=14)
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "pseudo_labels.commands.evaluate", *_args(gj, gf, pj, pf, out)[1:], "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["n_images"] == 1


def test_synth_city_gt_vs_gt_and_perturbed(synth_city, tmp_path):
    gj, gf = panoptic_gt(synth_city, "val")
    out = tmp_path / "gt.json"
    assert main(["evaluate", "--gt-json", str(gj), "--gt-folder", str(gf), "--pred-json", str(gj),
                 "--pred-folder", str(gf), "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["PQ"] == pytest.approx(100.0, abs=1e-9) and res["n_images"] == 3
    from evaluation.panoptic import read_panoptic_png

    rng = np.random.default_rng(0)
    gt = json.loads(Path(gj).read_text())
    preds = []
    for a in gt["annotations"]:
        g = read_panoptic_png(Path(gf) / a["file_name"]).astype(np.int64)
        preds.append((a["image_id"],) + perturb(rng, g, a["segments_info"]))
    pj, pf = write_set(tmp_path, preds, "pred")
    assert main(["evaluate", "--gt-json", str(gj), "--gt-folder", str(gf), "--pred-json", str(pj),
                 "--pred-folder", str(pf), "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert 0 < res["PQ"] < 100
    assert_equal_to_cityscapes(res, cityscapes_reference(gj, gf, pj, pf, tmp_path))


def test_semantic_miou_option(synth_city, tmp_path):
    from pseudo_labels.core.io import read_png, write_png

    gt_dir = synth_city / "gtFine" / "val"
    pred_dir = tmp_path / "sem"
    files = sorted(gt_dir.rglob("*_gtFine_labelTrainIds.png"))
    assert files
    for f in files:
        lab = read_png(f)
        write_png(pred_dir / f.name.replace("_gtFine_labelTrainIds", "_leftImg8bit"), lab)
    gj, gf = panoptic_gt(synth_city, "val")
    out = tmp_path / "sem.json"
    assert main(["evaluate", "--gt-json", str(gj), "--gt-folder", str(gf), "--pred-json", str(gj),
                 "--pred-folder", str(gf), "--out", str(out), "--quiet",
                 "--gt-semantic-dir", str(gt_dir), "--pred-semantic-dir", str(pred_dir)]) == 0
    sem = json.loads(out.read_text())["semantic"]
    assert sem["mIoU"] == pytest.approx(100.0) and sem["n_images"] == len(files)


def test_cli_cups_and_stego_need_their_inputs(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--protocol", "cups", "--pred-json", "p.json", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--cityscapes-root" in err and "--pred-folder" in err and err.count("\n") == 1
    assert main(["evaluate", "--protocol", "standard", "--pred-json", "p.json", "--out", str(out)]) == 2
    assert "--gt-json" in capsys.readouterr().err
    assert main(["evaluate", "--protocol", "cups", "--cityscapes-root", str(tmp_path), "--pred-json", "p",
                 "--pred-folder", "f", "--resolution", "640by1280", "--out", str(out)]) == 2
    assert "HxW" in capsys.readouterr().err
    assert not out.exists()


def test_cli_stego_miou_on_the_synthetic_city(synth_city, tmp_path, capsys):
    """trainId maps scored at 27 classes: the Hungarian matching finds the identity (classes the 19 lack are
    predicted void, which is not counted), so mIoU and accuracy are 100 on the 320x320 crop."""
    import shutil

    pred = tmp_path / "pred"
    for p in (synth_city / "gtFine" / "val").rglob("*_gtFine_labelTrainIds.png"):
        pred.mkdir(exist_ok=True)
        shutil.copy(p, pred / p.name)
    out = tmp_path / "s.json"
    assert main(["evaluate", "--protocol", "stego-miou", "--cityscapes-root", str(synth_city),
                 "--pred-semantic-dir", str(pred), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == "stego-miou" and res["num_classes"] == 27 and res["n_images"] == 3
    assert res["mIoU"] == pytest.approx(100.0) and res["accuracy"] == pytest.approx(100.0)
    assert res["semantic_crop"]["crop"] == 320 and res["num_pseudo_classes"] == 19
    by_pc = {a["pseudo_class"]: a["class"] for a in res["semantic_crop"]["assignment"]}
    assert by_pc[0] == "road" and by_pc[13] == "car"
    assert "protocol: stego-miou" in capsys.readouterr().out


def test_run_with_evaluate_protocol_cups(synth_city, tmp_path):
    """`[evaluate] protocol = "cups"` in a run config: CUPS' metric of the run's panoptic output (here the
    GT panoptic itself, so 19-class PQ is 100) with the standard protocol beside it."""
    import shutil

    from pseudo_labels.stages import pipeline

    out = tmp_path / "out"
    shutil.copytree(synth_city / "gtFine" / "cityscapes_panoptic_val", out / "panoptic")
    shutil.copy(synth_city / "gtFine" / "cityscapes_panoptic_val.json", out / "panoptic.json")
    text = f"""[data]
root = "{synth_city}"
split = "val"
out = "{out}"

[evaluate]
protocol = "cups"
num_classes = 19
semantic = false
also_protocols = ["standard"]
"""
    result = pipeline.run_pipeline(pipeline.parse_pipeline_text(text, tmp_path), log=lambda s: None)
    ev = result.evaluation
    assert ev["protocol"] == "cups" and ev["num_classes"] == 19 and ev["PQ"] == pytest.approx(100.0)
    assert ev["also"]["standard"]["PQ"] == pytest.approx(100.0)
    table = pipeline.format_results(result)
    assert "protocols: cups, standard" in table and "CUPS' mIoU / accuracy (19 classes" in table
    assert json.loads((out / "evaluation.json").read_text())["protocol"] == "cups"
