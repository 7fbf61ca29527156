"""``sweep --protocol cups``: every cell of the splitting grid scored with CUPS' metric (:mod:`evaluation.cups`).

CUPS matches pseudo-classes to classes over the whole split, so each cell is scored in two passes
over the images: pass 1 builds the cell's panoptic prediction per image and sums its (category x
class) co-occurrence table; each cell's matching follows (things and stuff apart, as
``evaluate --protocol cups``); pass 2 builds the predictions again and accumulates PQ under that
matching. A cell's prediction is what the pipeline writes (:mod:`.sweep`): instances at the working
resolution -> panoptic assembled there -> nearest resize to the semantic map's size, then to the
ground truth's. The categories (Cityscapes labelIds of the mapped semantics) are the
pseudo-classes. Ground truth: ``gtFine/<split>/**/*_gtFine_instanceIds.png`` (no panoptic GT).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.instance.instances import resize_depth_bilinear, resize_semantic
from pseudo_labels.stages.instance.panoptic import assemble_panoptic, panoptic_categories
from pseudo_labels.stages.outputs import sweep as base


def run_sweep_any(cfg: base.SweepConfig, options=None, log=None) -> dict:
    """The sweep of any protocol: :func:`run_sweep_cups` for ``cups``, else :func:`.sweep.run_sweep`."""
    if cfg.protocol == "cups":
        return run_sweep_cups(cfg, options, log)
    return base.run_sweep(cfg, options, log)


@dataclass
class CupsSweepJob:
    stem: str
    semantic_paths: list[str]
    depth_path: str | None
    gt_path: str


def _category_index(labels) -> tuple[dict[int, tuple[int, bool]], list[dict]]:
    cats = sorted(panoptic_categories(labels), key=lambda c: int(c["id"]))
    return {int(c["id"]): (j, bool(c.get("isthing"))) for j, c in enumerate(cats)}, cats


def cups_image(job: CupsSweepJob, grid: base.Grid, settings: base.SweepSettings, num_classes: int,
               assignments: list[dict] | None) -> list[dict[tuple, tuple]]:
    """[source] -> cell -> (co-occurrence table (K, C), #candidates, #placed) with ``assignments`` None,
    else -> ((IoU sum, TP, FP, FN), #candidates, #placed) under ``assignments[source][cell]``."""
    from evaluation.cups import (
        VOID,
        cluster_class_confusion,
        cups_classes,
        load_gt,
        pq_stats_cups,
        prediction_maps,
    )
    from evaluation.pq_stats import EvaluationError
    from evaluation.resize import check_aspect, resize_nearest

    from pseudo_labels.stages.instance.depth import read_depth_npy

    classes = cups_classes(num_classes)
    gt_cls, gt_inst = load_gt(job.gt_path, num_classes, None)
    index, _ = _category_index(settings.labels)
    depth = read_depth_npy(job.depth_path) if job.depth_path is not None else None
    depth_work = None
    out = []
    for k, path in enumerate(job.semantic_paths):
        sem = base.read_semantic(path, settings.luts[k] if settings.luts else None, settings.labels)
        try:
            check_aspect(sem.shape, gt_cls.shape, path)
        except EvaluationError as exc:
            raise PseudoLabelsError(str(exc)) from None
        work = base.defaults.work_resolution(sem.shape, settings.work_resolution)  # default: half of the image
        if depth is not None and (depth_work is None or depth_work.shape != work):
            depth_work = resize_depth_bilinear(depth, work)
        sem_work = resize_semantic(sem, work)
        cells: dict[tuple, tuple] = {}
        for cell, inst, cls, n_cand in base.iter_cell_instances(sem_work, depth_work, grid, settings):
            pan, segs = assemble_panoptic(sem_work, inst, settings.stuff_min_area, settings.thing_classes,
                                          settings.labels)
            pan = resize_nearest(resize_nearest(pan, sem.shape), gt_cls.shape)
            pc, pi = prediction_maps(pan, segs, index, image_id=job.stem)
            if assignments is None:
                cells[cell] = (cluster_class_confusion(pc, gt_cls, len(index), num_classes), n_cand, len(cls))
            else:
                a = assignments[k][cell]
                mapped = np.where(pc >= 0, a[np.clip(pc, 0, len(a) - 1)], VOID)
                cells[cell] = (pq_stats_cups(mapped, pi, gt_cls, gt_inst, classes), n_cand, len(cls))
        out.append(cells)
    return out


def _jobs(cfg, found: list) -> tuple[list[CupsSweepJob], list[str], list, list[str]]:
    """(one job per image, semantic sources, their LUTs and k, stems skipped); ``found``: the semantic
    sources of :func:`.sweep.register_outputs`."""
    from pseudo_labels.stages.outputs.scoring import gt_instance_index

    root = Path(cfg.cityscapes_root)
    gt = gt_instance_index(root, cfg.split)
    sources = list(dict.fromkeys(cfg.semantic_subdirs))
    no_depth = cfg.depth == "none"
    depth_idx = {} if no_depth else base.depth_index(root, cfg.depth_subdir, cfg.split)
    stems = sorted(gt)
    missing = [s for s in stems if (not no_depth and s not in depth_idx) or any(s not in f[0] for f in found)]
    if missing and not cfg.skip_missing:
        raise PseudoLabelsError(f"no semantic or depth map for {len(missing)} image(s) of gtFine/{cfg.split}, e.g. "
                                f"{missing[0]} (pass --skip-missing to skip them)")
    stems = [s for s in stems if s not in missing][: cfg.max_images or None]
    if not stems:
        raise PseudoLabelsError("no image has semantics, depth and ground truth")
    jobs = [CupsSweepJob(s, [str(f[0][s]) for f in found], None if no_depth else str(depth_idx[s]), str(gt[s]))
            for s in stems]
    return jobs, sources, [f[1:] for f in found], missing


def run_sweep_cups(cfg: base.SweepConfig, options=None, log=None) -> dict:
    """The sweep's result dict under CUPS' protocol (same schema as :func:`.sweep.run_sweep`, plus per row
    ``mIoU``, ``accuracy`` and the ``assignment``), written with its CSV and heatmaps."""
    from evaluation.cups import cups_assignment, cups_classes, miou_cups, set_order, summarize_cups

    from pseudo_labels.core.runner import RunOptions, run_per_image
    from pseudo_labels.datasets import label_table

    if cfg.protocol != "cups":
        raise PseudoLabelsError(f"run_sweep_cups scores protocol cups, not {cfg.protocol!r}")
    options = options or RunOptions()
    labels = label_table(cfg.dataset)
    t0 = time.time()
    C = cfg.num_classes
    classes = cups_classes(C)
    out_path, found = base.register_outputs(cfg, labels, gt_cache=False)  # the default path too (issue 24)
    jobs, sources, luts_ks, missing = _jobs(cfg, found)
    luts, ks = zip(*luts_ks)
    work0, min_areas = base.default_min_areas(cfg, jobs[0].semantic_paths[0])
    if cfg.depth == "none":  # components only, as run_sweep
        grid = base.Grid((), min_areas, (), (), cc_baseline=True)
    else:
        grid = base.Grid(tuple(cfg.grad_thresholds), min_areas, tuple(cfg.sigmas),
                         tuple(cfg.dilation_iters), cc_baseline=cfg.cc_baseline)
    settings = base.SweepSettings(protocol="standard", work_resolution=tuple(cfg.resolution) if cfg.resolution else None,
                                  connectivity=cfg.connectivity, normalize=cfg.normalize, luts=list(luts),
                                  labels=labels)
    index, cats = _category_index(labels)
    things = set_order(j for j, thing in index.values() if thing)
    stuffs = set_order(j for j, thing in index.values() if not thing)

    def run(assignments, desc):
        worker = functools.partial(cups_image, grid=grid, settings=settings, num_classes=C, assignments=assignments)
        summary = run_per_image(worker, jobs, options=options, desc=desc, name_of=lambda j: j.stem)
        summary.raise_if_failed()
        return summary.results

    first = run(None, "sweep (cups: matching)")
    costs = [{cell: sum(img[k][cell][0] for img in first) for cell in first[0][k]} for k in range(len(sources))]
    assignments = [{cell: cups_assignment(cost, classes.things, classes.stuffs, things, stuffs)
                    for cell, cost in per.items()} for per in costs]
    second = run(assignments, "sweep (cups: PQ)")
    per_source: list[dict[tuple, dict]] = []
    for k in range(len(sources)):
        res = {}
        for cell in second[0][k]:
            stats = [img[k][cell][0] for img in second]
            m = summarize_cups(*(sum(s[i] for s in stats) for i in range(4)), classes)
            m["avg_instances"] = sum(img[k][cell][1] for img in second) / len(second)
            m["avg_placed_instances"] = sum(img[k][cell][2] for img in second) / len(second)
            m["n_images"] = len(second)
            sem = miou_cups(costs[k][cell], cups_assignment(costs[k][cell], classes.things, classes.stuffs, None,
                                                             None))
            m["mIoU"], m["accuracy"] = sem["mIoU"], sem["accuracy"]
            res[cell] = m
        per_source.append(res)
    runs, all_rows = base._sweep_runs(grid, sources, ks, per_source)
    for k, run_ in enumerate(runs):
        for row in run_["results"]:
            cell = base.CC_CELL if row["mode"] == "cc-only" else (row["grad_threshold"], row["min_area"],
                                                                   row["sigma"], row["dilation_iters"])
            row["mIoU"], row["accuracy"] = per_source[k][cell]["mIoU"], per_source[k][cell]["accuracy"]
            row["assignment"] = {str(cats[j]["name"]): classes.names[int(a)] if a != 255 else "void"
                                 for j, a in enumerate(assignments[k][cell].tolist())}
    out: dict[str, Any] = {
        "split": cfg.split, "k": ks[0] if len(ks) == 1 else list(ks), "eval_resolution": None,
        "depth_subdir": None if cfg.depth == "none" else cfg.depth_subdir, "depth": cfg.depth,
        "protocol": "cups", "num_classes": C,
        "semantic_subdir": sources[0] if len(sources) == 1 else sources, "work_resolution": list(work0),
        "grid": {"grad_thresholds": list(grid.grad_thresholds), "min_areas": list(grid.min_areas),
                 "sigmas": list(grid.sigmas), "dilation_iters": list(grid.dilation_iters),
                 "connectivity": cfg.connectivity, "normalize": cfg.normalize},
        "n_images": len(jobs), "n_missing_skipped": len(missing),
        "uses_ground_truth": {"evaluation": "gtFine instanceIds (scoring only; CUPS' matching per cell)"},
        "results": all_rows, "best": base.best_row(all_rows), "runs": runs if len(runs) > 1 else None,
        "elapsed_seconds": round(time.time() - t0, 2),
    }
    from evaluation.cups import load_gt

    out["eval_resolution"] = list(load_gt(jobs[0].gt_path, C, None)[0].shape)
    out["out"] = str(out_path)
    base.write_sweep_outputs(out_path, out, runs, grid)
    return out
