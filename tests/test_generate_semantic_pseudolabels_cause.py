"""CAUSE-27 semantics: tiny random checkpoints in the official key layout, the reference's
arithmetic (sliding windows, flip, probe log-softmax, Hungarian naming), errors, command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_image_rgb, read_png
from pseudo_labels.stages.semantic.dinov2 import build_dinov2

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=1, mlp_ratio=4.0, patch_size=14, pos_grid=2)


def _checkpoints(folder, seed=0):
    """The four files of the flat checkpoint folder, tiny and random, official key names."""
    from refs.cause import SegmentTR

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vit = build_dinov2(None, None, config=TINY_VIT)
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 32)
    torch.save(state, folder / "dinov2_vitb14_pretrain.pth")
    head = SegmentTR(dim=32, reduced_dim=90, num_queries=4, projection_dim=16, n_classes=27, hidden_dim=64)
    torch.save(head.state_dict(), folder / "segment_tr.pth")
    # CAUSE's Cluster state dict: codebook (num_codebook x dim) + cluster_probe (n_classes x reduced_dim)
    torch.save({"codebook": torch.randn(8, 32), "cluster_probe": torch.randn(27, 90)}, folder / "cluster_tr.pth")
    np.save(folder / "modular.npy", np.random.default_rng(seed).standard_normal((8, 32)).astype(np.float32))
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoints(tmp_path_factory.mktemp("ckpt"))


def _config(root, ckpt, out, **kw):
    from pseudo_labels.stages.semantic.cause27 import Cause27Config

    return Cause27Config(cityscapes_root=str(root), checkpoint_dir=str(ckpt), output_dir=str(out),
                         backbone="dinov2", **kw)


# --------------------------------------------------------------------------- the reference's arithmetic, written out
def _reference_labels(image, backbone, head, probe, mapping, crop=28):
    """generate_semantic_pseudolabels_cause.py single-scale path, without CRF, on one image."""
    from PIL import Image

    from pseudo_labels.stages.semantic.dinov2 import dinov2_patch_tokens
    from pseudo_labels.stages.semantic.features import normalize_image, resize_image

    h0, w0 = image.shape[:2]
    scale = crop / min(h0, w0)
    nh, nw = int(round(h0 * scale)) // 14 * 14, int(round(w0 * scale)) // 14 * 14
    x = normalize_image(resize_image(image, (nh, nw)))[None]

    def single(c):
        with torch.no_grad():
            t = dinov2_patch_tokens(backbone, c)
            tf = dinov2_patch_tokens(backbone, c.flip(dims=[3]))
            f = head.head_ema(t.reshape(1, -1, 32))
            ff = head.head_ema(tf.reshape(1, -1, 32))
            seg = (f + ff.flip(dims=[3])) / 2
            nf = torch.nn.functional.normalize(seg, dim=1)
            nc = torch.nn.functional.normalize(probe.cluster_probe, dim=1)
            return torch.log_softmax(torch.einsum("bchw,nc->bnhw", nf, nc) * 3, dim=1)

    stride = crop // 2
    ys = [0] if nh <= crop else sorted(set(list(range(0, nh - crop, stride)) + [nh - crop]))
    xs = [0] if nw <= crop else sorted(set(list(range(0, nw - crop, stride)) + [nw - crop]))
    acc, cnt = torch.zeros(27, nh, nw), torch.zeros(1, nh, nw)
    for y in ys:
        for xx in xs:
            lg = torch.nn.functional.interpolate(single(x[:, :, y:y + crop, xx:xx + crop]), size=(crop, crop),
                                                 mode="bilinear", align_corners=False)[0]
            acc[:, y:y + crop, xx:xx + crop] += lg
            cnt[:, y:y + crop, xx:xx + crop] += 1
    pred = (acc / cnt.clamp(min=1)).argmax(0).numpy()
    mapped = np.asarray(mapping)[pred].astype(np.uint8)
    return np.array(Image.fromarray(mapped).resize((w0, h0), Image.NEAREST))


def test_generate_matches_reference_arithmetic(synth_city, ckpt, tmp_path):
    from pseudo_labels.stages.semantic.cause import load_cause27_models
    from pseudo_labels.stages.semantic.cause27 import generate_cause27_semantics, load_hungarian

    out = tmp_path / "cause"
    res = generate_cause27_semantics(_config(synth_city, ckpt, out, mode="all", split="val"))
    mapping = load_hungarian(out)
    assert sorted(mapping.tolist()) == list(range(27))  # one-to-one
    backbone, head, probe = load_cause27_models(ckpt, None)
    pngs = sorted((out / "val").glob("*/*.png"))
    assert len(pngs) == 3 and res["summaries"]["val"].done == 3
    for p in pngs:
        stem = p.stem
        image = read_image_rgb(next(synth_city.glob(f"leftImg8bit/val/*/{stem}_leftImg8bit.png")))
        got = read_png(p)
        assert got.shape == image.shape[:2] and got.dtype == np.uint8 and got.max() < 27
        np.testing.assert_array_equal(got, _reference_labels(image, backbone, head, probe, mapping))
    m = json.loads((out / "hungarian_mapping.json").read_text())
    assert set(m) >= {"cluster_to_class", "class_to_cluster", "miou_27class", "per_class_iou"}
    assert m["uses_ground_truth"] is True and len(m["per_class_iou"]) == 27
    stats = json.loads((out / "val" / "stats.json").read_text())
    assert stats["total"] == 3 and sum(stats["per_class"].values()) == 3 * 256 * 512
    assert stats["per_class_names"]["17"]["name"] == "person"
    man = json.loads((out / "manifest.json").read_text())
    assert man["uses_ground_truth"] is True and "hungarian" in man["ground_truth_use"]


def test_hungarian_histogram_matches_reference(synth_city, ckpt):
    """The naming histogram equals the reference's centre-crop computation on one image."""
    from PIL import Image

    from pseudo_labels.stages.semantic.cause27 import _hungarian_histogram, _model, center_crop_nearest
    from pseudo_labels.datasets.cityscapes import list_images

    cfg = _config(synth_city, ckpt, "unused")
    entry = list_images(synth_city, "val")[0]
    hist = _hungarian_histogram(entry, cfg)
    # reference: torchvision Resize(crop, NEAREST) + CenterCrop(crop) of the PIL image and GT
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    tf = transforms.Compose([transforms.Resize(28, interpolation=InterpolationMode.NEAREST),
                             transforms.CenterCrop(28)])
    img = np.array(tf(Image.open(entry.image_path).convert("RGB")))
    np.testing.assert_array_equal(img, center_crop_nearest(read_image_rgb(entry.image_path), 28))
    gt = np.array(tf(Image.open(next(synth_city.glob(f"gtFine/val/*/{entry.stem}_gtFine_labelIds.png")))))
    pred = _model(cfg).center_crop_clusters(read_image_rgb(entry.image_path))
    gt = gt.astype(np.int64) - 7
    ok = (gt >= 0) & (gt < 27)
    expected = np.zeros((27, 27), np.int64)
    np.add.at(expected, (pred[ok], gt[ok]), 1)
    np.testing.assert_array_equal(hist, expected)


def test_hungarian_from_histogram_recovers_a_permutation():
    from pseudo_labels.stages.semantic.cause27 import hungarian_from_histogram

    perm = np.random.default_rng(0).permutation(27)
    hist = np.zeros((27, 27))
    hist[np.arange(27), perm] = 100
    hist[0, perm[1]] = 10  # some confusion
    m = hungarian_from_histogram(hist)
    assert m["cluster_to_class"] == perm.tolist()
    iou1 = 100 / 110 * 100
    assert m["per_class_iou"]
    expected = (25 * 100 + 2 * iou1) / 27
    assert m["miou_27class"] == pytest.approx(expected)


def test_missing_and_wrong_checkpoint_files_are_named(synth_city, ckpt, tmp_path):
    from pseudo_labels.stages.semantic.cause27 import generate_cause27_semantics

    for name in ("dinov2_vitb14_pretrain.pth", "segment_tr.pth", "cluster_tr.pth", "modular.npy"):
        folder = tmp_path / f"no_{name}"
        shutil.copytree(ckpt, folder)
        (folder / name).unlink()
        with pytest.raises(PseudoLabelsError, match=name.replace(".", r"\.") + ": missing"):
            generate_cause27_semantics(_config(synth_city, folder, tmp_path / "o"))
    bad = tmp_path / "bad_probe"
    shutil.copytree(ckpt, bad)
    torch.save({"codebook": torch.zeros(8, 32)}, bad / "cluster_tr.pth")
    with pytest.raises(PseudoLabelsError, match=r"cluster_tr\.pth.*cluster_probe"):
        generate_cause27_semantics(_config(synth_city, bad, tmp_path / "o"))
    torch.save({"cluster_probe": torch.zeros(27, 64)}, bad / "cluster_tr.pth")
    with pytest.raises(PseudoLabelsError, match=r"cluster_tr\.pth.*dim 64"):
        generate_cause27_semantics(_config(synth_city, bad, tmp_path / "o"))
    # the default backbone check: a tiny ViT is not ViT-B/14
    from pseudo_labels.stages.semantic.cause27 import Cause27Config

    cfg = Cause27Config(cityscapes_root=str(synth_city), checkpoint_dir=str(ckpt), output_dir=str(tmp_path / "o"))
    with pytest.raises(PseudoLabelsError, match=r"dinov2_vitb14_pretrain\.pth.*dinov2_vitb14 expects"):
        generate_cause27_semantics(cfg)


def test_generate_without_mapping_fails(synth_city, ckpt, tmp_path):
    from pseudo_labels.stages.semantic.cause27 import generate_cause27_semantics

    with pytest.raises(PseudoLabelsError, match=r"hungarian_mapping\.json: Hungarian mapping not found"):
        generate_cause27_semantics(_config(synth_city, ckpt, tmp_path / "o", mode="generate", split="val"))


def test_command_modes_and_spellings(synth_city, ckpt, tmp_path, capsys):
    from pseudo_labels.cli import main

    out = tmp_path / "cause"
    base = ["generate-semantic-pseudolabels-cause", "--cityscapes_root", str(synth_city), "--checkpoint_dir",
            str(ckpt), "--output_dir", str(out), "--backbone", "dinov2", "--skip_crf"]
    assert main(base + ["--mode", "hungarian", "--limit", "2"]) == 0
    text = capsys.readouterr().out
    assert "hungarian (val, 2 images)" in text and "uses ground truth: yes" in text
    assert not list(out.glob("val/*/*.png"))
    assert main(base + ["--mode", "generate", "--split", "val"]) == 0
    assert len(list(out.glob("val/*/*.png"))) == 3
    assert main(base + ["--mode", "generate", "--split", "val"]) == 0
    assert "skipped 3" in capsys.readouterr().out


@pytest.mark.slow
def test_cause27_chain_to_panoptic_quality(synth_city, ckpt, tmp_path):
    """The reference's 'CAUSE-27 + depth' row as our commands: semantics -> 27->19 remap ->
    depth -> instances -> panoptic -> evaluate (tiny random weights: only that it runs and scores)."""
    from pseudo_labels.cli import main

    root = tmp_path / "city"
    shutil.copytree(synth_city, root)
    cause, mapped = root / "pseudo_semantic_cause", root / "pseudo_semantic_cause_trainid"
    steps = [
        ["generate-semantic-pseudolabels-cause", "--cityscapes-root", root, "--checkpoint-dir", ckpt,
         "--split", "val", "--backbone", "dinov2"],
        ["remap-cause27-to-trainid", "--input-dir", cause, "--output-dir", mapped, "--split", "val"],
        ["generate-depth", "--cityscapes-root", root, "--split", "val", "--source", "disparity",
         "--output-subdir", "depth_disp"],
        ["generate-depth-guided-instances", "--semantic-dir", mapped / "val", "--depth-dir", root / "depth_disp",
         "--output-dir", tmp_path / "inst", "--grad-threshold", "0.10", "--min-area", "500", "--normalize", "minmax"],
        ["generate-panoptic", "--semantic-dir", mapped / "val", "--instance-dir", tmp_path / "inst",
         "--out-json", tmp_path / "pan.json", "--out-folder", tmp_path / "pan"],
        ["evaluate", "--gt-json", root / "gtFine" / "cityscapes_panoptic_val.json", "--gt-folder",
         root / "gtFine" / "cityscapes_panoptic_val", "--pred-json", tmp_path / "pan.json", "--pred-folder",
         tmp_path / "pan", "--protocol", "reference", "--out", tmp_path / "eval.json", "--quiet"],
    ]
    for argv in steps:
        assert main([str(a) for a in argv]) == 0, argv[0]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["protocol"] == "reference" and 0.0 <= result["PQ"] <= 100.0
    assert json.loads((mapped / "manifest.json").read_text())["uses_ground_truth"] is True  # inherited
