"""generate-depth-guided-instances CLI: layouts, outputs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pseudo_labels.cli import main
from pseudo_labels.datasets.cityscapes import gt_path, list_images
from pseudo_labels.core.io import read_png, write_npy, write_png

WORK = ["--resolution", "128", "256"]


def prepare_city(src: Path, dst: Path) -> Path:
    """Copy a synthetic city and add ``sem_gt/val/<city>/<stem>.png`` (GT trainIds) and
    ``depth_disp/val/<city>/<stem>.npy`` (disparity depth, min-max normalised as the reference)."""
    from pseudo_labels.stages.instance.depth import depth_from_disparity, normalize_depth, read_camera
    from pseudo_labels.datasets.cityscapes import camera_path, disparity_path

    shutil.copytree(src, dst)
    for e in list_images(dst, "val"):
        d = depth_from_disparity(read_png(disparity_path(dst, e)), read_camera(camera_path(dst, e)))
        write_npy(dst / "depth_disp" / "val" / e.city / f"{e.stem}.npy", normalize_depth(d, "minmax"))
        write_png(dst / "sem_gt" / "val" / e.city / f"{e.stem}.png", read_png(gt_path(dst, e, "labelTrainIds")))
    return dst


@pytest.fixture(scope="module")
def city(synth_city, tmp_path_factory):
    return prepare_city(synth_city, tmp_path_factory.mktemp("gdgi") / "city")


def _run(*argv):
    return main(["generate-depth-guided-instances", *argv])


def test_outputs_nested_layout(city, tmp_path):
    out = tmp_path / "inst"
    rc = _run("--semantic-dir", str(city / "sem_gt"), "--depth-dir", str(city / "depth_disp"), "--output-dir",
              str(out), "--min-area", "50", "--workers", "1", *WORK)
    assert rc == 0
    files = sorted(out.rglob("*_instance.png"))
    assert len(files) == 3 and all(f.parent.parent.name == "val" for f in files)
    a = read_png(files[0])
    assert a.dtype == np.uint16 and a.shape == (128, 256) and a.max() >= 1
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total_images"] == 3 and stats["total_instances"] > 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["uses_ground_truth"] is False and man["parameters"]["min_area"] == 50


def test_flat_layout_underscore_flags_and_module_entry(city, tmp_path):
    flat_sem, flat_depth = tmp_path / "s", tmp_path / "d"
    flat_sem.mkdir()
    flat_depth.mkdir()
    for f in (city / "sem_gt").rglob("*.png"):
        shutil.copy(f, flat_sem / f.name.replace(".png", "_leftImg8bit.png"))
    for f in (city / "depth_disp").rglob("*.npy"):
        shutil.copy(f, flat_depth / f.name)
    from pseudo_labels.commands import module_main

    rc = module_main("pseudo_labels.commands.generate_depth_guided_instances",
                     ["--semantic_dir", str(flat_sem), "--depth_dir", str(flat_depth), "--output_dir",
                      str(tmp_path / "o"), "--min_area", "50", "--grad_threshold", "0.2", "--workers", "1", *WORK])
    assert rc == 0
    assert len(list((tmp_path / "o").glob("*_leftImg8bit_instance.png"))) == 3


def test_missing_depth_and_skip(city, tmp_path, capsys):
    depth = tmp_path / "d"
    shutil.copytree(city / "depth_disp", depth)
    victim = sorted(depth.rglob("*.npy"))[0]
    victim.unlink()
    args = ["--semantic-dir", str(city / "sem_gt"), "--depth-dir", str(depth), "--output-dir", str(tmp_path / "o"),
            "--workers", "1", *WORK]
    assert _run(*args) == 2
    assert victim.stem in capsys.readouterr().err
    assert _run(*args, "--skip-missing") == 0
    assert "1 image(s) without depth skipped" in capsys.readouterr().err
    assert len(list((tmp_path / "o").rglob("*_instance.png"))) == 2


def test_nan_depth_and_unknown_class_name_the_file(city, tmp_path, capsys):
    depth, sem = tmp_path / "d", tmp_path / "s"
    shutil.copytree(city / "depth_disp", depth)
    shutil.copytree(city / "sem_gt", sem)
    f = sorted(depth.rglob("*.npy"))[0]
    d = np.load(f)
    d[0, 0] = np.nan
    np.save(f, d)
    args = ["--semantic-dir", str(sem), "--depth-dir", str(depth), "--output-dir", str(tmp_path / "o"),
            "--workers", "1", *WORK]
    assert _run(*args) == 2
    assert f.name in capsys.readouterr().err
    np.save(f, np.nan_to_num(d))
    s = sorted(sem.rglob("*.png"))[1]
    a = read_png(s)
    a[0, 0] = 40
    write_png(s, a)
    assert _run(*args) == 2
    err = capsys.readouterr().err
    assert s.name in err and "40" in err


def test_constant_depth_gives_components_and_size_mismatch_resized(city, tmp_path):
    depth = tmp_path / "d"
    for f in (city / "depth_disp").rglob("*.npy"):
        write_npy(depth / f.name, np.full((37, 91), 3.0, np.float32))  # other size: resized, constant: no edges
    out = tmp_path / "o"
    assert _run("--semantic-dir", str(city / "sem_gt"), "--depth-dir", str(depth), "--output-dir", str(out),
                "--workers", "1", "--min-area", "50", *WORK) == 0
    from pseudo_labels.stages.instance.instances import connected_component_instances, resize_semantic

    for f in (city / "sem_gt").rglob("*.png"):
        inst = read_png(next(out.rglob(f"{f.stem}_instance.png")))
        sem = resize_semantic(read_png(f), (128, 256))
        # no edges: every instance is a whole component (dilation adds nothing inside its own class)
        cc = connected_component_instances(sem, min_area=50)
        assert inst.max() == cc.max()


def test_thing_classes_list_and_auto(city, tmp_path):
    out = tmp_path / "o"
    assert _run("--semantic-dir", str(city / "sem_gt"), "--depth-dir", str(city / "depth_disp"), "--output-dir",
                str(out), "--workers", "1", "--min-area", "50", "--thing-classes", "13", *WORK) == 0
    for f in out.rglob("*_instance.png"):
        inst = read_png(f)
        sem = read_png(next((city / "sem_gt").rglob(f.name.replace("_instance", ""))))
        from pseudo_labels.stages.instance.instances import resize_semantic

        sem = resize_semantic(sem, inst.shape)
        assert set(np.unique(sem[inst > 0])) <= {13}
    out2 = tmp_path / "o2"
    assert _run("--semantic-dir", str(city / "sem_gt"), "--depth-dir", str(city / "depth_disp"), "--output-dir",
                str(out2), "--workers", "1", "--min-area", "50", "--thing-classes", "auto", *WORK) == 0
    man = json.loads((out2 / "manifest.json").read_text())
    assert "thing_classes_decision" in man


def test_depth_none_components_only(city, tmp_path, capsys):
    """--depth none: no depth folder; each thing component is an instance (A_min 10, the reference's CC-only),
    the same function as the sweep's components-only row; depth-only options are refused or not recorded."""
    from pseudo_labels.core.defaults import CC_MIN_AREA
    from pseudo_labels.stages.instance.instances import connected_component_instances, resize_semantic

    out = tmp_path / "cc"
    assert _run("--semantic-dir", str(city / "sem_gt"), "--depth", "none", "--output-dir", str(out),
                "--workers", "1", *WORK) == 0
    files = sorted(out.rglob("*_instance.png"))
    assert len(files) == 3
    for f in files:
        sem = read_png(next((city / "sem_gt").rglob(f.name.replace("_instance.png", ".png"))))
        want = connected_component_instances(resize_semantic(sem, (128, 256)), min_area=CC_MIN_AREA)
        np.testing.assert_array_equal(read_png(f), want)
        assert want.max() > 3
    man = json.loads((out / "manifest.json").read_text())
    assert man["parameters"]["depth"] == "none" and man["parameters"]["min_area"] == 10
    assert "grad_threshold" not in man["parameters"] and man["inputs"]["depth_dir"] is None
    # resume: nothing recomputed
    assert _run("--semantic-dir", str(city / "sem_gt"), "--depth", "none", "--output-dir", str(out),
                "--workers", "1", *WORK) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["skipped_existing"] == 3
    capsys.readouterr()
    assert _run("--semantic-dir", str(city / "sem_gt"), "--output-dir", str(tmp_path / "e"), *WORK) == 2
    assert "--depth none" in capsys.readouterr().err
    assert _run("--semantic-dir", str(city / "sem_gt"), "--depth", "none", "--thing-classes", "auto",
                "--output-dir", str(tmp_path / "a"), *WORK) == 2
    assert "needs depth maps" in capsys.readouterr().err


def test_depth_none_from_a_run_config(tmp_path):
    """``[instances] depth = "none"`` in a run config gives the components-only stage (A_min 10)."""
    from pseudo_labels.stages import pipeline
    from pseudo_labels.stages.instance.instances import instance_min_area

    cfg = pipeline.parse_pipeline_text('[data]\nroot = "c"\n[instances]\ndepth = "none"\n', tmp_path)
    inst = cfg.stages["instances"]
    assert inst.depth == "none" and instance_min_area(inst) == 10
    cfg = pipeline.parse_pipeline_text('[data]\nroot = "c"\n[instances]\nmin_area = 500\n', tmp_path)
    assert cfg.stages["instances"].depth == "edges" and instance_min_area(cfg.stages["instances"]) == 500
