"""Sweep: every cell equals the single-configuration pipeline; splitting vs baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pseudo_labels.cli import main

from .test_generate_depth_guided_instances import WORK, prepare_city

TAUS = ["0.05", "0.2"]
AREAS = ["30", "200"]


@pytest.fixture(scope="module")
def city(synth_city, tmp_path_factory):
    return prepare_city(synth_city, tmp_path_factory.mktemp("sweep") / "city")


def _pipeline(city, tmp, tau, amin, dil, protocol):
    from evaluation.panoptic import evaluate_panoptic_folders

    inst, pan = tmp / f"i_{tau}_{amin}_{dil}", tmp / f"p_{tau}_{amin}_{dil}"
    assert main(["generate-depth-guided-instances", "--semantic-dir", str(city / "sem_gt"), "--depth-dir",
                 str(city / "depth_disp"), "--output-dir", str(inst), "--grad-threshold", tau, "--min-area", amin,
                 "--dilation-iters", dil, "--workers", "1", *WORK]) == 0
    assert main(["generate-panoptic", "--semantic-dir", str(city / "sem_gt"), "--instance-dir", str(inst),
                 "--out-json", str(pan / "pan.json"), "--out-folder", str(pan), "--workers", "1"]) == 0
    gt = city / "gtFine"
    return evaluate_panoptic_folders(gt / "cityscapes_panoptic_val.json", gt / "cityscapes_panoptic_val",
                                     pan / "pan.json", pan, protocol=protocol)


@pytest.mark.parametrize("protocol", ["standard", "reference"])
def test_every_cell_equals_pipeline(city, tmp_path, protocol):
    out = tmp_path / "sweep.json"
    assert main(["sweep", "--cityscapes-root", str(city), "--semantic-subdir", "sem_gt", "--depth-subdir",
                 "depth_disp", "--grad-thresholds", *TAUS, "--min-areas", *AREAS, "--dilation-iters", "0", "3",
                 "--protocol", protocol, "--workers", "1", "--out", str(out), *WORK]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == protocol and res["n_images"] == 3 and res["k"] is None
    assert out.with_suffix(".csv").exists() and out.with_name("sweep_heatmap.png").exists()
    rows = [r for r in res["results"] if r["mode"] == "depth-guided"]
    assert len(rows) == len(TAUS) * len(AREAS) * 2
    assert {"grad_threshold", "min_area", "PQ", "PQ_stuff", "PQ_things", "SQ", "RQ", "avg_instances",
            "n_images"} <= set(rows[0])
    check = rows if protocol == "standard" else rows[::3]
    for r in check:
        want = _pipeline(city, tmp_path, str(r["grad_threshold"]), str(r["min_area"]), str(r["dilation_iters"]),
                         protocol)
        for key in ("PQ", "SQ", "RQ", "PQ_stuff", "PQ_things", "SQ_things", "RQ_things"):
            assert r[key] == pytest.approx(want[key], abs=1e-9), (r["grad_threshold"], r["min_area"], key)
        for name, pc in want["per_class"].items():
            assert (r["per_class"][name]["TP"], r["per_class"][name]["FP"], r["per_class"][name]["FN"]) == \
                (pc["TP"], pc["FP"], pc["FN"])
    assert res["best"]["PQ"] == max(r["PQ"] for r in rows)


def test_splitting_beats_one_instance_per_class(city):
    """Depth splitting (defaults scaled to the 128x256 working size) vs one instance per thing class."""
    from evaluation.panoptic import pq_stats_image, read_panoptic_png, summarize_pq
    from pseudo_labels.datasets.cityscapes import list_images, panoptic_categories
    from pseudo_labels.stages.instance.depth import read_depth_npy
    from pseudo_labels.stages.instance.instances import resize_depth_bilinear, resize_semantic, split_instances_by_depth_edges
    from pseudo_labels.core.io import read_json, read_png
    from pseudo_labels.stages.instance.panoptic import panoptic_for_image

    gt = read_json(city / "gtFine" / "cityscapes_panoptic_val.json")
    anns = {a["image_id"]: a for a in gt["annotations"]}
    cats = panoptic_categories()
    tot = {"split": 0, "per_class": 0}
    for e in list_images(city, "val"):
        sem = read_png(next((city / "sem_gt").rglob(f"{e.stem}.png")))
        depth = resize_depth_bilinear(read_depth_npy(next((city / "depth_disp").rglob(f"{e.stem}.npy"))), (128, 256))
        sw = resize_semantic(sem, (128, 256))
        split = split_instances_by_depth_edges(sw, depth, 0.2, 60)
        one = np.zeros_like(split)
        for k, c in enumerate(c for c in range(11, 19) if (sw == c).sum() >= 10):
            one[sw == c] = k + 1
        g = read_panoptic_png(city / "gtFine" / "cityscapes_panoptic_val" / anns[e.stem]["file_name"])
        for name, inst in (("split", split), ("per_class", one)):
            pan, segs = panoptic_for_image(sem, inst, 64, None)
            s = pq_stats_image(g, anns[e.stem]["segments_info"], pan, segs, cats)
            tot[name] = s if isinstance(tot[name], int) else tot[name] + s
    pq = {k: summarize_pq(v, cats)["PQ_things"] for k, v in tot.items()}
    assert pq["split"] > pq["per_class"] + 2, pq


def test_cell_instances_equal_single_split():
    """Shared gradients / components / reused buffer: every cell equals one plain split."""
    from pseudo_labels.stages.instance.instances import split_instances_by_depth_edges
    from pseudo_labels.stages.outputs.sweep import CC_CELL, Grid, SweepSettings, cell_instances, connected_component_instances

    from .test_instances import random_case

    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        sem, depth = random_case(rng, 90, 140)
        grid = Grid((0.05, 0.2, 0.5), (1, 30, 120), (0.0, 1.0), (0, 2))
        settings = SweepSettings(connectivity=(4, 8)[seed % 2])
        cells = cell_instances(sem, depth, grid, settings)
        assert set(cells) == set(grid.cells()) | {CC_CELL}
        for (tau, amin, sigma, dil), (m, cls, n_cand) in ((c, v) for c, v in cells.items() if c != CC_CELL):
            want = split_instances_by_depth_edges(sem, depth, tau, amin, sigma, dil, settings.connectivity)
            np.testing.assert_array_equal(m, want, err_msg=str((tau, amin, sigma, dil)))
            assert len(cls) == m.max() and n_cand >= len(cls)
            for k, c in enumerate(cls, start=1):
                assert set(np.unique(sem[m == k])) == {c}
        np.testing.assert_array_equal(cells[CC_CELL][0],
                                      connected_component_instances(sem, min_area=10,
                                                                    connectivity=settings.connectivity))


@pytest.mark.parametrize("protocol", ["standard", "reference"])
def test_evaluate_cells_gt_ids_any_size(protocol):
    """Compact GT indices: large (COCO-colour) segment ids give the same statistics; unknown ids raise."""
    from pseudo_labels.core.errors import PseudoLabelsError
    from pseudo_labels.stages.outputs.sweep import Grid, SweepSettings, cell_instances, evaluate_cells

    from .test_instances import random_case

    rng = np.random.default_rng(7)
    sem, depth = random_case(rng, 64, 128)
    gt = np.zeros((128, 256), np.uint32)
    segs = []
    for k, (cat, y, x) in enumerate([(26, 10, 10), (26, 40, 100), (24, 70, 30), (7, 100, 0), (21, 0, 200)]):
        sid = cat * 1000 + k if cat >= 24 else cat
        gt[y:y + 30, x:x + 60] = sid
        segs.append({"id": sid, "category_id": cat, "iscrowd": int(k == 1), "area": int((gt == sid).sum())})
    settings = SweepSettings(protocol=protocol, work_resolution=(64, 128))
    cells = cell_instances(sem, depth, Grid((0.1, 0.3), (10, 50)), settings)
    a = evaluate_cells((128, 256), sem, cells, gt, segs, settings)
    big = gt.astype(np.int64) * 4099 + np.where(gt > 0, 1 << 23, 0)
    segs_big = [dict(s, id=int(s["id"]) * 4099 + (1 << 23)) for s in segs]
    b = evaluate_cells((128, 256), sem, cells, big, segs_big, settings)
    assert a.keys() == b.keys()
    for cell in a:
        assert a[cell][0].to_dict() == b[cell][0].to_dict() and a[cell][1:] == b[cell][1:]
    c = evaluate_cells((128, 256), sem.astype(np.uint16), cells, gt, segs, settings)  # any integer dtype
    assert all(a[cell][0].to_dict() == c[cell][0].to_dict() for cell in a)
    gt[0, 0] = 25000
    with pytest.raises(PseudoLabelsError, match="25000"):
        evaluate_cells((128, 256), sem, cells, gt, segs, settings)


def test_sweep_cells_with_a_three_class_table():
    """The sweep's scoring takes the label table: a 3-class table with one thing scores its own GT at PQ 100."""
    from pseudo_labels.stages.instance.panoptic import assemble_panoptic
    from pseudo_labels.stages.instance.instances import split_instances_by_depth_edges
    from pseudo_labels.stages.outputs.sweep import CC_CELL, Grid, SweepSettings, cell_instances, evaluate_cells, summarize_cells

    from .test_panoptic import _tiny_scene, _tiny_table

    tiny = _tiny_table()
    sem, depth = _tiny_scene()
    inst = split_instances_by_depth_edges(sem, depth, 0.2, 50, thing_classes=tiny.thing_ids)
    gt, segs = assemble_panoptic(sem, inst, stuff_min_area=10, labels=tiny)
    settings = SweepSettings(work_resolution=sem.shape, stuff_min_area=10, labels=tiny)
    assert settings.thing_classes == (2,)
    cells = cell_instances(sem, depth.astype(np.float64), Grid((0.2, 10.0), (50,)), settings)
    per_image = evaluate_cells(sem.shape, sem, cells, gt, segs, settings)
    res = summarize_cells([[per_image]], 1, labels=tiny)[0]
    split_cell = (0.2, 50, 1.0, 3)
    assert res[split_cell]["PQ"] == pytest.approx(100.0) and res[split_cell]["n_things"] == 1
    assert set(res[split_cell]["per_class"]) == {"ground", "wall", "box"}
    # no edges (huge tau) and connected components: the touching boxes stay one instance (at most one match)
    assert res[(10.0, 50, 1.0, 3)]["PQ_things"] < 50 and res[CC_CELL]["PQ_things"] < 50
    assert res[CC_CELL]["per_class"]["box"]["FN"] >= 1


# --------------------------------------------------------------------------- the official download
def _reference_city(src, dst):
    """Copy a synthetic city and add what the reference's sweep reads besides the download:
    ``pseudo_semantic_raw_k80/val/<city>/<stem>.png`` (raw 'clusters' = GT trainIds, 255 void, with a
    ``kmeans_centroids.npz`` mapping each cluster to its class) and ``depth_spidepth/val/<city>/<stem>.npy``."""
    import shutil

    from pseudo_labels.core.io import read_png, write_npy, write_png
    from pseudo_labels.datasets.cityscapes import camera_path, disparity_path, list_images, read_gt_train_ids
    from pseudo_labels.stages.instance.depth import depth_from_disparity, normalize_depth, read_camera

    shutil.copytree(src, dst)
    for e in list_images(dst, "val"):
        d = depth_from_disparity(read_png(disparity_path(dst, e)), read_camera(camera_path(dst, e)))
        write_npy(dst / "depth_spidepth" / "val" / e.city / f"{e.stem}.npy", normalize_depth(d, "minmax"))
        write_png(dst / "pseudo_semantic_raw_k80" / "val" / e.city / f"{e.stem}.png", read_gt_train_ids(dst, e))
    cent = np.random.default_rng(0).normal(size=(19, 8)).astype(np.float32)
    np.savez(dst / "pseudo_semantic_raw_k80" / "kmeans_centroids.npz",
             centroids=cent / np.linalg.norm(cent, axis=1, keepdims=True), cluster_to_class=np.arange(19))
    return dst


@pytest.fixture(scope="module")
def official_city(synth_city_official, tmp_path_factory):
    return _reference_city(synth_city_official, tmp_path_factory.mktemp("sweep_official") / "cs")


@pytest.fixture(scope="module")
def extended_city(synth_city, tmp_path_factory):
    return _reference_city(synth_city, tmp_path_factory.mktemp("sweep_extended") / "cs")


def _tree(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _metrics(rows):
    return [{k: r[k] for k in ("mode", "grad_threshold", "min_area", "PQ", "SQ", "RQ", "PQ_things", "per_class")}
            for r in rows]


GRID = ["--grad_thresholds", "0.1", "0.2", "--min_areas", "50", "200", "--workers", "1", *WORK]


def test_reference_command_on_the_official_download(official_city, extended_city, capsys):
    """The reference's sweep command (underscore flags, no --out) on what the zips hold: the panoptic GT is
    made by cityscapesscripts into <root>/gt_cache (gtFine untouched), reused on a rerun, and every row equals
    the sweep on the same scenes with the GT prepared beside the data."""
    gt_before = _tree(official_city / "gtFine")
    cmd = ["sweep", "--cityscapes_root", str(official_city), "--split", "val",
           "--semantic_subdir", "pseudo_semantic_raw_k80", *GRID]
    assert main(cmd) == 0
    cap = capsys.readouterr()
    assert "made panoptic ground truth of split val (3 images)" in cap.err and "createPanopticImgs" in cap.err
    out = official_city / "sweep_k19_spidepth_val.json"  # the reference's name: sweep_k<k>_spidepth_<split>.json
    assert f"wrote {out}" in cap.out
    assert _tree(official_city / "gtFine") == gt_before
    assert (official_city / "gt_cache" / "gtFine" / "cityscapes_panoptic_val.json").is_file()
    res = json.loads(out.read_text())
    assert res["ground_truth"]["panoptic"]["status"] == "made" and res["k"] == 19
    assert main(cmd) == 0
    assert "reusing panoptic ground truth" in capsys.readouterr().err
    assert json.loads(out.read_text())["ground_truth"]["panoptic"]["status"] == "reused"
    assert main(["sweep", "--cityscapes_root", str(extended_city), "--split", "val",
                 "--semantic_subdir", "pseudo_semantic_raw_k80", *GRID]) == 0
    ext = json.loads((extended_city / "sweep_k19_spidepth_val.json").read_text())
    assert ext["ground_truth"]["panoptic"]["status"] == "dataset"
    assert len(res["results"]) == 5 and _metrics(res["results"]) == _metrics(ext["results"])


def test_gtfine_semantics_from_label_ids(official_city, extended_city, tmp_path):
    """--semantic-subdir gtFine on the download reads _labelIds through cityscapesscripts' trainId table:
    the same rows as with the _labelTrainIds files."""
    rows = []
    for root in (official_city, extended_city):
        out = tmp_path / f"{root.parent.name}.json"
        assert main(["sweep", "--cityscapes-root", str(root), "--semantic-subdir", "gtFine", "--out", str(out),
                     "--gt-cache", str(tmp_path / "cache"), *GRID]) == 0
        rows.append(_metrics(json.loads(out.read_text())["results"]))
    assert rows[0] == rows[1] and rows[0][0]["PQ"] > 50


def test_depth_none_is_the_components_only_row(official_city, tmp_path, capsys):
    """--depth none: one cc-only row, no depth files read, equal to the components-only row of the
    depth sweep; it is the best row and the summary says so."""
    base = ["sweep", "--cityscapes-root", str(official_city), "--semantic-subdir", "pseudo_semantic_raw_k80",
            "--gt-cache", str(tmp_path / "cache")]
    assert main([*base, "--out", str(tmp_path / "edges.json"), *GRID]) == 0
    assert main([*base, "--out", str(tmp_path / "cc.json"), "--depth", "none", "--depth-subdir", "nowhere",
                 "--workers", "1", *WORK]) == 0
    cc = json.loads((tmp_path / "cc.json").read_text())
    edges = json.loads((tmp_path / "edges.json").read_text())
    assert [r["mode"] for r in cc["results"]] == ["cc-only"] and cc["depth"] == "none" and cc["depth_subdir"] is None
    assert _metrics(cc["results"]) == _metrics([r for r in edges["results"] if r["mode"] == "cc-only"])
    assert cc["best"]["mode"] == "cc-only"
    assert "connected components only: PQ" in capsys.readouterr().out
    assert not (tmp_path / "cc_heatmap.png").exists()


def test_missing_inputs_name_the_command_that_makes_them(official_city, tmp_path, capsys):
    base = ["sweep", "--cityscapes-root", str(official_city), "--out", str(tmp_path / "s.json"), "--gt-cache",
            str(tmp_path / "cache")]
    assert main([*base, "--semantic-subdir", "pseudo_semantic_raw_k80", "--depth-subdir", "depth_nowhere"]) == 2
    err = capsys.readouterr().err
    assert "pseudo-labels generate-depth" in err and "--output-subdir depth_nowhere" in err and "--depth none" in err
    assert main([*base, "--semantic-subdir", "pseudo_semantic_k7"]) == 2
    assert "generate-overclustered-semantics" in capsys.readouterr().err
    assert main([*base, "--semantic-subdir", "gtFine", "--split", "test"]) == 2
    assert "gtFine_trainvaltest.zip" in capsys.readouterr().err
