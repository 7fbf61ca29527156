"""Semantic pseudo-labels of an RGB-T split from DARTS fused codes (or raw per-modality features):
k-means (:mod:`pseudo_labels.stages.semantic.clustering`) -> cluster map per image -> cluster-to-class
mapping (:mod:`pseudo_labels.stages.semantic.mapping`) -> label PNGs, with scores split by day / night.

Feature sources (``source``):

- ``darts``: the fused code of a ``train-darts`` run (:func:`pseudo_labels.stages.rgbt.darts.fused_codes`);
- ``rgb`` / ``thermal``: the cached frozen features of one modality;
- ``concat``: both modalities' L2-normalised features concatenated (no training), divided by sqrt 2.

Outputs under ``out``::

    clusters/<split>/<stem>.png   raw cluster ids, uint8 (255 void) for k <= 255, else uint16
    labels/<split>/<stem>.png     class ids of the data set's table (255 unmapped); not with mapping none
    features/<split>/<stem>.npy   the clustered vectors (D, h, w) float16 (``write_features``)
    kmeans_centroids.npz          centroids, cluster_to_class, metadata (clustering.save_centroids)
    scores.json                   evaluation (``evaluate``): Hungarian and majority scores, overall / day / night
    manifest.json                 parameters, ``uses_ground_truth`` (mapping majority / hungarian read labels)

The k-means fit uses a uniform sample of patch vectors of the whole split (seeded per image,
the same for every shard); cluster maps are per image under the shared runner (workers, shards,
resume: existing cluster PNGs are reused). The mapping and the scores need every image's
cluster map: the run that finds all of them done (the last shard) writes labels and scores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.runner import RunOptions, run_per_image
from pseudo_labels.core.validate import validate_config

STAGE = "generate-darts-semantics"
SOURCES = ("darts", "rgb", "thermal", "concat")
SCORES_NAME = "scores.json"
SAMPLES_PER_IMAGE = 2000


@dataclass(frozen=True)
class DartsSemanticsConfig:
    """What ``generate-darts-semantics`` computes (see the module docstring). ``k`` 0: the number
    of classes of the data set's table (the Hungarian setting)."""

    data_root: str
    out: str
    features: str | None = None  # default: the run's features root
    dataset: str = "mfnet"
    split: str = "test"
    source: str = "darts"
    run: str | None = None
    k: int = 0
    mapping: str = "hungarian"
    seed: int = 0
    kmeans_backend: str = defaults.KMEANS_BACKEND
    max_samples: int = 100_000
    load_centroids: str | None = None
    write_features: bool = False
    evaluate: bool = True
    ignore_classes: tuple[int, ...] = ()
    device: str = "cpu"

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)

    def parameters(self) -> dict:
        res = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
        return {"dataset": self.dataset, "split": self.split, "source": self.source, "run": res(self.run),
                "features": res(self.features), "k": self.k, "mapping": self.mapping, "seed": self.seed,
                "kmeans_backend": self.kmeans_backend, "max_samples": self.max_samples,
                "load_centroids": res(self.load_centroids), "ignore_classes": list(self.ignore_classes)}


@dataclass
class DartsSemanticsResult:
    """What a run did: counts, seconds per phase, the scores (or None) and the output folder."""

    out: str
    images: int
    computed: int = 0
    reused: int = 0
    failed: list = field(default_factory=list)
    k: int = 0
    seconds: dict = field(default_factory=dict)
    scores: dict | None = None
    uses_ground_truth: bool = False
    finished: bool = True

    def line(self) -> str:
        parts = [f"{STAGE}: {self.images} images, {self.computed} computed, {self.reused} reused, "
                 f"{len(self.failed)} failed, k={self.k} -> {self.out}"]
        if self.scores:
            for method, s in self.scores.items():
                groups = ", ".join(f"{g} {v['mIoU']:.1f}" for g, v in s["groups"].items())
                parts.append(f"  {method}: mIoU {s['overall']['mIoU']:.1f} (pixel acc "
                             f"{s['overall']['pixel_accuracy']:.1f}){'; ' + groups if groups else ''}")
        if not self.finished:
            parts.append("  labels and scores wait for the other shards (rerun after they finish)")
        return "\n".join(parts)


def source_vectors(config: DartsSemanticsConfig, f_rgb: np.ndarray, f_thermal: np.ndarray) -> np.ndarray:
    """(N, D, h, w) float32 L2-normalised vectors to cluster, from the chosen source."""
    from pseudo_labels.stages.semantic.features import l2_normalize

    if config.source == "rgb":
        return l2_normalize(f_rgb, axis=1)
    if config.source == "thermal":
        return l2_normalize(f_thermal, axis=1)
    if config.source == "concat":
        return np.concatenate([l2_normalize(f_rgb, axis=1), l2_normalize(f_thermal, axis=1)], 1) / math.sqrt(2)
    if config.source == "darts":
        from pseudo_labels.stages.rgbt.darts import fused_codes, load_darts_run
        from pseudo_labels.stages.semantic.features import resolve_device

        if not config.run:
            raise PseudoLabelsError("--source darts needs --run RUN (the --out folder of train-darts)")
        device = resolve_device(config.device)
        head, _ = load_darts_run(config.run, device)
        return fused_codes(head, f_rgb, f_thermal, device)
    raise PseudoLabelsError(f"--source {config.source!r}: choose {', '.join(SOURCES)}")


def fit_centroids(vectors: np.ndarray, stems: list[str], config: DartsSemanticsConfig, k: int) -> np.ndarray:
    """(k, D) L2-normalised k-means centroids on a uniform, per-image seeded sample of patch vectors."""
    from pseudo_labels.stages.semantic import clustering

    budget = clustering.fit_sample_budget(k, config.max_samples)
    quotas = clustering.sample_quotas(len(stems), budget, SAMPLES_PER_IMAGE)
    samples = [clustering.sample_patch_features(v, q, clustering.image_rng(config.seed, s))
               for v, q, s in zip(vectors, quotas, stems)]
    return clustering.fit_kmeans(np.concatenate(samples), k, config.kmeans_backend, config.seed)


@dataclass(frozen=True)
class _AssignJob:
    stem: str
    vectors: np.ndarray
    centroids: np.ndarray
    size: tuple
    path: str


def _assign(job: _AssignJob) -> None:
    """Write one cluster PNG."""
    from pseudo_labels.core import io as plio
    from pseudo_labels.stages.semantic import clustering

    clusters = clustering.assign_clusters(job.vectors, job.centroids, job.size)
    plio.write_png(job.path, clustering.cluster_png_array(clusters, len(job.centroids)))


def _image_size(record) -> tuple[int, int]:
    """(H, W) of a record's image from its file header (no decode; RGB and thermal share it)."""
    from PIL import Image

    with Image.open(record.image_path) as im:
        return im.size[::-1]


def generate_darts_semantics(config: DartsSemanticsConfig, options: RunOptions | None = None) -> DartsSemanticsResult:
    """Cluster the chosen vectors of ``config.split`` and write cluster maps, labels, centroids,
    scores and the manifest (see the module docstring)."""
    from pseudo_labels.core import io as plio
    from pseudo_labels.datasets.rgbt import list_rgbt_images, rgbt_label_table
    from pseudo_labels.stages.semantic import clustering
    from pseudo_labels.stages.rgbt.darts import load_split_features
    from pseudo_labels.stages.semantic.mapping import METHODS

    opts = options or RunOptions()
    if config.mapping not in METHODS:
        raise PseudoLabelsError(f"--mapping {config.mapping!r}: choose {', '.join(METHODS)}")
    table = rgbt_label_table(config.dataset)
    features = config.features or _run_features(config.run)
    records = list_rgbt_images(config.dataset, config.data_root, config.split)
    out = Path(config.out)
    reuse = plio.prepare_output_dir(out, STAGE, config.parameters(), overwrite=opts.overwrite)
    times: dict[str, float] = {}
    t0 = time.time()
    _, f_rgb, f_thermal = load_split_features(config.data_root, config.dataset, config.split, features, records)
    vectors = source_vectors(config, f_rgb, f_thermal)
    times["vectors"] = time.time() - t0
    stems = [r.stem for r in records]
    t0 = time.time()
    if config.load_centroids:
        centroids = clustering.load_centroids(config.load_centroids).centroids
        if centroids.shape[1] != vectors.shape[1]:
            raise PseudoLabelsError(f"{config.load_centroids}: centroids of dimension {centroids.shape[1]}, but the "
                                    f"{config.source} vectors have {vectors.shape[1]}")
    else:
        centroids = fit_centroids(vectors, stems, config, config.k or table.num_classes)
    times["kmeans"] = time.time() - t0
    k = len(centroids)
    if config.write_features:
        from pseudo_labels.stages.semantic.features import save_features

        for r, v in zip(records, vectors):
            save_features(out / "features" / r.relative(".npy"), v)
    mine = opts.select(list(range(len(records))))
    t0 = time.time()
    jobs = [_AssignJob(stems[i], vectors[i], centroids, _image_size(records[i]),
                       str(out / "clusters" / records[i].relative(".png"))) for i in mine]
    runs = run_per_image(_assign, jobs, options=opts, desc="darts semantics", name_of=lambda j: j.stem,
                         is_done=(lambda j: Path(j.path).exists()) if reuse else None)
    times["assign"] = time.time() - t0
    result = DartsSemanticsResult(out=str(out), images=len(records), k=k, failed=list(runs.failed),
                                  computed=runs.done, reused=runs.skipped)
    result.seconds = {name: round(v, 4) for name, v in times.items()}
    meta = {"source": config.source, "dataset": config.dataset, "split": config.split, "k": k, "seed": config.seed}
    inputs = {"data_root": str(Path(config.data_root).resolve()), "features": str(Path(features).resolve()),
              "images": plio.fingerprint_files(r.image_path for r in records)}
    _finish(config, records, table, centroids, meta, result, inputs)
    return result


def _run_features(run: str | None) -> str:
    from pseudo_labels.core.io import read_json
    from pseudo_labels.stages.rgbt.darts import RUN_CONFIG_NAME

    if not run:
        raise PseudoLabelsError("give --features (the extract-rgbt-features root) or --run")
    return read_json(Path(run) / RUN_CONFIG_NAME)["train"]["features"]


def _finish(config: DartsSemanticsConfig, records: list, table, centroids: np.ndarray, meta: dict,
            result: DartsSemanticsResult, inputs: dict) -> None:
    """Mapping, label PNGs, scores, centroids file and manifest, once every cluster map exists."""
    from pseudo_labels.core import io as plio
    from pseudo_labels.stages.semantic import clustering

    out = Path(config.out)
    paths = [out / "clusters" / r.relative(".png") for r in records]
    k = len(centroids)
    params = config.parameters()
    result.finished = all(p.exists() for p in paths)
    gt_use: dict = {}
    c2c = None
    if result.finished:
        t0 = time.time()
        labelled = all(r.label_path is not None for r in records)
        confusions = _confusions(config.dataset, records, paths, k, table.num_classes) if labelled else None
        if config.mapping != "none":
            if confusions is None:
                raise PseudoLabelsError(f"--mapping {config.mapping} reads ground truth, but some images of split "
                                        f"{config.split} have no label file; use --mapping none")
            c2c = _write_labels(config, records, paths, confusions, out)
            gt_use["mapping"] = f"{config.mapping} cluster-to-class mapping on the {config.split} labels"
        if config.evaluate and confusions is not None:
            result.scores = _scores(confusions, table, config.ignore_classes)
            plio.write_json(out / SCORES_NAME, {"parameters": params, "k": k, "scores": result.scores,
                                                "note": "evaluation against the data set's labels"})
        result.seconds["map_and_score"] = round(time.time() - t0, 4)
    clustering.save_centroids(out / clustering.CENTROIDS_NAME, centroids, c2c, meta)
    result.uses_ground_truth = bool(gt_use)
    plio.write_manifest(out, STAGE, params, uses_ground_truth=gt_use or False, inputs=inputs,
                        counts={"images": result.images, "computed": result.computed, "reused": result.reused,
                                "failed": len(result.failed), "status": "finished" if result.finished else "partial"},
                        extra={"seconds": result.seconds,
                               "evaluation": (f"{SCORES_NAME}: scores against the labels (evaluation, not used to "
                                              "make the labels)") if result.scores else None})


def _confusions(dataset: str, records: list, paths: list, k: int, num_classes: int) -> dict:
    from evaluation.matching import cluster_class_confusion
    from pseudo_labels.core.io import read_png
    from pseudo_labels.datasets.rgbt import read_rgbt_label

    out = {}
    for r, p in zip(records, paths):
        clusters, gt = read_png(p), read_rgbt_label(dataset, r)
        if clusters.shape != gt.shape:
            raise PseudoLabelsError(f"{p}: cluster map {clusters.shape} and label {r.label_path} {gt.shape} differ")
        out[r.stem] = cluster_class_confusion(clusters, gt, k, num_classes)
    return out


def _write_labels(config: DartsSemanticsConfig, records: list, paths: list, confusions: dict, out: Path) -> np.ndarray:
    """Mapping from the summed confusion (ignored classes left out), label PNGs; returns cluster_to_class."""
    from pseudo_labels.core import io as plio
    from pseudo_labels.stages.semantic.mapping import apply_mapping, map_clusters

    total = sum(confusions.values()).copy()
    if config.ignore_classes:
        total[:, list(config.ignore_classes)] = 0
    c2c = map_clusters(total, config.mapping)
    for r, p in zip(records, paths):
        plio.write_png(out / "labels" / r.relative(".png"), apply_mapping(plio.read_png(p), c2c))
    return c2c


def _scores(confusions: dict, table, ignore_classes) -> dict:
    from evaluation.rgbt import evaluate_unsupervised
    from pseudo_labels.datasets.rgbt import condition_of

    groups = {s: condition_of(s) for s in confusions}
    groups = {s: g for s, g in groups.items() if g != "unknown"}
    return {method: evaluate_unsupervised(confusions, groups, method, table.names, ignore_classes)
            for method in ("hungarian", "majority")}
