"""Instance AP/AR (evaluation.instances) against pycocotools COCOeval(segm), cityscapesscripts'
evalInstanceLevelSemanticLabeling and the reference's arithmetic."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from evaluation.instances import (
    CITYSCAPES_OVERLAPS, InstanceImage, evaluate_instances, image_record, order_predictions,
    segments_from_instance_ids, summarize,
)

THINGS = [24, 25, 26, 27, 28, 31, 32, 33]  # Cityscapes labelIds of the 8 evaluated thing classes
H, W = 48, 64


def _scene(rng: np.random.Generator, n_inst: int = 6, crowd: bool = True, classes=(24, 26, 33)):
    """A Cityscapes-style instanceIds array and a prediction (segment map + segments)."""
    gt = np.full((H, W), 7, np.int32)  # road
    gt[:10] = 11  # building
    gt[:, :4] = 0  # void (unlabeled)
    gt[10:14, 4:20] = 9  # parking (ignoreInEval -> void)
    counters: dict[int, int] = {}
    boxes = []
    for _ in range(n_inst):
        c = int(rng.choice(classes))
        h, w = int(rng.integers(4, 16)), int(rng.integers(4, 20))
        y, x = int(rng.integers(10, H - h)), int(rng.integers(4, W - w))
        counters[c] = counters.get(c, 0) + 1
        gt[y:y + h, x:x + w] = c * 1000 + counters[c]
        boxes.append((c, y, x, h, w))
    if crowd:
        gt[40:46, 50:62] = 26  # a car group (crowd)
    pred = np.zeros((H, W), np.int32)
    segs = []
    sid = 1
    for c, y, x, h, w in boxes:
        if rng.random() < 0.2:
            continue  # missed
        dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
        cls = c if rng.random() < 0.85 else int(rng.choice(THINGS))
        pred[max(0, y + dy):y + dy + h, max(0, x + dx):x + dx + w] = sid
        segs.append({"id": sid, "category_id": cls})
        sid += 1
    for _ in range(int(rng.integers(0, 4))):  # false positives, some on void / crowd
        h, w = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        y, x = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        pred[y:y + h, x:x + w] = sid
        segs.append({"id": sid, "category_id": int(rng.choice(THINGS))})
        sid += 1
    pred[0:3, 30:40] = sid  # a stuff segment (ignored by instance metrics)
    segs.append({"id": sid, "category_id": 7})
    present = set(np.unique(pred).tolist())
    segs = [s for s in segs if s["id"] in present]
    return gt, pred, segs


def _same(a: dict, b: dict) -> bool:
    """Equal results (NaN equal to NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _void_and_instance_labels():
    from cityscapesscripts.helpers.labels import labels

    return [l.id for l in labels if l.ignoreInEval], [l.id for l in labels if l.hasInstances]


def _images(seed: int, n: int = 5, **kw):
    rng = np.random.default_rng(seed)
    void, inst = _void_and_instance_labels()
    out = []
    for i in range(n):
        gt, pred, segs = _scene(rng, **kw)
        out.append(InstanceImage(i + 1, gt, segments_from_instance_ids(gt, void, inst), pred, segs))
    return out


# --------------------------------------------------------------------------- pycocotools
def _cocoeval(images, use_cats: bool):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return r

    gt_anns, dts = [], []
    for img in images:
        segs = sorted((s for s in img.gt_segments if s["category_id"] in THINGS),
                      key=lambda s: (s["category_id"], s["id"]))
        for s in segs:
            m = img.gt_map == s["id"]
            r = rle(m)
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": img.image_id, "category_id": s["category_id"],
                            "segmentation": r, "area": int(m.sum()), "iscrowd": int(s["iscrowd"]),
                            "bbox": list(mask_utils.toBbox(r))})
        if img.pred_map is None:
            continue
        for s in order_predictions(img.pred_segments, set(THINGS)):
            m = img.pred_map == s["id"]
            dts.append({"image_id": img.image_id, "category_id": s["category_id"], "segmentation": rle(m),
                        "score": float(s.get("score", m.sum()))})
    coco = COCO()
    coco.dataset = {"images": [{"id": im.image_id, "height": H, "width": W} for im in images],
                    "annotations": gt_anns, "categories": [{"id": c, "name": str(c)} for c in THINGS]}
    coco.createIndex()
    coco_dt = coco.loadRes(copy.deepcopy(dts))
    ev = COCOeval(coco, coco_dt, iouType="segm")
    ev.params.useCats = int(use_cats)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_equals_pycocotools(seed):
    images = _images(seed)
    images[2].pred_map, images[2].pred_segments = None, []  # an image without a prediction
    ours = evaluate_instances(images, "coco", THINGS, names={c: str(c) for c in THINGS})
    ev = _cocoeval(images, use_cats=True)
    for key, k in (("AP", 0), ("AP50", 1), ("AP75", 2), ("AR100", 8)):
        assert ours[key] == pytest.approx(ev.stats[k] * 100, abs=1e-9), key
    prec = ev.eval["precision"][:, :, :, 0, -1]
    for k, c in enumerate(THINGS):
        p = prec[:, :, k]
        expected = np.mean(p[p > -1]) * 100 if np.any(p > -1) else float("nan")
        got = ours["per_class"][str(c)]["AP"]
        assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected, abs=1e-9)
    # absent classes (no GT) are nan, not 0
    assert np.isnan(ours["per_class"]["28"]["AP"])
    ev0 = _cocoeval(images, use_cats=False)
    agn = ours["class_agnostic"]
    for key, k in (("AP", 0), ("AP50", 1), ("AP75", 2), ("AR100", 8)):
        assert agn[key] == pytest.approx(ev0.stats[k] * 100, abs=1e-9), key
    assert ours["score"].startswith("area")


def test_coco_crowd_absorbs_predictions():
    gt = np.zeros((H, W), np.int32)
    gt[0:20, 0:20] = 26001
    gt[20:40, 20:60] = 26  # car group: crowd
    segs = [{"id": 26001, "category_id": 26, "iscrowd": 0}, {"id": 26, "category_id": 26, "iscrowd": 1}]
    pred = np.zeros((H, W), np.int32)
    pred[0:20, 0:20] = 1
    pred[22:30, 22:40] = 2  # inside the crowd region: ignored, not a false positive
    img = InstanceImage(1, gt, segs, pred, [{"id": 1, "category_id": 26}, {"id": 2, "category_id": 26}])
    r = evaluate_instances([img], "coco", THINGS)
    assert r["AP"] == pytest.approx(100.0)
    ev = _cocoeval([img], use_cats=True)
    assert r["AP"] == pytest.approx(ev.stats[0] * 100, abs=1e-9)
    # without the crowd flag the same prediction is a false positive with a higher score (area)
    segs2 = [dict(s, iscrowd=0) for s in segs]
    r2 = evaluate_instances([InstanceImage(1, gt, segs2, pred, img.pred_segments)], "coco", THINGS)
    assert r2["AP"] < 100.0


def test_empty_predictions_everywhere():
    images = _images(3, n=3)
    for im in images:
        im.pred_segments = []
    for protocol in ("coco", "cityscapes", "reference"):
        r = evaluate_instances(images, protocol, THINGS)
        assert r["AP50"] == 0.0, protocol
    r = evaluate_instances(images, "coco", THINGS)
    assert r["AR100"] == 0.0 and r["AP"] == 0.0


def test_ties_broken_deterministically():
    """Two predictions of equal area, one right, one wrong: the lower segment id goes first,
    whatever order the segments are listed in, and that decides AP."""
    gt = np.zeros((H, W), np.int32)
    gt[0:10, 0:10] = 26001
    segs = [{"id": 26001, "category_id": 26, "iscrowd": 0}]
    pred = np.zeros((H, W), np.int32)
    pred[0:10, 0:10] = 5  # correct, id 5
    pred[20:30, 20:30] = 3  # wrong, same area, id 3
    listed = [{"id": 5, "category_id": 26}, {"id": 3, "category_id": 26}]
    a = evaluate_instances([InstanceImage(1, gt, segs, pred, listed)], "coco", THINGS)
    b = evaluate_instances([InstanceImage(1, gt, segs, pred, listed[::-1])], "coco", THINGS)
    assert _same(a, b)
    # the false positive (id 3) ranks first: precision 1/2 at full recall
    assert a["AP"] == pytest.approx(50.0, abs=1e-6)
    ev = _cocoeval([InstanceImage(1, gt, segs, pred, listed)], use_cats=True)
    assert a["AP"] == pytest.approx(ev.stats[0] * 100, abs=1e-9)
    # swapping the ids swaps the outcome
    pred2 = np.where(pred == 5, 3, np.where(pred == 3, 5, 0))
    c = evaluate_instances([InstanceImage(1, gt, segs, pred2, listed)], "coco", THINGS)
    assert c["AP"] == pytest.approx(100.0)
    for protocol in ("cityscapes", "reference"):
        x = evaluate_instances([InstanceImage(1, gt, segs, pred, listed)], protocol, THINGS)
        y = evaluate_instances([InstanceImage(1, gt, segs, pred, listed[::-1])], protocol, THINGS)
        assert _same(x, y)


# --------------------------------------------------------------------------- cityscapesscripts
def _cityscapes_eval(images, tmp_path, monkeypatch):
    from PIL import Image

    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs

    monkeypatch.chdir(tmp_path)  # it writes matches.json into the working directory
    if not hasattr(np, "in1d"):  # removed in numpy 2.4; cityscapesscripts still calls it
        monkeypatch.setattr(np, "in1d", lambda a, b: np.isin(np.ravel(a), b), raising=False)
    # its debug dumps (matches.json, the GT cache) fail on numpy 2 integers; they do not affect the numbers
    monkeypatch.setattr(cs, "writeDict2JSON", lambda *a, **k: None)
    pred_root = tmp_path / "pred"
    pred_root.mkdir()
    gt_files, pred_files = [], []
    for im in images:
        stem = f"city_{im.image_id:06d}_000019"
        g = tmp_path / f"{stem}_gtFine_instanceIds.png"
        Image.fromarray(im.gt_map.astype(np.uint16)).save(g)
        lines = []
        if im.pred_map is not None:
            for s in im.pred_segments:
                if s["category_id"] not in THINGS:
                    continue
                mp = pred_root / f"{stem}_{s['id']}.png"
                Image.fromarray(((im.pred_map == s["id"]) * 255).astype(np.uint8)).save(mp)
                score = s.get("score", int((im.pred_map == s["id"]).sum()))
                lines.append(f"{mp.name} {s['category_id']} {score}\n")
        txt = pred_root / f"{stem}_pred.txt"
        txt.write_text("".join(lines))
        gt_files.append(str(g))
        pred_files.append(str(txt))
    args = copy.copy(cs.args)
    args.predictionPath = str(pred_root.resolve())
    args.gtInstancesFile = str(tmp_path / "gtInstances.json")
    args.JSONOutput = False
    args.quiet = True
    args.overlaps = np.arange(0.5, 1.0, 0.05)
    return cs.evaluateImgLists(pred_files, gt_files, args)


@pytest.mark.parametrize("seed", [0, 4])
def test_cityscapes_equals_cityscapesscripts(seed, tmp_path, monkeypatch):
    images = _images(seed, n=4)
    # confidences with ties and a class (rider, 25) that has predictions but no GT
    for im in images:
        for s in im.pred_segments:
            s["score"] = float(s["id"] % 3) / 2
    images[0].pred_segments.append({"id": 999, "category_id": 25, "score": 0.7})
    images[0].pred_map[44:47, 0:6] = 999
    ours = evaluate_instances(images, "cityscapes", THINGS, names=_cs_names())
    ref = _cityscapes_eval(images, tmp_path, monkeypatch)["averages"]
    assert ours["AP"] == pytest.approx(ref["allAp"] * 100, abs=1e-9)
    assert ours["AP50"] == pytest.approx(ref["allAp50%"] * 100, abs=1e-9)
    for name, r in ref["classes"].items():
        mine = ours["per_class"][name]
        for a, b in ((mine["AP"], r["ap"]), (mine["AP50"], r["ap50%"])):
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b * 100, abs=1e-9), name


def _cs_names():
    from cityscapesscripts.helpers.labels import id2label

    return {c: id2label[c].name for c in THINGS}


def test_cityscapes_absent_class_is_nan_and_missing_predictions_zero():
    images = _images(5, n=2, classes=(26,))
    for im in images:
        im.pred_segments = [s for s in im.pred_segments if s["category_id"] != 26]
    r = evaluate_instances(images, "cityscapes", THINGS, names=_cs_names())
    assert r["per_class"]["car"]["AP"] == 0.0
    assert np.isnan(r["per_class"]["bus"]["AP"])
    assert len(CITYSCAPES_OVERLAPS) == 10


# --------------------------------------------------------------------------- reference arithmetic
def _reference_by_hand(images):
    """evaluate_cascade_pseudolabels.evaluate_instances, written out on masks (class-agnostic)."""
    from PIL import Image

    ar, ap50, ap75 = [], [], []
    for im in images:
        g = np.array(Image.fromarray(im.gt_map.astype(np.int32)).resize((1024, 512), Image.NEAREST))
        gms = [g == u for u in np.unique(g) if u >= 1000 and u // 1000 in THINGS and (g == u).sum() >= 10]
        preds = sorted((s for s in im.pred_segments if s["category_id"] in THINGS), key=lambda s: s["id"])
        pms = []
        for s in preds:
            m = Image.fromarray(((im.pred_map == s["id"]) * 255).astype(np.uint8)).resize((1024, 512), Image.NEAREST)
            pms.append(np.array(m) > 127)
        if not gms:
            continue
        if not pms:
            ar.append(0.0), ap50.append(0.0), ap75.append(0.0)
            continue
        P = np.stack(pms).reshape(len(pms), -1).astype(np.float32)
        G = np.stack(gms).reshape(len(gms), -1).astype(np.float32)
        inter = P @ G.T
        iou = inter / (P.sum(1, keepdims=True) + G.sum(1, keepdims=True).T - inter + 1e-8)
        ar.append(float((iou.max(0) >= 0.5).sum() / len(gms)))
        scores = P.sum(1)
        order = np.argsort(-scores, kind="stable")
        for thr, acc in ((0.5, ap50), (0.75, ap75)):
            used, tp = set(), []
            for i in order:
                row = iou[i].copy()
                row[list(used)] = 0
                j = int(np.argmax(row))
                tp.append(row[j] >= thr)
                if row[j] >= thr:
                    used.add(j)
            tp = np.array(tp, float)
            ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
            prec, rec = ctp / (ctp + cfp + 1e-8), ctp / (len(gms) + 1e-8)
            mrec, mpre = np.r_[0, rec, 1], np.r_[1, prec, 0]
            mpre = np.maximum.accumulate(mpre[::-1])[::-1]
            idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
            acc.append(float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx])))
    return 100 * np.mean(ar), 100 * np.mean(ap50), 100 * np.mean(ap75)


def test_reference_arithmetic():
    images = _images(6, n=4)
    images[1].pred_segments = []
    ours = evaluate_instances(images, "reference", THINGS)
    ar, ap50, ap75 = _reference_by_hand(images)
    assert ours["AR100"] == pytest.approx(ar, abs=1e-6)
    assert ours["AP50"] == pytest.approx(ap50, abs=1e-6)
    assert ours["AP75"] == pytest.approx(ap75, abs=1e-6)
    assert ours["n_images_scored"] == 4


def test_records_are_mergeable_and_protocol_checked():
    images = _images(7, n=3)
    recs = [image_record(im, "coco", THINGS) for im in images]
    assert _same(summarize(recs, "coco", THINGS), evaluate_instances(images, "coco", THINGS))
    from evaluation.pq_stats import EvaluationError

    with pytest.raises(EvaluationError, match="unknown instance protocol"):
        evaluate_instances(images, "voc", THINGS)
    bad = InstanceImage(1, images[0].gt_map, images[0].gt_segments, images[0].pred_map[:10], [])
    with pytest.raises(EvaluationError, match="differ in size"):
        evaluate_instances([bad], "coco", THINGS)


def test_evaluation_imports_nothing_from_pseudo_labels():
    import ast
    from pathlib import Path

    src = (Path(__file__).resolve().parents[1] / "evaluation" / "instances.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n.startswith("pseudo_labels") for n in names)


def test_resize_nearest_is_bit_exact_pil():
    from PIL import Image

    from evaluation.resize import resize_nearest

    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in (((256, 512), (28, 56)), ((1024, 2048), (322, 644)), ((23, 46), (1024, 2048)),
                             ((37, 91), (500, 333)), ((1024, 2048), (512, 1024))):
        a = rng.integers(0, 255, (h, w)).astype(np.uint8)
        expected = np.array(Image.fromarray(a).resize((ow, oh), Image.NEAREST))
        np.testing.assert_array_equal(resize_nearest(a, (oh, ow)), expected)


def test_folders_equal_in_memory(tmp_path):
    """Panoptic JSON + PNG folders give the numbers of the arrays they hold."""
    from pseudo_labels.core.io import id_to_rgb, write_png

    images = _images(8, n=3)
    cats = [{"id": c, "name": str(c), "isthing": 1} for c in THINGS] + [{"id": 7, "name": "road", "isthing": 0},
                                                                         {"id": 11, "name": "building", "isthing": 0}]
    gt_anns, pred_anns = [], []
    for im in images:
        write_png(tmp_path / "gt" / f"{im.image_id}.png", id_to_rgb(im.gt_map))
        write_png(tmp_path / "pred" / f"{im.image_id}.png", id_to_rgb(im.pred_map))
        gt_anns.append({"image_id": im.image_id, "file_name": f"{im.image_id}.png",
                        "segments_info": [dict(s) for s in im.gt_segments]})
        pred_anns.append({"image_id": im.image_id, "file_name": f"{im.image_id}.png",
                          "segments_info": [dict(s) for s in im.pred_segments]})
    (tmp_path / "gt.json").write_text(json.dumps({"annotations": gt_anns[::-1], "categories": cats}))
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred_anns}))
    from evaluation.instances import evaluate_instance_folders

    for protocol in ("coco", "cityscapes", "reference"):
        got = evaluate_instance_folders(tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json",
                                        tmp_path / "pred", protocol)
        want = evaluate_instances(images, protocol, THINGS, names={c: str(c) for c in THINGS})
        assert got.pop("n_missing") == 0
        assert _same(got, want), protocol
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred_anns[:2]}))
    from evaluation.pq_stats import EvaluationError

    with pytest.raises(EvaluationError, match="no prediction for image 3"):
        evaluate_instance_folders(tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred")
    r = evaluate_instance_folders(tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred",
                                  allow_missing=True)
    assert r["n_missing"] == 1


def test_evaluate_command_instances(synth_city, tmp_path):
    """``pseudo-labels evaluate --instances --instance-protocol P`` adds the numbers of evaluation.instances."""
    from evaluation.instances import evaluate_instance_folders
    from pseudo_labels.cli import main
    from pseudo_labels.datasets.cityscapes import panoptic_gt

    j, f = panoptic_gt(synth_city, "val")
    for protocol in ("coco", "cityscapes", "reference"):
        out = tmp_path / f"{protocol}.json"
        argv = ["evaluate", "--gt-json", j, "--gt-folder", f, "--pred-json", j, "--pred-folder", f,
                "--instances", "--instance_protocol", protocol, "--out", out, "--quiet"]
        assert main([str(a) for a in argv]) == 0
        got = json.loads(out.read_text())
        assert "PQ" in got
        r = got["instances"]
        assert r["protocol"] == protocol and r["score"].startswith("area")
        direct = evaluate_instance_folders(j, f, j, f, protocol)
        assert r["AP50"] == pytest.approx(direct["AP50"], abs=1e-12)
        if protocol != "reference":  # the reference counts predicted crowd segments as false positives
            assert r["AP"] == pytest.approx(100.0)
    out = tmp_path / "plain.json"
    assert main([str(a) for a in ["evaluate", "--gt-json", j, "--gt-folder", f, "--pred-json", j,
                                  "--pred-folder", f, "--out", out, "--quiet"]]) == 0
    assert "instances" not in json.loads(out.read_text())


def test_sweep_ap50_column_equals_pipeline(synth_city, tmp_path):
    """``sweep --ap50``: each cell's AP50 equals COCO AP50 of the panoptic labels that the
    single-configuration commands write with its parameters."""
    from evaluation.instances import evaluate_instance_folders
    from pseudo_labels.cli import main

    from .test_generate_depth_guided_instances import WORK, prepare_city

    city = prepare_city(synth_city, tmp_path / "city")
    out = tmp_path / "sweep.json"
    base = ["sweep", "--cityscapes-root", str(city), "--semantic-subdir", "sem_gt", "--depth-subdir", "depth_disp",
            "--grad-thresholds", "0.05", "0.2", "--min-areas", "30", "--workers", "1", *WORK]
    assert main([*base, "--ap50", "--out", str(out)]) == 0
    rows = [r for r in json.loads(out.read_text())["results"] if r["mode"] == "depth-guided"]
    assert "AP50" in out.with_suffix(".csv").read_text().splitlines()[0]
    gt = city / "gtFine"
    for r in rows:
        tau, amin = str(r["grad_threshold"]), str(r["min_area"])
        inst, pan = tmp_path / f"i{tau}", tmp_path / f"p{tau}"
        assert main(["generate-depth-guided-instances", "--semantic-dir", str(city / "sem_gt"), "--depth-dir",
                     str(city / "depth_disp"), "--output-dir", str(inst), "--grad-threshold", tau, "--min-area", amin,
                     "--workers", "1", *WORK]) == 0
        assert main(["generate-panoptic", "--semantic-dir", str(city / "sem_gt"), "--instance-dir", str(inst),
                     "--out-json", str(pan / "pan.json"), "--out-folder", str(pan), "--workers", "1"]) == 0
        want = evaluate_instance_folders(gt / "cityscapes_panoptic_val.json", gt / "cityscapes_panoptic_val",
                                         pan / "pan.json", pan, "coco")
        assert r["AP50"] == pytest.approx(want["AP50"], abs=1e-9), tau
    plain = tmp_path / "plain.json"
    assert main([*base, "--out", str(plain)]) == 0
    assert all("AP50" not in r for r in json.loads(plain.read_text())["results"])
