"""Depth maps per image from stereo disparity, a folder of .npy maps, SPIdepth or Depth Anything V2.

Writes float32 ``<out>/<split>/<city>/<stem>.npy`` (one per image of the split) and a
``manifest.json``. Sources:

- ``disparity``: Cityscapes ``disparity/`` + ``camera/`` files under the root;
  ``depth = baseline * fx / ((p - 1) / 256)`` metres, invalid pixels (p <= 1) take the
  value of the nearest valid pixel.
- ``npy``: an existing folder of depth maps (``--input-dir``), paired by Cityscapes stem
  (flat or ``<split>/<city>/`` layout).
- ``spidepth``: the SPIdepth Cityscapes network (``--weights`` = folder with
  ``encoder.pth`` and ``depth.pth``), see ``refs/spidepth``.
- ``depth-anything``: Depth Anything V2 from a local ``transformers`` folder
  (``--model-dir``); its relative inverse depth is turned into depth as 1 / disparity.

With ``--normalize minmax`` (default, what the reference stores) every map is scaled
to [0, 1] per image; ``--normalize none`` keeps metres (disparity, SPIdepth) or the
network's relative depth units.
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.core.errors import PseudoLabelsError

STAGE = "generate-depth"
SOURCES = ("disparity", "npy", "spidepth", "depth-anything")
NETWORK_SOURCES = ("spidepth", "depth-anything")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--cityscapes-root", required=True, help="dataset root in the Cityscapes layout")
    parser.add_argument("--split", default="val", help="split to process (default: val)")
    parser.add_argument("--source", required=True, choices=SOURCES, help="where depth comes from")
    out = parser.add_mutually_exclusive_group(required=True)
    add_option(out, "--output-dir", help="output folder (maps go to <dir>/<split>/<city>/<stem>.npy)")
    add_option(out, "--output-subdir", help="output folder name under --cityscapes-root (e.g. depth_spidepth)")
    add_option(parser, "--input-dir", help="--source npy: folder of <stem>*.npy depth maps (searched recursively)")
    parser.add_argument("--weights", help="--source spidepth: folder with encoder.pth and depth.pth (or one .pth/.pt file)")
    add_option(parser, "--model-dir", help="--source depth-anything: local transformers folder (config.json, weights, preprocessor)")
    parser.add_argument("--normalize", choices=("minmax", "none"), default=defaults.DEPTH_NORMALIZE,
                        help="per-image min-max to [0, 1] (default, as the reference) or none (metres / network units)")
    add_option(parser, "--spidepth-preprocess", choices=("spidepth", "full-frame"), default=defaults.SPIDEPTH_PREPROCESS,
               help="spidepth: 'spidepth' (default, what the network was trained and evaluated on for Cityscapes: "
                    f"cut the bottom {round(defaults.SPIDEPTH_CITYSCAPES_CROP_FRACTION * 100)}%% rows (ego car), "
                    "resize the rest to the network input (encoder.pth height/width, else "
                    f"{defaults.SPIDEPTH_INPUT_SIZE[0]}x{defaults.SPIDEPTH_INPUT_SIZE[1]}), predict, paste back; the cut "
                    "rows repeat the last predicted row); 'full-frame' (the reference's way: the whole image "
                    "resized to the network input, no crop)")
    add_option(parser, "--no-flip", action="store_true",
               help="spidepth: do not average with the prediction of the mirrored image")
    add_option(parser, "--output-size", help="HxW of the written maps (default: the image/disparity size)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="network sources: cpu or cuda")
    add_runner_arguments(parser, workers=1)  # network sources always run in one process

# --------------------------------------------------------------------------- per-image work
@dataclass(frozen=True)
class DepthJob:
    """Everything one image needs (picklable)."""

    stem: str
    out_path: str
    image_path: str
    disparity_path: str = ""
    camera_path: str = ""
    npy_path: str = ""


@dataclass(frozen=True)
class DepthConfig:
    source: str
    normalize: str
    output_size: tuple[int, int] | None = None
    weights: str | None = None
    model_dir: str | None = None
    spidepth_preprocess: str = "spidepth"
    flip: bool = True
    device: str = "cpu"


_PREDICTORS: dict = {}


def _predictor(cfg: DepthConfig):
    """One network per process, loaded on first use."""
    key = (cfg.source, cfg.weights, cfg.model_dir, cfg.device, cfg.spidepth_preprocess, cfg.flip)
    if key not in _PREDICTORS:
        from pseudo_labels.stages import depth

        if cfg.source == "spidepth":
            _PREDICTORS[key] = depth.SPIdepthPredictor.from_weights(
                cfg.weights, device=cfg.device, preprocess=cfg.spidepth_preprocess, flip=cfg.flip)
        else:
            _PREDICTORS[key] = depth.DepthAnythingPredictor.from_pretrained(cfg.model_dir, device=cfg.device)
    return _PREDICTORS[key]


def compute_depth(job: DepthJob, cfg: DepthConfig) -> np.ndarray:
    """The (H, W) float32 depth map of one image, normalised as configured (no writing)."""
    from pseudo_labels.stages import depth
    from pseudo_labels.core.io import read_image_rgb, read_png

    if cfg.source == "disparity":
        disparity = read_png(job.disparity_path)
        camera = depth.read_camera(job.camera_path)
        try:
            d = depth.depth_from_disparity(disparity, camera)
        except (PseudoLabelsError, ValueError) as exc:
            raise PseudoLabelsError(f"{job.disparity_path}: {exc}") from None
    elif cfg.source == "npy":
        d = depth.read_depth_npy(job.npy_path)
    else:
        image = read_image_rgb(job.image_path)
        d = _predictor(cfg).predict(image)
    if cfg.output_size is not None:
        d = depth.resize_depth(d, cfg.output_size)
    try:
        return depth.normalize_depth(d, cfg.normalize)
    except PseudoLabelsError as exc:
        raise PseudoLabelsError(f"{job.stem}: {exc}") from None


def process_job(job: DepthJob, cfg: DepthConfig) -> tuple[int, int]:
    """Compute and write one map atomically; returns its shape."""
    from pseudo_labels.core.io import write_npy

    d = compute_depth(job, cfg)
    write_npy(job.out_path, d.astype(np.float32, copy=False))
    return d.shape


def _is_done(job: DepthJob) -> bool:
    return os.path.exists(job.out_path)


def _name(job: DepthJob) -> str:
    return job.stem


# --------------------------------------------------------------------------- planning
def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(x) for x in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise PseudoLabelsError(f"--output-size {text!r}: expected HxW, e.g. 512x1024") from None
    if h <= 0 or w <= 0:
        raise PseudoLabelsError(f"--output-size {text!r}: sides must be positive")
    return h, w


def output_dir_of(args: argparse.Namespace) -> Path:
    if getattr(args, "output_dir", None):
        return Path(args.output_dir)
    return Path(args.cityscapes_root) / args.output_subdir


def plan_jobs(root: str | os.PathLike, split: str, source: str, out_dir: str | os.PathLike,
              input_dir: str | None = None, shard: tuple[int, int] | None = None) -> list[DepthJob]:
    """One :class:`DepthJob` per image of the split; missing inputs raise an error naming them."""
    from pseudo_labels.datasets.cityscapes import camera_path, disparity_path, list_images, select_shard
    from pseudo_labels.stages.depth import index_depth_folder

    entries = select_shard(list_images(root, split), shard)
    out_dir = Path(out_dir)
    npy_index = {}
    if source == "npy":
        if not input_dir:
            raise PseudoLabelsError("--source npy needs --input-dir (folder of <stem>*.npy depth maps)")
        npy_index = index_depth_folder(input_dir)
    jobs, missing = [], []
    for e in entries:
        kw = {}
        if source == "disparity":
            dp, cp = disparity_path(root, e), camera_path(root, e)
            missing += [str(p) for p in (dp, cp) if not p.is_file()]
            kw = dict(disparity_path=str(dp), camera_path=str(cp))
        elif source == "npy":
            if e.stem not in npy_index:
                missing.append(f"{e.stem} (no {e.stem}*.npy under {input_dir})")
            kw = dict(npy_path=str(npy_index.get(e.stem, "")))
        jobs.append(DepthJob(e.stem, str(out_dir / e.relative(".npy")), str(e.image_path), **kw))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise PseudoLabelsError(
            f"--source {source}: missing input for {len(missing)} file(s) of split '{split}': "
            + "; ".join(missing[:5]) + more
        )
    return jobs


def generate_depth(
    cityscapes_root: str | os.PathLike,
    split: str,
    source: str,
    out_dir: str | os.PathLike,
    *,
    input_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    normalize: str = defaults.DEPTH_NORMALIZE,
    output_size: tuple[int, int] | None = None,
    spidepth_preprocess: str = defaults.SPIDEPTH_PREPROCESS,
    flip: bool = defaults.SPIDEPTH_FLIP,
    device: str = "cpu",
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
):
    """Write one float32 depth map per image of ``split`` to ``out_dir/<split>/<city>/<stem>.npy``
    plus a manifest; finished maps are kept (resume). Returns the runner's ``RunSummary``
    (raises :class:`PseudoLabelsError` if any image failed). The library entry point of
    ``pseudo-labels generate-depth``; the demo and sweep call this."""
    from pseudo_labels.core.io import fingerprint_files, prepare_output_dir, write_manifest
    from pseudo_labels.core.runner import run_per_image

    if source not in SOURCES:
        raise PseudoLabelsError(f"unknown depth source {source!r} (choose from {', '.join(SOURCES)})")
    if source == "spidepth" and not weights:
        raise PseudoLabelsError("--source spidepth needs --weights (folder with encoder.pth and depth.pth)")
    if source == "depth-anything" and not model_dir:
        raise PseudoLabelsError("--source depth-anything needs --model-dir (local transformers folder)")
    if device == "cuda" and source in NETWORK_SOURCES:
        import torch

        if not torch.cuda.is_available():
            raise PseudoLabelsError("--device cuda: no CUDA device is available (use --device cpu)")
    out_dir = Path(out_dir)
    cfg = DepthConfig(
        source=source,
        normalize=normalize,
        output_size=tuple(output_size) if output_size else None,
        weights=str(Path(weights).resolve()) if weights else None,
        model_dir=str(Path(model_dir).resolve()) if model_dir else None,
        spidepth_preprocess=spidepth_preprocess,
        flip=bool(flip),
        device=device,
    )
    parameters = {
        "split": split,
        "source": source,
        "normalize": cfg.normalize,
        "output_size": list(cfg.output_size) if cfg.output_size else None,
        "input_dir": str(Path(input_dir).resolve()) if input_dir and source == "npy" else None,
        "weights": cfg.weights if source == "spidepth" else None,
        "model_dir": cfg.model_dir if source == "depth-anything" else None,
        "spidepth_preprocess": cfg.spidepth_preprocess if source == "spidepth" else None,
        "flip": cfg.flip if source == "spidepth" else None,
        "depth_anything_max_ratio": defaults.DEPTH_ANYTHING_MAX_RATIO if source == "depth-anything" else None,
        "disparity_fill": defaults.DISPARITY_FILL if source == "disparity" else None,
    }
    jobs = plan_jobs(cityscapes_root, split, source, out_dir, str(input_dir) if input_dir else None, shard)
    resume = prepare_output_dir(out_dir, STAGE, parameters, overwrite=overwrite)
    summary = run_per_image(
        functools.partial(process_job, cfg=cfg),
        jobs,
        workers=1 if source in NETWORK_SOURCES else max(1, int(workers)),
        executor=executor,
        ray_address=ray_address,
        desc=f"depth ({source})",
        name_of=_name,
        is_done=_is_done if resume else None,
        fail_fast=fail_fast,
        progress=progress,
    )
    inputs = {"cityscapes_root": str(Path(cityscapes_root).resolve()),
              "images": fingerprint_files(j.image_path for j in jobs)}
    if source == "disparity":
        inputs["disparity"] = fingerprint_files(j.disparity_path for j in jobs)
        inputs["camera"] = fingerprint_files(j.camera_path for j in jobs)
    elif source == "npy":
        inputs["npy"] = fingerprint_files(j.npy_path for j in jobs)
    write_manifest(
        out_dir, STAGE, parameters,
        uses_ground_truth=False,  # disparity is a sensor input (stereo), not labels
        inputs=inputs,
        counts={"images": len(jobs), "done": summary.done, "skipped": summary.skipped,
                "failed": len(summary.failed)},
        extra={"shard": list(shard) if shard else None},
    )
    summary.raise_if_failed("depth maps")
    return summary


def run(args: argparse.Namespace) -> int:
    import sys

    out_dir = output_dir_of(args)
    opts = runner_options(args)
    summary = generate_depth(
        args.cityscapes_root, args.split, args.source, out_dir,
        input_dir=args.input_dir, weights=args.weights, model_dir=args.model_dir,
        normalize=args.normalize, output_size=parse_size(args.output_size),
        spidepth_preprocess=args.spidepth_preprocess, flip=not args.no_flip, device=args.device,
        workers=opts.workers, executor=opts.executor, ray_address=opts.ray_address,
        shard=opts.shard, overwrite=opts.overwrite, fail_fast=opts.fail_fast,
    )
    print(f"generate-depth: {out_dir}: {summary.line()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from pseudo_labels.core.arguments import module_main

    raise SystemExit(module_main("pseudo_labels.generate_depth"))
