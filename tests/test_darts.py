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
    head = darts.build_head(darts.DartsModelConfig(dim_rgb=5, dim_thermal=7, width=16, heads=2, code_dim=6,
                                                   input_dropout=0.0)).eval()
    a, b = torch.randn(2, 5, 3, 4), torch.randn(2, 7, 3, 4)
    code = head(a, b)
    assert code.shape == (2, 6, 3, 4)
    xs = [head.proj[m](f.flatten(2).transpose(1, 2)) + head.modality_embed[m] for m, f in enumerate((a, b))]
    xs2 = [xs[0], xs[1] + 1.0]
    out1, out2 = head.block(xs), head.block(xs2)
    assert not torch.allclose(out1[0], out2[0])  # RGB tokens see the thermal tokens (cross-attention)
    with pytest.raises(PseudoLabelsError, match="grid"):
        head(a, torch.randn(2, 7, 3, 5))


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


def test_target_correlation_is_row_centred_and_standardised():
    g = torch.Generator().manual_seed(1)
    fx, fy = torch.randn(2, 8, 10, generator=g), torch.randn(2, 8, 10, generator=g)
    fd = darts.target_correlation(fx, fy)
    assert torch.allclose(fd.mean(dim=2), torch.zeros(2, 10), atol=1e-5)
    assert float(fd.std()) == pytest.approx(1.0, abs=1e-4)
    raw = darts.target_correlation(fx, fy, standardize=False)
    assert float(raw.abs().max()) <= 2.0


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
    def train(out, seed):
        cfg = darts.DartsTrainConfig(data_root=str(feats_root / "data"), features=str(feats_root / "feats"),
                                     out=str(out), steps=4, batch_size=3, knn=2, seed=seed, width=16, heads=2,
                                     code_dim=8, log_every=2, progress=False, threads=1)
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
    assert s["images"] == 4 and s["grid"] == [4, 8]
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
