"""The shared runner under real stages: determinism across workers / shards / Ray,
resume after SIGKILL, failures named in the summary, write failures.

Pipeline used: generate-depth (disparity) -> generate-depth-guided-instances (GT
semantics) -> generate-panoptic, on copies of the session's synthetic city.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pseudo_labels.datasets.cityscapes import gt_path, list_images
from pseudo_labels.cli import main
from pseudo_labels.core.io import read_png, write_png

WORK = ["--resolution", "128", "256"]
#: files whose content records how a run went (counts, times), not what it computed
RUN_RECORDS = {"manifest.json", "stats.json"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in RUN_RECORDS}


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def city(synth_city, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runner_stages") / "city"
    shutil.copytree(synth_city, root)
    for e in list_images(root, "val"):
        write_png(root / "sem_gt" / "val" / e.city / f"{e.stem}.png", read_png(gt_path(root, e, "labelTrainIds")))
    return root


def _pipeline(city: Path, out: Path, *runner_flags: str) -> None:
    """All three stages into ``out`` with the given runner flags; asserts each succeeds."""
    assert main(["generate-depth", "--cityscapes-root", str(city), "--split", "val", "--source", "disparity",
                 "--output-dir", str(out / "depth"), *runner_flags]) == 0
    assert main(["generate-depth-guided-instances", "--semantic-dir", str(city / "sem_gt"),
                 "--depth-dir", str(out / "depth"), "--output-dir", str(out / "inst"), *WORK, *runner_flags]) == 0
    rc = main(["generate-panoptic", "--semantic-dir", str(city / "sem_gt"), "--instance-dir", str(out / "inst"),
               "--out-json", str(out / "pan.json"), "--out-folder", str(out / "pan"), *runner_flags])
    assert rc == 0


@pytest.fixture(scope="module")
def reference_run(city, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref")
    _pipeline(city, out, "--workers", "1")
    tree = _tree(out)
    assert any(k.endswith("_panoptic.png") for k in tree) and "pan.json" in tree
    return tree


def test_outputs_identical_across_worker_counts(city, reference_run, tmp_path):
    _pipeline(city, tmp_path, "--workers", "2")
    assert _tree(tmp_path) == reference_run


def test_shards_into_one_folder_equal_an_unsharded_run(city, reference_run, tmp_path, capsys):
    _pipeline(city, tmp_path, "--shard", "1/2")
    assert "once every shard is done" in capsys.readouterr().err
    assert not (tmp_path / "pan.json").exists()  # the JSON needs every image
    _pipeline(city, tmp_path, "--shard", "0/2")
    assert _tree(tmp_path) == reference_run


def test_ray_executor_gives_the_same_bytes(city, reference_run, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        _pipeline(city, tmp_path, "--executor", "ray", "--workers", "2")
        assert ray.is_initialized()  # the stages really ran under Ray
    finally:
        ray.shutdown()
    assert _tree(tmp_path) == reference_run


def test_changed_parameters_refuse_and_overwrite_recomputes(city, reference_run, tmp_path, capsys):
    _pipeline(city, tmp_path)
    args = ["generate-depth-guided-instances", "--semantic-dir", str(city / "sem_gt"),
            "--depth-dir", str(tmp_path / "depth"), "--output-dir", str(tmp_path / "inst"), *WORK]
    assert main([*args, "--min-area", "7"]) == 2
    err = capsys.readouterr().err
    assert "min_area" in err and "--overwrite" in err
    assert main([*args, "--min-area", "7", "--overwrite"]) == 0
    assert _tree(tmp_path / "inst") != {k[5:]: v for k, v in reference_run.items() if k.startswith("inst/")}


def test_corrupt_input_is_named_in_the_summary_and_the_rest_complete(city, tmp_path, capsys):
    root = tmp_path / "city"
    shutil.copytree(city, root)
    entries = list_images(root, "val")
    bad = root / "disparity" / "val" / entries[1].city / f"{entries[1].stem}_disparity.png"
    bad.write_bytes(b"not a png at all")
    rc = main(["generate-depth", "--cityscapes-root", str(root), "--split", "val", "--source", "disparity",
               "--output-dir", str(tmp_path / "depth"), "--workers", "2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert entries[1].stem in err and "1 depth maps failed" in err
    written = sorted(p.stem for p in (tmp_path / "depth").rglob("*.npy"))
    assert written == sorted(e.stem for e in entries if e is not entries[1])
    assert not _temp_files(tmp_path / "depth")


def test_write_failure_leaves_no_partial_file(city, tmp_path, monkeypatch, capsys):
    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    rc = main(["generate-panoptic", "--semantic-dir", str(city / "sem_gt"), "--instance-dir", str(city / "sem_gt"),
               "--out-json", str(tmp_path / "pan.json"), "--out-folder", str(tmp_path / "pan"), "--workers", "1"])
    # sem_gt holds no *_instance.png: that is a clear error before anything is written
    assert rc == 2 and "no instance map" in capsys.readouterr().err
    monkeypatch.undo()
    depth = tmp_path / "depth"
    assert main(["generate-depth", "--cityscapes-root", str(city), "--split", "val", "--source", "disparity",
                 "--output-dir", str(depth)]) == 0
    monkeypatch.setattr(os, "replace", disk_full)
    rc = main(["generate-depth-guided-instances", "--semantic-dir", str(city / "sem_gt"), "--depth-dir", str(depth),
               "--output-dir", str(tmp_path / "inst"), *WORK, "--workers", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot write output" in err and "No space left on device" in err
    assert not [p for p in (tmp_path / "inst").rglob("*") if p.is_file()]


def _copies(city: Path, dst: Path, n: int) -> tuple[Path, Path]:
    """``n`` semantic/depth pairs (copies of the city's images under new stems)."""
    entries = list_images(city, "val")
    depth_src = dst / "depth_src"
    assert main(["generate-depth", "--cityscapes-root", str(city), "--split", "val", "--source", "disparity",
                 "--output-dir", str(depth_src)]) == 0
    sem, depth = dst / "sem" / "val" / "synth", dst / "depth" / "val" / "synth"
    sem.mkdir(parents=True)
    depth.mkdir(parents=True)
    for i in range(n):
        e = entries[i % len(entries)]
        stem = f"synth_{i:06d}_000019"
        shutil.copy(city / "sem_gt" / "val" / e.city / f"{e.stem}.png", sem / f"{stem}.png")
        shutil.copy(depth_src / "val" / e.city / f"{e.stem}.npy", depth / f"{stem}.npy")
    return dst / "sem", dst / "depth"


def test_sigkill_mid_run_then_rerun_equals_a_clean_run(city, tmp_path):
    n = 40
    sem, depth = _copies(city, tmp_path, n)
    cmd = [sys.executable, "-m", "pseudo_labels.commands.generate_depth_guided_instances", "--semantic-dir", str(sem),
           "--depth-dir", str(depth), "--resolution", "512", "1024", "--workers", "1"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run([*cmd, "--output-dir", str(clean)], check=True, capture_output=True)
    assert len(list(clean.rglob("*_instance.png"))) == n

    proc = subprocess.Popen([*cmd, "--output-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(killed.rglob("*_instance.png"))) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(killed.rglob("*_instance.png")))
    assert 3 <= finished < n, f"the kill should land mid-run ({finished} of {n} written)"
    assert not (killed / "manifest.json").exists()

    rerun = subprocess.run([*cmd, "--output-dir", str(killed)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped {finished}" in rerun.stderr
    assert not _temp_files(killed)
    assert _tree(killed) == _tree(clean)
