"""generate-overclustered-semantics end to end on the synthetic city (builtin backbone)."""

import json
import shutil

import numpy as np
import pytest

from pseudo_labels.cli import main
from pseudo_labels.features import BUILTIN_DIM
from pseudo_labels.io import read_png


@pytest.fixture(scope="module")
def feats_city(synth_city, tmp_path_factory):
    """A writable copy of synth_city with builtin features precomputed under features/."""
    from pseudo_labels.cityscapes import list_images
    from pseudo_labels.features import build_extractor, save_features
    from pseudo_labels.io import read_image_rgb

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
    from pseudo_labels.clustering import l2_normalize, save_centroids

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


def test_quality_floor_beats_shuffled(synth_city):
    """Majority-mapped builtin clusters on the synthetic city score well above a shuffled
    assignment (which a broken mapping or assignment would resemble)."""
    from evaluation.semantic import miou_from_confusion

    from pseudo_labels.cityscapes import list_images
    from pseudo_labels.clustering import assign_clusters, fit_kmeans, sample_patch_features
    from pseudo_labels.features import build_extractor
    from pseudo_labels.generate_overclustered_semantics import read_gt_train_ids
    from pseudo_labels.io import read_image_rgb
    from pseudo_labels.mapping import class_confusion, cluster_confusion, map_clusters

    entries = list_images(synth_city, "val")
    feats = build_extractor("builtin").extract([read_image_rgb(e.image_path) for e in entries])
    rng = np.random.default_rng(0)
    c = fit_kmeans(np.concatenate([sample_patch_features(f, 2000, rng) for f in feats]), 40)
    gts = [read_gt_train_ids(synth_city, e) for e in entries]
    cls = [assign_clusters(f, c, g.shape) for f, g in zip(feats, gts)]

    def miou(cluster_maps):
        conf = sum(cluster_confusion(cl, g, 40) for cl, g in zip(cluster_maps, gts))
        return miou_from_confusion(class_confusion(conf, map_clusters(conf, "majority")))["mIoU"]

    real = miou(cls)
    shuffled = miou([rng.permutation(cl.ravel()).reshape(cl.shape) for cl in cls])
    assert real >= 25.0 and real >= shuffled + 15.0, (real, shuffled)


def test_gt_nonvoid_sampling_is_recorded(feats_city, capsys):
    assert cli(feats_city, "--k", "10", "--output-subdir", "gtn", "--features-dir", str(feats_city / "features"),
               "--mapping", "none", "--sample-filter", "gt-nonvoid", "--kmeans-backend", "torch") == 0
    assert "uses ground truth: fit sample" in capsys.readouterr().out
    m = manifest(feats_city / "gtn" / "val" / "manifest.json")
    assert m["uses_ground_truth"] is True and "not void" in m["ground_truth_use"]["sampling"]
