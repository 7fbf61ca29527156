"""Cityscapes as it is downloaded, at the real 2048x1024 (issue 23): the reference README's command
lines spelled as there, ``run --print-config`` -> ``run`` at three sizes, and every preset.

The builtin backbone stands in for CAUSE-TR and stereo disparity for SPIdepth (written where the
reference keeps its SPIdepth maps, ``depth_spidepth``); no weights, no download. Kept fast: two
images per split, small k where the command line leaves k to us.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pseudo_labels import cli
from pseudo_labels.commands import module_main
from pseudo_labels.core.io import read_png
from pseudo_labels.stages import pipeline

FULL = (1024, 2048)  # (H, W) of a Cityscapes frame


def synth(root: Path, split: str, size=FULL, n: int = 2, seed: int = 0) -> None:
    h, w = size
    assert cli.main(["synth", "--out", str(root), "--n", str(n), "--seed", str(seed), "--size", str(h), str(w),
                     "--split", split]) == 0


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    """A 2-image val split and a 2-image train split at 2048x1024, only what the four official zips hold
    (``synth`` writes the official layout by default; kept read-only by the tests: copy it)."""
    root = tmp_path_factory.mktemp("official") / "cityscapes"
    synth(root, "val", seed=1)
    synth(root, "train", seed=2)
    return root


def copy_city(city: Path, dest: Path) -> Path:
    shutil.copytree(city, dest, symlinks=True)
    return dest


# --------------------------------------------------------------------------- the reference README's commands
def readme(line: str, root: Path) -> int:
    """One command line of the README (``$CS_ROOT`` replaced), as ``python -m pseudo_labels.<script>``."""
    words = line.replace("$CS_ROOT", str(root)).split()
    assert words[0] == "python" and words[1].startswith("pseudo_labels/") and words[1].endswith(".py")
    return module_main(f"pseudo_labels.{Path(words[1]).stem}", words[2:])


def test_reference_readme_commands_at_full_size(city, tmp_path, monkeypatch, capsys):
    """Every line of "Step-by-step commands" and "Generating pseudo-labels for training", spelled as there
    (their `$PYTHON pseudo_labels/x.py` is our `python -m pseudo_labels.x`), at 2048x1024."""
    root = copy_city(city, tmp_path / "cs")
    monkeypatch.chdir(tmp_path)
    for split in ("val", "train"):  # the README's depth step, with disparity in place of SPIdepth
        assert cli.main(["generate-depth", "--cityscapes_root", str(root), "--split", split, "--source", "disparity",
                         "--output_subdir", "depth_spidepth", "--workers", "1"]) == 0
    # Step 1 and Step 2
    assert readme("python pseudo_labels/generate_overclustered_semantics.py --cityscapes_root $CS_ROOT "
                  "--split val --k 80 --skip_crf --raw_clusters --output_subdir pseudo_semantic_raw_k80", root) == 0
    raw = sorted((root / "pseudo_semantic_raw_k80" / "val").rglob("*.png"))
    assert len(raw) == 2 and read_png(raw[0]).shape == FULL and read_png(raw[0]).max() < 80
    assert readme("python pseudo_labels/sweep_k50_spidepth.py --cityscapes_root $CS_ROOT --split val "
                  "--semantic_subdir pseudo_semantic_raw_k80", root) == 0
    sweep = json.loads((root / "sweep_k80_spidepth_val.json").read_text())  # the reference's file and place
    assert sweep["k"] == 80 and sweep["work_resolution"] == [512, 1024] and sweep["eval_resolution"] == list(FULL)
    best = sweep["best"]
    assert best is not None and 0 < best["PQ"] <= 100 and best["n_images"] == 2
    assert {r["min_area"] for r in sweep["results"] if r["mode"] == "depth-guided"} == {250, 500, 1000, 2000}
    # Generating pseudo-labels for training
    assert readme("python pseudo_labels/generate_overclustered_semantics.py --cityscapes_root $CS_ROOT "
                  "--split train --k 80 --skip_crf --raw_clusters --output_subdir pseudo_semantic_raw_k80 "
                  "--load_centroids $CS_ROOT/pseudo_semantic_raw_k80/kmeans_centroids.npz", root) == 0
    assert readme("python pseudo_labels/generate_depth_guided_instances.py "
                  "--semantic_dir $CS_ROOT/pseudo_semantic_raw_k80/train --depth_dir $CS_ROOT/depth_spidepth/train "
                  "--output_dir $CS_ROOT/pseudo_instance_spidepth_k80/train --grad_threshold 0.20 --min_area 1000",
                  root) == 0
    inst = sorted((root / "pseudo_instance_spidepth_k80" / "train").rglob("*_instance.png"))
    assert len(inst) == 2 and read_png(inst[0]).shape == (512, 1024)  # the reference's working resolution
    stats = json.loads((root / "pseudo_instance_spidepth_k80" / "train" / "stats.json").read_text())
    # raw clusters were mapped to trainIds with the centroids beside them (not read as trainIds)
    assert stats["config"]["cluster_to_class"].endswith("pseudo_semantic_raw_k80/kmeans_centroids.npz")
    assert stats["config"]["min_area"] == 1000 and stats["total_instances"] > 0
    assert "raw cluster ids, mapped" in capsys.readouterr().err
    # the console-script spelling reaches the same commands
    assert cli.main(["generate-depth-guided-instances", "--semantic_dir", str(root / "pseudo_semantic_raw_k80/train"),
                     "--depth_dir", str(root / "depth_spidepth/train"), "--output_dir", str(tmp_path / "again"),
                     "--grad_threshold", "0.20", "--min_area", "1000"]) == 0
    assert all(np.array_equal(read_png(a), read_png(tmp_path / "again" / a.relative_to(
        root / "pseudo_instance_spidepth_k80" / "train"))) for a in inst)


# --------------------------------------------------------------------------- run --print-config -> run
def small(text: str, root: Path, k: int = 8) -> str:
    """The printed config with our data root, a small k and one worker (nothing else changed)."""
    data = text.replace('root = "cityscapes"', f'root = "{root}"').replace("k = 80\n", f"k = {k}\n")
    return data.replace("workers = 2 ", "workers = 1 ")


@pytest.mark.parametrize("size", [FULL, (512, 1024), (256, 512)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_default_config_runs_at_any_size(tmp_path, capsys, size):
    """The official layout (no panoptic GT, no trainIds): the run prepares them into <out>/gt_cache."""
    root = tmp_path / "cityscapes"
    synth(root, "val", size=size, seed=3)
    capsys.readouterr()
    assert cli.main(["run", "--print-config"]) == 0
    text = small(capsys.readouterr().out, root)
    if size == (256, 512):  # the CUPS export, asked for, on a download without leftImg8bit_sequence
        text = text.replace("# [exports.cups]", "[exports.cups]").replace("# link_key_frames", "link_key_frames")
    (tmp_path / "p.toml").write_text(text)
    assert cli.main(["run", "--config", str(tmp_path / "p.toml")]) == 0
    printed = capsys.readouterr().out
    ev = json.loads((tmp_path / "pipeline_out" / "evaluation.json").read_text())
    assert 0 < ev["PQ"] <= 100 and ev["protocol"] == "standard"
    pan = read_png(next((tmp_path / "pipeline_out" / "panoptic").glob("*.png")))
    assert pan.shape[:2] == size  # written at the images' size, scored at the ground truth's
    inst = read_png(next((tmp_path / "pipeline_out" / "instances").rglob("*_instance.png")))
    assert inst.shape == (size[0] // 2, size[1] // 2)  # default working resolution: half of each image
    sweep = json.loads((tmp_path / "pipeline_out" / "sweep.json").read_text())
    scale = (size[0] // 2) * (size[1] // 2) / (512 * 1024)  # A_min is stated at 512x1024
    assert sweep["work_resolution"] == [size[0] // 2, size[1] // 2]
    assert sweep["grid"]["min_areas"] == [max(1, round(a * scale)) for a in (250, 500, 1000, 2000)]
    assert "published: k=80 + depth" in printed and "26.74" in printed and "standard" in printed
    assert not (root / "gtFine" / "cityscapes_panoptic_val.json").exists()  # the dataset is never written
    assert (tmp_path / "pipeline_out" / "gt_cache" / "gtFine" / "cityscapes_panoptic_val.json").is_file()
    assert "made panoptic ground truth" in printed
    if size == (256, 512):
        assert "linked leftImg8bit_sequence -> leftImg8bit" in printed
        assert (root / "leftImg8bit_sequence").is_symlink() and (tmp_path / "pipeline_out" / "cups" / "manifest.json").is_file()


# --------------------------------------------------------------------------- pre-flight
def test_preflight_reports_every_problem_at_once_and_writes_nothing(city, tmp_path, capsys):
    root = copy_city(city, tmp_path / "cs")
    shutil.rmtree(root / "disparity" / "val")
    for p in (root / "gtFine" / "val").rglob("*_instanceIds.png"):
        p.unlink()
    text = small(pipeline.default_config_text(), root).replace("# [exports.cups]", "[exports.cups]")
    text += '\n[features]\nbackbone = "dinov2_vitb14"\n'
    (tmp_path / "p.toml").write_text(text)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert cli.main(["run", "--config", str(tmp_path / "p.toml")]) == 2
    err = capsys.readouterr().err
    assert "nothing was written" in err
    assert len(err.strip().splitlines()) == 1 and "(1) " in err and "; (2) " in err  # one line, numbered
    for needle in ("[features] backbone = 'dinov2_vitb14' needs weights", "disparity/*_disparity.png missing for 2",
                   "disparity_trainvaltest.zip", "_gtFine_instanceIds.png (the tool makes the panoptic",
                   "leftImg8bit_sequence",
                   "link_key_frames"):
        assert needle in err, needle
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_preflight_missing_root_is_one_problem(tmp_path, capsys):
    (tmp_path / "p.toml").write_text(small(pipeline.default_config_text(), tmp_path / "nowhere"))
    assert cli.main(["run", "--config", str(tmp_path / "p.toml")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "1 problem(s)" in err
    assert "nowhere': no such folder" in err and not (tmp_path / "pipeline_out").exists()


def test_preflight_checks_free_disk(city, tmp_path, monkeypatch):
    import collections
    import shutil as sh

    config = pipeline.parse_pipeline_text(small(pipeline.default_config_text(), city), tmp_path)
    assert pipeline.preflight(config) == []
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda path: usage(10**9, 10**9 - 2**10, 2**10))  # 1 KiB free
    problems = pipeline.preflight(config)
    assert len(problems) == 2 and all(p.startswith("free disk: ") and "2 images at 1024x2048" in p
                                     and p.endswith("0.0 MiB free") for p in problems)


def test_preflight_names_missing_weights_and_checkpoints(tmp_path):
    root = tmp_path / "cs"
    synth(root, "val", size=(256, 512))
    text = pipeline.preset_config_text("cause27-depth").replace('root = "cityscapes"', f'root = "{root}"')
    config = pipeline.parse_pipeline_text(text, tmp_path)
    problems = pipeline.preflight(config)
    assert any("dinov2_vitb14_pretrain.pth not found" in p for p in problems)
    assert any("cluster_tr.pth not found" in p for p in problems)
    assert any("source = 'spidepth' needs weights" in p for p in problems)


# --------------------------------------------------------------------------- presets
def test_preset_list_and_texts(capsys):
    assert cli.main(["run", "--print-config", "--preset", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(pipeline.PRESETS)
    assert cli.main(["run", "--print-config", "--preset", "nope"]) == 2
    assert "choose from k80-depth" in capsys.readouterr().err
    for name, p in pipeline.PRESETS.items():
        data = tomllib.loads(pipeline.preset_config_text(name))
        assert data["data"]["preset"] == name and data["evaluate"]["protocol"] == "reference"
        if p.tau is None:
            assert data["instances"] == {"depth": "none"} and "depth" not in data
        else:
            assert (data["instances"]["grad_threshold"], data["instances"]["min_area"]) == (p.tau, p.min_area)
        table = "cause27" if p.semantics == "cause27" else "semantics"
        assert table in data and (table == "cause27" or data["semantics"]["k"] == p.k)


def builtin(name: str, root: Path, ckpt: Path) -> dict:
    """A preset's config with the user's paths: the builtin backbone (tiny random CAUSE checkpoints for
    CAUSE-27) and disparity depth in place of the weights; k as the preset's, 2 images."""
    data = tomllib.loads(pipeline.preset_config_text(name))
    data["data"]["root"] = str(root)
    data["runner"]["workers"] = 1
    if "semantics" in data:
        sem = data["semantics"]
        for key in ("weights", "head", "head_weights", "kmeans_backend"):
            sem.pop(key)
        sem["backbone"] = "builtin"
    else:
        data["cause27"].update(checkpoint_dir=str(ckpt), backbone="dinov2")
    if "depth" in data:
        data["depth"] = {"source": "disparity", "normalize": "minmax"}
    return data


@pytest.fixture(scope="module")
def tiny_cause(tmp_path_factory) -> Path:
    from tests.test_generate_semantic_pseudolabels_cause import _checkpoints

    return _checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize("name", list(pipeline.PRESETS))
def test_each_preset_runs_with_the_builtin_backbone(name, city, tiny_cause, tmp_path):
    data = builtin(name, copy_city(city, tmp_path / "cs"), tiny_cause)
    config = pipeline.parse_pipeline_config(data, tmp_path, f"preset {name}")
    result = pipeline.run_pipeline(config, log=lambda s: None)
    ev = result.evaluation
    assert ev["protocol"] == "reference" and 0 <= ev["PQ"] <= 100
    table = pipeline.format_results(result)
    p = pipeline.PRESETS[name]
    assert f"published: {p.row}" in table and f"{p.published[0]:6.2f}" in table and "reference" in table
    sem = sorted((config.layout.semantic_dir).rglob("*.png"))
    assert len(sem) == 2 and read_png(sem[0]).shape == FULL and read_png(sem[0]).max() <= 255
    if name == "cause27-depth":  # a rerun keeps the Hungarian naming and every finished image
        lines: list[str] = []
        again = pipeline.run_pipeline(pipeline.parse_pipeline_config(data, tmp_path, f"preset {name}"), log=lines.append)
        assert any("kept the Hungarian naming" in line for line in lines)
        assert not any(s.did_work for s in again.steps) and again.evaluation["PQ"] == ev["PQ"]


# --------------------------------------------------------------------------- working resolution
def test_working_resolution_and_min_area_defaults():
    from pseudo_labels.core import defaults

    assert defaults.work_resolution(FULL) == (512, 1024)  # the reference's, for a Cityscapes frame
    assert defaults.work_resolution((256, 512)) == (128, 256) and defaults.work_resolution((3, 5)) == (2, 2)
    assert defaults.work_resolution(FULL, (1024, 2048)) == (1024, 2048)  # an explicit value wins
    assert defaults.scaled_min_area((512, 1024)) == 1000 == defaults.MIN_AREA
    assert defaults.scaled_min_area((256, 512)) == 250 and defaults.scaled_min_area((1024, 2048)) == 4000
    assert defaults.scaled_min_area((8, 8)) == 1 and defaults.scaled_min_area((128, 256), 500) == 31


def test_explicit_min_area_and_resolution_are_used_as_given(city, tmp_path):
    from pseudo_labels.core.io import write_png
    from pseudo_labels.datasets.cityscapes import label_id_to_train_id_lut
    from pseudo_labels.stages.instance.instances import InstanceConfig, generate_instances

    root = copy_city(city, tmp_path / "cs")
    assert cli.main(["generate-depth", "--cityscapes-root", str(root), "--split", "val", "--source", "disparity",
                     "--output-subdir", "depth", "--workers", "1"]) == 0
    for p in (root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"):  # GT trainIds as the semantic maps
        write_png(tmp_path / "sem" / p.parent.name / p.name.replace("_gtFine_labelIds", ""),
                  label_id_to_train_id_lut()[read_png(p)])
    runs = {}
    for name, kw in {"default": {}, "explicit": {"min_area": 1000, "resolution": (256, 512)}}.items():
        run = generate_instances(InstanceConfig(str(tmp_path / "sem"), str(root / "depth" / "val"),
                                                str(tmp_path / name), **kw))
        stats = json.loads((tmp_path / name / "stats.json").read_text())
        runs[name] = (run.instances, stats["config"]["min_area"], stats["config"]["resolution"],
                      read_png(next((tmp_path / name).rglob("*_instance.png"))).shape)
    assert runs["default"][1:] == (None, None, (512, 1024))  # per image: half size, A_min 1000 at 512x1024
    assert runs["explicit"][1:] == (1000, [256, 512], (256, 512))  # 1000 px at 256x512, not scaled
    assert runs["default"][0] > runs["explicit"][0]  # the same A_min over a quarter of the pixels keeps fewer
