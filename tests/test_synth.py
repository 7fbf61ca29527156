"""Tests of the synthetic Cityscapes city (pseudo_labels.datasets.synthetic_city, command pseudo_labels.commands.synth)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pseudo_labels.datasets import synthetic_city as synth
from pseudo_labels.datasets.cityscapes import label_id_to_train_id_lut, list_images, panoptic_gt
from pseudo_labels.core.io import read_json, read_manifest, read_png, rgb_to_id

SIZE = (256, 512)
THING_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)


@pytest.fixture(scope="module")
def scenes():
    return [synth.generate_scene(synth.image_seed(0, i), SIZE) for i in range(3)]


def _tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != synth.MANIFEST_NAME:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------- arrays
def test_scene_arrays_dtypes_and_conventions(scenes):
    lut = label_id_to_train_id_lut()
    for s in scenes:
        h, w = SIZE
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.label_ids.shape == (h, w) and s.label_ids.dtype == np.uint8
        assert s.train_ids.dtype == np.uint8 and np.array_equal(s.train_ids, lut[s.label_ids])
        assert s.instance_ids.dtype == np.int32
        assert s.depth.dtype == np.float32 and s.disparity.dtype == np.uint16
        # instanceIds convention: labelId*1000+k for thing instances, labelId otherwise
        inst = s.instance_ids
        big = inst >= 1000
        assert np.array_equal(inst[big] // 1000, s.label_ids[big].astype(np.int32))
        assert np.all(np.isin(s.label_ids[big], THING_LABEL_IDS))
        assert np.array_equal(inst[~big], s.label_ids[~big].astype(np.int32))
        # void regions present: ego vehicle at the bottom, unlabeled somewhere
        assert (s.label_ids[-1] == synth.EGO).mean() > 0.5
        assert (s.label_ids == synth.UNLABELED).any()
        # image not a flat colour per class
        road = s.label_ids == synth.ROAD
        assert s.image[road].std(axis=0).min() > 3


def test_every_required_class_in_every_scene(scenes):
    for s in scenes:
        present = set(np.unique(s.label_ids).tolist())
        assert set(synth.REQUIRED_LABEL_IDS) <= present, set(synth.REQUIRED_LABEL_IDS) - present
    union = set().union(*(np.unique(s.label_ids).tolist() for s in scenes))
    assert {synth.STATIC, synth.EGO, synth.UNLABELED} <= union  # void classes


def test_class_colours_are_separable(scenes):
    """Mean colours of the classes differ clearly (a simple colour feature can learn them)."""
    s = scenes[0]
    means = {c: s.image[s.label_ids == c].mean(axis=0) for c in synth.REQUIRED_LABEL_IDS
             if (s.label_ids == c).sum() > 50}
    labs = sorted(means)
    d = [np.linalg.norm(means[a] - means[b]) for i, a in enumerate(labs) for b in labs[i + 1:]]
    assert len(labs) >= 12 and np.median(d) > 40


def test_geometry_perspective_and_depth(scenes):
    s = scenes[0]
    h = SIZE[0]
    road = s.label_ids == synth.ROAD
    rows = [r for r in range(h) if road[r].sum() > 5 and (s.label_ids[r] != synth.EGO).all()]
    med = np.array([np.median(s.depth[r][road[r]]) for r in rows])
    assert np.all(np.diff(med) < 0)  # ground depth decreases toward the bottom
    assert np.all(s.depth[s.label_ids == synth.SKY] == synth.SKY_DEPTH)
    # each thing instance has one depth; lower (bottom row) instances are closer
    bottoms, depths = [], []
    for iid in np.unique(s.instance_ids[s.instance_ids >= 1000]):
        m = s.instance_ids == iid
        d = s.depth[m]
        assert np.ptp(d) < 1e-3
        bottoms.append(np.nonzero(m)[0].max())
        depths.append(d[0])
    order = np.argsort(depths)
    assert np.corrcoef(np.asarray(bottoms)[order], np.arange(len(order)))[0, 1] < -0.3


def test_touching_same_class_instances_at_different_depths(scenes):
    found = 0
    for s in scenes:
        inst = s.instance_ids
        for a, b in ((inst[:, :-1], inst[:, 1:]), (inst[:-1], inst[1:])):
            pair = (a != b) & (a >= 1000) & (b >= 1000) & (a // 1000 == b // 1000)
            if pair.any():
                za = s.depth[:, :-1] if a.shape[1] < inst.shape[1] else s.depth[:-1]
                zb = s.depth[:, 1:] if a.shape[1] < inst.shape[1] else s.depth[1:]
                found += int((np.abs(za - zb)[pair] > 1.0).sum())
    assert found > 10


def test_disparity_camera_depth_round_trip(scenes):
    for s in scenes:
        cam = s.camera
        assert set(cam) == {"extrinsic", "intrinsic"}
        assert cam["extrinsic"]["baseline"] == pytest.approx(0.209313)
        assert cam["intrinsic"]["fx"] == pytest.approx(2262.52 * SIZE[1] / 2048)
        p = s.disparity
        valid = p > 0
        assert not valid[s.label_ids == synth.SKY].any()
        assert 0.5 < valid.mean() < 1.0
        b, fx = cam["extrinsic"]["baseline"], cam["intrinsic"]["fx"]
        depth = b * fx / ((p[valid].astype(np.float64) - 1) / 256)
        true = s.depth[valid].astype(np.float64)
        # half a quantisation step of disparity, as depth
        tol = true**2 / (b * fx) * (0.5 / 256) * 1.01 + 1e-4
        assert np.all(np.abs(depth - true) <= tol)
        assert np.allclose(synth.disparity_png_to_depth(p, cam)[valid], depth, rtol=1e-5)


def test_determinism():
    a = synth.generate_scene(7, (128, 256))
    b = synth.generate_scene(7, (128, 256))
    c = synth.generate_scene(8, (128, 256))
    for f in ("image", "label_ids", "instance_ids", "depth", "disparity"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.image, c.image)
    assert a.camera == b.camera


@pytest.mark.parametrize("size", [(128, 256), (192, 320)])
def test_small_and_odd_sizes(size):
    s = synth.generate_scene(3, size)
    assert s.image.shape == size + (3,)
    assert not s.info["missing_classes"]


# --------------------------------------------------------------------------- files
def test_layout_and_files(synth_city):
    root = synth_city
    entries = list_images(root, "val")
    assert len(entries) == 3
    assert {e.city for e in entries} <= set(synth.city_names("val"))
    lut = label_id_to_train_id_lut()
    for e in entries:
        img = read_png(e.image_path)
        assert img.shape == SIZE + (3,) and img.dtype == np.uint8
        gt = root / "gtFine" / "val" / e.city
        lab = read_png(gt / f"{e.stem}_gtFine_labelIds.png")
        inst = read_png(gt / f"{e.stem}_gtFine_instanceIds.png")
        tr = read_png(gt / f"{e.stem}_gtFine_labelTrainIds.png")
        assert lab.dtype == np.uint8 and inst.dtype == np.uint16 and tr.dtype == np.uint8
        assert np.array_equal(tr, lut[lab])
        assert read_png(gt / f"{e.stem}_gtFine_color.png").shape == SIZE + (3,)
        disp = read_png(root / "disparity" / "val" / e.city / f"{e.stem}_disparity.png")
        assert disp.dtype == np.uint16 and disp.shape == SIZE
        cam = read_json(root / "camera" / "val" / e.city / f"{e.stem}_camera.json")
        assert {"baseline", "pitch", "roll", "x", "y", "yaw", "z"} <= set(cam["extrinsic"])
        assert {"fx", "fy", "u0", "v0"} <= set(cam["intrinsic"])
    # the files hold exactly the scene of generate_scene(image_seed(seed, i, split))
    i = 1
    s = synth.generate_scene(synth.image_seed(0, i, "val"), SIZE)
    e = entries[[x.stem for x in entries].index(synth.stem_for(i, "val"))]
    assert np.array_equal(read_png(e.image_path), s.image)
    assert np.array_equal(read_png(root / "disparity" / "val" / e.city / f"{e.stem}_disparity.png"), s.disparity)
    man = read_manifest(root, synth.MANIFEST_NAME)
    assert man["stage"] == "synth" and man["uses_ground_truth"] is False
    assert man["parameters"]["splits"]["val"]["n_images"] == 3


def test_panoptic_gt_matches_pngs(synth_city):
    gt_json, gt_dir = panoptic_gt(synth_city, "val")
    d = read_json(gt_json)
    assert len(d["images"]) == len(d["annotations"]) == 3
    cats = {c["id"]: c for c in d["categories"]}
    n_crowd = n_thing = 0
    for ann in d["annotations"]:
        pan = rgb_to_id(read_png(gt_dir / ann["file_name"]))
        city = ann["image_id"].rsplit("_", 2)[0]
        inst = read_png(synth_city / "gtFine" / "val" / city / f"{ann['image_id']}_gtFine_instanceIds.png")
        ids = {s["id"] for s in ann["segments_info"]}
        assert ids == set(np.unique(pan).tolist()) - {0}
        for seg in ann["segments_info"]:
            m = pan == seg["id"]
            assert seg["area"] == int(m.sum())
            assert np.all(inst[m] == seg["id"])
            n_crowd += seg["iscrowd"]
            n_thing += int(cats[seg["category_id"]]["isthing"] and not seg["iscrowd"])
            if seg["iscrowd"]:
                assert seg["category_id"] == 24 and seg["id"] == 24
    assert n_crowd >= 3 and n_thing >= 30


def test_train_and_val_in_one_root(synth_city_train_val):
    root = synth_city_train_val
    train, val = list_images(root, "train"), list_images(root, "val")
    assert len(train) == 4 and len(val) == 3
    assert not {e.stem for e in train} & {e.stem for e in val}
    for split in ("train", "val"):
        j, folder = panoptic_gt(root, split)
        assert len(read_json(j)["annotations"]) == len(list(folder.glob("*.png")))
    man = read_manifest(root, synth.MANIFEST_NAME)
    assert set(man["parameters"]["splits"]) == {"train", "val"}
    a, b = read_png(train[0].image_path), read_png(val[0].image_path)
    assert not np.array_equal(a, b)


def test_write_is_deterministic(tmp_path):
    synth.write_synthetic_city(tmp_path / "a", 2, seed=5, size=(128, 256))
    synth.write_synthetic_city(tmp_path / "b", 2, seed=5, size=(128, 256))
    synth.write_synthetic_city(tmp_path / "c", 2, seed=6, size=(128, 256))
    da, db, dc = (_tree_digest(tmp_path / x) for x in "abc")
    assert da == db
    assert set(da) == set(dc) and da != dc


def test_cli_end_to_end(tmp_path, capsys):
    from pseudo_labels.cli import main

    out = tmp_path / "city"
    rc = main(["synth", "--out", str(out), "--n", "2", "--seed", "3", "--size", "128", "256", "--split", "val"])
    assert rc == 0
    assert "wrote 2" in capsys.readouterr().out
    assert len(list_images(out, "val")) == 2
    assert not (out / "gtFine" / "cityscapes_panoptic_val.json").exists()  # default: the official layout
    assert not list(out.rglob("*_labelTrainIds.png"))
    assert main(["synth", "--out", str(out), "--n", "2", "--seed", "3", "--size", "128", "256",
                 "--layout", "extended"]) == 0
    assert (out / "gtFine" / "cityscapes_panoptic_val.json").exists()
    assert len(list(out.rglob("*_labelTrainIds.png"))) == 2
    assert main(["synth", "--out", str(out), "--n", "0"]) == 2
    assert main(["synth", "--out", str(out), "--size", "10", "20"]) == 2
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["synth", "--out", str(out), "--layout", "zip"])


# --------------------------------------------------------------------------- official layout
#: the per-image files of the four official zips (leftImg8bit_, gtFine_, disparity_, camera_trainvaltest)
OFFICIAL_FILES = ("leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                  "gtFine/{split}/{city}/{stem}_gtFine_color.png",
                  "gtFine/{split}/{city}/{stem}_gtFine_labelIds.png",
                  "gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png",
                  "gtFine/{split}/{city}/{stem}_gtFine_polygons.json",
                  "disparity/{split}/{city}/{stem}_disparity.png",
                  "camera/{split}/{city}/{stem}_camera.json")


def _official_names(stems, split):
    return {f.format(split=split, city=s.rsplit("_", 2)[0], stem=s) for s in stems for f in OFFICIAL_FILES}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != synth.MANIFEST_NAME}


def test_official_layout_holds_only_the_zips_files(synth_city_official, synth_city):
    stems = [synth.stem_for(i, "val") for i in range(3)]
    assert _files(synth_city_official) == _official_names(stems, "val")
    # the same scenes as the extended fixture (same seed and size): identical shared files
    for rel in _official_names(stems, "val"):
        assert (synth_city_official / rel).read_bytes() == (synth_city / rel).read_bytes(), rel


def test_polygons_official_schema_and_cityscapesscripts_rasterisation(synth_city_official):
    """The polygons JSON reads with cityscapesscripts' Annotation, and its json2labelImg fill (ids, trainIds,
    color) equals the labelIds / color PNGs and the trainId table, pixel for pixel."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.helpers.labels import name2label
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    lut = label_id_to_train_id_lut()
    for e in list_images(synth_city_official, "val"):
        gt = synth_city_official / "gtFine" / "val" / e.city
        path = gt / f"{e.stem}_gtFine_polygons.json"
        d = read_json(path)
        assert set(d) == {"imgHeight", "imgWidth", "objects"} and (d["imgHeight"], d["imgWidth"]) == SIZE
        labels = set()
        for obj in d["objects"]:
            assert set(obj) == {"label", "polygon"} and len(obj["polygon"]) >= 3
            assert all(len(pt) == 2 and all(isinstance(v, int) for v in pt) for pt in obj["polygon"])
            name = obj["label"]
            labels.add(name)
            assert name in name2label or (name.endswith("group") and name[:-5] in name2label)
        assert {"road", "car", "person", "sky"} <= labels and "persongroup" in labels  # crowd, as in gtFine
        ann = Annotation()
        ann.fromJsonFile(str(path))
        label_ids = read_png(gt / f"{e.stem}_gtFine_labelIds.png")
        assert np.array_equal(np.asarray(createLabelImage(ann, "ids")), label_ids)
        assert np.array_equal(np.asarray(createLabelImage(ann, "trainIds")), lut[label_ids])
        color = np.asarray(createLabelImage(ann, "color"))[..., :3]
        assert np.array_equal(color, read_png(gt / f"{e.stem}_gtFine_color.png"))


def test_layout_switch_removes_and_restores_the_extras(tmp_path):
    root = tmp_path / "c"
    synth.write_synthetic_city(root, 2, size=(128, 256), layout="extended")
    assert (root / "gtFine" / "cityscapes_panoptic_val.json").exists()
    synth.write_synthetic_city(root, 2, size=(128, 256), layout="official")
    assert _files(root) == _official_names([synth.stem_for(i, "val") for i in range(2)], "val")
    assert read_manifest(root, synth.MANIFEST_NAME)["parameters"]["splits"]["val"]["layout"] == "official"
    with pytest.raises(ValueError, match="layout"):
        synth.write_synthetic_city(root, 2, size=(128, 256), layout="zips")


def test_official_layout_at_full_size(tmp_path):
    """One 1024x2048 image in the official layout: every file at the Cityscapes size, polygons exact."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    root = tmp_path / "full"
    stems = synth.write_synthetic_city(root, 1, seed=2, size=(1024, 2048), layout="official")
    assert _files(root) == _official_names(stems, "val")
    e = list_images(root, "val")[0]
    gt = root / "gtFine" / "val" / e.city
    assert read_png(e.image_path).shape == (1024, 2048, 3)
    assert read_png(root / "disparity" / "val" / e.city / f"{e.stem}_disparity.png").shape == (1024, 2048)
    cam = read_json(root / "camera" / "val" / e.city / f"{e.stem}_camera.json")
    assert cam["intrinsic"]["fx"] == pytest.approx(2262.52)
    ann = Annotation()
    ann.fromJsonFile(str(gt / f"{e.stem}_gtFine_polygons.json"))
    assert (ann.imgHeight, ann.imgWidth) == (1024, 2048)
    assert np.array_equal(np.asarray(createLabelImage(ann, "ids")), read_png(gt / f"{e.stem}_gtFine_labelIds.png"))


def test_scene_polygons_repaint_nested_and_thin_segments():
    """A ring around a hole holding another segment, a one-pixel line and a single pixel: the fill of
    the polygons in order repaints the map exactly."""
    from PIL import Image, ImageDraw

    inst = np.full((40, 60), 7, np.int32)  # road
    inst[5:30, 5:40] = 26000  # a car ...
    inst[10:20, 10:25] = 8  # ... with sidewalk inside it
    inst[12:15, 12:15] = 26001  # ... and another car inside that
    inst[35, 2:50] = 17  # a thin pole line
    inst[2, 55] = 24  # one crowd pixel
    d = synth.scene_polygons(inst)
    img = Image.new("I", (60, 40), -1)
    draw = ImageDraw.Draw(img)
    for obj in d["objects"]:
        draw.polygon([tuple(p) for p in obj["polygon"]], fill=int(
            {"road": 7, "car": 26, "sidewalk": 8, "pole": 17, "persongroup": 24}[obj["label"]]))
    labels = np.where(inst >= 1000, inst // 1000, inst)
    assert np.array_equal(np.asarray(img), labels)


def _patch_features(scene, p: int = 14):
    """Mean and std of RGB over p x p patches -> (N, 6) float, majority trainId (N,)."""
    h, w = (scene.image.shape[0] // p) * p, (scene.image.shape[1] // p) * p
    img = scene.image[:h, :w].astype(np.float32).reshape(h // p, p, w // p, p, 3)
    feats = np.concatenate([img.mean((1, 3)), img.std((1, 3))], -1).reshape(-1, 6)
    tr = scene.train_ids[:h, :w].reshape(h // p, p, w // p, p).transpose(0, 2, 1, 3).reshape(-1, p * p)
    maj = np.array([np.bincount(r, minlength=256).argmax() for r in tr])
    return feats, maj


def test_patch_colour_texture_features_are_learnable(scenes):
    """Nearest class centroid on 14x14 patch colour statistics, fit on 2 scenes, tested on a third."""
    (xa, ya), (xb, yb), (xt, yt) = (_patch_features(s) for s in scenes)
    x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    keep = y < 19
    classes = np.unique(y[keep])
    cent = np.stack([x[keep][y[keep] == c].mean(0) for c in classes])
    kt = yt < 19
    pred = classes[np.argmin(((xt[kt, None, :] - cent[None]) ** 2).sum(-1), axis=1)]
    assert (pred == yt[kt]).mean() > 0.6


def test_refuses_to_mix_into_a_data_set_it_did_not_write(tmp_path):
    from pseudo_labels.core.errors import PseudoLabelsError

    real = tmp_path / "real" / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"a real image")
    with pytest.raises(PseudoLabelsError, match=r"holds a data set that synth did not write \(leftImg8bit/"):
        synth.write_synthetic_city(tmp_path / "real", 1, size=(64, 128), layout="official")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == [real.relative_to(tmp_path)]
    synth.write_synthetic_city(tmp_path / "ours", 1, size=(64, 128), layout="official")  # its own root: rerun and
    assert synth.write_synthetic_city(tmp_path / "ours", 1, size=(64, 128), split="train", layout="official")
    (tmp_path / "empty" / "leftImg8bit").mkdir(parents=True)  # an empty folder holds nothing to mix with
    assert synth.write_synthetic_city(tmp_path / "empty", 1, size=(64, 128), layout="official")
