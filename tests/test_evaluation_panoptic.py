"""Panoptic quality: equality with cityscapesscripts, properties, protocols, errors."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.resize import pil_nearest_indices
from evaluation.panoptic import (
    EvaluationError,
    PQStats,
    evaluate_panoptic_folders,
    pq_stats_image,
    read_panoptic_png,
    resize_nearest,
    summarize_pq,
)
from pseudo_labels.datasets.cityscapes import panoptic_categories
from pseudo_labels.core.io import id_to_rgb, write_json, write_png

CATEGORIES = panoptic_categories()
CATS = {c["id"]: c for c in CATEGORIES}
STUFF = [c["id"] for c in CATEGORIES if not c["isthing"]]
THINGS = [c["id"] for c in CATEGORIES if c["isthing"]]


# --------------------------------------------------------------------------- synthetic data
def make_gt(rng: np.random.Generator, size=(96, 192), n_things=8, n_crowd=1, void=True):
    """Random Cityscapes-style panoptic GT: (pan (H,W) int64, segments with area)."""
    H, W = size
    pan = np.zeros((H, W), np.int64)
    stuff = rng.choice(STUFF, size=4, replace=False)
    # horizontal bands of stuff with a wavy border
    cuts = np.sort(rng.choice(np.arange(H // 8, H - H // 8), size=3, replace=False))
    rows = np.arange(H)[:, None] + (3 * np.sin(np.arange(W)[None, :] / rng.uniform(5, 15))).astype(int)
    band = np.searchsorted(cuts, rows)
    pan[:] = stuff[band]
    segs = []
    counters: dict[int, int] = {}
    for _ in range(n_crowd):  # crowd region: id = labelId
        c = int(rng.choice(THINGS))
        y, x = rng.integers(0, H - H // 4), rng.integers(0, W - W // 4)
        pan[y:y + H // 5, x:x + W // 5] = c
    for _ in range(n_things):
        c = int(rng.choice(THINGS))
        counters[c] = counters.get(c, 0) + 1
        h, w = rng.integers(H // 12, H // 3), rng.integers(W // 16, W // 4)
        y, x = rng.integers(0, H - h), rng.integers(0, W - w)
        yy, xx = np.ogrid[:h, :w]
        blob = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 <= 1.0
        pan[y:y + h, x:x + w][blob] = c * 1000 + counters[c]
    if void:
        for _ in range(2):
            y, x = rng.integers(0, H - H // 6), rng.integers(0, W - W // 6)
            pan[y:y + H // 8, x:x + rng.integers(2, W // 6)] = 0
        pan[-2:, :] = 0  # ego-vehicle-like border
    ids, counts = np.unique(pan, return_counts=True)
    for i, a in zip(ids.tolist(), counts.tolist()):
        if i == 0:
            continue
        cat = i // 1000 if i >= 1000 else i
        segs.append({"id": i, "category_id": cat, "iscrowd": int(i < 1000 and cat in THINGS), "area": a,
                     "bbox": [0, 0, 1, 1]})
    rng.shuffle(segs)
    return pan, segs


def perturb(rng: np.random.Generator, gt_pan: np.ndarray, gt_segs: list, strength=1.0, big_ids=False):
    """A plausible prediction from GT: shifts, class flips, dropped / invented / void-overlapping segments."""
    H, W = gt_pan.shape
    cat_of = {s["id"]: s["category_id"] for s in gt_segs}
    pan = np.roll(gt_pan, (int(rng.integers(-3, 4) * strength), int(rng.integers(-6, 7) * strength)), axis=(0, 1))
    pan = pan.copy()
    nxt = 10 ** 6
    extra = {}
    # fill some void with a neighbouring stuff class
    if rng.random() < 0.7:
        pan[pan == 0] = int(rng.choice(STUFF))
    # invented segments, some on void / crowd regions
    for _ in range(int(rng.integers(1, 5))):
        h, w = rng.integers(3, H // 4), rng.integers(3, W // 4)
        y, x = rng.integers(0, H - h), rng.integers(0, W - w)
        pan[y:y + h, x:x + w] = nxt
        extra[nxt] = int(rng.choice(THINGS + STUFF))
        nxt += 1
    crowd = [s for s in gt_segs if s["iscrowd"]]
    for s in crowd:  # a prediction mostly inside the crowd region, same category
        ys, xs = np.nonzero(gt_pan == s["id"])
        if len(ys):
            pan[ys.min():ys.min() + 4, xs.min():xs.min() + 6] = nxt
            extra[nxt] = s["category_id"]
            nxt += 1
    # erase a few segments (-> unlabeled)
    for i in rng.choice(list(cat_of), size=min(2, len(cat_of)), replace=False):
        if rng.random() < 0.5:
            pan[pan == i] = 0
    ids = [int(i) for i in np.unique(pan) if i != 0]
    segs = []
    new_ids = rng.choice(np.arange(1, (1 << 24) if big_ids else 60000), size=len(ids), replace=False)
    out = np.zeros_like(pan)
    for i, n in zip(ids, new_ids.tolist()):
        cat = extra.get(i, cat_of.get(i))
        if cat is None:
            cat = int(rng.choice(STUFF))
        if rng.random() < 0.1 * strength:  # class flip
            cat = int(rng.choice(THINGS if cat in THINGS else STUFF))
        out[pan == i] = n
        segs.append({"id": int(n), "category_id": int(cat), "iscrowd": 0})
    return out, segs


def write_set(root: Path, pairs, name="pred", gt=False):
    """Write (stem, pan, segs) as a Cityscapes panoptic JSON + folder; returns (json, folder)."""
    folder = root / name
    anns, images = [], []
    for stem, pan, segs in pairs:
        fn = f"{stem}_gtFine_panoptic.png" if gt else f"{stem}_pred.png"
        write_png(folder / fn, id_to_rgb(pan))
        anns.append({"image_id": stem, "file_name": fn, "segments_info": segs})
        images.append({"id": stem, "file_name": f"{stem}_leftImg8bit.png", "width": pan.shape[1],
                       "height": pan.shape[0]})
    js = root / f"{name}.json"
    write_json(js, {"images": images, "annotations": anns, "categories": CATEGORIES})
    return js, folder


def make_dataset(root: Path, n=4, size=(96, 192), seed=0, big_ids=False, empty_pred_index=None):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for k in range(n):
        stem = f"city_{k:06d}_000019"
        g, gs = make_gt(rng, size, n_things=int(rng.integers(0, 12)), n_crowd=int(rng.integers(0, 3)))
        if k == empty_pred_index:
            p, ps = np.zeros_like(g), []
        else:
            p, ps = perturb(rng, g, gs, strength=float(rng.uniform(0.3, 2.0)), big_ids=big_ids)
        gts.append((stem, g, gs))
        preds.append((stem, p, ps))
    gj, gf = write_set(root, gts, "gt", gt=True)
    pj, pf = write_set(root, preds, "pred")
    return gj, gf, pj, pf


def cityscapes_reference(gj, gf, pj, pf, tmp: Path) -> dict:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    with contextlib.redirect_stdout(io.StringIO()):
        return evaluatePanoptic(str(gj), str(gf), str(pj), str(pf), str(tmp / "cs_result.json"))


def assert_equal_to_cityscapes(ours: dict, cs: dict, tol=1e-9):
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for m in ("pq", "sq", "rq"):
            assert abs(ours[m.upper() + suffix] / 100 - cs[group][m]) < tol, (group, m)
        assert ours["n_classes" if not suffix else "n" + suffix] == cs[group]["n"]
    by_id = {v["category_id"]: v for v in ours["per_class"].values()}
    assert set(by_id) == set(cs["per_class"])
    for cid, r in cs["per_class"].items():
        for m in ("pq", "sq", "rq"):
            assert abs(by_id[cid][m.upper()] / 100 - r[m]) < tol, (cid, m)


# --------------------------------------------------------------------------- equality with cityscapesscripts
def _hotcoco_available() -> bool:
    from evaluation import hotcoco_engine

    return hotcoco_engine.available()


#: file-path engines; the equality tests run through each (hotcoco skipped only where it is not importable)
ENGINES = ["numpy", pytest.param("hotcoco", marks=pytest.mark.skipif(not _hotcoco_available(),
                                                                      reason="hotcoco not importable"))]


def assert_same_counts(a: dict, b: dict, tol=1e-9):
    """Per-class TP / FP / FN equal and IoU sums within ``tol`` (two engines' results)."""
    assert set(a["per_class"]) == set(b["per_class"])
    for name, r in a["per_class"].items():
        q = b["per_class"][name]
        assert (r["TP"], r["FP"], r["FN"]) == (q["TP"], q["FP"], q["FN"]), name
        assert abs(r["IoU_sum"] - q["IoU_sum"]) < tol, name


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed,big_ids,empty,n", [(0, False, None, 5), (1, True, 2, 5), (2, False, 0, 5),
                                                 (3, False, None, 2)])
def test_equal_to_cityscapesscripts(tmp_path, seed, big_ids, empty, n, engine):
    """Void pixels, crowd regions (and predictions on them), absent classes, an image with no predicted segment."""
    gj, gf, pj, pf = make_dataset(tmp_path, n=n, seed=seed, big_ids=big_ids, empty_pred_index=empty)
    cs = cityscapes_reference(gj, gf, pj, pf, tmp_path)
    ours = evaluate_panoptic_folders(gj, gf, pj, pf, engine=engine)
    assert ours["protocol"] == "standard" and ours["n_images"] == n and ours["n_missing"] == 0
    assert ours["engine"] == engine and "engine_note" not in ours
    assert_equal_to_cityscapes(ours, cs)
    # counts are non-trivial: TPs, FPs and FNs all occur; with 2 images some classes are absent
    tot = {k: sum(v[k] for v in ours["per_class"].values()) for k in ("TP", "FP", "FN")}
    assert min(tot.values()) > 0
    if n == 2:
        assert any(v["TP"] + v["FP"] + v["FN"] == 0 for v in ours["per_class"].values())
    if engine != "numpy":
        assert_same_counts(ours, evaluate_panoptic_folders(gj, gf, pj, pf, engine="numpy"))


@pytest.mark.parametrize("engine", ENGINES)
def test_equal_to_cityscapesscripts_two_workers(tmp_path, engine):
    gj, gf, pj, pf = make_dataset(tmp_path, n=6, seed=5)
    cs = cityscapes_reference(gj, gf, pj, pf, tmp_path)
    ours = evaluate_panoptic_folders(gj, gf, pj, pf, workers=2, engine=engine)
    assert ours["engine"] == engine
    assert_equal_to_cityscapes(ours, cs)


@pytest.mark.parametrize("engine", ENGINES)
def test_allow_missing_equals_cityscapesscripts_on_an_empty_prediction(tmp_path, engine):
    """--allow-missing: a GT image without prediction scores as an all-void prediction does in cityscapesscripts."""
    gj, gf, pj, pf = make_dataset(tmp_path, n=4, seed=6, empty_pred_index=1)
    cs = cityscapes_reference(gj, gf, pj, pf, tmp_path)
    pred = json.loads(pj.read_text())
    stem = pred["annotations"][1]["image_id"]
    del pred["annotations"][1]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(pred))
    with pytest.raises(EvaluationError, match=stem):
        evaluate_panoptic_folders(gj, gf, partial, pf, engine=engine)
    ours = evaluate_panoptic_folders(gj, gf, partial, pf, allow_missing=True, engine=engine)
    assert ours["engine"] == engine and ours["n_missing"] == 1 and ours["missing"] == [stem]
    assert_equal_to_cityscapes(ours, cs)
    assert_same_counts(ours, evaluate_panoptic_folders(gj, gf, pj, pf, engine="numpy"))


def test_crowd_and_void_rules_in_memory():
    """Hand-made case: void removed from the union; predictions on crowd/void not FP."""
    gt = np.zeros((10, 10), np.int64)
    gt[:, :5] = 7  # road (stuff)
    gt[:, 5:] = 26  # crowd car region
    gt[0:4, 5:9] = 26001  # one car
    gt[9, :] = 0  # void row
    gsegs = [{"id": 7, "category_id": 7, "iscrowd": 0}, {"id": 26, "category_id": 26, "iscrowd": 1},
             {"id": 26001, "category_id": 26, "iscrowd": 0}]
    pred = np.zeros_like(gt)
    pred[:, :5] = 1  # road incl. void row: union excludes the 5 void pixels -> IoU 1
    pred[0:4, 5:9] = 2  # car exact
    pred[5:8, 6:9] = 3  # car on crowd -> ignored
    pred[8:10, 9] = 4  # car half crowd half void -> ignored
    psegs = [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 26}, {"id": 3, "category_id": 26},
             {"id": 4, "category_id": 26}]
    st = pq_stats_image(gt, gsegs, pred, psegs, CATS)
    assert st.get(7) == (1.0, 1, 0, 0)
    assert st.get(26) == (1.0, 1, 0, 0)
    res = summarize_pq(st, CATS, "standard")
    assert res["PQ"] == 100.0 and res["n_classes"] == 2 and res["n_things"] == 1
    # reference protocol: no crowd, no void removal -> pred 3 and 4 are FPs; GT road (45 px < 64) is
    # dropped, so the predicted road is a FP too
    ref = pq_stats_image(gt, gsegs, pred, psegs, CATS, "reference", reference_size=None)
    assert ref.get(26) == (1.0, 1, 2, 0)
    assert ref.get(7) == (0.0, 0, 1, 0)
    big = lambda a: np.repeat(np.repeat(a, 2, 0), 2, 1)  # noqa: E731  road 180 px: IoU 180/200 (void in union)
    ref = pq_stats_image(big(gt), gsegs, big(pred), psegs, CATS, "reference", reference_size=None)
    assert ref.get(7)[1:] == (1, 0, 0) and abs(ref.get(7)[0] - 180 / 200) < 1e-12


# --------------------------------------------------------------------------- properties
def test_identical_prediction_is_100_and_empty_is_0():
    rng = np.random.default_rng(3)
    g, gs = make_gt(rng, (64, 128), n_things=6, n_crowd=1)
    st = pq_stats_image(g, gs, g, [{k: s[k] for k in ("id", "category_id")} for s in gs if not s["iscrowd"]]
                        + [{"id": s["id"], "category_id": s["category_id"]} for s in gs if s["iscrowd"]], CATS)
    r = summarize_pq(st, CATS, "standard")
    assert r["PQ"] == pytest.approx(100.0, abs=1e-9) and r["SQ"] == pytest.approx(100.0, abs=1e-9)
    assert r["RQ"] == 100.0
    n_fn = sum(1 for s in gs if not s["iscrowd"])
    st0 = pq_stats_image(g, gs, np.zeros_like(g), [], CATS)
    r0 = summarize_pq(st0, CATS, "standard")
    assert r0["PQ"] == 0.0 and sum(v["FN"] for v in r0["per_class"].values()) == n_fn
    assert sum(v["TP"] + v["FP"] for v in r0["per_class"].values()) == 0
    rr = summarize_pq(pq_stats_image(g, gs, g, gs, CATS, "standard"), CATS, "standard")
    assert rr["PQ"] == pytest.approx(100.0, abs=1e-9)
    # reference: the GT it scores has no crowd and no tiny segments; predicting exactly that gives ~100
    drop = [s["id"] for s in gs if s["iscrowd"] or s["area"] < (10 if CATS[s["category_id"]]["isthing"] else 64)]
    p = np.where(np.isin(g, drop), 0, g)
    ps = [s for s in gs if s["id"] not in drop]
    rr = summarize_pq(pq_stats_image(g, gs, p, ps, CATS, "reference", reference_size=None), CATS, "reference")
    assert rr["PQ"] == pytest.approx(100.0, abs=1e-5) and rr["RQ"] == pytest.approx(100.0, abs=1e-5)
    # ... while the crowd segments themselves, predicted, are false positives there
    rr = summarize_pq(pq_stats_image(g, gs, g, gs, CATS, "reference", reference_size=None), CATS, "reference")
    assert rr["RQ"] < 100


def test_counts_add_up_over_images(tmp_path):
    rng = np.random.default_rng(4)
    stats = []
    for _ in range(3):
        g, gs = make_gt(rng, (64, 128))
        p, ps = perturb(rng, g, gs)
        stats.append(pq_stats_image(g, gs, p, ps, CATS))
        # per image: TP + FN = non-crowd GT segments; TP + FP <= predicted segments
        n_gt = sum(1 for s in gs if not s["iscrowd"])
        assert int(stats[-1].tp.sum() + stats[-1].fn.sum()) == n_gt
        assert int(stats[-1].tp.sum() + stats[-1].fp.sum()) <= len(ps)
    total = sum(stats)
    acc = PQStats.empty(CATS)
    for s in stats:
        acc += s
    for name in ("iou", "tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(total, name), getattr(acc, name))
        np.testing.assert_allclose(getattr(total, name), sum(getattr(s, name) for s in stats))
    r = summarize_pq(total, CATS, "standard")
    assert r["per_class"]["car"]["TP"] == total.get(26)[1]


def test_nothing_to_evaluate_returns_zero_with_note():
    g = np.zeros((8, 8), np.int64)
    r = summarize_pq(pq_stats_image(g, [], g, [], CATS), CATS, "standard")
    assert r["PQ"] == 0.0 and r["n_classes"] == 0 and "note" in r
    r = summarize_pq(PQStats.empty([], "reference"), CATS, "reference")
    assert r["PQ"] == 0.0 and r["protocol"] == "reference"


def test_pqstats_merge_and_protocol_guard():
    a = PQStats.empty([7, 26])
    a.tp[:] = [1, 2]
    b = PQStats.empty([8])
    b.fp[:] = [3]
    c = a + b
    assert c.get(8) == (0.0, 0, 3, 0) and c.get(26) == (0.0, 2, 0, 0)
    with pytest.raises(ValueError):
        a += PQStats.empty([7], "reference")


# --------------------------------------------------------------------------- reference protocol
def _reference_loop(gt_pan, gt_segs, pred_pan, pred_segs, cats, size=(512, 1024)):
    """Straightforward per-segment re-implementation of the reference arithmetic (for checking)."""
    from PIL import Image

    def rs(a):
        return np.array(Image.fromarray(a.astype(np.int32)).resize((size[1], size[0]), Image.NEAREST))

    g, p = rs(gt_pan), rs(pred_pan)
    gcat = {s["id"]: s["category_id"] for s in gt_segs if not s.get("iscrowd")}
    keep = {}
    for i, c in gcat.items():
        a = int((g == i).sum())
        if a >= (10 if cats[c]["isthing"] else 64):
            keep[i] = c
    pcat = {s["id"]: s["category_id"] for s in pred_segs if (p == s["id"]).any()}
    out = {c: [0.0, 0, 0, 0] for c in cats}
    matched = set()
    for i, c in keep.items():
        m = g == i
        best, bp = 0.0, None
        for j, pc in pcat.items():
            if pc != c or j in matched:
                continue
            q = p == j
            iou = (m & q).sum() / (m | q).sum()
            if iou > best:
                best, bp = iou, j
        if best > 0.5:
            out[c][0] += best
            out[c][1] += 1
            matched.add(bp)
        else:
            out[c][3] += 1
    for j, pc in pcat.items():
        if j not in matched:
            out[pc][2] += 1
    return out


def test_reference_protocol_matches_loop_implementation():
    rng = np.random.default_rng(7)
    for k in range(3):
        g, gs = make_gt(rng, (128, 256), n_things=10, n_crowd=2)
        p, ps = perturb(rng, g, gs, strength=1.5)
        st = pq_stats_image(g, gs, p, ps, CATS, "reference", reference_size=(64, 128))
        loop = _reference_loop(g, gs, p, ps, CATS, size=(64, 128))
        for c, (iou, tp, fp, fn) in loop.items():
            got = st.get(c)
            assert got[1:] == (tp, fp, fn), c
            assert abs(got[0] - iou) < 1e-9


def test_reference_summary_arithmetic():
    st = PQStats.empty([7, 8, 26], "reference")
    st.iou[:] = [1.5, 0.0, 0.8]
    st.tp[:] = [2, 0, 1]
    st.fp[:] = [0, 1, 1]
    st.fn[:] = [1, 0, 0]
    r = summarize_pq(st, CATS, "reference")
    sq = np.array([1.5 / (2 + 1e-8), 0.0, 0.8 / (1 + 1e-8)])
    rq = np.array([2 / 2.5, 0.0, 1 / 1.5])
    assert r["PQ"] == pytest.approx(100 * np.mean(sq * rq), abs=1e-9)
    assert r["SQ"] == pytest.approx(100 * 2.3 / (3 + 1e-8), abs=1e-9)
    assert r["RQ"] == pytest.approx(100 * 3 / (3 + 1 + 0.5 + 1e-8), abs=1e-9)
    assert r["PQ_stuff"] == pytest.approx(100 * np.mean(sq[:2] * rq[:2]), abs=1e-9)
    assert r["per_class"]["road"]["PQ"] == pytest.approx(100 * sq[0] * rq[0])


def test_resize_matches_pil_nearest():
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 1000, size=(37, 53)).astype(np.int32)
    for h, w in ((16, 24), (512 // 16, 1024 // 16), (60, 90)):
        ours = resize_nearest(a, (h, w))
        pil = np.array(Image.fromarray(a).resize((w, h), Image.NEAREST))
        np.testing.assert_array_equal(ours, pil)
    assert pil_nearest_indices(1024, 512)[:3].tolist() == [1, 3, 5]


# --------------------------------------------------------------------------- errors
def test_folder_errors(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=9)
    pred = json.loads(pj.read_text())
    stem = pred["annotations"][0]["image_id"]

    def with_pred(mod):
        d = json.loads(json.dumps(pred))
        mod(d)
        q = tmp_path / "mod.json"
        q.write_text(json.dumps(d))
        return q

    q = with_pred(lambda d: d["annotations"].pop(0))
    with pytest.raises(EvaluationError, match=stem):
        evaluate_panoptic_folders(gj, gf, q, pf)
    r = evaluate_panoptic_folders(gj, gf, q, pf, allow_missing=True)
    assert r["n_missing"] == 1 and r["missing"] == [stem]
    q = with_pred(lambda d: d["annotations"][0]["segments_info"].pop())
    with pytest.raises(EvaluationError, match="not in the prediction JSON"):
        evaluate_panoptic_folders(gj, gf, q, pf)
    q = with_pred(lambda d: d["annotations"][0]["segments_info"].append({"id": 77, "category_id": 7}))
    with pytest.raises(EvaluationError, match="not in the prediction PNG"):
        evaluate_panoptic_folders(gj, gf, q, pf)
    q = with_pred(lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99))
    with pytest.raises(EvaluationError, match="unknown category_id 99"):
        evaluate_panoptic_folders(gj, gf, q, pf)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EvaluationError, match="malformed"):
        evaluate_panoptic_folders(gj, gf, bad, pf)
    png = pf / pred["annotations"][1]["file_name"]
    png.write_bytes(b"GIF89a....")
    with pytest.raises(EvaluationError, match="not a PNG"):
        evaluate_panoptic_folders(gj, gf, pj, pf)
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(EvaluationError, match="corrupt"):
        evaluate_panoptic_folders(gj, gf, pj, pf)
    with pytest.raises(EvaluationError, match="differs"):
        pq_stats_image(np.zeros((4, 4), int), [], np.zeros((4, 5), int), [], CATS, image_id="x")


def test_read_panoptic_png_roundtrip(tmp_path):
    ids = np.random.default_rng(0).integers(0, 1 << 24, size=(5, 7))
    write_png(tmp_path / "a.png", id_to_rgb(ids))
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "a.png"), ids)


def test_read_panoptic_png_without_pyspng(tmp_path, monkeypatch):
    """The ``except ImportError`` path of read_panoptic_png: OpenCV decodes the same ids."""
    import sys

    ids = np.random.default_rng(3).integers(0, 1 << 24, size=(6, 5))
    write_png(tmp_path / "a.png", id_to_rgb(ids))
    monkeypatch.setitem(sys.modules, "pyspng", None)
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "a.png"), ids)


def test_numpy_fallback_equals_opencv_path(monkeypatch):
    import sys

    import evaluation.panoptic as ep

    monkeypatch.setattr(ep, "_cv2", ...)
    monkeypatch.setitem(sys.modules, "cv2", None)  # the except ImportError path of _opencv
    assert ep._opencv() is None
    monkeypatch.undo()

    rng = np.random.default_rng(21)
    g, gs = make_gt(rng, (64, 128), n_things=9, n_crowd=2)
    p, ps = perturb(rng, g, gs, big_ids=True)
    fast = pq_stats_image(g, gs, p, ps, CATS)
    monkeypatch.setattr(ep, "_cv2", None)
    slow = pq_stats_image(g, gs, p, ps, CATS)
    for name in ("iou", "tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
    rgb = id_to_rgb(p)
    np.testing.assert_array_equal(ep.rgb_to_ids(rgb), p)


# --------------------------------------------------------------------------- engines
def test_engine_choice(monkeypatch):
    from evaluation import hotcoco_engine
    from evaluation.panoptic import resolve_engine

    assert resolve_engine("numpy") == "numpy"
    assert resolve_engine("auto", "reference") == "numpy"
    with pytest.raises(EvaluationError, match="unknown engine"):
        resolve_engine("rust")
    with pytest.raises(EvaluationError, match="only the standard protocol"):
        resolve_engine("hotcoco", "reference")
    monkeypatch.setattr(hotcoco_engine, "available", lambda: False)
    assert resolve_engine("auto") == "numpy"
    with pytest.raises(EvaluationError, match="not importable"):
        resolve_engine("hotcoco")
    monkeypatch.setattr(hotcoco_engine, "available", lambda: True)
    monkeypatch.setattr(hotcoco_engine, "_POOL_THREADS", 3)  # pool started with 3 threads in this process
    assert resolve_engine("auto", workers=3) == "hotcoco"
    assert resolve_engine("auto", workers=1) == "numpy"  # auto keeps --workers honest
    assert resolve_engine("hotcoco", workers=1) == "hotcoco"  # explicit: runs in a child process


@pytest.mark.skipif(not _hotcoco_available(), reason="hotcoco not importable")
def test_hotcoco_child_process_when_the_pool_has_another_size(tmp_path, monkeypatch):
    from evaluation import hotcoco_engine

    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=15)
    here = evaluate_panoptic_folders(gj, gf, pj, pf, engine="hotcoco")
    calls = []
    real = hotcoco_engine._run_child
    monkeypatch.setattr(hotcoco_engine, "_POOL_THREADS", 7)
    monkeypatch.setattr(hotcoco_engine, "_run_child", lambda *a: calls.append(a[-1]) or real(*a))
    child = evaluate_panoptic_folders(gj, gf, pj, pf, engine="hotcoco", workers=2)
    assert calls == [2] and child["engine"] == "hotcoco"
    assert_same_counts(here, child, tol=1e-12)
    bad = json.loads(pj.read_text())
    bad["annotations"][1]["segments_info"].append({"id": 4242, "category_id": 7})
    q = tmp_path / "bad.json"
    q.write_text(json.dumps(bad))
    with pytest.raises(EvaluationError, match=f"image {bad['annotations'][1]['image_id']}: .*4242"):
        evaluate_panoptic_folders(gj, gf, q, pf, engine="hotcoco", workers=2)


@pytest.mark.skipif(not _hotcoco_available(), reason="hotcoco not importable")
def test_hotcoco_errors_name_the_cityscapes_image_and_auto_falls_back(tmp_path):
    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=16)
    pred = json.loads(pj.read_text())
    stem = pred["annotations"][1]["image_id"]

    def with_pred(mod, name):
        d = json.loads(json.dumps(pred))
        mod(d)
        q = tmp_path / name
        q.write_text(json.dumps(d))
        return q

    # PNG-level: hotcoco's message, with the Cityscapes image id instead of hotcoco's integer id
    q = with_pred(lambda d: d["annotations"][1]["segments_info"].pop(), "pop.json")
    with pytest.raises(EvaluationError, match=f"image {stem}: .*not in segments_info"):
        evaluate_panoptic_folders(gj, gf, q, pf, engine="hotcoco")
    with pytest.raises(EvaluationError, match="not in the prediction JSON"):  # auto: numpy's check and message
        evaluate_panoptic_folders(gj, gf, q, pf, engine="auto")
    # JSON-level: checked before hotcoco, same message as numpy
    q = with_pred(lambda d: d["annotations"][1]["segments_info"][0].update(category_id=99), "cat.json")
    for engine in ("hotcoco", "numpy"):
        with pytest.raises(EvaluationError, match=f"image {stem}: predicted segment .* unknown category_id 99"):
            evaluate_panoptic_folders(gj, gf, q, pf, engine=engine)
    # a single-channel id PNG: hotcoco refuses it, numpy reads it; auto says which engine scored
    png = pf / pred["annotations"][0]["file_name"]
    ids = read_panoptic_png(png)
    segs = pred["annotations"][0]["segments_info"]
    new = {s["id"]: k + 1 for k, s in enumerate(segs)}
    lut = np.zeros(int(ids.max()) + 1, np.uint8)
    for old, k in new.items():
        lut[old] = k
    write_png(png, lut[ids])
    q = with_pred(lambda d: [s.update(id=new[s["id"]]) for s in d["annotations"][0]["segments_info"]], "gray.json")
    with pytest.raises(EvaluationError, match="Grayscale"):
        evaluate_panoptic_folders(gj, gf, q, pf, engine="hotcoco")
    auto = evaluate_panoptic_folders(gj, gf, q, pf, engine="auto")
    assert auto["engine"] == "numpy" and "hotcoco refused" in auto["engine_note"]
    assert auto["PQ"] == evaluate_panoptic_folders(gj, gf, q, pf, engine="numpy")["PQ"]
    png.unlink()
    with pytest.raises(EvaluationError, match="cannot open panoptic PNG"):
        evaluate_panoptic_folders(gj, gf, q, pf, engine="hotcoco")


@pytest.mark.skipif(not _hotcoco_available(), reason="hotcoco not importable")
def test_hotcoco_input_adaptation():
    from evaluation import hotcoco_engine
    from evaluation.panoptic import normalize_categories

    cats = normalize_categories([{"id": 7, "name": "road"}, {"id": 26, "name": "car", "isthing": True}])
    gsegs = hotcoco_engine.clean_segments([{"id": "26", "category_id": 26, "iscrowd": True, "area": 5},
                                           {"id": 7, "category_id": 7}], cats, "GT", "x", gt=True)
    psegs = hotcoco_engine.clean_segments([{"id": 3, "category_id": 26, "iscrowd": 1}], cats, "predicted", "x",
                                          gt=False)
    gt, pred, names = hotcoco_engine.build_inputs([("aachen_000000_000019", "a_gt.png", gsegs, "a_pred.png", psegs)],
                                                  cats)
    assert names == {1: "aachen_000000_000019"}
    assert gt["annotations"][0]["image_id"] == 1 and pred["annotations"][0]["image_id"] == 1
    assert gt["annotations"][0]["file_name"] == "a_gt.png" and pred["annotations"][0]["file_name"] == "a_pred.png"
    assert gt["annotations"][0]["segments_info"] == [{"id": 26, "category_id": 26, "iscrowd": 1, "area": 5},
                                                     {"id": 7, "category_id": 7, "iscrowd": 0}]
    assert pred["annotations"][0]["segments_info"] == [{"id": 3, "category_id": 26, "iscrowd": 0}]
    assert [(c["id"], c["isthing"]) for c in gt["categories"]] == [(7, 0), (26, 1)]
    assert hotcoco_engine.missing_image_stats(gsegs, cats).get(7) == (0.0, 0, 0, 1)
    assert hotcoco_engine.missing_image_stats(gsegs, cats).get(26) == (0.0, 0, 0, 0)  # crowd: not a FN
    msg = hotcoco_engine.translate_message("image 1: x; no prediction for the image with id 1; image 12", names)
    assert msg == "image aachen_000000_000019: x; no prediction for the image with id aachen_000000_000019; image 12"


@pytest.mark.parametrize("segments", [
    [{"id": 5}],  # no category_id
    [{"id": "x", "category_id": 7}],
    [{"id": 5, "category_id": 99}],
    [{"id": 0, "category_id": 7}],
    [{"id": 9, "category_id": 7}, {"id": -2, "category_id": 7}],
    [{"id": 9, "category_id": 7}, {"id": 4, "category_id": 26}, {"id": 9, "category_id": 8}, {"id": 4, "category_id": 7}],
])
def test_hotcoco_json_checks_match_the_numpy_engine(segments):
    from evaluation import hotcoco_engine
    from evaluation.panoptic import _segment_table, normalize_categories

    cats = normalize_categories(CATEGORIES)
    for what, gt in (("GT", True), ("predicted", False)):
        with pytest.raises(EvaluationError) as ours:
            hotcoco_engine.clean_segments(segments, cats, what, "city_000000_000019", gt=gt)
        with pytest.raises(EvaluationError) as ref:
            _segment_table(segments, cats, what, "city_000000_000019")
        assert str(ours.value) == str(ref.value)


def test_evaluation_package_imports_nothing_from_pseudo_labels():
    import ast

    for path in (Path(__file__).resolve().parents[1] / "evaluation").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "pseudo_labels" for a in node.names), path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "pseudo_labels", path


@pytest.mark.skipif(not _hotcoco_available(), reason="hotcoco not importable")
def test_inconsistent_gt_numpy_refuses_hotcoco_scores_like_cityscapesscripts(tmp_path):
    """The one documented difference between the engines: GT JSON / PNG disagreement."""
    gj, gf, pj, pf = make_dataset(tmp_path, n=2, seed=20)
    gt = json.loads(gj.read_text())
    gt["annotations"][0]["segments_info"].append({"id": 7777, "category_id": 7, "iscrowd": 0, "area": 100})
    gj.write_text(json.dumps(gt))
    with pytest.raises(EvaluationError, match="not in the GT PNG"):
        evaluate_panoptic_folders(gj, gf, pj, pf, engine="numpy")
    res = evaluate_panoptic_folders(gj, gf, pj, pf, engine="hotcoco")
    assert_equal_to_cityscapes(res, cityscapes_reference(gj, gf, pj, pf, tmp_path))
