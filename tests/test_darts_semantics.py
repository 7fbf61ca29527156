"""Pseudo-labels from DARTS / per-modality features (pseudo_labels.stages.rgbt.darts_semantics, command
generate-darts-semantics)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.io import read_manifest, read_png
from pseudo_labels.core.runner import RunOptions
from pseudo_labels.datasets import mfnet
from pseudo_labels.stages.rgbt import darts
from pseudo_labels.stages.rgbt.darts_semantics import (DartsSemanticsConfig, fit_cluster_probe,
                                                       generate_darts_semantics, probe_clusters, probe_loss,
                                                       source_vectors)
from pseudo_labels.stages.rgbt.features import RGBTFeatureConfig, extract_rgbt_features
from tests.rgbt_fixtures import small_darts_run

SIZE = (64, 128)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return small_darts_run(tmp_path_factory.mktemp("darts_sem"))


def _cfg(setup, out, **kw):
    base = dict(data_root=str(setup / "data"), out=str(out), features=str(setup / "feats"), split="test",
                source="concat", protocol="on-split")
    return DartsSemanticsConfig(**{**base, **kw})


def test_concat_hungarian_writes_everything_and_scores(setup, tmp_path):
    res = generate_darts_semantics(_cfg(setup, tmp_path))
    assert res.k == 9 and res.computed == 4 and res.uses_ground_truth
    rec = mfnet.list_images(setup / "data", "test")[0]
    clusters = read_png(tmp_path / "clusters" / "test" / f"{rec.stem}.png")
    labels = read_png(tmp_path / "labels" / "test" / f"{rec.stem}.png")
    assert clusters.shape == labels.shape == SIZE and clusters.max() < 9
    scores = json.loads((tmp_path / "scores.json").read_text())["scores"]
    assert set(scores) == {"hungarian", "majority"} and set(scores["hungarian"]["groups"]) == {"day", "night"}
    assert scores["hungarian"]["images"] == {"overall": 4, "day": 2, "night": 2}
    assert 0 <= scores["hungarian"]["overall"]["mIoU"] <= 100
    man = read_manifest(tmp_path)
    assert man["uses_ground_truth"] is True and "hungarian" in man["ground_truth_use"]["mapping"]
    again = generate_darts_semantics(_cfg(setup, tmp_path))
    assert again.reused == 4 and again.computed == 0


def test_label_free_mapping_and_sources(setup, tmp_path):
    res = generate_darts_semantics(_cfg(setup, tmp_path, mapping="none", k=5, evaluate=False, source="thermal"))
    assert not res.uses_ground_truth and res.scores is None and not (tmp_path / "labels").exists()
    assert read_manifest(tmp_path)["uses_ground_truth"] is False
    _, f_r, f_t = darts.load_split_features(str(setup / "data"), "mfnet", "test", str(setup / "feats"))
    v = source_vectors(_cfg(setup, tmp_path), f_r, f_t)
    assert v.shape[1] == 74 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    d = source_vectors(_cfg(setup, tmp_path, source="darts", run=str(setup / "run")), f_r, f_t)
    assert d.shape[1] == 8
    with pytest.raises(PseudoLabelsError, match="needs --run"):
        source_vectors(_cfg(setup, tmp_path, source="darts"), f_r, f_t)


def test_shards_then_mapping_when_all_done(setup, tmp_path):
    cfg = _cfg(setup, tmp_path, source="darts", run=str(setup / "run"), features=None, mapping="majority", k=12)
    first = generate_darts_semantics(cfg, RunOptions(shard=(0, 2)))
    assert not first.finished and first.scores is None and not (tmp_path / "labels").exists()
    second = generate_darts_semantics(cfg, RunOptions(shard=(1, 2)))
    assert second.finished and second.computed == 2 and second.scores is not None
    assert len(list((tmp_path / "labels" / "test").glob("*.png"))) == 4


def test_centroids_reload_gives_same_clusters(setup, tmp_path):
    generate_darts_semantics(_cfg(setup, tmp_path / "a", mapping="none"))
    generate_darts_semantics(_cfg(setup, tmp_path / "b", mapping="none",
                                  load_centroids=str(tmp_path / "a" / "kmeans_centroids.npz")))
    for p in (tmp_path / "a" / "clusters" / "test").glob("*.png"):
        assert np.array_equal(read_png(p), read_png(tmp_path / "b" / "clusters" / "test" / p.name))
    with pytest.raises(PseudoLabelsError, match="centroids of dimension 74"):
        generate_darts_semantics(_cfg(setup, tmp_path / "c", source="rgb",
                                      load_centroids=str(tmp_path / "a" / "kmeans_centroids.npz")))


def test_pst900_layout_end_to_end(tmp_path):
    import cv2

    from pseudo_labels.datasets.synthetic_rgbt import generate_rgbt_scene

    for i in range(3):
        s = generate_rgbt_scene((5, i), SIZE, night=bool(i % 2))
        base = tmp_path / "data" / "train"
        for sub, arr in (("rgb", s.rgb[:, :, ::-1]), ("thermal", s.thermal), ("labels", np.minimum(s.label, 4))):
            (base / sub).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(base / sub / f"{i:02d}.png"), np.ascontiguousarray(arr))
    extract_rgbt_features(RGBTFeatureConfig(data_root=str(tmp_path / "data"), out=str(tmp_path / "f"), dataset="pst900",
                                            input_size=(56, 112)))
    darts.train_darts(darts.DartsTrainConfig(data_root=str(tmp_path / "data"), features=str(tmp_path / "f"),
                                             out=str(tmp_path / "run"), dataset="pst900", steps=2, batch_size=2,
                                             knn=1, width=16, code_dim=8, progress=False, threads=1))
    res = generate_darts_semantics(DartsSemanticsConfig(data_root=str(tmp_path / "data"), out=str(tmp_path / "o"),
                                                        dataset="pst900", split="train", run=str(tmp_path / "run")))
    assert res.k == 5 and res.computed == 3
    assert res.scores["hungarian"]["classes"][0] == "background" and res.scores["hungarian"]["groups"] == {}


def test_probe_loss_is_minus_the_mean_best_cosine():
    """DARTS ClusterLookup (alpha None): -(onehot(argmax) * inner).sum(1).mean() = -mean_pixels max_k cos."""
    import torch

    rng = np.random.default_rng(0)
    x, c = rng.standard_normal((2, 5, 3, 4)), rng.standard_normal((4, 5))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    want = -np.einsum("bdhw,kd->bkhw", xn, cn).max(axis=1).mean()
    got = probe_loss(torch.from_numpy(x).float(), torch.from_numpy(c).float())
    assert float(got) == pytest.approx(float(want), abs=1e-6)


def test_cluster_probe_finds_separated_clusters_and_applies_without_crf():
    rng = np.random.default_rng(1)
    centres = np.eye(3, 6, dtype=np.float32) * 5
    truth = rng.integers(0, 3, (6, 4, 5))
    vectors = centres[truth].transpose(0, 3, 1, 2) + 0.3 * rng.standard_normal((6, 6, 4, 5)).astype(np.float32)
    probe = fit_cluster_probe(vectors, 3, steps=300, batch=4, seed=0)
    assert probe.shape == (3, 6) and np.allclose(np.linalg.norm(probe, axis=1), 1.0, atol=1e-5)
    got = probe_clusters(vectors[0], probe, (4, 5))
    lut = {}
    for t, g in zip(truth[0].ravel(), got.ravel()):
        lut.setdefault(int(t), set()).add(int(g))
    assert all(len(v) == 1 for v in lut.values()) and len({next(iter(v)) for v in lut.values()}) == len(lut)
    big = probe_clusters(vectors[0], probe, (8, 10))  # bilinear upsampling of the vectors
    assert big.shape == (8, 10) and big.dtype == np.int32
    assert np.array_equal(fit_cluster_probe(vectors, 3, 20, 4, 5), fit_cluster_probe(vectors, 3, 20, 4, 5))


def test_official_protocol_fits_the_probe_on_the_train_split(setup, tmp_path):
    cfg = _cfg(setup, tmp_path, protocol="official", train_split="test", probe_steps=20, source="darts",
               run=str(setup / "run"), features=None)
    res = generate_darts_semantics(cfg)
    assert res.computed == 4 and "probe" in res.seconds
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["protocol"] == "official" and saved["miou_convention"] == "stego"
    overall = saved["scores"]["hungarian"]["overall"]
    assert overall["convention"] == "stego" and overall["mIoU"] == overall["mIoU_stego"]
    assert overall["mIoU_all_classes"] <= overall["mIoU_stego"]
    assert read_manifest(tmp_path)["parameters"]["crf"] is True
    no_crf = generate_darts_semantics(_cfg(setup, tmp_path / "n", protocol="official", train_split="test",
                                           probe_steps=20, crf=False, miou_convention="present"))
    assert no_crf.scores["hungarian"]["overall"]["convention"] == "present"
    with pytest.raises(PseudoLabelsError, match="protocol"):
        generate_darts_semantics(_cfg(setup, tmp_path / "x", protocol="probe"))
