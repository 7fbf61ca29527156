"""The reference's stuff/things rule: statistics and decision against the reference's
arithmetic written out on masks, the JSON schema, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pseudo_labels.core.io import write_npy, write_png
from pseudo_labels.stages.instance.thing_stuff_reference import (
    classify, cluster_statistics, decide_thing_classes_reference, image_class_records,
)


def _scene(rng, h=60, w=90):
    """Class 0 road (bottom), 1 sky (top), 2 cars (boxes at different depths, touching), 3 poles."""
    sem = np.full((h, w), 0, np.uint8)
    sem[: h // 3] = 1
    depth = np.tile(np.linspace(1.0, 0.2, h)[:, None], (1, w))
    depth[: h // 3] = 1.0
    x = 5
    for _ in range(int(rng.integers(2, 5))):
        bw = int(rng.integers(8, 14))
        sem[30:45, x:x + bw] = 2
        depth[30:45, x:x + bw] = rng.uniform(0.2, 0.9)
        x += bw  # adjacent: one semantic region, split by depth edges
    for px in rng.choice(np.arange(70, 88, 4), 2, replace=False):
        sem[10:40, px:px + 2] = 3
    sem[0, 0] = 255  # void, ignored
    return sem, depth


def _reference_statistics(pairs, num_classes, grad_threshold=0.05, sigma=1.0):
    """compute_cluster_statistics of the reference, transcribed (per-region mask loops)."""
    from scipy import ndimage
    from scipy.ndimage import gaussian_filter, sobel

    acc = {k: dict(pix=0, rc=[], sc=[], rs=[], md=[], iv=[], mf=[]) for k in range(num_classes)}
    for sem, depth in pairs:
        d = gaussian_filter(depth, sigma=sigma)
        edges = np.sqrt(sobel(d, axis=1) ** 2 + sobel(d, axis=0) ** 2) > grad_threshold
        for k in range(num_classes):
            mask = sem == k
            n = int(mask.sum())
            if n == 0:
                continue
            a = acc[k]
            a["pix"] += n
            lab, nr = ndimage.label(mask)
            a["rc"].append(nr)
            a["sc"].append(ndimage.label(mask & ~edges)[1])
            a["mf"].append(float(max(ndimage.sum(mask, lab, range(1, nr + 1)))) / n)
            for r in range(1, nr + 1):
                m = lab == r
                a["rs"].append(int(m.sum()) / sem.size)
                v = depth[m]
                if len(v) > 1:
                    a["md"].append(float(v.mean()))
                    a["iv"].append(float(v.var()))
    out = {}
    for k, a in acc.items():
        if a["pix"] == 0:
            out[k] = None
            continue
        rc, sc = float(np.mean(a["rc"])), float(np.mean(a["sc"]))
        out[k] = dict(avg_region_count=rc, avg_split_count=sc, depth_split_ratio=sc / max(rc, 1.0),
                      avg_relative_size=float(np.mean(a["rs"])),
                      depth_spread=float(np.std(a["md"])) if len(a["md"]) > 1 else 0.0,
                      intra_depth_var=float(np.mean(a["iv"])), max_region_fraction=float(np.mean(a["mf"])),
                      pixel_count=a["pix"])
    return out


def test_statistics_equal_reference_arithmetic():
    rng = np.random.default_rng(0)
    pairs = [_scene(rng) for _ in range(4)]
    ours = cluster_statistics([image_class_records(s, d, 6, 0.05, 1.0) for s, d in pairs], 6)
    ref = _reference_statistics(pairs, 6)
    for k in range(6):
        if ref[k] is None:
            assert ours[k]["pixel_count"] == 0 and ours[k]["depth_split_ratio"] == 1.0
            continue
        for key, v in ref[k].items():
            assert ours[k][key] == pytest.approx(v, rel=1e-9, abs=1e-12), (k, key)
    assert ours[2]["depth_split_ratio"] > 1.5  # adjacent cars at different depths split


def test_two_stage_rule():
    stats = {k: dict(pixel_count=100_000, avg_relative_size=0.001, depth_split_ratio=1.0 + k / 10) for k in range(6)}
    stats[5].update(avg_relative_size=0.3)  # big stuff despite the top ratio
    stats[4].update(pixel_count=0)
    stats[0].update(depth_split_ratio=1.2)  # ties with class 2: lower id first
    stats[2].update(depth_split_ratio=1.2)
    c = classify(stats, 6, n_things=2, num_images=10)
    assert c[5] == {"label": "stuff", "score": -500.0}
    assert c[4] == {"label": "stuff", "score": 0.0}
    assert [k for k in range(6) if c[k]["label"] == "thing"] == [0, 3]  # 0 and 2 tie at 1.2: 0 first
    c = classify(stats, 6, n_things=3, num_images=10)
    assert [k for k in range(6) if c[k]["label"] == "thing"] == [0, 2, 3]
    # stage 1 needs both: large regions and many pixels per image
    assert classify(stats, 6, n_things=5, num_images=100)[5]["label"] == "thing"


def test_command_writes_reference_schema(tmp_path, capsys):
    from pseudo_labels.cli import main

    rng = np.random.default_rng(1)
    for i in range(3):
        sem, depth = _scene(rng)
        write_png(tmp_path / "sem" / "city" / f"city_00000{i}_000019.png", sem)
        write_npy(tmp_path / "depth" / "city" / f"city_00000{i}_000019.npy", depth)
    write_png(tmp_path / "sem" / "city" / "city_000009_000019.png", sem)  # no depth: skipped, still counted
    out = tmp_path / "st.json"
    rc = main(["classify-stuff-things", "--semantic_dir", str(tmp_path / "sem"), "--depth-dir",
               str(tmp_path / "depth"), "--output_path", str(out), "--num_classes", "4", "--n_things", "1"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"classification", "statistics", "stuff_ids", "thing_ids"}
    assert doc["thing_ids"] == [2] and doc["stuff_ids"] == [0, 1, 3]
    assert doc["uses_ground_truth"] is False and doc["parameters"]["n_things"] == 1
    assert set(doc["statistics"]["2"]) == {"avg_region_count", "avg_split_count", "depth_split_ratio",
                                           "avg_relative_size", "depth_spread", "intra_depth_var",
                                           "max_region_fraction", "pixel_count"}
    text = capsys.readouterr().out
    assert "1 without depth" in text and "uses ground truth: no" in text
    rng = np.random.default_rng(1)
    sems, deps = zip(*[_scene(rng) for _ in range(3)])
    assert decide_thing_classes_reference(sems, deps, 4, n_things=1) == {2}


def test_file_form_for_the_instance_stage(tmp_path):
    from pseudo_labels.stages.instance.thing_stuff_reference import decide_thing_classes_reference_from_files

    rng = np.random.default_rng(1)
    sems, deps, sp, dp = [], [], [], []
    for i in range(3):
        sem, depth = _scene(rng)
        sems.append(sem), deps.append(depth)
        sp.append(tmp_path / f"s{i}.png"), dp.append(tmp_path / f"d{i}.npy")
        write_png(sp[-1], sem)
        write_npy(dp[-1], depth)
    r = decide_thing_classes_reference_from_files(sp, dp, rule={"n_things": 1})
    assert r["thing_classes"] == sorted(decide_thing_classes_reference(sems, deps, 4, n_things=1)) == [2]
    assert r["rule"]["num_classes"] == 4 and r["statistics"][2]["label"] == "thing"
    with pytest.raises(Exception, match="depth map not found"):
        decide_thing_classes_reference_from_files(sp, [tmp_path / "nope.npy"] * 3)


def test_instance_stage_rule_reference_equals_classify_stuff_things(tmp_path):
    """``generate-depth-guided-instances --thing-classes auto --rule reference`` decides the
    thing classes that ``classify-stuff-things`` writes for the same maps."""
    from pseudo_labels.cli import main

    rng = np.random.default_rng(3)
    for i in range(3):
        sem, depth = _scene(rng, 120, 180)
        write_png(tmp_path / "sem" / "val" / "city" / f"city_00000{i}_000019.png", sem)
        write_npy(tmp_path / "depth" / "val" / "city" / f"city_00000{i}_000019.npy", depth)
    assert main(["classify-stuff-things", "--semantic-dir", str(tmp_path / "sem"), "--depth-dir",
                 str(tmp_path / "depth"), "--output-path", str(tmp_path / "st.json"), "--num-classes", "4"]) == 0
    expected = json.loads((tmp_path / "st.json").read_text())["thing_ids"]
    assert main(["generate-depth-guided-instances", "--semantic-dir", str(tmp_path / "sem"), "--depth-dir",
                 str(tmp_path / "depth"), "--output-dir", str(tmp_path / "inst"), "--thing-classes", "auto",
                 "--rule", "reference", "--resolution", "120", "180", "--min-area", "10", "--workers", "1"]) == 0
    manifest = json.loads((tmp_path / "inst" / "manifest.json").read_text())
    decision = manifest["thing_classes_decision"]
    assert decision["thing_classes"] == expected and decision["rule"]["name"] == "reference"
    assert 0 not in expected and 1 not in expected  # road and sky are big stuff here
