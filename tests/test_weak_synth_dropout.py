"""The opt-in class dropout of the synthetic city (informative image tags for the weak path)."""

import hashlib

import numpy as np
import pytest

from pseudo_labels.datasets import synthetic_city as synth
from pseudo_labels.cli import main
from pseudo_labels.core.io import read_manifest
from pseudo_labels.stages.weak.tags import tags_from_label_map

SIZE = (96, 192)
VOID = {synth.UNLABELED, synth.EGO, synth.STATIC}


def _digest(scene):
    return hashlib.sha256(scene.image.tobytes() + scene.label_ids.tobytes() + scene.disparity.tobytes()).hexdigest()


def test_default_output_unchanged():
    """Without class dropout the scene is byte-identical to the one rendered before the option existed."""
    a = synth.generate_scene(synth.image_seed(0, 1, "train"), (64, 128))
    assert _digest(a) == "bfa04bec60b4b90c444a8d340f1301de200ae909760058561e65986192dc929f"
    b = synth.generate_scene(synth.image_seed(0, 1, "train"), (64, 128), class_dropout=0.0)
    assert _digest(b) == _digest(a) and "dropped_label_ids" not in b.info
    assert synth.dropped_classes(5, 0.0) == frozenset()


def test_dropped_classes_are_absent_deterministic_and_nested():
    seed = synth.image_seed(3, 2, "train")
    low, high = synth.dropped_classes(seed, 0.3), synth.dropped_classes(seed, 0.7)
    assert low <= high and high  # a larger dropout drops a superset
    assert synth.dropped_classes(seed, 0.7) == high  # deterministic
    s1 = synth.generate_scene(seed, SIZE, class_dropout=0.7)
    s2 = synth.generate_scene(seed, SIZE, class_dropout=0.7)
    assert _digest(s1) == _digest(s2)
    present = set(np.unique(s1.label_ids).tolist())
    assert not present & high
    assert s1.info["dropped_label_ids"] == sorted(high)
    # every class not dropped is still visible (the re-draw rule applies to the kept ones)
    kept = set(synth.REQUIRED_LABEL_IDS) - high
    assert kept <= present, kept - present
    # train ids / instance ids stay consistent
    assert np.array_equal(s1.train_ids, synth.label_id_to_train_id_lut()[s1.label_ids])
    with pytest.raises(ValueError):
        synth.dropped_classes(seed, 1.5)


def test_full_dropout_keeps_one_ground_and_one_facade_class():
    seed = synth.image_seed(0, 0, "train")
    assert synth.dropped_classes(seed, 1.0) == frozenset(synth.DROPPABLE_LABEL_IDS) - {synth.ROAD, synth.BUILDING}
    s = synth.generate_scene(seed, SIZE, class_dropout=1.0)
    assert set(np.unique(s.label_ids).tolist()) - VOID == {synth.ROAD, synth.BUILDING}
    # no sky: the backdrop covers it, so the disparity is valid up to the top row (except holes)
    assert (s.disparity[0] > 0).mean() > 0.5


def test_tags_vary_between_images():
    full = [synth.generate_scene(synth.image_seed(0, i, "train"), SIZE) for i in range(6)]
    drop = [synth.generate_scene(synth.image_seed(0, i, "train"), SIZE, class_dropout=0.5) for i in range(6)]
    t_full = np.stack([tags_from_label_map(s.train_ids, min_pixels=1) for s in full])
    t_drop = np.stack([tags_from_label_map(s.train_ids, min_pixels=1) for s in drop])
    always_full = int((t_full.mean(0) == 1).sum())
    always_drop = int((t_drop.mean(0) == 1).sum())
    assert always_full >= 15 and always_drop <= 3
    assert t_drop.sum(1).mean() < t_full.sum(1).mean() - 4
    # dropout removes classes, it does not move what is kept: the depth of a kept thing instance is unchanged
    a, b = full[0], drop[0]
    kept_cars = (a.label_ids == synth.CAR) & (b.label_ids == synth.CAR)
    if kept_cars.any():
        assert np.allclose(a.depth[kept_cars], b.depth[kept_cars])


def test_cli_and_manifest(tmp_path, capsys):
    out = tmp_path / "city"
    assert main(["synth", "--out", str(out), "--n", "2", "--size", "64", "128", "--split", "train",
                 "--class-dropout", "0.5"]) == 0
    man = read_manifest(out, synth.MANIFEST_NAME)
    assert man["parameters"]["splits"]["train"]["class_dropout"] == 0.5
    assert main(["synth", "--out", str(tmp_path / "c2"), "--n", "1", "--size", "64", "128"]) == 0
    assert "class_dropout" not in read_manifest(tmp_path / "c2", synth.MANIFEST_NAME)["parameters"]["splits"]["val"]
    capsys.readouterr()
    assert main(["synth", "--out", str(tmp_path / "c3"), "--n", "1", "--size", "64", "128",
                 "--class-dropout", "1.5"]) == 2
    assert "class-dropout" in capsys.readouterr().err
