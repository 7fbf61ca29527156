"""Extract dense self-supervised features for every image of a Cityscapes split.

Writes ``<out>/<split>/<city>/<stem>.npy`` (float16, (D, h, w), L2-normalised over D) and a
manifest. Images whose file exists are skipped, so a killed run resumes. Backbones:
``builtin`` is a deterministic hand-made feature extractor (colour / texture statistics
per 14x14 patch with a little spatial context; not a learned model) for demos and tests;
``dinov2_vits14|vitb14|vitl14`` load a local DINOv2 checkpoint (official key layout, via
timm); ``--head cause`` adds the CAUSE-TR Segment_TR head (90-d, dense sliding windows).
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.core.runner import batch_name, error_message
from pseudo_labels.core.errors import PseudoLabelsError

STAGE = "extract-features"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pseudo_labels.stages.features import BACKBONES, HEADS

    add_option(parser, "--cityscapes-root", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument("--split", default="val", help="split folder under leftImg8bit (default: val)")
    parser.add_argument("--backbone", default="builtin", choices=BACKBONES,
                        help="builtin: deterministic hand-made colour/texture features (no weights, for demos "
                             "and tests; not a learned model); dinov2_*: DINOv2 ViT/14 from --weights")
    parser.add_argument("--weights", help="local DINOv2 checkpoint (.pth, official facebookresearch/dinov2 keys)")
    parser.add_argument("--head", choices=HEADS, help="cause: CAUSE-TR Segment_TR head (90-d, dense output)")
    add_option(parser, "--head-weights", help="CAUSE segment_tr.pth (with --head cause)")
    parser.add_argument("--codebook", help="CAUSE modularity codebook modular.npy (default: found next to "
                                           "--head-weights or in CAUSE's folder layout)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp16 autocast); default cpu")
    add_option(parser, "--batch-size", type=int, default=defaults.BATCH_SIZE,
               help="images per forward pass (one runner task per batch)")
    add_option(parser, "--input-size", type=int, nargs="+", default=list(defaults.FEATURE_INPUT_SIZE),
               metavar="N", help="network input H W (multiples of 14; default 322 644), or one value: "
                                 "short side, both sides floored to a multiple of 14")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N images of the split (0: all; applied before --shard)")
    parser.add_argument("--out", required=True, help="output folder")
    add_runner_arguments(parser, workers=1)


def _input_size(values):
    if len(values) == 1:
        return int(values[0])
    if len(values) == 2:
        return (int(values[0]), int(values[1]))
    raise PseudoLabelsError(f"--input-size {values}: give H W or a single short side")


def parameters_of(args: argparse.Namespace) -> dict:
    """The parameters that determine the output values (the manifest's config hash)."""
    size = _input_size(args.input_size)
    return {
        "split": args.split,
        "backbone": args.backbone,
        "weights": str(Path(args.weights).resolve()) if args.weights else None,
        "head": args.head,
        "head_weights": str(Path(args.head_weights).resolve()) if args.head_weights else None,
        "codebook": str(Path(args.codebook).resolve()) if args.codebook else None,
        "input_size": list(size) if isinstance(size, tuple) else size,
    }


# --------------------------------------------------------------------------- per-batch work (picklable)
@dataclass(frozen=True)
class ExtractorConfig:
    backbone: str
    weights: str | None
    head: str | None
    head_weights: str | None
    codebook: str | None
    device: str
    input_size: int | tuple[int, int]
    batch_size: int


@dataclass(frozen=True)
class ExtractJob:
    """One batch of images: extract and write their features."""

    entries: tuple
    out: str
    config: ExtractorConfig
    fail_fast: bool


_EXTRACTORS: dict = {}


def extractor_of(cfg: ExtractorConfig):
    """The extractor of ``cfg``, built once per process."""
    if cfg not in _EXTRACTORS:
        from pseudo_labels.stages.features import build_extractor

        _EXTRACTORS.clear()
        _EXTRACTORS[cfg] = build_extractor(
            cfg.backbone, cfg.weights, head=cfg.head, device=cfg.device, input_size=cfg.input_size,
            head_weights=cfg.head_weights, codebook=cfg.codebook, batch_size=cfg.batch_size)
    return _EXTRACTORS[cfg]


def extract_batch(job: ExtractJob) -> dict:
    """Read, extract and write one batch. An unreadable image fails alone (named in the result,
    or raised at once with ``fail_fast``); the others of the batch are still written."""
    from pseudo_labels.stages.features import feature_path, save_features
    from pseudo_labels.core.io import read_image_rgb

    images, failed = [], []
    for e in job.entries:
        try:
            images.append((e, read_image_rgb(e.image_path)))
        except Exception as exc:  # noqa: BLE001 - reported per image
            msg = error_message(exc)
            if job.fail_fast:
                raise PseudoLabelsError(msg if e.stem in msg else f"{e.stem}: {msg}") from None
            failed.append((e.stem, msg))
    grid = None
    if images:
        feats = extractor_of(job.config).extract([im for _, im in images], batch_size=job.config.batch_size)
        for (e, _), f in zip(images, feats):
            save_features(feature_path(job.out, e), f)
            grid = list(f.shape[1:])
    return {"done": len(images), "failed": failed, "grid": grid}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pseudo_labels.datasets.cityscapes import list_images
    from pseudo_labels.stages.features import feature_path
    from pseudo_labels.core.io import fingerprint_files, prepare_output_dir, read_image_rgb, write_manifest
    from pseudo_labels.core.runner import run_per_image

    opts = runner_options(args)
    if args.batch_size < 1:
        raise PseudoLabelsError("--batch-size must be >= 1")
    out = Path(args.out)
    params = parameters_of(args)
    entries = list_images(args.cityscapes_root, args.split)
    if args.limit and args.limit > 0:
        entries = entries[: args.limit]
    entries = opts.select(entries)
    cfg = ExtractorConfig(args.backbone, args.weights, args.head, args.head_weights, args.codebook, args.device,
                          _input_size(args.input_size), args.batch_size)
    extractor = extractor_of(cfg)  # wrong weights / CUDA fail here, before anything is written
    reuse = prepare_output_dir(out, STAGE, params, overwrite=opts.overwrite)
    inputs = {"cityscapes_root": str(Path(args.cityscapes_root).resolve()),
              "images": fingerprint_files(e.image_path for e in entries)}
    features_info = {**extractor.describe(), "dtype": "float16", "layout": "<split>/<city>/<stem>.npy, (D, h, w)"}
    # the manifest comes first: a changed rerun into this folder is refused even after a kill
    write_manifest(out, STAGE, params, uses_ground_truth=False, inputs=inputs,
                   counts={"status": "running", "images": len(entries)},
                   extra={"features": features_info, **opts.describe()})
    todo = [e for e in entries if not (reuse and feature_path(out, e).exists())]
    skipped = len(entries) - len(todo)

    t0 = time.time()
    bs = max(1, args.batch_size)
    jobs = [ExtractJob(tuple(todo[i:i + bs]), str(out), cfg, opts.fail_fast) for i in range(0, len(todo), bs)]
    summary = run_per_image(extract_batch, jobs, options=opts, desc="features", name_of=lambda j: batch_name(j.entries))
    seconds = time.time() - t0
    failed = list(summary.failed)
    done, grid = 0, None
    for r in summary.results:
        if r is not None:
            done += r["done"]
            failed.extend(r["failed"])
            grid = grid or r["grid"]
    if grid is None:
        for e in entries:
            if feature_path(out, e).exists():
                grid = list(np.load(feature_path(out, e), mmap_mode="r").shape[1:])
                break
    if grid is None and entries:
        try:
            grid = list(extractor.output_grid(read_image_rgb(entries[0].image_path).shape[:2]))
        except PseudoLabelsError:
            grid = None
    write_manifest(
        out, STAGE, params, uses_ground_truth=False, inputs=inputs,
        counts={"status": "finished" if not failed else "finished with failures", "images": len(entries),
                "computed": done, "skipped": skipped, "failed": len(failed)},
        extra={"features": {**features_info, "grid": grid}, "device": extractor.device, "batch_size": bs,
               "runner": {"workers": opts.workers, "executor": opts.executor}, **opts.describe(),
               "failed": [{"image": n, "error": m} for n, m in failed],
               "seconds": round(seconds, 3)},
    )
    rate = f", {done / seconds:.2f} img/s" if done and seconds > 0 else ""
    shard = f" (shard {opts.shard[0]}/{opts.shard[1]})" if opts.shard else ""
    print(f"extract-features{shard}: {done} computed, {skipped} skipped (already done), {len(failed)} failed"
          f"{rate} -> {out}")
    if failed:
        names = "; ".join(f"{n}: {m}" for n, m in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise PseudoLabelsError(f"{len(failed)} images failed: {names}{more}; the others were written, "
                                "rerun to retry the failed ones")
    return 0


if __name__ == "__main__":
    from pseudo_labels.core.arguments import module_main

    raise SystemExit(module_main("pseudo_labels.extract_features"))
