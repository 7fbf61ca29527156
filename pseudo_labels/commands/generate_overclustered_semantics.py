"""Features -> k-means over-clustering -> cluster-to-class semantic pseudo-labels.

Flow (one split): features per image (extracted on the fly with ``--backbone``, or read
from ``--features-dir`` as written by ``extract-features``) -> a bounded sample of patch
features -> k-means fit (or ``--load-centroids``) -> every pixel assigned to its nearest
centroid (cosine) -> raw cluster maps -> cluster -> class mapping -> semantic trainId PNGs.
The work is :func:`pseudo_labels.stages.semantic.semantics.generate_semantics` (its docstring gives
the output layout); this module maps the flags to a
:class:`~pseudo_labels.stages.semantic.semantics.SemanticConfig` and prints the summary.

Ground truth: ``--mapping majority|hungarian`` and ``--sample-filter gt-nonvoid`` read
gtFine labels; the command says so and records it in the manifest. ``--mapping none``
with the default uniform sampling uses no labels. No CRF is applied (the reference's
``--skip_crf`` behaviour); ``--skip-crf`` is accepted for compatibility and changes nothing.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.datasets import DATASET_MODULES
from pseudo_labels.stages.semantic.clustering import BACKENDS, UPSAMPLE_MODES
from pseudo_labels.stages.semantic.features import BACKBONES, HEADS
from pseudo_labels.stages.semantic.mapping import METHODS
from pseudo_labels.stages.semantic.semantics import SAMPLE_FILTERS, SemanticConfig, generate_semantics

EPILOG = (
    "Sharding: the k-means fit needs a sample of the whole split and is never sharded. Either "
    "give --load-centroids FILE to every shard, or fit once with --fit-only (same flags, no --shard) and "
    "then run the shards with --shard I/N; without centroids, --shard is refused. Shards write into the "
    "same folder; the shard that finds every image assigned maps the rest (a majority/hungarian mapping "
    "reads the whole split's confusion) and writes stats.json and miou.json: the per-image PNGs, stats.json "
    "and miou.json equal an unsharded run's byte for byte. A rerun without --shard does the same and reuses "
    "finished images. "
    "With --shard, --overwrite recomputes this shard's images and keeps the fit. A failed image (e.g. a "
    "corrupt PNG) is named in the summary, the others are finished, and the exit status is 2; "
    "--fail-fast stops at the first one.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument("--split", default="val", help="split to label (default: val); k-means is fitted on it "
                        "unless --load-centroids")
    parser.add_argument("--k", type=int, default=None,
                        help=f"number of clusters, 2..(number of samples) (default {defaults.K}; with "
                             "--load-centroids: the file's k)")
    add_option(parser, "--output-subdir", default=None,
               help="output folder under the root (default pseudo_semantic_raw_k<k> with --raw-clusters, "
                    "else pseudo_semantic_overclustered_k<k>)")
    add_option(parser, "--raw-clusters", action="store_true",
               help="write raw cluster ids (0..k-1) as the per-image PNGs instead of mapped trainIds")
    add_option(parser, "--load-centroids", default=None,
               help="kmeans_centroids.npz (or the reference's kmeans_centroids_k80.b64) to reuse (no refit); its "
                    "cluster_to_class is applied unless --mapping "
                    "is given")
    add_option(parser, "--fit-only", action="store_true",
               help="fit k-means on the split's sample, write kmeans_centroids.npz into the output folder and "
                    "stop: the first step of a sharded run (then the same command with --shard I/N reuses the "
                    "fit)")
    parser.add_argument("--mapping", choices=METHODS, default=None,
                        help="cluster->class: majority (uses GT, the reference), hungarian (uses GT, one-to-one), "
                             "none (label-free: clusters stay pseudo-classes). Default: the stored mapping of "
                             "--load-centroids when it has one, else majority")
    parser.add_argument("--dataset", choices=sorted(DATASET_MODULES), default="cityscapes",
                        help="label table of the mapping, stats and scores (default cityscapes: 19 trainIds); "
                             "images and gtFine are read in the Cityscapes layout")
    parser.add_argument("--backbone", default="builtin", choices=BACKBONES,
                        help="feature backbone when extracting on the fly (default builtin; the reference is "
                             "dinov2_vitb14 with --head cause). On the fly, features are extracted twice (fit "
                             "sample, then assignment); extract-features + --features-dir extracts once")
    parser.add_argument("--weights", default=None, help="local DINOv2 checkpoint (official key layout)")
    parser.add_argument("--head", choices=HEADS, default=None, help="cause: CAUSE-TR Segment_TR head (90-d)")
    add_option(parser, "--head-weights", default=None, help="CAUSE segment_tr.pth (with --head cause)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for feature extraction and the torch "
                        "k-means backend (default cpu)")
    add_option(parser, "--batch-size", type=int, default=defaults.BATCH_SIZE,
               help="images per extraction batch (one runner task per batch)")
    parser.add_argument("--seed", type=int, default=defaults.SEED,
                        help="sampling and k-means seed (default 42); each image draws its sample from the seed "
                             "and its stem, so the sample does not depend on workers or shards")
    add_option(parser, "--features-dir", default=None,
               help="read precomputed features <dir>/<split>/<city>/<stem>.npy (extract-features) instead of "
                    "extracting (memory-mapped: only the sampled patches are read for the fit)")
    add_option(parser, "--sample-filter", choices=SAMPLE_FILTERS, default=defaults.SAMPLE_FILTER,
               help="uniform (label-free, default) or gt-nonvoid (the reference: only patches whose "
                    "nearest-downsampled GT trainId is not void; uses ground truth)")
    add_option(parser, "--samples-per-image", type=int, default=defaults.SAMPLES_PER_IMAGE,
               help=f"at most this many patch vectors per image for the fit (default {defaults.SAMPLES_PER_IMAGE}, "
                    "reference)")
    add_option(parser, "--max-samples", type=int, default=None,
               help=f"fit sample budget: at most this many patch vectors from the whole split, spread evenly "
                    f"over the images (image i of n gets about N/n, at most --samples-per-image), so the fit's "
                    f"memory is bounded by the sample, not the number of images. Default: "
                    f"max({defaults.MAX_FIT_SAMPLES:,}, k x {defaults.KMEANS_MAX_POINTS_PER_CENTROID}) "
                    f"(the faiss/torch fit uses at most k x {defaults.KMEANS_MAX_POINTS_PER_CENTROID} points "
                    f"anyway); 0: no total cap (the reference's sampling; memory grows with the split)")
    add_option(parser, "--kmeans-backend", choices=BACKENDS, default=defaults.KMEANS_BACKEND,
               help="auto (faiss if installed, else torch), faiss, torch, or sklearn (MiniBatchKMeans with the "
                    "reference settings)")
    parser.add_argument("--upsample", choices=UPSAMPLE_MODES, default=defaults.UPSAMPLE,
                        help="similarity (default: bilinear similarities then argmax) or labels (argmax at feature "
                             "resolution then nearest, the reference path)")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N images of the split (0: all; applied before --shard)")
    add_option(parser, "--skip-crf", action="store_true",
               help="accepted for compatibility with the reference; no CRF is ever applied (this is the default)")
    add_runner_arguments(parser, workers=1)
    parser.epilog = EPILOG


def config_of(args: argparse.Namespace) -> SemanticConfig:
    """The flags as a :class:`~pseudo_labels.stages.semantic.semantics.SemanticConfig`."""
    names = ("split", "k", "output_subdir", "raw_clusters", "load_centroids", "fit_only", "mapping", "backbone",
             "weights", "head", "head_weights", "device", "batch_size", "seed", "features_dir", "sample_filter",
             "samples_per_image", "max_samples", "kmeans_backend", "upsample", "limit", "skip_crf", "dataset")
    return SemanticConfig(cityscapes_root=str(args.cityscapes_root), **{n: getattr(args, n) for n in names})


def run(args: argparse.Namespace) -> int:
    options = runner_options(args)
    summary = generate_semantics(config_of(args), options, notify=print)
    if summary.status == "finished" and not summary.uses_ground_truth:
        print("uses ground truth: no (label-free)")
    print(summary.line())
    summary.raise_if_failed()
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.generate_overclustered_semantics"))
