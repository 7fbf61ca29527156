"""CRM student library (pseudo_labels.stages.rgbt.crm): masks, model, losses, training, inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.rgbt import crm
from tests.rgbt_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)




def _patch_values(mask: np.ndarray, p: int) -> np.ndarray:
    """(H, W) pixel mask -> (gh, gw) value of each patch; asserts each patch is constant."""
    h, w = mask.shape
    out = np.zeros((-(-h // p), -(-w // p)), mask.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = mask[i * p:(i + 1) * p, j * p:(j + 1) * p]
            assert block.min() == block.max(), "a patch is partly hidden"
            out[i, j] = block[0, 0]
    return out


@pytest.mark.parametrize("patch", [8, 16, 32, 64])
@pytest.mark.parametrize("size", [(64, 128), (72, 100)])
def test_complementary_masks_cover_every_patch_by_exactly_one_modality(patch, size):
    rng = np.random.default_rng(patch)
    rgb, thermal = crm.modality_masks(3, *size, mode="complementary", patch_size=patch, ratio=0.5, rng=rng)
    assert rgb.shape == thermal.shape == (3, 1, *size)
    assert rgb.dtype == np.float32 and set(np.unique(rgb)) <= {0.0, 1.0}
    for b in range(3):
        pr, pt = _patch_values(rgb[b, 0], patch), _patch_values(thermal[b, 0], patch)
        visible = (pr == 0).astype(int) + (pt == 0).astype(int)
        assert (visible == 1).all()  # every patch: seen by exactly one modality
        n = pr.size
        assert pr.sum() == int(np.ceil(0.5 * n))  # RGB hides ceil(ratio * patches)


def test_random_masks_are_independent_per_modality_and_hide_the_ratio():
    rgb, thermal = crm.modality_masks(8, 64, 64, mode="random", patch_size=8, ratio=0.25,
                                      rng=np.random.default_rng(0))
    for b in range(8):
        assert _patch_values(rgb[b, 0], 8).sum() == 16 and _patch_values(thermal[b, 0], 8).sum() == 16
    both_hidden = ((rgb == 1) & (thermal == 1)).sum()
    both_visible = ((rgb == 0) & (thermal == 0)).sum()
    assert both_hidden > 0 and both_visible > 0  # not complementary


def test_random_complementary_is_one_of_three_patterns_per_image():
    rgb, thermal = crm.modality_masks(60, 32, 32, mode="random-complementary", patch_size=8, ratio=0.5,
                                      rng=np.random.default_rng(1))
    kinds = []
    for b in range(60):
        r, t = rgb[b, 0], thermal[b, 0]
        if r.max() == 0:
            kinds.append("rgb clean")
            assert t.sum() > 0
        elif t.max() == 0:
            kinds.append("thermal clean")
        else:
            assert np.array_equal(r + t, np.ones_like(r))
            kinds.append("complementary")
    assert set(kinds) == {"rgb clean", "thermal clean", "complementary"}


def test_random_complementary_matches_the_release_generator():
    """CRM_RGBTSeg@a791023 MaskGenerator.gen_rand_comp_masks: m hides ceil(ratio * n) patches; with
    probability 1/3 each: (rgb clean, thermal 1 - m), (rgb m, thermal clean), (rgb m, thermal 1 - m)."""
    n_img, ratio, grid = 900, 0.3, 4 * 4
    hidden = int(np.ceil(ratio * grid))
    rgb, thermal = crm.modality_masks(n_img, 32, 32, mode="random-complementary", patch_size=8, ratio=ratio,
                                      rng=np.random.default_rng(4))
    counts = {"thermal masked": 0, "rgb masked": 0, "both": 0}
    for b in range(n_img):
        r = rgb[b, 0, ::8, ::8].astype(int)  # one pixel per patch
        t = thermal[b, 0, ::8, ::8].astype(int)
        if r.sum() == 0:
            assert t.sum() == grid - hidden
            counts["thermal masked"] += 1
        elif t.sum() == 0:
            assert r.sum() == hidden
            counts["rgb masked"] += 1
        else:
            assert r.sum() == hidden and np.array_equal(t, 1 - r)
            counts["both"] += 1
    assert all(abs(v / n_img - 1 / 3) < 0.05 for v in counts.values())
    assert crm.CRMModelConfig(num_classes=3).masking == "random-complementary"


def test_masks_are_seeded_and_bad_modes_fail():
    a = crm.modality_masks(2, 32, 32, mode="complementary", patch_size=8, ratio=0.3, rng=np.random.default_rng(5))
    b = crm.modality_masks(2, 32, 32, mode="complementary", patch_size=8, ratio=0.3, rng=np.random.default_rng(5))
    assert np.array_equal(a[0], b[0])
    with pytest.raises(PseudoLabelsError, match="masking"):
        crm.modality_masks(1, 32, 32, mode="none", patch_size=8, ratio=0.5, rng=np.random.default_rng(0))


def _inputs(b=2, h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, h, w, generator=g), "thermal": torch.randn(b, 1, h, w, generator=g)}


def test_student_heads_shapes_and_max_fusion():
    torch.manual_seed(0)
    model = crm.CRMStudent(("rgb", "thermal"), num_classes=5).eval()
    x = _inputs()
    out = model(x, heads=("fused", "rgb", "thermal"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, 5, 32, 48) for k in ("fused", "rgb", "thermal")}
    feats = model.encode(x)
    fused = model.fuse(feats)
    for level, (fr, ft) in enumerate(zip(feats["rgb"], feats["thermal"])):
        assert torch.equal(fused[level], torch.maximum(fr, ft))


def test_a_fully_hidden_modality_does_not_influence_the_prediction():
    torch.manual_seed(0)
    model = crm.CRMStudent(("rgb", "thermal"), num_classes=4).eval()
    with torch.no_grad():
        model.encoders["thermal"].mask_token.normal_()
    x = _inputs()
    hide_t = {"rgb": torch.zeros(2, 1, 32, 48), "thermal": torch.ones(2, 1, 32, 48)}
    y1 = model(x, hide_t)["fused"]
    x2 = dict(x, thermal=torch.randn_like(x["thermal"]))
    assert torch.allclose(y1, model(x2, hide_t)["fused"])
    assert not torch.allclose(model(x)["fused"], model(x2)["fused"])  # without the mask it does


def test_hidden_patches_of_one_modality_do_not_reach_its_stride4_tokens():
    torch.manual_seed(0)
    enc = crm.TinyEncoder(3).eval()
    x = torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :] = 1  # top half hidden
    x2 = x.clone()
    x2[..., :8, :] += 5.0  # change pixels far inside the hidden half
    f1 = enc(x, mask)[0]
    f2 = enc(x2, mask)[0]
    assert torch.equal(f1[..., :4, :], f2[..., :4, :])  # hidden tokens are the mask token


def _config(**kw):
    base = dict(num_classes=4, epochs=1, batch_size=2, masking="complementary", mask_patch_size=8)
    base.update(kw)
    return crm.CRMModelConfig(**base)


def test_losses_parts_follow_the_configuration():
    torch.manual_seed(0)
    x = _inputs()
    y = torch.randint(0, 4, (2, 32, 48))
    y[:, :4] = 255
    rgb, th = crm.modality_masks(2, 32, 48, mode="complementary", patch_size=8, ratio=0.5,
                                 rng=np.random.default_rng(0))
    masks = {"rgb": torch.from_numpy(rgb), "thermal": torch.from_numpy(th)}
    for cfg, parts in [(_config(masking="none", sdc_weight=0, sdn_weight=0, mws_weight=0), {"sup"}),
                       (_config(sdc_weight=0, sdn_weight=0, mws_weight=0), {"sup", "masked"}),
                       (_config(mws_weight=0), {"sup", "masked", "sdc", "sdn"}),
                       (_config(), {"sup", "mws", "masked", "sdc", "sdn"}),
                       (_config(sdc_weight=0.5, sdn_weight=2.0, mws_weight=0.3), {"sup", "mws", "masked", "sdc", "sdn"})]:
        model = crm.build_student(cfg)
        total, got = crm.crm_losses(model, x, y, cfg, None if cfg.masking == "none" else masks)
        assert set(got) == parts
        expect = (got["sup"] + got.get("masked", 0) + cfg.mws_weight * got.get("mws", 0)
                  + cfg.sdc_weight * got.get("sdc", 0) + cfg.sdn_weight * got.get("sdn", 0))
        assert torch.allclose(total, expect)
        total.backward()


def test_sdc_is_zero_when_nothing_is_hidden():
    torch.manual_seed(0)
    cfg = _config(sdn_weight=0, mws_weight=0)
    model = crm.build_student(cfg).eval()  # GroupNorm only: train/eval agree
    x = _inputs()
    y = torch.randint(0, 4, (2, 32, 48))
    nothing = {"rgb": torch.zeros(2, 1, 32, 48), "thermal": torch.zeros(2, 1, 32, 48)}
    _, parts = crm.crm_losses(model, x, y, cfg, nothing)
    assert float(parts["sdc"].detach()) == pytest.approx(0.0, abs=1e-7)
    hide = {"rgb": torch.ones(2, 1, 32, 48), "thermal": torch.zeros(2, 1, 32, 48)}
    _, parts = crm.crm_losses(model, x, y, cfg, hide)
    assert float(parts["sdc"].detach()) > 1e-4


def test_invalid_combinations_fail_with_clear_messages():
    with pytest.raises(PseudoLabelsError, match="two modalities"):
        _config(modalities=("rgb",))
    with pytest.raises(PseudoLabelsError, match="need two modalities"):
        _config(modalities=("rgb",), masking="none", sdc_weight=0, sdn_weight=0)
    with pytest.raises(PseudoLabelsError, match="need --masking"):
        _config(masking="none", mws_weight=0)
    with pytest.raises(PseudoLabelsError, match="multiple of 4"):
        _config(mask_patch_size=6)
    ok = _config(modalities=("rgb",), masking="none", sdc_weight=0, sdn_weight=0, mws_weight=0)
    model = crm.build_student(ok)
    assert model({"rgb": torch.randn(1, 3, 32, 32)})["fused"].shape == (1, 4, 32, 32)


def test_timm_backbone_random_init_and_local_weights(tmp_path):
    torch.manual_seed(0)
    a = crm.TimmEncoder("resnet10t", 1)
    feats = a(torch.randn(1, 1, 64, 64), torch.zeros(1, 1, 64, 64))
    assert len(feats) == 3 and [f.shape[1] for f in feats] == list(a.widths)
    import timm

    rgb_net = timm.create_model("resnet10t", pretrained=False, features_only=True, in_chans=3)
    path = tmp_path / "w.pth"
    torch.save(rgb_net.state_dict(), path)
    b = crm.TimmEncoder("resnet10t", 1, str(path))  # 3-channel stem averaged for thermal
    stem_key = next(k for k, v in rgb_net.state_dict().items() if v.ndim == 4)
    assert torch.allclose(b.net.state_dict()[stem_key], rgb_net.state_dict()[stem_key].mean(1, keepdim=True))
    with pytest.raises(PseudoLabelsError, match="not found"):
        crm.TimmEncoder("resnet10t", 3, str(tmp_path / "missing.pth"))
    with pytest.raises(PseudoLabelsError, match="timm"):
        crm.TimmEncoder("no_such_model_xyz", 3)


def _toy_data(n=4, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    inputs, labels = [], []
    for _ in range(n):
        lab = np.zeros((h, w), np.uint8)
        lab[:, w // 2:] = 1
        lab[h // 2:, :] = 2 if rng.random() < 0.5 else 3
        rgb = np.stack([lab * 60] * 3, -1).astype(np.uint8)
        inputs.append({"rgb": rgb, "thermal": (255 - lab[:, :, None] * 60).astype(np.uint8)})
        labels.append(lab)
    return crm.TrainingData(inputs, labels)


def test_training_is_seeded_and_learns(tmp_path):
    data = _toy_data()
    cfg = _config(epochs=6, mask_patch_size=8, lr=5e-3)
    m1, h1 = crm.train_student(data, cfg, run_dir=tmp_path / "a", progress=False)
    m2, _ = crm.train_student(data, cfg, run_dir=tmp_path / "b", progress=False)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert h1[-1]["sup"] < h1[0]["sup"]
    assert {"loss", "sup", "mws", "masked", "sdc", "sdn", "seconds", "peak_memory_mb"} <= set(h1[0])
    pred = crm.predict_labels(m1, data.inputs[0], cfg)
    assert pred.shape == (32, 32) and pred.dtype == np.uint8
    for modality in ("rgb", "thermal"):
        assert crm.predict_labels(m1, data.inputs[0], cfg, modality).shape == (32, 32)


def test_scores_by_condition_splits_day_and_night():
    gt = np.array([[0, 1], [1, 255]], np.uint8)
    confs = {"aD": crm.label_confusion(gt, gt, 2), "bN": crm.label_confusion(gt, np.zeros_like(gt), 2)}
    s = crm.scores_by_condition(confs, {"aD": "day", "bN": "night"}, ["x", "y"])
    assert s["day"]["mIoU"] == pytest.approx(100.0)
    assert s["night"]["mIoU"] == pytest.approx(100 * (1 / 3) / 2)
    assert s["overall"]["n_images"] == 2 and set(s["overall"]["per_class_iou"]) == {"x", "y"}


def test_official_miou_counts_absent_classes_as_zero():
    """RTFNet compute_results (used by CRM): IoU 0 where a class has no GT and no prediction, mean over all."""
    gt = np.array([[0, 1, 1], [0, 0, 255]], np.uint8)
    pred = np.array([[0, 1, 0], [0, 0, 2]], np.uint8)  # class 2 only on a void pixel, class 3 nowhere
    conf = crm.label_confusion(gt, pred, 4)
    cm = conf[:, :-1]
    ious = [0.0 if cm[c].sum() + cm[:, c].sum() - cm[c, c] == 0 else cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c])
            for c in range(4)]
    official = crm.scores_by_condition({"a": conf}, {}, list("wxyz"))["overall"]
    ours = crm.scores_by_condition({"a": conf}, {}, list("wxyz"), "present")["overall"]
    assert official["mIoU"] == pytest.approx(100 * np.mean(ious), abs=1e-6) and official["convention"] == "all-classes"
    assert ours["mIoU"] == pytest.approx(100 * np.mean(ious[:2]), abs=1e-6) and ours["convention"] == "present"
    assert ours["mIoU_all_classes"] == official["mIoU"] and official["mIoU_present"] == ours["mIoU"]
    with pytest.raises(PseudoLabelsError, match="miou-convention"):
        crm.scores_by_condition({"a": conf}, {}, list("wxyz"), "mean")
