"""Assemble Cityscapes-panoptic PNG + JSON from semantic trainIds and instance maps.

Pairs ``--semantic-dir`` PNGs with ``--instance-dir`` ``*_instance.png`` maps by Cityscapes
stem (recursive). The semantic map is resized (nearest) to the instance map's size, the
panoptic map assembled there (stuff >= ``--stuff-min-area`` px per class at that
resolution, things = instances, rest void), then resized (nearest) to ``--resolution``
(default: the semantic map's own size, e.g. 1024x2048 to match Cityscapes ground truth).
Writes ``<out-folder>/<stem>_panoptic.png`` and ``--out-json`` (categories = Cityscapes
labelIds), which ``pseudo-labels evaluate`` and cityscapesscripts' evaluator read unchanged.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from pseudo_labels.core import defaults
from pseudo_labels.datasets.cityscapes import index_by_stem
from pseudo_labels.core.arguments import add_option, add_runner_arguments, module_main, runner_options
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.stages.instances import check_semantic_ids, resize_semantic
from pseudo_labels.core.io import is_up_to_date, prepare_output_dir, read_png, rgb_to_id, write_manifest
from pseudo_labels.stages.panoptic import (
    annotation_entry,
    assemble_panoptic,
    image_entry,
    panoptic_file_name,
    panoptic_segments,
    resize_panoptic,
    write_panoptic_json,
    write_panoptic_png,
)
from pseudo_labels.core.runner import default_workers, run_per_image

STAGE = "generate-panoptic"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--semantic-dir", required=True, help="semantic PNGs (trainIds, 255 void), recursive")
    add_option(parser, "--instance-dir", required=True, help="instance PNGs (*_instance.png, uint16), recursive")
    add_option(parser, "--out-json", required=True, help="panoptic JSON to write")
    add_option(parser, "--out-folder", required=True, help="folder for <stem>_panoptic.png")
    add_option(parser, "--stuff-min-area", type=int, default=defaults.STUFF_MIN_AREA,
               help="pixels a stuff class needs (at the instance-map resolution) to become a segment")
    add_option(parser, "--resolution", type=int, nargs=2, metavar=("H", "W"), default=None,
               help="output size (default: the semantic map's size)")
    add_option(parser, "--skip-missing", action="store_true", help="skip images without an instance map (counted)")
    add_runner_arguments(parser, workers=default_workers())


def panoptic_for_image(sem: np.ndarray, inst: np.ndarray, stuff_min_area: int,
                       out_size: tuple[int, int] | None) -> tuple[np.ndarray, list[dict]]:
    """The library path shared with the sweep: semantic -> instance size, assemble, resize."""
    sem_small = resize_semantic(sem, inst.shape)
    pan, segs = assemble_panoptic(sem_small, inst, stuff_min_area)
    size = tuple(out_size) if out_size is not None else sem.shape
    if pan.shape != size:
        pan = resize_panoptic(pan, size)
        segs = panoptic_segments(pan)
    return pan, segs


def _process(item, stuff_min_area: int, resolution, out_folder: str) -> dict:
    stem, sem_path, inst_path = item
    sem = read_png(sem_path)
    if sem.ndim != 2:
        raise InputFileError(sem_path, f"expected a single-channel trainId map, got shape {sem.shape}")
    bad = check_semantic_ids(sem)
    if bad:
        raise InputFileError(sem_path, f"unknown class ids {bad[:10]} (expected trainIds 0..18 or 255)")
    inst = read_png(inst_path)
    if inst.ndim != 2:
        raise InputFileError(inst_path, f"expected a single-channel instance map, got shape {inst.shape}")
    pan, segs = panoptic_for_image(sem, inst, stuff_min_area, resolution)
    write_panoptic_png(Path(out_folder) / panoptic_file_name(stem), pan)
    return {"image": image_entry(stem, pan.shape), "annotation": annotation_entry(stem, segs)}


def _png_of(item, out_folder: str) -> Path:
    return Path(out_folder) / panoptic_file_name(item[0])


def _entries_of_finished(item, out_folder: str) -> dict:
    """JSON entries of a panoptic PNG written by an earlier run or another shard."""
    pan = rgb_to_id(read_png(_png_of(item, out_folder)))
    return {"image": image_entry(item[0], pan.shape), "annotation": annotation_entry(item[0], panoptic_segments(pan))}


def run(args: argparse.Namespace) -> int:
    sem_dir, inst_dir = Path(args.semantic_dir), Path(args.instance_dir)
    sems = index_by_stem(sem_dir, ".png")
    insts = index_by_stem(inst_dir, "_instance.png")
    if not sems:
        raise PseudoLabelsError(f"{sem_dir}: no semantic PNGs with a Cityscapes stem")
    opts = runner_options(args)
    mine_stems = set(opts.select(sorted(sems)))  # --shard: this shard's images (by sorted stem)
    missing = [s for s in sems if s not in insts and s in mine_stems]
    if missing and not args.skip_missing:
        raise PseudoLabelsError(
            f"{inst_dir}: no instance map for {len(missing)} image(s), e.g. {missing[0]} "
            f"(expected {missing[0]}*_instance.png; pass --skip-missing to skip them)"
        )
    items = [(s, str(sems[s]), str(insts[s]) if s in insts else "") for s in sems]
    worker = functools.partial(_process, stuff_min_area=args.stuff_min_area,
                               resolution=tuple(args.resolution) if args.resolution else None,
                               out_folder=str(args.out_folder))
    params = {"stuff_min_area": args.stuff_min_area, "resolution": args.resolution}
    resume = prepare_output_dir(args.out_folder, STAGE, params, overwrite=opts.overwrite)
    mine = [it for it in items if it[0] in mine_stems and it[2]]
    out_folder = str(args.out_folder)
    summary = run_per_image(worker, mine, options=opts, desc="panoptic", name_of=lambda it: it[0],
                            is_done=(lambda it: is_up_to_date(_png_of(it, out_folder), it[1], it[2])) if resume else None)
    summary.raise_if_failed()
    # The JSON covers every image; with --shard it is written by whichever shard finds all PNGs done.
    if opts.shard is None:
        items = [it for it in items if it[2]]  # --skip-missing drops images without instances
    if not all(_png_of(it, out_folder).exists() for it in items):
        print(f"{summary.line()}; shard {args.shard} finished, the JSON is written once every shard is done "
              "(or rerun without --shard)", file=sys.stderr)
        return 0
    fresh = {it[0]: r for it, r in zip(mine, summary.results) if r is not None}
    entries = [fresh.get(it[0]) or _entries_of_finished(it, out_folder) for it in items]
    images = [e["image"] for e in entries]
    anns = [e["annotation"] for e in entries]
    write_panoptic_json(args.out_json, images, anns)
    write_manifest(args.out_folder, STAGE, params, uses_ground_truth=False,
                   inputs={"semantic_dir": str(sem_dir), "instance_dir": str(inst_dir)},
                   counts={"images": len(items), "done": summary.done, "skipped_existing": summary.skipped,
                           "missing_instances": len(missing),
                           "segments": sum(len(a["segments_info"]) for a in anns)},
                   extra={"json": str(args.out_json), **opts.describe()})
    msg = f"{summary.line()}; wrote {args.out_json}"
    if missing:
        msg += f"; {len(missing)} image(s) without instances skipped"
    print(msg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.generate_panoptic"))
