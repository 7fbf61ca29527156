"""DARTS fusion head, correlation losses and training (pseudo_labels.stages.rgbt.darts, command train-darts)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.io import read_manifest
from pseudo_labels.datasets.synthetic_rgbt import write_synthetic_rgbt
from pseudo_labels.stages.rgbt import darts
from pseudo_labels.stages.rgbt.features import RGBTFeatureConfig, extract_rgbt_features


@pytest.fixture(scope="module")
def feats_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("darts")
    write_synthetic_rgbt(root / "data", 4, seed=0, size=(64, 128), split="train")
    extract_rgbt_features(RGBTFeatureConfig(data_root=str(root / "data"), out=str(root / "feats"), input_size=(56, 112)))
    return root


def test_head_shapes_and_cross_attention_mixes_modalities():
    torch.manual_seed(0)
    head = darts.build_head(darts.model_preset("ours", 5, 7, width=16, code_dim=6, input_dropout=0.0)).eval()
    a, b = torch.randn(2, 5, 3, 4), torch.randn(2, 7, 3, 4)
    code = head(a, b)
    assert code.shape == (2, 6, 3, 4)
    xs = [head.proj[m](f.flatten(2).transpose(1, 2)) + head.modality_embed[m] for m, f in enumerate((a, b))]
    xs2 = [xs[0], xs[1] + 1.0]
    out1, out2 = head.block(xs), head.block(xs2)
    assert not torch.allclose(out1[0], out2[0])  # RGB tokens see the thermal tokens (cross-attention)
    with pytest.raises(PseudoLabelsError, match="grid"):
        head(a, torch.randn(2, 7, 3, 5))


def test_official_head_layout():
    """Backbone width, per-channel modality weights, linear + non-linear heads to a 100-d code."""
    torch.manual_seed(0)
    cfg = darts.model_preset("official", 12, 12)
    assert (cfg.resolved_width, cfg.resolved_heads, cfg.code_dim, cfg.mlp_ratio) == (12, 6, 100, 4.0)
    head = darts.build_head(cfg).eval()
    assert isinstance(head.proj[0], torch.nn.Identity) and head.alpha.shape == (2, 12)
    a, b = torch.randn(2, 12, 3, 4), torch.randn(2, 12, 3, 4)
    xs = head.block([head.proj[m](f.flatten(2).transpose(1, 2)) + head.modality_embed[m] for m, f in enumerate((a, b))])
    fused = head.alpha[0] * xs[0] + head.alpha[1] * xs[1]
    want = head.linear(fused) + head.nonlinear(fused)
    assert torch.allclose(head(a, b), want.transpose(1, 2).reshape(2, 100, 3, 4), atol=1e-6)
    assert darts.model_preset("official", 37, 37).resolved_heads == 1
    old = darts.DartsModelConfig.from_dict({"dim_rgb": 5, "dim_thermal": 7, "width": 16, "heads": 2, "code_dim": 8})
    assert old.fusion == "concat-linear" and not old.nonlinear_head


def test_correlation_term_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    cx, cy = torch.randn(1, 3, 4, generator=g), torch.randn(1, 3, 4, generator=g)
    fd = torch.randn(1, 4, 4, generator=g)
    nx, ny = cx[0] / cx[0].norm(dim=0), cy[0] / cy[0].norm(dim=0)
    cd = (nx.T @ ny).clamp(min=0)
    want = -(cd * (fd[0] - 0.3)).mean()
    assert float(darts.correlation_term(fd, cx, cy, 0.3)) == pytest.approx(float(want), abs=1e-6)
    w = torch.tensor([0.5])
    assert float(darts.correlation_term(fd, cx, cy, 0.3, weights=w)) == pytest.approx(0.5 * float(want), abs=1e-6)
    stab = -((nx.T @ ny).clamp(0, 0.8) * (fd[0] - 0.3)).mean()
    assert float(darts.correlation_term(fd, cx, cy, 0.3, stabilize=True)) == pytest.approx(float(stab), abs=1e-6)


def test_target_normalisations():
    g = torch.Generator().manual_seed(1)
    fx, fy = torch.randn(2, 8, 10, generator=g), torch.randn(2, 8, 10, generator=g)
    ours = darts.target_correlation(fx, fy, "row-centred-standardised")
    assert torch.allclose(ours.mean(dim=2), torch.zeros(2, 10), atol=1e-5)
    assert float(ours.std()) == pytest.approx(1.0, abs=1e-4)
    raw = darts.target_correlation(fx, fy)  # the release (pointwise: False): plain cosines
    nx, ny = fx / fx.norm(dim=1, keepdim=True), fy / fy.norm(dim=1, keepdim=True)
    assert torch.allclose(raw, nx.transpose(1, 2) @ ny, atol=1e-6)
    stego = darts.target_correlation(fx, fy, "stego-pointwise")
    assert float(stego.mean()) == pytest.approx(float(raw.mean()), abs=1e-6)
    assert torch.allclose(stego - stego.mean(dim=2, keepdim=True), raw - raw.mean(dim=2, keepdim=True), atol=1e-6)


def _reference_loss(a, p, negs, cfg_blocks, multipliers):
    """The released DARTS loss written out from the paper / train_config.yml facts in plain numpy:
    per term (rgb, thermal, cross = mean of the two modalities' features) and pair, the mean of
    -max(cos(code_x, code_y), 0) * (cos(F_x, F_y) - shift); negatives averaged; weighted sum of
    the three pairs per term, terms multiplied by 1 / 0.4 / 0.5. No centring of the target."""
    def cos(x, y):  # (D, S) x (D, S) -> (S, S)
        x = x / np.linalg.norm(x, axis=0, keepdims=True)
        y = y / np.linalg.norm(y, axis=0, keepdims=True)
        return x.T @ y

    def pair_loss(fx, fy, cx, cy, shift):
        vals = [np.mean(-np.maximum(cos(cx[b], cy[b]), 0.0) * (cos(fx[b], fy[b]) - shift)) for b in range(len(fx))]
        return float(np.mean(vals))

    signal = {"rgb": lambda t: t[0], "thermal": lambda t: t[1], "cross": lambda t: (t[0] + t[1]) / 2}
    total = 0.0
    for term, (wi, wp, wn, si, sp, sn) in cfg_blocks.items():
        s = signal[term]
        intra = pair_loss(s(a), s(a), a[2], a[2], si)
        inter = pair_loss(s(a), s(p), a[2], p[2], sp)
        neg = np.mean([pair_loss(s(a), s(n), a[2], n[2], sn) for n in negs[term]])
        total += multipliers[term] * (wi * intra + wp * inter + wn * neg)
    return total


def test_official_loss_equals_an_independent_computation():
    """Compared with smeenapadnekar/DARTS@5b5edcf (modules.ContrastiveCorrelationLoss, the MFNET block)."""
    rng = np.random.default_rng(7)
    B, D, K, S = 3, 6, 4, 9
    triple = lambda: tuple(rng.standard_normal((B, n, S)).astype(np.float32) for n in (D, D, K))  # noqa: E731
    a, p = triple(), triple()
    negs = {t: [triple() for _ in range(5)] for t in darts.TERMS}
    cfg = darts.DartsLossConfig()
    assert cfg == darts.loss_preset("mfnet") and cfg.neg_samples == 5 and cfg.normalisation == "none"
    t = lambda x: tuple(torch.from_numpy(v) for v in x)  # noqa: E731
    loss, parts = darts.darts_loss({"anchor": t(a), "pos": t(p), "neg": {k: [t(n) for n in v] for k, v in negs.items()}},
                                   cfg)
    blocks = {"rgb": (1.0, 0.577453483136995, 0.9058762625226623, 0.46, 0.18, 0.21),
              "thermal": (1.0, 1.0, 1.0, 0.36, 0.18, 0.31),
              "cross": (0.5, 0.0, 0.0, 0.51, 0.21, 0.41)}
    want = _reference_loss(a, p, negs, blocks, {"rgb": 1.0, "thermal": 0.4, "cross": 0.5})
    assert float(loss) == pytest.approx(want, abs=1e-6)
    kp = darts.loss_preset("kp")
    loss_kp, _ = darts.darts_loss({"anchor": t(a), "pos": t(p), "neg": {k: [t(n) for n in v] for k, v in negs.items()}},
                                  kp)
    blocks_kp = {"rgb": (1.0, 1.0, 0.9, 0.46, 0.28, 0.41),
                 "thermal": (1.0, 0.577453483136995, 0.9058762625226623, 0.46, 0.18, 0.31),
                 "cross": (0.5, 0.0, 0.5, 0.51, 0.31, 0.41)}
    assert float(loss_kp) == pytest.approx(_reference_loss(a, p, negs, blocks_kp,
                                                           {"rgb": 1.0, "thermal": 0.4, "cross": 0.5}), abs=1e-6)
    assert set(parts) == {f"{m}_{q}" for m in darts.TERMS for q in darts.PAIRS}


def test_ours_preset_keeps_the_earlier_loss():
    g = torch.Generator().manual_seed(3)
    B, D, K, S = 2, 5, 3, 7
    trip = lambda: tuple(torch.randn(B, n, S, generator=g) for n in (D, D, K))  # noqa: E731
    a, p, n = trip(), trip(), trip()
    cfg = darts.loss_preset("ours")
    loss, _ = darts.darts_loss({"anchor": a, "pos": p, "neg": {t: [n] for t in darts.TERMS}}, cfg)
    tc = lambda x, y: darts.target_correlation(x, y, "row-centred-standardised")  # noqa: E731
    want = 0.0
    for other, (w, sh) in zip((a, p, n), ((0.46, 0.25), (0.18, 0.20), (0.72, 0.25))):
        for fd in (tc(a[0], other[0]), tc(a[1], other[1]), (tc(a[0], other[1]) + tc(a[1], other[0])) / 2):
            want += w * float(darts.correlation_term(fd, a[2], other[2], sh))
    assert float(loss) == pytest.approx(want, abs=1e-6)


def test_rgb_reliability_high_when_modalities_agree():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(1, 6, 30, generator=g)
    other = torch.randn(1, 6, 30, generator=g)
    assert float(darts.rgb_reliability(f, f)[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(darts.rgb_reliability(f, other)[0]) < 0.3


def test_knn_excludes_self_and_orders_by_similarity():
    pooled = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    nn = darts.knn_neighbours(pooled, 2)
    assert nn.shape == (4, 2) and nn[0, 0] == 1 and nn[2, 0] == 3
    assert all(i not in row for i, row in enumerate(nn))
    assert darts.knn_neighbours(pooled, 10).shape == (4, 3)
    with pytest.raises(PseudoLabelsError, match="knn-modality"):
        darts.pooled_features(np.zeros((2, 3, 1, 1)), np.zeros((2, 3, 1, 1)), "depth")


def test_training_is_seeded_and_writes_the_run(feats_root, tmp_path):
    def train(out, seed, variant="official"):
        cfg = darts.DartsTrainConfig(data_root=str(feats_root / "data"), features=str(feats_root / "feats"),
                                     out=str(out), steps=4, batch_size=3, knn=2, seed=seed, width=16, heads=2,
                                     code_dim=8, log_every=2, progress=False, threads=1, variant=variant)
        return darts.train_darts(cfg)

    s = train(tmp_path / "a", 0)
    train(tmp_path / "b", 0)
    train(tmp_path / "c", 1)
    state = lambda p: torch.load(p / darts.CHECKPOINT_NAME, weights_only=True)  # noqa: E731
    a, b, c = state(tmp_path / "a"), state(tmp_path / "b"), state(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    log = darts.loss_log(tmp_path / "a")
    assert [r["step"] for r in log] == [1, 2, 4] and {"rgb_pos_intra", "thermal_neg_inter", "cross_pos_inter"} <= set(log[0])
    assert s["images"] == 4 and s["grid"] == [4, 8] and s["variant"] == "official"
    train(tmp_path / "d", 0, "ours")
    assert darts.load_darts_run(tmp_path / "d")[1]["train"]["loss"]["normalisation"] == "row-centred-standardised"
    assert read_manifest(tmp_path / "a")["uses_ground_truth"] is False
    head, info = darts.load_darts_run(tmp_path / "a")
    assert info["model"]["code_dim"] == 8
    codes = darts.fused_codes(head, np.ones((2, 37, 4, 8), np.float16), np.ones((2, 37, 4, 8), np.float16))
    assert codes.shape == (2, 8, 4, 8) and np.allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-5)


def test_training_errors(feats_root, tmp_path):
    base = dict(data_root=str(feats_root / "data"), features=str(feats_root / "feats"), out=str(tmp_path / "r"),
                progress=False)
    with pytest.raises(PseudoLabelsError, match="batch-size >= 2"):
        darts.train_darts(darts.DartsTrainConfig(batch_size=1, **base))
    with pytest.raises(InputFileError, match="file not found"):
        darts.train_darts(darts.DartsTrainConfig(**{**base, "features": str(tmp_path / "none")}))
    with pytest.raises(InputFileError, match="darts_config.json: not found"):
        darts.load_darts_run(tmp_path / "missing")
