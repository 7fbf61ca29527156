"""Feature extraction: builtin features, DINOv2 checkpoints (official keys), CAUSE head, windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.semantic.dinov2 import build_dinov2, dinov2_patch_tokens, official_pos_embed
from pseudo_labels.stages.semantic.features import (
    BUILTIN_DIM,
    build_extractor,
    load_features,
    normalize_image,
    resize_image,
    resized_shape,
    resolve_device,
    save_features,
    sliding_window_dense,
    window_positions,
)

TINY = dict(embed_dim=32, depth=2, num_heads=1, mlp_ratio=4.0, patch_size=14, pos_grid=4)


def _images(n=2, size=(60, 130), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size + (3,), dtype=np.uint8) for _ in range(n)]


def _tiny_dinov2_checkpoint(path, seed=0, **over):
    """Random tiny DINOv2-like ViT saved under the official key names (incl. mask_token)."""
    torch.manual_seed(seed)
    cfg = dict(TINY, **over)
    model = build_dinov2(None, None, config=cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, cfg["embed_dim"])
    torch.save(state, path)
    return state


def _norms_ok(f):
    n = np.linalg.norm(f, axis=0)
    return np.allclose(n, 1.0, atol=1e-4)


# --------------------------------------------------------------------------- preprocessing
def test_resized_shape_reference_rule():
    assert resized_shape((1024, 2048), 322) == (322, 644)
    assert resized_shape((1024, 2048), (322, 644)) == (322, 644)
    assert resized_shape((500, 375), 322) == (420, 322)  # 429.33 -> 429 -> floor to 14


def test_resize_and_normalize():
    im = np.full((100, 200, 3), 128, np.uint8)
    r = resize_image(im, (28, 56))
    assert r.shape == (28, 56, 3) and r.dtype == np.uint8 and (r == 128).all()
    t = normalize_image(r)
    assert t.shape == (3, 28, 56)
    assert torch.allclose(t[:, 0, 0], (128 / 255 - torch.tensor(defaults.IMAGENET_MEAN)) / torch.tensor(defaults.IMAGENET_STD))


# --------------------------------------------------------------------------- builtin
def test_builtin_shapes_dtype_norm_and_determinism():
    ext = build_extractor("builtin")
    assert ext.dim == BUILTIN_DIM and not ext.uses_weights and ext.name == "builtin"
    ims = _images(3)
    a = ext.extract(ims)
    b = build_extractor("builtin").extract(ims, batch_size=1)
    assert len(a) == 3
    for fa, fb in zip(a, b):
        assert fa.shape == (BUILTIN_DIM, 23, 46) and fa.dtype == np.float32
        assert _norms_ok(fa)
        np.testing.assert_array_equal(fa, fb)
    assert ext.output_grid((1024, 2048)) == (23, 46)


def test_builtin_input_size_and_bad_images():
    ext = build_extractor("builtin", input_size=(56, 84))
    (f,) = ext.extract(_images(1))
    assert f.shape == (BUILTIN_DIM, 4, 6)
    with pytest.raises(PseudoLabelsError, match="uint8"):
        ext.extract([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(PseudoLabelsError, match="multiple of 14"):
        build_extractor("builtin", input_size=(300, 600))
    with pytest.raises(PseudoLabelsError, match="no --weights"):
        build_extractor("builtin", weights="x.pth")
    with pytest.raises(PseudoLabelsError, match="unknown"):
        build_extractor("resnet50")


def test_builtin_separates_synthetic_classes():
    from pseudo_labels.datasets import synthetic_city as synth
    import cv2

    ext = build_extractor("builtin")
    feats, labels = [], []
    for seed in range(4):
        sc = synth.generate_scene(seed, (256, 512))
        f = ext.extract([sc.image])[0]
        lab = cv2.resize(sc.train_ids, f.shape[:0:-1], interpolation=cv2.INTER_NEAREST)
        feats.append(f.reshape(f.shape[0], -1).T)
        labels.append(lab.ravel())
    tr_f, tr_l = np.concatenate(feats[:2]), np.concatenate(labels[:2])
    te_f, te_l = np.concatenate(feats[2:]), np.concatenate(labels[2:])
    # nearest class centroid (cosine) on held-out images, for the big classes
    classes = [c for c in (0, 2, 8, 10, 13) if (tr_l == c).sum() >= 10 and (te_l == c).sum() >= 10]
    cent = np.stack([tr_f[tr_l == c].mean(0) for c in classes])
    pred = np.array(classes)[(te_f @ cent.T).argmax(1)]
    keep = np.isin(te_l, classes)
    ious = [((te_l[keep] == c) & (pred[keep] == c)).sum() / ((te_l[keep] == c) | (pred[keep] == c)).sum()
            for c in classes]
    assert len(classes) >= 3
    assert np.mean(ious) > 0.5, ious


# --------------------------------------------------------------------------- DINOv2
def test_dinov2_official_keys_round_trip(tmp_path):
    path = tmp_path / "tiny_dinov2.pth"
    state = _tiny_dinov2_checkpoint(path)
    assert {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "blocks.0.norm1.weight",
            "blocks.0.attn.qkv.weight", "blocks.0.ls1.gamma", "blocks.1.mlp.fc1.weight", "norm.weight"} <= set(state)
    assert state["pos_embed"].shape == (1, 1 + 4 * 4, 32)
    model = build_dinov2(path, None)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # at the checkpoint's own grid no position interpolation: equal to timm's forward
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ours = dinov2_patch_tokens(model, x).reshape(2, 16, 32)
        ref = model.forward_features(x)[:, 1:]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_dinov2_extractor_grid_norm_batching(tmp_path):
    path = tmp_path / "tiny.pth"
    _tiny_dinov2_checkpoint(path)
    ext = build_extractor("dinov2", weights=str(path), input_size=(42, 84))
    assert ext.dim == 32 and ext.uses_weights
    ims = _images(3)
    a = ext.extract(ims, batch_size=3)
    b = ext.extract(ims, batch_size=1)
    for fa, fb in zip(a, b):
        assert fa.shape == (32, 3, 6) and fa.dtype == np.float32 and _norms_ok(fa)
        np.testing.assert_allclose(fa, fb, atol=1e-5)


def test_official_pos_embed_interpolation():
    pe = torch.randn(1, 1 + 16, 8)
    assert official_pos_embed(pe, (4, 4)) is pe
    out = official_pos_embed(pe, (3, 6))
    assert out.shape == (1, 1 + 18, 8)
    assert torch.equal(out[:, 0], pe[:, 0])
    const = torch.ones(1, 17, 8)
    torch.testing.assert_close(official_pos_embed(const, (23, 46)), torch.ones(1, 1 + 23 * 46, 8))


def test_dinov2_wrong_files(tmp_path):
    path = tmp_path / "tiny.pth"
    state = _tiny_dinov2_checkpoint(path)
    with pytest.raises(PseudoLabelsError, match=r"tiny\.pth.*embed dim 32.*dinov2_vits14 expects embed dim 384"):
        build_extractor("dinov2_vits14", weights=str(path))
    with pytest.raises(PseudoLabelsError, match=r"nope\.pth.*not found"):
        build_extractor("dinov2_vitb14", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(PseudoLabelsError, match="needs --weights"):
        build_extractor("dinov2_vitb14")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(PseudoLabelsError, match=r"junk\.pth.*not a readable PyTorch checkpoint"):
        build_extractor("dinov2", weights=str(junk))
    broken = dict(state)
    del broken["blocks.1.attn.qkv.weight"]
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(PseudoLabelsError, match=r"broken\.pth.*missing keys.*blocks\.1\.attn\.qkv\.weight.*unexpected"):
        build_extractor("dinov2", weights=str(tmp_path / "broken.pth"))
    torch.save({"foo": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(PseudoLabelsError, match=r"other\.pth.*not a DINOv2"):
        build_extractor("dinov2_vitb14", weights=str(tmp_path / "other.pth"))


def test_device_errors():
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(PseudoLabelsError, match="choose cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(PseudoLabelsError, match="CUDA is not available"):
            build_extractor("builtin", device="cuda")


# --------------------------------------------------------------------------- sliding windows
def test_window_positions_reference_layout():
    assert window_positions(644) == [0, 161, 322]
    assert window_positions(322) == [0]
    assert window_positions(300) == [0]
    assert window_positions(700) == [0, 161, 322, 378]
    assert window_positions(56, 28, 14) == [0, 14, 28]


def test_sliding_window_dense_positions_coverage_averaging():
    crop, stride, h, w = 28, 14, 28, 70
    xs = window_positions(w, crop, stride)  # [0, 14, 28, 42]
    img = torch.zeros(1, 3, h, w)
    img[0, 0] = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    seen = []

    def crop_fn(c):  # each crop -> its left-column x value, constant over a 2x2 grid
        seen.append(c.shape)
        return c[:, :1, :1, :1].expand(-1, 1, 2, 2)

    out = sliding_window_dense(img, crop_fn, 1, crop=crop, stride=stride, flip=True)[0, 0].numpy()
    # flipped crop reports its right edge: average = window start + (crop - 1) / 2
    expect = np.zeros(w)
    cnt = np.zeros(w)
    for x in xs:
        expect[x:x + crop] += x + (crop - 1) / 2
        cnt[x:x + crop] += 1
    assert (cnt > 0).all()
    np.testing.assert_allclose(out, np.broadcast_to(expect / cnt, (h, w)), atol=1e-4)
    assert sum(s[0] for s in seen) == 2 * len(xs)  # every window and its flip, once


def test_sliding_window_dense_bilinear_upsampling_no_flip():
    img = torch.zeros(2, 3, 28, 28)
    grid = torch.arange(4, dtype=torch.float32).reshape(1, 1, 2, 2)
    out = sliding_window_dense(img, lambda c: grid.expand(c.shape[0], 1, 2, 2), 1, crop=28, stride=14, flip=False)
    ref = torch.nn.functional.interpolate(grid, size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref.expand(2, 1, 28, 28))


def test_sliding_window_pads_small_images():
    img = torch.rand(1, 3, 20, 40)
    out = sliding_window_dense(img, lambda c: c[:, :2, ::14, ::14], 2, crop=28, stride=14)
    assert out.shape == (1, 2, 20, 40)


# --------------------------------------------------------------------------- CAUSE head
def _tiny_cause(tmp_path, dim=32):
    from refs.cause import SegmentTR

    torch.manual_seed(1)
    head = SegmentTR(dim=dim, reduced_dim=90, num_queries=4, projection_dim=16, n_classes=27, hidden_dim=64)
    folder = tmp_path / "CAUSE" / "cityscapes" / "dinov2_vit_tiny_14" / "2048"
    folder.mkdir(parents=True)
    torch.save(head.state_dict(), folder / "segment_tr.pth")
    cb_dir = tmp_path / "CAUSE" / "cityscapes" / "modularity" / "dinov2_vit_tiny_14" / "2048"
    cb_dir.mkdir(parents=True)
    np.save(cb_dir / "modular.npy", np.random.default_rng(0).standard_normal((8, dim)).astype(np.float32))
    return head, folder / "segment_tr.pth", cb_dir / "modular.npy"


def test_segment_tr_official_key_names():
    from refs.cause import SegmentTR

    keys = set(SegmentTR().state_dict())
    for k in ("head.query_pos", "head_ema.query_pos", "head_ema.tr.self_attn.in_proj_weight",
              "head_ema.tr.multihead_attn.out_proj.bias", "head_ema.tr.linear1.weight", "head_ema.tr.norm3.bias",
              "head_ema.tr.f1.weight", "head_ema.tr.f2.0.weight", "head_ema.tr.f2.2.bias",
              "projection_head.f.weight", "projection_head_ema.f.bias", "linear.f.weight"):
        assert k in keys, k
    assert not any("codebook" in k for k in keys)  # CAUSE keeps it outside segment_tr.pth
    sd = SegmentTR().state_dict()
    assert sd["head_ema.query_pos"].shape == (529, 768) and sd["head_ema.tr.f1.weight"].shape == (90, 768, 1, 1)


def test_cause_head_round_trip_and_codebook_lookup(tmp_path):
    from pseudo_labels.stages.semantic.cause import build_segment_tr

    head, path, cb_path = _tiny_cause(tmp_path)
    loaded = build_segment_tr(path, dim=32)
    for k, v in head.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    np.testing.assert_array_equal(loaded.head_ema.codebook.numpy(), np.load(cb_path))
    tokens = torch.randn(2, 4, 32)
    with torch.no_grad():
        out = loaded.forward_ema(tokens)
    assert out.shape == (2, 90, 2, 2)
    cb_path.unlink()
    with pytest.raises(PseudoLabelsError, match=r"segment_tr\.pth.*no modularity codebook"):
        build_segment_tr(path, dim=32)
    with pytest.raises(PseudoLabelsError, match="384-d|expects 32-d"):
        np.save(path.parent / "modular.npy", np.zeros((8, 32), np.float32))
        build_segment_tr(path, dim=384)


def test_cause_extractor_dense_output(tmp_path):
    wpath = tmp_path / "tiny_vit.pth"
    _tiny_dinov2_checkpoint(wpath, pos_grid=2)
    _, head_path, _ = _tiny_cause(tmp_path)
    ext = build_extractor("dinov2", weights=str(wpath), head="cause", head_weights=str(head_path),
                          input_size=(28, 56))
    assert ext.dim == 90 and ext.dense and ext.crop == 28
    feats = ext.extract(_images(2, (40, 80)), batch_size=2)
    f1 = ext.extract(_images(2, (40, 80)), batch_size=1)
    for f, g in zip(feats, f1):
        assert f.shape == (90, 28, 56) and f.dtype == np.float32 and _norms_ok(f)
        np.testing.assert_allclose(f, g, atol=1e-4)
    with pytest.raises(PseudoLabelsError, match="needs a DINOv2 backbone"):
        build_extractor("builtin", head="cause")
    with pytest.raises(PseudoLabelsError, match="--head-weights"):
        build_extractor("dinov2", weights=str(wpath), head="cause")


# --------------------------------------------------------------------------- storage
def test_save_load_features(tmp_path):
    f = build_extractor("builtin", input_size=(28, 42)).extract(_images(1))[0]
    p = tmp_path / "val" / "city" / "x.npy"
    save_features(p, f)
    raw = np.load(p)
    assert raw.dtype == np.float16 and raw.shape == f.shape
    back = load_features(p)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, f, atol=1e-3)
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(PseudoLabelsError, match="bad.npy"):
        load_features(tmp_path / "bad.npy")


def test_load_features_memory_mapped(tmp_path):
    f = build_extractor("builtin", input_size=(28, 42)).extract(_images(1))[0]
    p = tmp_path / "x.npy"
    save_features(p, f)
    m = load_features(p, mmap=True)
    assert isinstance(m, np.memmap) and m.dtype == np.float16 and m.shape == f.shape
    np.testing.assert_array_equal(np.asarray(m, np.float32), load_features(p))
    (tmp_path / "trunc.npy").write_bytes(p.read_bytes()[:100])
    with pytest.raises(PseudoLabelsError, match="trunc.npy"):
        load_features(tmp_path / "trunc.npy", mmap=True)
    with pytest.raises(PseudoLabelsError, match="not found"):
        load_features(tmp_path / "missing.npy", mmap=True)


def test_extract_features_folder_library_call(synth_city, tmp_path):
    """The folder stage as a library call: config in, summary out (what extract-features prints)."""
    from pseudo_labels.core.io import read_manifest
    from pseudo_labels.core.runner import RunOptions
    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.semantic.features import FeatureConfig, extract_features_folder

    out = tmp_path / "f"
    cfg = FeatureConfig(str(synth_city), str(out), input_size=[28, 56], batch_size=2)  # a list, as from a file
    assert cfg.input_size == (28, 56)
    summary = extract_features_folder(cfg, RunOptions(shard=(0, 2)))
    assert (summary.done, summary.skipped, summary.failed) == (2, 0, [])
    assert summary.line().startswith("extract-features (shard 0/2): 2 computed, 0 skipped (already done), 0 failed")
    assert summary.line().endswith(f"-> {out}")
    assert sorted(p.stem for p in out.rglob("*.npy")) == [e.stem for e in list_images(synth_city, "val")][0::2]
    m = read_manifest(out)
    assert m["parameters"]["input_size"] == [28, 56] and m["features"]["grid"] == [2, 4]
    again = extract_features_folder(cfg, RunOptions(shard=(0, 2)))
    assert (again.done, again.skipped) == (0, 2) and "img/s" not in again.line()


def test_input_size_values():
    from pseudo_labels.stages.semantic.features import input_size_of

    assert input_size_of([322]) == 322 and input_size_of([28, 56]) == (28, 56)
    with pytest.raises(PseudoLabelsError, match="give H W"):
        input_size_of([1, 2, 3])
