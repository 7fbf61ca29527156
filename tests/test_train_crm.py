"""pseudo-labels train-crm: pseudo-label / GT training, provenance, resume after an interruption."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pseudo_labels.cli import main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_png, write_manifest, write_png
from pseudo_labels.stages.rgbt import crm
from tests.rgbt_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)

SIZE = (64, 128)




def write_rgbt_fixture(root: Path, n_train: int = 6, n_test: int = 4) -> Path:
    """Synthetic RGB-T set (MFNet layout) + noisy pseudo-labels of the train split under
    ``root/pseudo/train/<name>.png`` (GT with random 8x8 blocks relabelled)."""
    from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt

    write_synthetic_rgbt(root, n_train, seed=0, size=SIZE, split="train")
    write_synthetic_rgbt(root, n_test, seed=1, size=SIZE, split="test")
    rng = np.random.default_rng(0)
    for name in (root / "train.txt").read_text().split():
        lab = read_png(root / "labels" / f"{name}.png").copy()
        for _ in range(20):
            i, j = rng.integers(0, SIZE[0] // 8), rng.integers(0, SIZE[1] // 8)
            lab[i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] = rng.integers(0, 9)
        write_png(root / "pseudo" / "train" / f"{name}.png", lab)
    return root


@pytest.fixture(scope="module")
def rgbt_root(tmp_path_factory) -> Path:
    return write_rgbt_fixture(tmp_path_factory.mktemp("rgbt"))


def _config(root, out, **kw) -> crm.CRMTrainConfig:
    base = dict(data_root=str(root), dataset="mfnet", out=str(out), labels_dir="pseudo", epochs=2,
                mask_patch_size=16, progress=False)
    base.update(kw)
    return crm.CRMTrainConfig(**base)


def _weights(run: Path) -> dict:
    return torch.load(run / crm.CHECKPOINT_NAME, map_location="cpu", weights_only=True)["model"]


def test_cli_trains_on_pseudo_labels_and_writes_run_folder(rgbt_root, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train-crm", "--data-root", str(rgbt_root), "--dataset", "mfnet", "--labels-dir", "pseudo",
               "--out", str(out), "--epochs", "2", "--mask-patch-size", "16", "--seed", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trained 2 epochs on 6 images" in printed and "uses ground truth: no" in printed
    log = json.loads((out / crm.LOG_NAME).read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    assert log["config"]["masking"] == "random-complementary" and log["config"]["seed"] == 3
    assert log["config"]["sdc_weight"] == log["config"]["sdn_weight"] == 0.1 and log["config"]["mws_weight"] == 1.0
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "train-crm" and man["uses_ground_truth"] is False
    assert man["parameters"]["labels_dir"] == str((rgbt_root / "pseudo").resolve())
    state = torch.load(out / crm.CHECKPOINT_NAME, map_location="cpu", weights_only=True)  # metadata as JSON text
    assert state["epoch"] == 2 and json.loads(state["meta"])["dataset"] == "mfnet"
    assert crm.load_checkpoint(out)["meta"]["dataset"] == "mfnet"


def test_underscore_flags_and_ablation_switches(rgbt_root, tmp_path):
    out = tmp_path / "run"
    rc = main(["train-crm", "--data_root", str(rgbt_root), "--dataset", "mfnet", "--labels_dir", "pseudo",
               "--out", str(out), "--epochs", "1", "--masking", "random", "--mask_patch_size", "8",
               "--mask_ratio", "0.25", "--sdc_weight", "0", "--sdn_weight", "0.5", "--mws_weight", "0"])
    assert rc == 0
    cfg = json.loads((out / crm.LOG_NAME).read_text())["config"]
    assert (cfg["masking"], cfg["mask_patch_size"], cfg["mask_ratio"]) == ("random", 8, 0.25)
    assert (cfg["sdc_weight"], cfg["sdn_weight"], cfg["mws_weight"]) == (0.0, 0.5, 0.0)
    parts = json.loads((out / crm.LOG_NAME).read_text())["epochs"][0]
    assert "sdn" in parts and "sdc" not in parts and "mws" not in parts


def test_gt_labels_are_recorded(rgbt_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-crm", "--data-root", str(rgbt_root), "--dataset", "mfnet", "--labels", "gt",
                 "--out", str(out), "--epochs", "1", "--masking", "none"]) == 0
    assert "uses ground truth: yes" in capsys.readouterr().out
    man = json.loads((out / "manifest.json").read_text())
    assert man["uses_ground_truth"] is True and "ground-truth" in man["ground_truth_use"]["training_labels"]


def test_pseudo_labels_made_with_gt_propagate(rgbt_root, tmp_path):
    labels = tmp_path / "mapped"
    shutil.copytree(rgbt_root / "pseudo", labels)
    write_manifest(labels, "darts", {"mapping": "majority"}, uses_ground_truth={"mapping": "majority vote on GT"})
    res = crm.train_crm(_config(rgbt_root, tmp_path / "run", labels_dir=str(labels), epochs=1))
    assert res["uses_ground_truth"] is True
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "majority vote on GT" in man["ground_truth_use"]["training_labels"]
    # a stage writing <out>/labels/<split>/*.png keeps its manifest in <out>: found there too
    nested = tmp_path / "stage_out"
    shutil.copytree(rgbt_root / "pseudo", nested / "labels")
    write_manifest(nested, "generate-darts-semantics", {}, uses_ground_truth={"mapping": "hungarian on GT"})
    res = crm.train_crm(_config(rgbt_root, tmp_path / "run2", labels_dir=str(nested / "labels"), epochs=1))
    assert res["uses_ground_truth"] is True


def test_interrupted_run_resumes_from_its_checkpoint_to_the_same_weights(rgbt_root, tmp_path):
    full = tmp_path / "full"
    crm.train_crm(_config(rgbt_root, full, epochs=3))

    def stop(epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        crm.train_crm(_config(rgbt_root, part, epochs=3), on_epoch_end=stop)
    assert torch.load(part / crm.CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    logs = []
    res = crm.train_crm(_config(rgbt_root, part, epochs=3), log=logs.append)
    assert any("resuming after epoch 1" in m for m in logs)
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3]
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_changed_settings_need_restart(rgbt_root, tmp_path):
    out = tmp_path / "run"
    crm.train_crm(_config(rgbt_root, out, epochs=1))
    with pytest.raises(PseudoLabelsError, match="other settings.*mask_ratio"):
        crm.train_crm(_config(rgbt_root, out, epochs=1, mask_ratio=0.3))
    res = crm.train_crm(_config(rgbt_root, out, epochs=1, mask_ratio=0.3, restart=True))
    assert res["epochs"] == 1


def test_missing_and_bad_labels_fail_naming_the_image(rgbt_root, tmp_path, capsys):
    labels = tmp_path / "few"
    shutil.copytree(rgbt_root / "pseudo", labels)
    victim = sorted((labels / "train").glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(PseudoLabelsError, match=victim.stem):
        crm.train_crm(_config(rgbt_root, tmp_path / "r1", labels_dir=str(labels)))
    write_png(victim, np.full(SIZE, 40, np.uint8))
    with pytest.raises(PseudoLabelsError, match=f"{victim.name}.*40"):
        crm.train_crm(_config(rgbt_root, tmp_path / "r2", labels_dir=str(labels)))
    rc = main(["train-crm", "--data-root", str(rgbt_root), "--dataset", "mfnet", "--labels-dir", str(tmp_path / "no"),
               "--out", str(tmp_path / "r3")])
    assert rc == 2 and "labels folder not found" in capsys.readouterr().err


def test_rgb_only_cityscapes_trains_with_masking_off(synth_city_train_val, tmp_path, capsys):
    root = synth_city_train_val
    res = crm.train_crm(crm.CRMTrainConfig(data_root=str(root), dataset="cityscapes", out=str(tmp_path / "run"),
                                           labels="gt", epochs=1, input_size=(64, 128), progress=False))
    cfg = json.loads((tmp_path / "run" / crm.LOG_NAME).read_text())["config"]
    assert res["n_images"] == 4 and cfg["modalities"] == ["rgb"] and cfg["masking"] == "none"
    assert cfg["sdc_weight"] == cfg["sdn_weight"] == cfg["mws_weight"] == 0.0 and cfg["num_classes"] == 19
    rc = main(["train-crm", "--data-root", str(root), "--dataset", "cityscapes", "--labels", "gt", "--out",
               str(tmp_path / "r2"), "--masking", "complementary"])
    assert rc == 2 and "use --masking none" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_process_resumes_from_last_checkpoint(rgbt_root, tmp_path):
    """SIGKILL the command after its first checkpoint; the rerun finishes with the weights of an
    uninterrupted run."""
    args = [sys.executable, "-m", "pseudo_labels.commands.train_crm", "--data-root", str(rgbt_root), "--dataset", "mfnet",
            "--labels-dir", "pseudo", "--epochs", "12", "--mask-patch-size", "16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpt = killed / crm.CHECKPOINT_NAME
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < 12
    assert subprocess.run(args + ["--out", str(killed)], env=env, capture_output=True).returncode == 0
    full = tmp_path / "full"
    assert subprocess.run(args + ["--out", str(full)], env=env, capture_output=True).returncode == 0
    a, b = _weights(full), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(json.loads((killed / crm.LOG_NAME).read_text())["epochs"]) == 12


def test_pst900_layout_with_separate_thermal_files(tmp_path):
    """PST900 (separate RGB / thermal / label files) goes through the data set's own lister."""
    root = tmp_path / "pst"
    rng = np.random.default_rng(0)
    for i in range(3):
        lab = np.zeros((48, 64), np.uint8)
        lab[10:30, 20:40] = 1 + i % 4
        rgb = np.dstack([lab * 50] * 3).astype(np.uint8)
        write_png(root / "train" / "rgb" / f"f{i}.png", rgb)
        write_png(root / "train" / "thermal" / f"f{i}.png",
                  (60 + lab * 30 + rng.integers(0, 20, lab.shape)).astype(np.uint8))
        write_png(root / "train" / "labels" / f"f{i}.png", lab)
    res = crm.train_crm(crm.CRMTrainConfig(data_root=str(root), dataset="pst900", out=str(tmp_path / "run"),
                                           labels="gt", epochs=1, mask_patch_size=8, progress=False))
    assert res["n_images"] == 3
    cfg = json.loads((tmp_path / "run" / crm.LOG_NAME).read_text())["config"]
    assert cfg["num_classes"] == 5 and cfg["modalities"] == ["rgb", "thermal"]
    out = crm.generate_crm_pseudolabels(crm.CRMLabelConfig(run=str(tmp_path / "run"), output_dir=str(tmp_path / "o")))
    assert out["done"] == 3 and read_png(tmp_path / "o" / "train" / "f0.png").shape == (48, 64)
    assert set(out["scores"]) == {"overall"}  # PST900 names carry no day / night


def test_ground_truth_samples_of_the_official_layout_read_labelids_as_train_ids(synth_city, synth_city_official):
    """The official zips hold _labelIds only: CRM's GT samples point there and read trainIds, equal to the
    prepared labelTrainIds of the same scenes (``--labels gt`` and scoring both go through this)."""
    official = crm.list_samples(str(synth_city_official), "cityscapes", "val")
    extended = crm.list_samples(str(synth_city), "cityscapes", "val")
    assert official and all(s.gt_path.endswith("_gtFine_labelIds.png") for s in official)
    for so, se in zip(official, extended):
        np.testing.assert_array_equal(crm.read_ground_truth(so), crm.read_ground_truth(se))
        np.testing.assert_array_equal(crm.read_label(so.gt_path, 19), crm.read_ground_truth(se))
