"""Semantic pseudo-labels of an RGB-T split from DARTS fused codes (or raw per-modality features):
cluster centres -> cluster map per image -> cluster-to-class mapping
(:mod:`pseudo_labels.stages.semantic.mapping`) -> label PNGs, with scores split by day / night.

Protocols (``protocol``, recorded in ``scores.json`` and the manifest):

- ``official`` (default): the DARTS released evaluation (smeenapadnekar/DARTS@5b5edcf,
  ``src/eval_segmentation.py`` with ``ClusterLookup`` of ``src/modules.py``): a cluster probe
  (k centres, initialised from a seeded normal draw) is trained on the *train* split's vectors
  with Adam (lr 5e-3) on the loss ``-(onehot(argmax_k <x, c_k>) * <x, c_k>).sum(k).mean()`` of
  L2-normalised vectors x and centres c, then applied to the scored split: the vectors are
  upsampled bilinearly to the image size, ``log_softmax(2 <x, c_k>)`` are the cluster
  log-probabilities, refined by the dense CRF (:func:`pseudo_labels.stages.refine.refine_semantics.crf_marginals`,
  the release's parameters: 10 iterations, Gaussian sxy 1 / compat 3, bilateral sxy 67 /
  srgb 3 / compat 4) on the RGB image when ``crf``, and the argmax is the cluster. Differences
  left: the release trains the probe during the head's training on each batch's (changing)
  codes; we fit it afterwards on the final codes, ``probe_steps`` batches of ``probe_batch``
  images; the release also averages the code of the horizontally flipped image (our features
  are cached unflipped, so no flip).
- ``on-split`` (ours, earlier): k-means on the scored split itself (the labels of the split
  are clustered with centres fitted on it), no CRF.

The mapping (``hungarian`` / ``majority``) and the scores always use the scored split's labels,
as the release does (Hungarian on the test confusion). mIoU conventions: see
:mod:`evaluation.rgbt`; ``miou_convention`` ``official`` is DARTS's (``stego``).

Feature sources (``source``):

- ``darts``: the fused code of a ``train-darts`` run (:func:`pseudo_labels.stages.rgbt.darts.fused_codes`);
- ``rgb`` / ``thermal``: the cached frozen features of one modality;
- ``concat``: both modalities' L2-normalised features concatenated (no training), divided by sqrt 2.

Outputs under ``out``::

    clusters/<split>/<stem>.png   raw cluster ids, uint8 (255 void) for k <= 255, else uint16
    labels/<split>/<stem>.png     class ids of the data set's table (255 unmapped); not with mapping none
    features/<split>/<stem>.npy   the clustered vectors (D, h, w) float16 (``write_features``)
    kmeans_centroids.npz          centres (k-means or probe), cluster_to_class, metadata
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

STAGE = "generate-darts-semantics"
SOURCES = ("darts", "rgb", "thermal", "concat")
PROTOCOLS = ("official", "on-split")
MIOU_CONVENTIONS = ("official", "present", "stego", "all-classes")
OFFICIAL_CONVENTION = "stego"  # DARTS's UnsupervisedMetrics (see evaluation.rgbt)
PROBE_LR = 5e-3
PROBE_SOFTMAX_SCALE = 2.0  # eval_segmentation.py: cluster_probe(code, 2, log_probs=True)
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
    protocol: str = "official"
    train_split: str = "train"  # official protocol: the split the cluster probe is fitted on
    crf: bool = True  # official protocol: dense CRF on the cluster probabilities
    probe_steps: int = defaults.DARTS_PROBE_STEPS
    probe_batch: int = defaults.DARTS_PROBE_BATCH
    miou_convention: str = "official"

    @property
    def convention(self) -> str:
        """The evaluation.rgbt convention the scores' ``mIoU`` follows."""
        return OFFICIAL_CONVENTION if self.miou_convention == "official" else self.miou_convention

    def parameters(self) -> dict:
        res = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
        p = {"dataset": self.dataset, "split": self.split, "source": self.source, "run": res(self.run),
             "features": res(self.features), "k": self.k, "mapping": self.mapping, "seed": self.seed,
             "protocol": self.protocol, "load_centroids": res(self.load_centroids),
             "ignore_classes": list(self.ignore_classes), "miou_convention": self.convention}
        if self.protocol == "official":
            p.update(train_split=self.train_split, crf=self.crf, probe_steps=self.probe_steps,
                     probe_batch=self.probe_batch)
        else:
            p.update(kmeans_backend=self.kmeans_backend, max_samples=self.max_samples)
        return p


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
                parts.append(f"  {method}: mIoU {s['overall']['mIoU']:.1f} [{s['overall']['convention']}] (pixel acc "
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


def probe_loss(x, centres):
    """The cluster probe's loss (DARTS ``ClusterLookup`` with alpha None): x (B, D, h, w),
    centres (k, D); ``-(onehot(argmax_k s) * s).sum(k).mean()`` with s the cosine similarities."""
    import torch
    import torch.nn.functional as F

    inner = torch.einsum("bdhw,kd->bkhw", F.normalize(x, dim=1), F.normalize(centres, dim=1))
    onehot = F.one_hot(inner.argmax(1), centres.shape[0]).permute(0, 3, 1, 2).to(inner.dtype)
    return -(onehot * inner).sum(1).mean()


def fit_cluster_probe(vectors: np.ndarray, k: int, steps: int, batch: int, seed: int) -> np.ndarray:
    """(k, D) float32 L2-normalised centres of the cluster probe trained on (N, D, h, w) vectors:
    centres from a seeded N(0, 1) draw, Adam lr 5e-3, ``steps`` batches of ``batch`` images
    drawn without replacement (seeded)."""
    import torch
    import torch.nn.functional as F

    if k < 2 or steps < 1 or batch < 1:
        raise PseudoLabelsError("the cluster probe needs k >= 2, --probe-steps >= 1 and --probe-batch >= 1")
    x_all = torch.from_numpy(np.asarray(vectors, np.float32))
    centres = torch.nn.Parameter(torch.randn(k, x_all.shape[1], generator=torch.Generator().manual_seed(seed)))
    opt = torch.optim.Adam([centres], lr=PROBE_LR)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x_all), min(batch, len(x_all)), replace=False))
        loss = probe_loss(x_all[idx], centres)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return F.normalize(centres.detach(), dim=1).numpy().astype(np.float32)


def probe_clusters(vectors: np.ndarray, centres: np.ndarray, size: tuple, image: np.ndarray | None = None
                   ) -> np.ndarray:
    """(H, W) int32 clusters of one image: vectors (D, h, w) upsampled bilinearly (half-pixel
    centres) to ``size``, cosine similarities s to the (k, D) centres; with ``image`` ((H, W, 3)
    uint8 RGB) the argmax of the dense-CRF marginals of ``softmax(2 s)``, else the argmax of s."""
    import torch
    import torch.nn.functional as F

    x = F.interpolate(torch.from_numpy(np.asarray(vectors, np.float32))[None], size=tuple(size), mode="bilinear",
                      align_corners=False)
    inner = torch.einsum("bdhw,kd->bkhw", F.normalize(x, dim=1), F.normalize(torch.from_numpy(centres), dim=1))[0]
    if image is None:
        return inner.argmax(0).numpy().astype(np.int32)
    from pseudo_labels.stages.refine.refine_semantics import crf_marginals

    probs = torch.softmax(PROBE_SOFTMAX_SCALE * inner, dim=0).numpy()
    return crf_marginals(image, probs).argmax(0).astype(np.int32)


@dataclass(frozen=True)
class _ProbeJob:
    stem: str
    vectors: np.ndarray
    centroids: np.ndarray
    size: tuple
    path: str
    dataset: str
    record: object
    crf: bool


def _assign_probe(job: _ProbeJob) -> None:
    """Write one cluster PNG of the official protocol."""
    from pseudo_labels.core import io as plio
    from pseudo_labels.datasets.rgbt import read_rgbt_pair
    from pseudo_labels.stages.semantic import clustering

    image = read_rgbt_pair(job.dataset, job.record)[0] if job.crf else None
    if image is not None and image.shape[:2] != tuple(job.size):
        raise PseudoLabelsError(f"{job.stem}: RGB image {image.shape[:2]} != label size {tuple(job.size)}")
    clusters = probe_clusters(job.vectors, job.centroids, job.size, image)
    plio.write_png(job.path, clustering.cluster_png_array(clusters, len(job.centroids)))


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
    if config.protocol not in PROTOCOLS:
        raise PseudoLabelsError(f"--protocol {config.protocol!r}: choose {', '.join(PROTOCOLS)}")
    if config.miou_convention not in MIOU_CONVENTIONS:
        raise PseudoLabelsError(f"--miou-convention {config.miou_convention!r}: choose {', '.join(MIOU_CONVENTIONS)}")
    official = config.protocol == "official"
    if official and config.crf:
        from pseudo_labels.stages.refine.refine_semantics import crf_available

        if not crf_available():
            raise PseudoLabelsError("--protocol official uses the dense CRF: install pydensecrf2, or pass --no-crf")
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
    elif official:
        train = list_rgbt_images(config.dataset, config.data_root, config.train_split)
        _, t_rgb, t_thermal = load_split_features(config.data_root, config.dataset, config.train_split, features,
                                                  train)
        centroids = fit_cluster_probe(source_vectors(config, t_rgb, t_thermal), config.k or table.num_classes,
                                      config.probe_steps, config.probe_batch, config.seed)
    else:
        centroids = fit_centroids(vectors, stems, config, config.k or table.num_classes)
    times["probe" if official else "kmeans"] = time.time() - t0
    k = len(centroids)
    if config.write_features:
        from pseudo_labels.stages.semantic.features import save_features

        for r, v in zip(records, vectors):
            save_features(out / "features" / r.relative(".npy"), v)
    mine = opts.select(list(range(len(records))))
    t0 = time.time()
    if official:
        jobs = [_ProbeJob(stems[i], vectors[i], centroids, _image_size(records[i]),
                          str(out / "clusters" / records[i].relative(".png")), config.dataset, records[i], config.crf)
                for i in mine]
    else:
        jobs = [_AssignJob(stems[i], vectors[i], centroids, _image_size(records[i]),
                           str(out / "clusters" / records[i].relative(".png"))) for i in mine]
    runs = run_per_image(_assign_probe if official else _assign, jobs, options=opts, desc="darts semantics",
                         name_of=lambda j: j.stem,
                         is_done=(lambda j: Path(j.path).exists()) if reuse else None)
    times["assign"] = time.time() - t0
    result = DartsSemanticsResult(out=str(out), images=len(records), k=k, failed=list(runs.failed),
                                  computed=runs.done, reused=runs.skipped)
    result.seconds = {name: round(v, 4) for name, v in times.items()}
    meta = {"source": config.source, "dataset": config.dataset, "split": config.split, "k": k, "seed": config.seed,
            "protocol": config.protocol}
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
            result.scores = _scores(confusions, table, config.ignore_classes, config.convention)
            plio.write_json(out / SCORES_NAME, {"parameters": params, "k": k, "protocol": config.protocol,
                                                "miou_convention": config.convention, "scores": result.scores,
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


def _scores(confusions: dict, table, ignore_classes, convention: str) -> dict:
    from evaluation.rgbt import evaluate_unsupervised
    from pseudo_labels.datasets.rgbt import condition_of

    groups = {s: condition_of(s) for s in confusions}
    groups = {s: g for s, g in groups.items() if g != "unknown"}
    return {method: evaluate_unsupervised(confusions, groups, method, table.names, ignore_classes, convention)
            for method in ("hungarian", "majority")}
