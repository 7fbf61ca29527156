"""pseudo_labels.stages.semantic.semantics: the semantic stage as a library (config in, summary out)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pseudo_labels.core.runner import RunOptions
from pseudo_labels.datasets.base import make_table
from pseudo_labels.stages.semantic import semantics
from pseudo_labels.stages.semantic.features import BUILTIN_DIM
from pseudo_labels.stages.semantic.semantics import SemanticConfig, generate_semantics

#: a 3-class label table (ids 0..2 = Cityscapes road, sidewalk, building), for the dataset test
LABELS = make_table("three", [("road", (128, 64, 128), False), ("sidewalk", (244, 35, 232), False),
                              ("building", (70, 70, 70), False)])


@pytest.fixture(scope="module")
def feats_city(synth_city, tmp_path_factory):
    """A writable copy of synth_city with builtin features precomputed under features/."""
    from pseudo_labels.core.io import read_image_rgb
    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.semantic.features import build_extractor, save_features

    root = tmp_path_factory.mktemp("sem") / "city"
    shutil.copytree(synth_city, root)
    entries = list_images(root, "val")
    for e, f in zip(entries, build_extractor("builtin").extract([read_image_rgb(e.image_path) for e in entries])):
        save_features(root / "features" / e.relative(".npy"), f)
    return root


def _read(path):
    return json.loads(path.read_text())


def test_library_call_summary_notes_and_ground_truth(feats_city):
    notes = []
    cfg = SemanticConfig(str(feats_city), k=9, output_subdir="lib", features_dir=str(feats_city / "features"))
    summary = generate_semantics(cfg, RunOptions(), notify=notes.append)
    assert summary.status == "finished" and summary.done == 3 and summary.skipped == 0 and summary.ok
    assert summary.uses_ground_truth and "majority" in summary.ground_truth_use["mapping"]
    assert summary.line() == f"3 images written, 0 reused, 0 failed -> {feats_city / 'lib' / 'val'}"
    assert notes[0].startswith("fitted k-means (k=9") and any(n.startswith("uses ground truth: majority") for n in notes)
    assert summary.evaluation == _read(feats_city / "lib" / "val" / "miou.json")
    # label-free rerun into another folder: no ground truth, no notes about it; rerun reuses everything
    cfg = SemanticConfig(str(feats_city), k=9, output_subdir="lib_none", mapping="none",
                         features_dir=str(feats_city / "features"))
    assert not generate_semantics(cfg).uses_ground_truth
    again = generate_semantics(cfg)
    assert (again.done, again.skipped) == (0, 3)


def test_fit_only_summary_and_bad_config(feats_city):
    cfg = SemanticConfig(str(feats_city), k=5, output_subdir="fo", features_dir=str(feats_city / "features"),
                         fit_only=True)
    summary = generate_semantics(cfg)
    assert summary.status == "fitted" and "--fit-only: centroids in" in summary.line()
    assert (feats_city / "fo" / "kmeans_centroids.npz").exists() and not list((feats_city / "fo").rglob("*.png"))
    from pseudo_labels.core.errors import PseudoLabelsError

    with pytest.raises(PseudoLabelsError, match="--mapping 'nearest'"):
        generate_semantics(SemanticConfig(str(feats_city), mapping="nearest"))
    with pytest.raises(PseudoLabelsError, match="unknown data set 'mars'"):
        generate_semantics(SemanticConfig(str(feats_city), dataset="mars"))


def test_dataset_name_selects_the_label_table(feats_city, monkeypatch):
    """A data set with 3 classes: the mapping, stats and scores use its table, not 19 classes."""
    from pseudo_labels import datasets
    from pseudo_labels.core.io import read_png

    monkeypatch.setitem(datasets.DATASET_MODULES, "three", __name__)
    cfg = SemanticConfig(str(feats_city), k=8, output_subdir="three", dataset="three",
                         features_dir=str(feats_city / "features"))
    summary = generate_semantics(cfg)
    out = feats_city / "three" / "val"
    assert list(_read(out / "stats.json")["per_class_pixels"]) == ["0", "1", "2"]
    assert list(summary.evaluation["per_class_iou"]) == ["road", "sidewalk", "building"]
    assert _read(out / "manifest.json")["parameters"]["dataset"] == "three"
    assert set(np.unique(np.concatenate([read_png(p).ravel() for p in out.rglob("*.png")]))) <= {0, 1, 2, 255}
    # the default (cityscapes) keeps the earlier parameters: no "dataset" key, the same config hash
    assert "dataset" not in semantics.semantic_parameters(SemanticConfig("r"), 8, "majority", None)


def test_progress_bar_counts_batches(monkeypatch):
    """The per-batch passes label their progress unit as what they count (issue 18 item 4)."""
    from pseudo_labels.core import runner

    units = []
    real_tqdm = runner.tqdm

    def recording_tqdm(*args, **kwargs):
        units.append(kwargs.get("unit"))
        return real_tqdm(*args, **kwargs)

    monkeypatch.setattr(runner, "tqdm", recording_tqdm)

    class Job:
        def __init__(self, n):
            self.entries = tuple(type("E", (), {"stem": f"s{i}"})() for i in range(n))

    seen = []
    def n_images(job):
        return len(job.entries)

    failed = semantics.run_blocks(n_images, [Job(4), Job(4), Job(2)], RunOptions(), "assigning clusters", 10,
                                  lambda job, res: seen.append(res))
    failed += semantics.run_blocks(n_images, [Job(1), Job(1)], RunOptions(), "assigning clusters", 2,
                                   lambda job, res: None)
    assert failed == []
    assert units == ["batch", "img"] and seen == [4, 4, 2]


def test_quality_floor_beats_shuffled(synth_city):
    """Majority-mapped builtin clusters on the synthetic city score well above a shuffled
    assignment (which a broken mapping or assignment would resemble)."""
    from evaluation.semantic import miou_from_confusion

    from pseudo_labels.core.io import read_image_rgb
    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.semantic.clustering import assign_clusters, fit_kmeans, sample_patch_features
    from pseudo_labels.stages.semantic.features import build_extractor
    from pseudo_labels.stages.semantic.mapping import class_confusion, cluster_confusion, map_clusters
    from pseudo_labels.datasets.cityscapes import read_gt_train_ids

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


def test_bounded_sample_does_not_grow_with_images(feats_city):
    """The fit sample is the budget, whatever the number of images, and the same for any
    worker count (per-image generators)."""
    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.semantic.semantics import FeatureSource, collect_samples

    entries = list_images(feats_city, "val")
    src = FeatureSource(str(feats_city / "features"), "builtin", None, None, None, "cpu", 1)
    kw = dict(sample_filter="uniform", samples_per_image=2000, seed=42, batch_size=1)
    one, info = collect_samples(str(feats_city), entries[:1], src, max_samples=600, **kw)
    three, info3 = collect_samples(str(feats_city), entries, src, max_samples=600, **kw)
    assert one.shape == three.shape == (600, BUILTIN_DIM) and info3["per_image_max"] == 200
    two, _ = collect_samples(str(feats_city), entries, src, max_samples=600, options=RunOptions(workers=2), **kw)
    assert np.array_equal(two, three)
    unbounded, _ = collect_samples(str(feats_city), entries, src, max_samples=None, **kw)
    assert unbounded.shape[0] == 3 * 23 * 46  # every patch (fewer than --samples-per-image)
