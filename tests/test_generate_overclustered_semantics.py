"""generate-overclustered-semantics end to end on the synthetic city (builtin backbone)."""

import json
import shutil

import numpy as np
import pytest

from pseudo_labels.cli import main
from pseudo_labels.stages.semantic.features import BUILTIN_DIM
from pseudo_labels.core.io import read_png


@pytest.fixture(scope="module")
def feats_city(synth_city, tmp_path_factory):
    """A writable copy of synth_city with builtin features precomputed under features/."""
    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.semantic.features import build_extractor, save_features
    from pseudo_labels.core.io import read_image_rgb

    root = tmp_path_factory.mktemp("ocs") / "city"
    shutil.copytree(synth_city, root)
    ex = build_extractor("builtin")
    entries = list_images(root, "val")
    for e, f in zip(entries, ex.extract([read_image_rgb(e.image_path) for e in entries])):
        save_features(root / "features" / e.relative(".npy"), f)
    return root


def cli(root, *extra):
    return main(["generate-overclustered-semantics", "--cityscapes-root", str(root), "--split", "val", *extra])


def manifest(path):
    return json.loads(path.read_text())


def test_end_to_end_builtin_majority(synth_city, tmp_path):
    root = tmp_path / "city"
    shutil.copytree(synth_city, root)
    assert main(["generate-overclustered-semantics", "--cityscapes_root", str(root), "--split", "val",
                 "--k", "19", "--output_subdir", "sem", "--backbone", "builtin", "--skip_crf"]) == 0
    out = root / "sem"
    pngs = sorted((out / "val").rglob("*.png"))
    assert len(pngs) == 3 and all(p.parent.parent.name == "val" for p in pngs)
    sem = read_png(pngs[0])
    assert sem.dtype == np.uint8 and sem.shape == (256, 512) and set(np.unique(sem)) <= set(range(19)) | {255}
    m = manifest(out / "val" / "manifest.json")
    assert m["uses_ground_truth"] is True and "majority" in m["ground_truth_use"]["mapping"]
    assert m["counts"]["written"] == 3 and m["run"]["crf"] == "none"
    npz = np.load(out / "kmeans_centroids.npz")
    assert npz["centroids"].shape == (19, BUILTIN_DIM) and npz["cluster_to_class"].shape == (19,)
    miou = manifest(out / "val" / "miou.json")
    assert 0 < miou["mIoU"] <= 100 and "ground truth" in miou["ground_truth"]
    assert sorted((out / ".raw_clusters" / "val").rglob("*.png"))


def test_mapping_none_is_label_free_and_resume(feats_city, capsys):
    args = ["--k", "12", "--output-subdir", "none12", "--features-dir", str(feats_city / "features"),
            "--mapping", "none"]
    assert cli(feats_city, *args) == 0
    out = feats_city / "none12"
    m = manifest(out / "val" / "manifest.json")
    assert m["uses_ground_truth"] is False and m["ground_truth_use"] == {}
    assert "uses ground truth: no" in capsys.readouterr().out
    raw = read_png(next((out / "val").rglob("*.png")))
    assert raw.dtype == np.uint8 and raw.max() < 12
    # rerun with the same parameters: nothing recomputed
    assert cli(feats_city, *args) == 0
    assert manifest(out / "val" / "manifest.json")["counts"]["reused"] == 3
    # different parameters: refused, unless --overwrite
    assert cli(feats_city, *args[:-1], "majority") == 2
    assert "different parameters" in capsys.readouterr().err
    assert cli(feats_city, *args[:-1], "majority", "--overwrite") == 0
    assert manifest(out / "val" / "manifest.json")["uses_ground_truth"] is True


def test_raw_clusters_uint16_for_k_over_255(feats_city):
    assert cli(feats_city, "--k", "300", "--raw-clusters", "--features-dir", str(feats_city / "features"),
               "--upsample", "labels") == 0
    out = feats_city / "pseudo_semantic_raw_k300"
    raw = read_png(next((out / "val").rglob("*.png")))
    assert raw.dtype == np.uint16 and raw.max() < 300 and raw.shape == (256, 512)
    stats = manifest(out / "val" / "stats.json")
    assert stats["num_output_classes"] == 300 and stats["raw_clusters"] is True


def test_load_centroids_other_split_no_refit(synth_city_train_val, tmp_path):
    root = tmp_path / "tv"
    shutil.copytree(synth_city_train_val, root)
    base = ["generate-overclustered-semantics", "--cityscapes-root", str(root), "--k", "15", "--raw-clusters"]
    assert main([*base, "--split", "val"]) == 0
    npz = root / "pseudo_semantic_raw_k15" / "kmeans_centroids.npz"
    before = npz.read_bytes()
    assert main([*base, "--split", "train", "--load_centroids", str(npz)]) == 0
    assert npz.read_bytes() == before  # not refitted, not rewritten
    assert len(list((root / "pseudo_semantic_raw_k15" / "train").rglob("*.png"))) == 4
    m = manifest(root / "pseudo_semantic_raw_k15" / "train" / "manifest.json")
    assert "loaded from" in m["ground_truth_use"]["mapping"] and m["fit_metadata"]["fit_split"] == "val"


def test_dim_mismatch_names_file_and_writes_nothing(feats_city, tmp_path, capsys):
    from pseudo_labels.stages.semantic.clustering import l2_normalize, save_centroids

    bad = tmp_path / "c.npz"
    save_centroids(bad, l2_normalize(np.random.default_rng(0).standard_normal((5, 7)), axis=1))
    assert cli(feats_city, "--load-centroids", str(bad), "--features-dir", str(feats_city / "features"),
               "--output-subdir", "dim") == 2
    err = capsys.readouterr().err
    assert ".npy" in err and f"dimension {BUILTIN_DIM}" in err and "c.npz" in err
    assert not (feats_city / "dim").exists()


def test_bad_inputs(feats_city, tmp_path, capsys):
    f = ["--features-dir", str(feats_city / "features")]
    assert cli(feats_city, "--k", "1", *f) == 2
    assert cli(feats_city, "--k", "5000", "--output-subdir", "big", *f) == 2
    assert "more than" in capsys.readouterr().err and not (feats_city / "big").exists()
    assert main(["generate-overclustered-semantics", "--cityscapes-root", str(feats_city), "--split", "test"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_gt_nonvoid_sampling_is_recorded(feats_city, capsys):
    assert cli(feats_city, "--k", "10", "--output-subdir", "gtn", "--features-dir", str(feats_city / "features"),
               "--mapping", "none", "--sample-filter", "gt-nonvoid", "--kmeans-backend", "torch") == 0
    assert "uses ground truth: fit sample" in capsys.readouterr().out
    m = manifest(feats_city / "gtn" / "val" / "manifest.json")
    assert m["uses_ground_truth"] is True and "not void" in m["ground_truth_use"]["sampling"]


# --------------------------------------------------------------------------- scale: workers, shards, failures
RUN_RECORDS = {"manifest.json"}  # how a run went (times, workers), not what it computed


def _tree(folder, skip=()):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in RUN_RECORDS and p.name not in skip}


def _same_centroids(a, b):
    x, y = np.load(a), np.load(b)
    assert np.array_equal(x["centroids"], y["centroids"])
    assert np.array_equal(x["cluster_to_class"], y["cluster_to_class"])


@pytest.fixture(scope="module")
def fitted(feats_city):
    """One unsharded run with --workers 1 (fit + majority mapping), batch size 1 so that the
    pool really gets several tasks; returns its output folder."""
    assert cli(feats_city, "--k", "12", "--features-dir", str(feats_city / "features"), "--output-subdir", "w1",
               "--workers", "1", "--batch-size", "1") == 0
    return feats_city / "w1"


def test_outputs_identical_across_worker_counts(feats_city, fitted):
    assert cli(feats_city, "--k", "12", "--features-dir", str(feats_city / "features"), "--output-subdir", "w2",
               "--workers", "2", "--batch-size", "1") == 0
    w2 = feats_city / "w2"
    # per-image PNGs (semantics and raw clusters), stats.json, miou.json: byte for byte
    assert _tree(w2, {"kmeans_centroids.npz"}) == _tree(fitted, {"kmeans_centroids.npz"})
    _same_centroids(w2 / "kmeans_centroids.npz", fitted / "kmeans_centroids.npz")  # metadata holds the fit time
    assert len([k for k in _tree(w2) if k.endswith(".png")]) == 6


def test_shards_with_loaded_centroids_equal_an_unsharded_run(feats_city, fitted, capsys):
    base = ["--features-dir", str(feats_city / "features"), "--load-centroids", str(fitted / "kmeans_centroids.npz")]
    assert cli(feats_city, *base, "--output-subdir", "whole") == 0
    assert cli(feats_city, *base, "--output-subdir", "sharded", "--shard", "0/2") == 0
    out = capsys.readouterr().out
    assert "shard 0/2" in out and "not assigned yet" in out
    assert not (feats_city / "sharded" / "val" / "stats.json").exists()  # written once every shard is done
    assert cli(feats_city, *base, "--output-subdir", "sharded", "--shard", "1/2", "--workers", "2",
               "--batch-size", "1") == 0
    whole, sharded = _tree(feats_city / "whole"), _tree(feats_city / "sharded")
    assert sharded == whole  # centroids file included: its bytes do not depend on who wrote it
    assert "kmeans_centroids.npz" in whole and "val/stats.json" in whole and "val/miou.json" in whole


def test_fit_only_then_shards_equal_an_unsharded_run(feats_city, fitted, capsys):
    base = ["--k", "12", "--features-dir", str(feats_city / "features"), "--output-subdir", "fs"]
    # without centroids a shard is refused, naming the way out; nothing is written
    assert cli(feats_city, *base, "--shard", "1/2") == 2
    err = capsys.readouterr().err
    assert "--fit-only" in err and "--load-centroids" in err and not (feats_city / "fs").exists()
    assert cli(feats_city, *base, "--fit-only") == 0
    assert (feats_city / "fs" / "kmeans_centroids.npz").exists() and not list((feats_city / "fs").rglob("*.png"))
    assert cli(feats_city, *base, "--shard", "1/2") == 0
    assert not list((feats_city / "fs" / "val").rglob("*.png"))  # majority mapping needs every image
    assert cli(feats_city, *base, "--shard", "0/2", "--workers", "2", "--batch-size", "1") == 0
    fs = feats_city / "fs"
    assert _tree(fs, {"kmeans_centroids.npz"}) == _tree(fitted, {"kmeans_centroids.npz"})
    _same_centroids(fs / "kmeans_centroids.npz", fitted / "kmeans_centroids.npz")
    assert cli(feats_city, *base, "--fit-only", "--shard", "0/2") == 2


def test_corrupt_image_is_named_and_the_others_complete(synth_city, tmp_path, capsys):
    from pseudo_labels.datasets.cityscapes import list_images

    root = tmp_path / "city"
    shutil.copytree(synth_city, root)
    entries = list_images(root, "val")
    bad = entries[1].image_path
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG: header fine, data cut
    args = ["--k", "8", "--batch-size", "1", "--output-subdir", "sem"]
    assert cli(root, *args, "--workers", "2") == 2
    err = capsys.readouterr().err
    assert entries[1].stem in err and "1 images failed" in err
    written = sorted(p.name for p in (root / "sem" / "val").rglob("*.png"))
    assert written == sorted(f"{e.stem}.png" for e in entries if e is not entries[1])
    assert not [p for p in (root / "sem").rglob("*") if ".tmp" in p.name]
    m = manifest(root / "sem" / "val" / "manifest.json")
    assert m["counts"]["failed"] == 1 and m["failed"][0]["image"] == entries[1].stem
    assert m["fit_metadata"]["sampling"]["failed"][0]["image"] == entries[1].stem
    # a rerun reuses the finished images and names the bad one again; --fail-fast stops at it
    assert cli(root, *args) == 2
    assert manifest(root / "sem" / "val" / "manifest.json")["counts"]["reused"] == 2
    capsys.readouterr()
    assert cli(root, *args, "--output-subdir", "ff", "--fail-fast") == 2
    assert entries[1].stem in capsys.readouterr().err


def test_help_documents_sharding_and_budget(capsys):
    with pytest.raises(SystemExit):
        main(["generate-overclustered-semantics", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("--fit-only", "--shard", "--fail-fast", "--executor", "100,000", "not the number of images",
                   "never sharded"):
        assert phrase in text, phrase


def test_unreadable_feature_file_is_named_and_the_others_complete(feats_city, fitted, tmp_path, capsys):
    feats = tmp_path / "features"
    shutil.copytree(feats_city / "features", feats)
    bad = sorted(feats.rglob("*.npy"))[0]
    bad.write_bytes(bad.read_bytes()[:90])  # truncated .npy
    rc = cli(feats_city, "--features-dir", str(feats), "--load-centroids", str(fitted / "kmeans_centroids.npz"),
             "--output-subdir", "badfeat", "--workers", "2", "--batch-size", "1")
    assert rc == 2
    err = capsys.readouterr().err
    assert bad.stem in err and "1 images failed" in err
    assert len(list((feats_city / "badfeat" / "val").rglob("*.png"))) == 2
    assert not (feats_city / "badfeat" / "val" / bad.parent.name / f"{bad.stem}.png").exists()
