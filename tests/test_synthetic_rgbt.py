"""Synthetic RGB-T frames (pseudo_labels.datasets.synthetic_rgbt) and the synth-rgbt command."""

from __future__ import annotations

import numpy as np
import pytest

from pseudo_labels.core.io import read_manifest
from pseudo_labels.datasets import mfnet
from pseudo_labels.datasets import synthetic_rgbt as srgbt
from pseudo_labels.datasets.rgbt import condition_of, read_rgbt_sample
from pseudo_labels.datasets.synthetic_city import generate_scene, image_seed

SIZE = (120, 160)


@pytest.fixture(scope="module")
def pair():
    seed = image_seed(3, 1, "train")
    return srgbt.generate_rgbt_scene(seed, SIZE, night=False), srgbt.generate_rgbt_scene(seed, SIZE, night=True), seed


def test_night_fraction_rounds_up_and_alternates():
    assert [srgbt.is_night_frame(i) for i in range(5)] == [True, False, True, False, True]
    assert sum(srgbt.is_night_frame(i, 0.3) for i in range(10)) == 3
    assert not any(srgbt.is_night_frame(i, 0.0) for i in range(4))
    assert all(srgbt.is_night_frame(i, 1.0) for i in range(4))


def test_night_changes_rgb_only(pair):
    day, night, _ = pair
    assert np.array_equal(day.thermal, night.thermal) and np.array_equal(day.label, night.label)
    assert np.array_equal(day.day_rgb, night.day_rgb) and np.array_equal(day.rgb, day.day_rgb)
    assert night.rgb.mean() < 0.4 * day.rgb.mean()  # dark
    # noisy: high-frequency energy relative to brightness is larger at night
    hf = lambda im: np.abs(np.diff(im.astype(np.float32), axis=1)).mean() / max(im.mean(), 1)  # noqa: E731
    assert hf(night.rgb) > 2 * hf(day.rgb)


def test_labels_are_the_city_mapped_to_mfnet(pair):
    day, _, seed = pair
    city = generate_scene(seed, SIZE).label_ids
    lab = day.label
    assert set(np.unique(lab)) <= set(range(9))
    cone = lab == mfnet.COLOR_CONE  # cones stand in front of whatever is behind them
    assert np.all(lab[np.isin(city, (24, 25)) & ~cone] == mfnet.PERSON)
    assert np.all(lab[np.isin(city, (26, 27, 28)) & ~cone] == mfnet.CAR)
    assert np.all(lab[(city == 13) & ~cone] == mfnet.GUARDRAIL)
    assert np.all(lab[city == 23] == mfnet.UNLABELED)  # sky
    assert (lab == mfnet.CURVE).sum() > 0 and np.all(np.isin(city[lab == mfnet.CURVE], (8,)))


def test_thermal_people_and_running_cars_warm_sky_cold(pair):
    day, _, seed = pair
    scene = generate_scene(seed, SIZE)
    t = day.thermal.astype(np.float32)
    person = t[day.label == mfnet.PERSON].mean()
    sky = t[scene.label_ids == 23].mean()
    road = t[(scene.label_ids == 7) & (day.label == 0)].mean()
    veg = t[scene.label_ids == 21].mean()
    assert person > road + 20 > sky + 60
    assert road > veg  # different stuff temperatures
    running = srgbt._running_cars(scene.info)
    inst = scene.instance_ids
    run_px = np.isin(inst, list(running)) & (scene.label_ids == 26)
    parked_px = (scene.label_ids == 26) & ~np.isin(inst, list(running))
    if run_px.any() and parked_px.any():
        assert t[run_px].mean() > t[parked_px].mean() + 15


def test_deterministic(pair):
    _, night, seed = pair
    again = srgbt.generate_rgbt_scene(seed, SIZE, night=True)
    assert np.array_equal(again.rgb, night.rgb) and np.array_equal(again.thermal, night.thermal)


def test_write_set_in_mfnet_layout(tmp_path):
    names = srgbt.write_synthetic_rgbt(tmp_path, 3, seed=2, size=SIZE, split="val")
    assert names == ["val00000N", "val00001D", "val00002N"]
    assert (tmp_path / "val.txt").read_text().split() == names
    recs = mfnet.list_images(tmp_path, "val")
    rgb, thermal, label = read_rgbt_sample("mfnet", recs[2])
    ref = srgbt.generate_rgbt_scene(image_seed(2, 2, "val"), SIZE, night=True)
    assert np.array_equal(rgb, ref.rgb) and np.array_equal(thermal, ref.thermal) and np.array_equal(label, ref.label)
    assert condition_of(recs[2].stem) == "night"
    man = read_manifest(tmp_path, srgbt.MANIFEST_NAME)
    assert man["uses_ground_truth"] is False and man["parameters"]["splits"]["val"]["n_images"] == 3
    mtime = (tmp_path / "images" / "val00000N.png").stat().st_mtime_ns
    srgbt.write_synthetic_rgbt(tmp_path, 3, seed=2, size=SIZE, split="val")  # same parameters: kept
    assert (tmp_path / "images" / "val00000N.png").stat().st_mtime_ns == mtime
