"""evaluation.cups: CUPS' metric (visinf/cups 78fc2739, cups/metrics/panoptic_quality.py on torchmetrics 1.3.1).

The reference here is written from the protocol's rules with torch: the matching table, the
grouped Hungarian matching with argmax leftovers and the mIoU in torch ops, and the per-image
PQ by torchmetrics' own ``PanopticQuality`` (the class CUPS subclasses) when it is installed
(a test dependency), else by a per-rule loop over segments written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from evaluation import cups
from evaluation.pq_stats import EvaluationError

try:  # a test-only reference: the PanopticQuality that CUPS' metric subclasses
    from torchmetrics.detection import PanopticQuality
except ImportError:  # pragma: no cover - the loop reference below still runs
    PanopticQuality = None


# --------------------------------------------------------------------------- independent reference
def _ref_group_match(cost: torch.Tensor, one_to_one: bool) -> torch.Tensor:
    k, c = cost.shape
    rows, cols = linear_sum_assignment(cost.numpy(), maximize=True)
    out = torch.full((k,), -1, dtype=torch.long)
    out[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    for r in range(k):
        if out[r] < 0:
            out[r] = 255 if one_to_one else int(torch.argmax(cost[r]))
    return out


def _ref_assignment(cost, things, stuffs, thing_protos, stuff_protos, one_to_one):
    if thing_protos is None:
        return _ref_group_match(cost, one_to_one)
    out = torch.full((cost.shape[0],), 255, dtype=torch.long)
    for protos, cls in ((thing_protos, things), (stuff_protos, stuffs)):
        if not protos:
            continue
        local = _ref_group_match(cost[list(protos)][:, list(cls)], one_to_one)
        table = torch.tensor(list(cls) + [255])
        out[list(protos)] = table[torch.where(local == 255, len(cls), local)]
    return out


def _ref_pq_loop(pred, target, things, stuffs):
    """Per-rule PQ accumulators of one image: a loop over segments (pred/target (H, W, 2) numpy)."""
    classes = set(things) | set(stuffs)
    C = max(classes) + 1

    def segs(m):
        cls, inst = m[..., 0].astype(np.int64), m[..., 1].astype(np.int64).copy()
        inst[np.isin(cls, list(stuffs))] = 0
        void = ~np.isin(cls, list(classes))
        out = {}
        for c in np.unique(cls[~void]):
            for i in np.unique(inst[(cls == c) & ~void]):
                out[(int(c), int(i))] = (cls == c) & (inst == i) & ~void
        return out, void

    ps, pvoid = segs(pred)
    gs, gvoid = segs(target)
    iou_sum, tp, fp, fn = np.zeros(C), np.zeros(C, int), np.zeros(C, int), np.zeros(C, int)
    pm, gm = set(), set()
    for gk, g in gs.items():
        for pk, p in ps.items():
            if gk[0] != pk[0]:
                continue
            inter = (g & p).sum()
            if inter == 0:
                continue
            union = (p & ~gvoid).sum() + (g & ~pvoid).sum() - inter
            iou = np.float32(inter) / np.float32(union)
            if iou > 0.5:
                iou_sum[gk[0]] += iou
                tp[gk[0]] += 1
                pm.add(pk)
                gm.add(gk)
    for gk, g in gs.items():
        if gk not in gm and (g & pvoid).sum() / g.sum() <= 0.5:
            fn[gk[0]] += 1
    for pk, p in ps.items():
        if pk not in pm and (p & gvoid).sum() / p.sum() <= 0.5:
            fp[pk[0]] += 1
    return iou_sum, tp, fp, fn


def reference_cups(preds, gts, num_classes, thing_protos, stuff_protos, k, one_to_one=False, use_torchmetrics=True):
    """CUPS' result from the rules: preds = [(pseudo-class (H, W), 255 void; instance)], gts = [(class, instance)]."""
    classes = cups.cups_classes(num_classes)
    things, stuffs = list(classes.things), list(classes.stuffs)
    C = num_classes
    cost = torch.zeros(k, C, dtype=torch.float64)
    for (pc, _), (gc, _) in zip(preds, gts):
        p, g = torch.as_tensor(pc.astype(np.int64)).view(-1), torch.as_tensor(gc.astype(np.int64)).view(-1)
        ok = (p >= 0) & (p < k) & (g >= 0) & (g < C)
        cost += torch.bincount(g[ok] * k + p[ok], minlength=C * k).view(C, k).T.double()
    assign = _ref_assignment(cost, things, stuffs, thing_protos, stuff_protos, one_to_one)
    iou_sum, tp, fp, fn = np.zeros(C), np.zeros(C, int), np.zeros(C, int), np.zeros(C, int)
    metric = PanopticQuality(things=set(things), stuffs=set(stuffs), allow_unknown_preds_category=True) \
        if (PanopticQuality is not None and use_torchmetrics) else None
    for (pc, pi), (gc, gi) in zip(preds, gts):
        table = torch.cat([assign, torch.full((256,), 255, dtype=torch.long)])
        pcl = torch.as_tensor(pc.astype(np.int64))
        mapped = torch.where((pcl >= 0) & (pcl < k), table[pcl.clamp(0, 255)], torch.tensor(255))
        pred = torch.stack([mapped, torch.as_tensor(pi.astype(np.int64))], -1)
        target = torch.stack([torch.as_tensor(gc.astype(np.int64)), torch.as_tensor(gi.astype(np.int64))], -1)
        if metric is not None:
            metric.update(pred[None], target[None])
        else:
            r = _ref_pq_loop(pred.numpy(), target.numpy(), things, stuffs)
            iou_sum += r[0]
            tp, fp, fn = tp + r[1], fp + r[2], fn + r[3]
    if metric is not None:
        order = [metric.cat_id_to_continuous_id[c] for c in range(C)]
        iou_sum = metric.iou_sum[order].numpy()
        tp, fp, fn = (getattr(metric, n)[order].numpy() for n in ("true_positives", "false_positives",
                                                                  "false_negatives"))
    denom = tp + 0.5 * fp + 0.5 * fn
    pq = np.where(denom > 0, iou_sum / np.where(denom > 0, denom, 1), 0)
    sq = np.where(tp > 0, iou_sum / np.maximum(tp, 1), 0)
    rq = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 0)

    def mean(arr, idx):
        idx = [c for c in idx if denom[c] > 0]
        return 100 * float(np.mean(arr[idx])) if idx else 0.0

    out = {"assignment": assign.numpy(), "TP": tp, "FP": fp, "FN": fn, "IoU_sum": iou_sum}
    for suffix, idx in (("", range(C)), ("_things", things), ("_stuff", stuffs)):
        out["PQ" + suffix], out["SQ" + suffix], out["RQ" + suffix] = mean(pq, idx), mean(sq, idx), mean(rq, idx)
    # mIoU: one assignment without the split, confusion of the mapped maps
    a2 = _ref_assignment(cost, things, stuffs, None, None, one_to_one)
    conf = torch.zeros(C, C, dtype=torch.float64)
    for c in range(C):
        conf[c] = cost[a2 == c].sum(0)
    tpc = torch.diag(conf)
    iou = tpc / (conf.sum(0) + conf.sum(1) - tpc)
    out["mIoU"] = 100 * float(iou[~torch.isnan(iou)].mean())
    out["accuracy"] = 100 * float(tpc.sum() / conf.sum())
    out["miou_assignment"] = a2.numpy()
    return out


def ours(preds, gts, num_classes, thing_protos, stuff_protos, k, one_to_one=False):
    classes = cups.cups_classes(num_classes)
    cost = sum(cups.cluster_class_confusion(np.where(pc == 255, -1, pc), gc, k, num_classes)
               for (pc, _), (gc, _) in zip(preds, gts))
    assign = cups.cups_assignment(cost, classes.things, classes.stuffs, thing_protos, stuff_protos, one_to_one)
    acc = [np.zeros(num_classes), *(np.zeros(num_classes, np.int64) for _ in range(3))]
    for (pc, pi), (gc, gi) in zip(preds, gts):
        mapped = np.where((pc >= 0) & (pc < k), assign[np.clip(pc, 0, k - 1)], 255)
        for a, s in zip(acc, cups.pq_stats_cups(mapped, pi, gc, gi, classes)):
            a += s
    out = cups.summarize_cups(*acc, classes)
    out["assignment"] = assign
    out.update(cups.miou_cups(cost, cups.cups_assignment(cost, classes.things, classes.stuffs, None, None,
                                                         one_to_one)))
    out["stats"] = acc
    return out


def assert_same(res, ref):
    np.testing.assert_array_equal(res["assignment"], ref["assignment"])
    np.testing.assert_array_equal(res["stats"][1], ref["TP"])
    np.testing.assert_array_equal(res["stats"][2], ref["FP"])
    np.testing.assert_array_equal(res["stats"][3], ref["FN"])
    np.testing.assert_allclose(res["stats"][0], ref["IoU_sum"], rtol=0, atol=1e-12)
    for key in ("PQ", "SQ", "RQ", "PQ_things", "SQ_things", "RQ_things", "PQ_stuff", "SQ_stuff", "RQ_stuff",
                "mIoU", "accuracy"):
        assert res[key] == pytest.approx(ref[key], abs=1e-9), key


# --------------------------------------------------------------------------- hand-made cases (27 classes)
ROAD, SIDEWALK, BUILDING, SKY = 0, 1, 4, 16  # 27-class ids (labelId - 7)
PERSON, CAR, CARAVAN = 17, 19, 22


def _canvas(h=20, w=30, value=255):
    return np.full((h, w), value, np.int64), np.zeros((h, w), np.int64)


def case_rules():
    """Two images and pseudo-classes 0..7 (0-4 stuff, 5-7 things) exercising every rule."""
    gts, preds = [], []
    # image 1: road (bottom), sky (top), two persons, one car group (thing pixels without instance), GT void strip
    gc, gi = _canvas()
    gc[:8], gc[12:] = SKY, ROAD
    gc[8:12] = BUILDING
    gc[12:18, 2:6], gi[12:18, 2:6] = PERSON, 1
    gc[12:18, 8:12], gi[12:18, 8:12] = PERSON, 2
    gc[13:17, 20:28] = CAR  # instance 0: one segment of class car
    gc[:, 29] = 255  # void column
    pc, pi = _canvas()
    pc[:8], pc[12:] = 3, 0  # sky -> pseudo 3, road -> pseudo 0
    pc[:4, :10] = 4  # a second stuff pseudo-class inside the sky: merges with 3 after mapping
    pc[8:12] = 1
    pc[12:18, 2:6], pi[12:18, 2:6] = 5, 1
    pc[12:18, 9:12], pi[12:18, 9:12] = 5, 2  # second person, one column short
    pc[14:17, 8:9] = 255  # predicted void inside the GT person: left out of the union
    pc[13:17, 20:28], pi[13:17, 20:28] = 6, 3
    pc[0:3, 27:30], pi[0:3, 27:30] = 7, 4  # mostly on GT void? 3 of 9 px: a FP
    gts.append((gc, gi))
    preds.append((pc, pi))
    # image 2: sidewalk, a caravan (27-class thing), a GT segment mostly predicted void (no FN),
    # a predicted segment mostly on GT void (no FP)
    gc, gi = _canvas()
    gc[:, :] = SIDEWALK
    gc[5:10, 5:15], gi[5:10, 5:15] = CARAVAN, 7
    gc[15:20, 0:4], gi[15:20, 0:4] = PERSON, 3
    gc[0:4, 20:30] = 255
    pc, pi = _canvas(value=2)
    pc[5:10, 5:15], pi[5:10, 5:15] = 7, 1
    pc[15:20, 0:4] = 255
    pc[15:17, 0:1], pi[15:17, 0:1] = 5, 9  # 2 of 20 px: the person is mostly predicted void -> not a FN
    pc[0:4, 21:30], pi[0:4, 21:30] = 6, 2  # 36 px, all on GT void -> not a FP
    pc[4:5, 21:30], pi[4:5, 21:30] = 6, 2
    gts.append((gc, gi))
    preds.append((pc, pi))
    return preds, gts


@pytest.mark.parametrize("one_to_one", [False, True])
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("k", [8, 30])
def test_every_rule_equals_the_reference(one_to_one, split, k):
    """k = 8: fewer pseudo-classes than classes; k = 30: 22 unused (all-zero) stuff rows, so that
    more stuff pseudo-classes than stuff classes leave leftovers (argmax or void)."""
    preds, gts = case_rules()
    thing_protos = cups.set_order([5, 6, 7]) if split else None
    stuff_protos = cups.set_order([0, 1, 2, 3, 4, *range(8, k)]) if split else None
    res = ours(preds, gts, 27, thing_protos, stuff_protos, k, one_to_one)
    ref = reference_cups(preds, gts, 27, thing_protos, stuff_protos, k, one_to_one)
    assert_same(res, ref)
    if PanopticQuality is not None:  # the loop reference agrees with torchmetrics too
        loop = reference_cups(preds, gts, 27, thing_protos, stuff_protos, k, one_to_one, use_torchmetrics=False)
        np.testing.assert_array_equal(loop["TP"], ref["TP"])
        np.testing.assert_array_equal(loop["FP"], ref["FP"])
        np.testing.assert_array_equal(loop["FN"], ref["FN"])
        np.testing.assert_allclose(loop["IoU_sum"], ref["IoU_sum"], atol=1e-12)


def test_rules_by_hand():
    """The hand-made case under a given assignment, counted by hand: which rule gave which TP / FP / FN."""
    preds, gts = case_rules()
    classes = cups.cups_classes(27)
    lut = np.array([ROAD, BUILDING, SIDEWALK, SKY, SKY, PERSON, CAR, CARAVAN])  # 3 and 4 both sky
    acc = [np.zeros(27), *(np.zeros(27, np.int64) for _ in range(3))]
    for (pc, pi), (gc, gi) in zip(preds, gts):
        mapped = np.where(pc == 255, 255, lut[np.clip(pc, 0, 7)])
        for a, s in zip(acc, cups.pq_stats_cups(mapped, pi, gc, gi, classes)):
            a += s
    res = cups.summarize_cups(*acc, classes)
    sky = res["per_class"]["sky"]
    assert (sky["TP"], sky["FP"], sky["FN"]) == (1, 0, 0)  # pseudo 3 and 4 merged into one sky segment
    person = res["per_class"]["person"]
    # image 1: both persons matched (the second: 18 px of 24, its 3 predicted-void px out of the union ->
    # IoU 18/21); image 2: 18 of the person's 20 px are predicted void, so they leave the union and the
    # 2-px prediction matches with IoU 2/2
    assert (person["TP"], person["FN"], person["FP"]) == (3, 0, 0)
    assert person["IoU_sum"] == pytest.approx(1 + 18 / 21 + 1)
    car = res["per_class"]["car"]
    # image 1: the instance-less car group is one GT segment, matched; pseudo 7's 3x3 box (3 px on void)
    # and image 2's car prediction on GT void are not FPs of car (7 is caravan; 6 lies on void)
    assert (car["TP"], car["FP"], car["FN"]) == (1, 0, 0)
    caravan = res["per_class"]["caravan"]
    assert (caravan["TP"], caravan["FP"]) == (1, 1)  # image 1's 3x3 box: 6 of 9 px on valid GT -> a FP
    assert caravan["isthing"] and not res["per_class"]["road"]["isthing"]


def test_leftovers_take_their_argmax_and_all_zero_rows_the_groups_first_class():
    """20 stuff pseudo-classes for 17 stuff classes: rows 0..16 each own one class; row 17 overlaps sky
    most (a leftover -> sky); rows 18, 19 are all zero (leftovers -> the group's first class, road);
    with one_to_one the three leftovers are void."""
    classes = cups.cups_classes(27)
    cost = np.zeros((20, 27), np.int64)
    cost[np.arange(17), list(classes.stuffs)] = 10
    cost[17, SKY], cost[17, ROAD] = 5, 3
    a = cups.cups_assignment(cost, classes.things, classes.stuffs, [], list(range(20)))
    assert a[:17].tolist() == list(classes.stuffs)
    assert a[17:].tolist() == [SKY, classes.stuffs[0], classes.stuffs[0]] and classes.stuffs[0] == ROAD
    b = cups.cups_assignment(cost, classes.things, classes.stuffs, [], list(range(20)), one_to_one=True)
    assert b[17:].tolist() == [255] * 3 and b[:17].tolist() == a[:17].tolist()
    for o2o in (False, True):
        ref = _ref_assignment(torch.as_tensor(cost, dtype=torch.float64), list(classes.things),
                              list(classes.stuffs), [], list(range(20)), o2o).numpy()
        np.testing.assert_array_equal(cups.cups_assignment(cost, classes.things, classes.stuffs, [],
                                                           list(range(20)), o2o), ref)
    # a thing pseudo-class never takes a stuff class, even where it overlaps only stuff
    cost2 = cost.copy()
    cost2[19, ROAD] = 1000
    a2 = cups.cups_assignment(cost2, classes.things, classes.stuffs, [19], list(range(19)))
    assert a2[19] in classes.things


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_classes", [27, 19])
def test_random_maps_equal_the_reference(seed, num_classes):
    """Random blocky maps, k = 30 pseudo-classes (10 things), instances, void on both sides."""
    rng = np.random.default_rng(seed)
    classes = cups.cups_classes(num_classes)
    k = 30
    preds, gts = [], []
    for _ in range(3):
        h, w = 24, 32
        gc = np.kron(rng.integers(0, num_classes + 3, (6, 8)), np.ones((4, 4), np.int64))
        gc[gc >= num_classes] = 255
        gi = np.where(np.isin(gc, classes.things), np.kron(rng.integers(0, 4, (6, 8)), np.ones((4, 4), np.int64)), 0)
        pc = np.kron(rng.integers(0, k + 2, (12, 16)), np.ones((2, 2), np.int64))
        pc[pc >= k] = 255
        pi = np.where(pc >= 20, np.kron(rng.integers(1, 4, (12, 16)), np.ones((2, 2), np.int64)), 0)
        pi[pc == 255] = 0
        pc[:3] = gc[:3] % k  # some agreement so that matches happen
        preds.append((pc[:h, :w], pi[:h, :w]))
        gts.append((gc[:h, :w], gi[:h, :w]))
    tp_, sp_ = cups.set_order(range(20, 30)), cups.set_order(range(20))
    assert_same(ours(preds, gts, num_classes, tp_, sp_, k), reference_cups(preds, gts, num_classes, tp_, sp_, k))


def test_class_ids_as_pseudo_classes_match_by_identity():
    """k < C in a group (our 19 trainIds scored at 27 classes): each pseudo-class takes a distinct class."""
    rng = np.random.default_rng(3)
    gc = np.kron(rng.integers(0, 19, (5, 5)), np.ones((3, 3), np.int64))
    c27 = cups.cups_classes(27)
    from cityscapesscripts.helpers.labels import trainId2label

    to27 = np.array([trainId2label[t].id - 7 for t in range(19)])
    gts = [(to27[gc], np.zeros_like(gc))]
    preds = [(gc, np.zeros_like(gc))]
    things = [t for t in range(19) if trainId2label[t].hasInstances]
    tp_, sp_ = cups.set_order(things), cups.set_order(set(range(19)) - set(things))
    res = ours(preds, gts, 27, tp_, sp_, 19)
    present = np.unique(gc)
    np.testing.assert_array_equal(res["assignment"][present], to27[present])
    assert res["mIoU"] == pytest.approx(100.0) and res["PQ"] == pytest.approx(100.0)
    assert c27.is_thing(CARAVAN) and not cups.cups_classes(19).is_thing(ROAD)


# --------------------------------------------------------------------------- GT, resizing, crop
def test_gt_from_instance_ids_27_and_19():
    raw = np.array([[0, 7, 26, 26001], [24000, 24005, 29003, 33]], np.int64)
    c27, i27 = cups.gt_from_instance_ids(raw, 27)
    assert c27.tolist() == [[255, 0, 19, 19], [17, 17, 22, 26]]
    assert i27.tolist() == [[0, 0, 0, 2002], [1, 6, 5004, 0]]
    c19, _ = cups.gt_from_instance_ids(raw, 19)
    assert c19.tolist() == [[255, 0, 13, 13], [11, 11, 255, 18]]  # caravan (29) is void at 19 classes
    assert cups.cups_classes(27).things == tuple(range(17, 27))
    assert cups.cups_classes(19).things == tuple(range(11, 19))
    assert cups.cups_classes(27).names[CARAVAN] == "caravan"
    with pytest.raises(EvaluationError, match="27 or 19"):
        cups.cups_classes(7)


@pytest.mark.parametrize("n_in,n_out", [(1024, 640), (2048, 1280), (512, 1024), (600, 320), (100, 37), (37, 100)])
def test_torch_nearest_indices_equal_torch(n_in, n_out):
    x = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
    ref = torch.nn.functional.interpolate(x, size=(n_out, 1), mode="nearest").view(-1).long().numpy()
    np.testing.assert_array_equal(cups.torch_nearest_indices(n_in, n_out), ref)


def test_training_resolution_equals_cups_scale_factor():
    x = torch.arange(1024, dtype=torch.float32).view(1, 1, 1024, 1)
    ref = torch.nn.functional.interpolate(x, scale_factor=(0.625, 1), mode="nearest").view(-1).long().numpy()
    np.testing.assert_array_equal(cups.torch_nearest_indices(1024, 640), ref)


@pytest.mark.parametrize("shape", [(64, 128), (50, 90), (90, 50), (33, 101)])
def test_semseg_crop_equals_torchvision(shape):
    import torchvision.transforms as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 250, shape).astype(np.uint8)
    size = 20
    ref = tf.CenterCrop(size)(tf.Resize(size, interpolation=tf.InterpolationMode.NEAREST)(
        torch.as_tensor(arr)[None]))[0].numpy()
    np.testing.assert_array_equal(cups.semseg_crop(arr, size, "torch"), ref)
    ref_pil = np.array(tf.CenterCrop(size)(tf.Resize(size, interpolation=tf.InterpolationMode.NEAREST)(
        Image.fromarray(arr))))
    np.testing.assert_array_equal(cups.semseg_crop(arr, size, "pil"), ref_pil)


def test_prediction_maps_things_get_instances_stuff_none():
    pan = np.array([[0, 7, 7], [26000, 26001, 99]])
    segs = [{"id": 7, "category_id": 7}, {"id": 26000, "category_id": 26}, {"id": 26001, "category_id": 26},
            {"id": 99, "category_id": 3}]
    cls, inst = cups.prediction_maps(pan, segs, {7: (0, False), 26: (2, True), 3: (1, False)})
    assert cls.tolist() == [[-1, 0, 0], [2, 2, 1]]
    assert inst.tolist() == [[0, 0, 0], [1, 2, 0]]
    with pytest.raises(EvaluationError, match="not in the prediction JSON"):
        cups.prediction_maps(np.array([[5]]), segs, {7: (0, False), 26: (2, True), 3: (1, False)})


# --------------------------------------------------------------------------- the command on the synthetic city
def _decode_instance_ids(raw, num_classes):
    """GT from an instanceIds map, written from the rules (independent of evaluation.cups)."""
    from cityscapesscripts.helpers.labels import id2label

    label = np.where(raw > 1000, raw // 1000, raw)
    cls = np.full(raw.shape, 255, np.int64)
    for lid in np.unique(label):
        lab = id2label.get(int(lid))
        if lab is None:
            continue
        if num_classes == 27 and 7 <= lab.id <= 33:
            cls[label == lid] = lab.id - 7
        elif num_classes == 19 and not lab.ignoreInEval:
            cls[label == lid] = lab.trainId
    return cls, np.where(raw >= 24000, raw - 23999, 0)


def write_pseudo_prediction(root, out, k_stuff=20, scale=1, seed=0):
    """Pseudo-class panoptic predictions of the synthetic city: stuff classes split into k_stuff
    pseudo-classes by position, thing classes one pseudo-class each (GT instances), void noise.
    Returns (json, folder, {stem: (pseudo (H', W') 255 void, instance)})."""
    from PIL import Image

    from pseudo_labels.core.io import id_to_rgb, write_json, write_png

    rng = np.random.default_rng(seed)
    anns, maps = [], {}
    thing_ids = list(range(17, 27))
    for path in sorted((root / "gtFine" / "val").rglob("*_gtFine_instanceIds.png")):
        stem = path.name.replace("_gtFine_instanceIds.png", "")
        raw = np.array(Image.open(path)).astype(np.int64)
        cls, inst = _decode_instance_ids(raw, 27)
        h, w = cls.shape
        xs = np.broadcast_to(np.arange(w) * 3 // w, (h, w))
        pseudo = np.where(cls < 17, (cls * 3 + xs) % k_stuff, 255)
        for j, c in enumerate(thing_ids):
            pseudo[cls == c] = k_stuff + j
        pseudo = np.roll(pseudo, (2, 3), axis=(0, 1))
        inst = np.roll(inst, (2, 3), axis=(0, 1))
        noise = rng.random((h, w)) < 0.02
        pseudo[noise] = 255
        inst = np.where(pseudo >= k_stuff, inst, 0)
        inst[pseudo == 255] = 0
        inst = np.unique(inst, return_inverse=True)[1].reshape(h, w)  # 1..N (0 stays 0: it is the smallest)
        if scale != 1:
            size = (w // scale, h // scale)
            pseudo = np.array(Image.fromarray(pseudo.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int64)
            inst = np.array(Image.fromarray(inst.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int64)
        pan = np.where(pseudo == 255, 0, np.where(inst > 0, (pseudo + 1) * 1000 + inst, pseudo + 1))
        segs = [{"id": int(i), "category_id": int(i if i < 1000 else i // 1000), "iscrowd": 0}
                for i in np.unique(pan) if i]
        write_png(out / "pan" / f"{stem}_panoptic.png", id_to_rgb(pan))
        anns.append({"image_id": stem, "file_name": f"{stem}_panoptic.png", "segments_info": segs})
        maps[stem] = (pseudo, inst)
    cats = [{"id": p + 1, "name": f"pc{p}", "isthing": int(p >= k_stuff)} for p in range(k_stuff + len(thing_ids))]
    write_json(out / "pan.json", {"annotations": anns, "categories": cats})
    return out / "pan.json", out / "pan", maps


@pytest.mark.parametrize("num_classes,scale,layout", [(27, 1, "synth_city"), (19, 2, "synth_city_official")])
def test_evaluate_cups_on_the_synthetic_city_equals_the_reference(request, tmp_path, num_classes, scale, layout):
    """`pseudo-labels evaluate --protocol cups` = the reference (torchmetrics PQ + the rules) on the same maps;
    predictions at half size are resized to the GT's size (PIL nearest) and say so; the official layout
    (four gtFine files per image, no panoptic GT) needs nothing prepared."""
    import json

    from PIL import Image

    from pseudo_labels.cli import main

    synth_city = request.getfixturevalue(layout)

    k_stuff = 20
    pj, pf, maps = write_pseudo_prediction(synth_city, tmp_path, k_stuff=k_stuff, scale=scale)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--protocol", "cups", "--cityscapes-root", str(synth_city), "--split", "val",
                 "--pred-json", str(pj), "--pred-folder", str(pf), "--num-classes", str(num_classes),
                 "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    preds, gts = [], []
    for stem, (pseudo, inst) in sorted(maps.items()):
        raw = np.array(Image.open(next((synth_city / "gtFine" / "val").rglob(f"{stem}_gtFine_instanceIds.png"))))
        gts.append(_decode_instance_ids(raw.astype(np.int64), num_classes))
        size = (raw.shape[1], raw.shape[0])
        preds.append(tuple(np.array(Image.fromarray(m.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int64)
                           for m in (pseudo, inst)))
    k = k_stuff + 10
    ref = reference_cups(preds, gts, num_classes, cups.set_order(range(k_stuff, k)), cups.set_order(range(k_stuff)),
                         k)
    assert [a["class_id"] for a in res["assignment"]] == ref["assignment"].tolist()
    for key in ("PQ", "SQ", "RQ", "PQ_things", "SQ_things", "RQ_things", "PQ_stuff", "SQ_stuff", "RQ_stuff",
                "mIoU", "accuracy"):
        assert res[key] == pytest.approx(ref[key], abs=1e-9), key
    names = cups.cups_classes(num_classes).names
    assert [res["per_class"][n]["TP"] for n in names] == ref["TP"].tolist()
    assert [res["per_class"][n]["FP"] for n in names] == ref["FP"].tolist()
    assert [res["per_class"][n]["FN"] for n in names] == ref["FN"].tolist()
    assert res["protocol"] == "cups" and res["num_classes"] == num_classes and res["n_images"] == 3
    assert 0 < res["PQ"] < 100 and res["semantic_crop"]["crop"] == 320
    if scale == 2:
        assert res["prediction_resized_from"] == "256x128" and res["n_predictions_resized"] == 3
    else:
        assert "prediction_resized_from" not in res


@pytest.mark.parametrize("resize", ["torch", "pil"])
def test_stego_miou_equals_an_independent_crop_and_matching(tmp_path, resize):
    """`stego-miou`: torchvision Resize(320) + CenterCrop(320) of both maps, Hungarian over 27 classes with
    argmax leftovers (k = 40 clusters in a uint16 PNG, 65535 void), mIoU over defined classes."""
    import torchvision.transforms as tf
    from PIL import Image

    from pseudo_labels.core.io import write_png

    rng = np.random.default_rng(5)
    jobs, preds, gts = [], [], []
    for i in range(2):
        h, w = 240, 480
        raw = np.kron(rng.integers(0, 34, (10, 20)), np.ones((24, 24), np.int64)).astype(np.uint16)
        gt_path = tmp_path / f"town_00000{i}_000019_gtFine_instanceIds.png"
        Image.fromarray(raw).save(gt_path)
        clusters = (np.kron(rng.integers(0, 34, (10, 20)), np.ones((24, 24), np.int64)) + raw.astype(np.int64)) % 40
        clusters[rng.random((h, w)) < 0.05] = 65535
        pred_path = tmp_path / f"town_00000{i}_000019_clusters.png"
        write_png(pred_path, clusters.astype(np.uint16))
        jobs.append(cups.CupsJob(f"town_00000{i}_000019", str(gt_path), str(pred_path)))
        gc, _ = _decode_instance_ids(raw.astype(np.int64), 27)
        if resize == "torch":
            crop = lambda a: tf.CenterCrop(320)(tf.Resize(320, interpolation=tf.InterpolationMode.NEAREST)(  # noqa: E731
                torch.as_tensor(a.astype(np.int64))[None]))[0].numpy()
        else:
            crop = lambda a: np.array(tf.CenterCrop(320)(tf.Resize(320, interpolation=tf.InterpolationMode.NEAREST)(  # noqa: E731
                Image.fromarray(a.astype(np.int32)))))
        pc = crop(np.where(clusters == 65535, 255, clusters))
        preds.append((pc, np.zeros_like(pc)))
        gts.append((crop(gc), np.zeros_like(pc)))
    res = cups.evaluate_cups(jobs, None, num_classes=27, crop_resize=resize)
    ref = reference_cups(preds, gts, 27, None, None, 40)
    assert res["protocol"] == "stego-miou" and res["num_pseudo_classes"] == 40
    assert res["mIoU"] == pytest.approx(ref["mIoU"], abs=1e-9) and res["accuracy"] == pytest.approx(ref["accuracy"],
                                                                                                     abs=1e-9)
    assert [a["class_id"] for a in res["semantic_crop"]["assignment"]] == ref["miou_assignment"].tolist()
