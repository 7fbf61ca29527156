"""Run the whole pipeline on a built-in synthetic city and print a results table.

The demo is ``pseudo-labels run`` with a built-in config (written to ``<out>/pipeline.toml``,
so ``pseudo-labels run --config <out>/pipeline.toml`` repeats it): a small synthetic
Cityscapes-layout city (with ground truth, disparity and camera files), built-in backbone
features + k-means + majority mapping, depth from disparity, depth-guided instance
splitting, panoptic assembly, evaluation, a small sweep, CUPS and COCO exports, overlays
and a markdown report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pseudo_labels.core import io
from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.stages.pipeline import PipelineResult, format_results, parse_pipeline_text, run_pipeline

DEMO_N_IMAGES = 12
DEMO_SIZE = (512, 1024)  # (H, W): the reference's working resolution, so its A_min applies unscaled
DEMO_K = 80
DEMO_MIN_AREA = 1000  # the reference's A_min at 512x1024
DEMO_SWEEP_TAUS = (0.1, 0.2, 0.3)
DEMO_SWEEP_MIN_AREAS = (500, 1000, 2000)
CONFIG_NAME = "pipeline.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--out", default="demo_out", help="output folder (default: demo_out)")
    add_option(parser, "--n", type=int, default=DEMO_N_IMAGES, help="number of synthetic images")
    add_option(parser, "--seed", type=int, default=0, help="seed of the synthetic city")
    add_option(parser, "--workers", type=int, default=2, help="worker processes per stage")


def demo_config_text(n: int = DEMO_N_IMAGES, seed: int = 0, workers: int = 2) -> str:
    """The demo's pipeline config (TOML; paths relative to the output folder it is written to)."""
    h, w = DEMO_SIZE
    res = f"[{h}, {w}]"
    return f"""\
# The demo: pseudo-labels run --config {CONFIG_NAME} (paths relative to this file)
[data]
root = "city"
split = "val"
out = "."
semantic_subdir = "pseudo_semantic_k{DEMO_K}"
depth_subdir = "depth_disparity"

[runner]
workers = {int(workers)}

[synth]                    # (workers = 1 in [synth] and the exports: as the demo always ran them)
workers = 1
n = {int(n)}
seed = {int(seed)}
size = {res}

[semantics]                # built-in backbone features + k-means + majority mapping
k = {DEMO_K}
backbone = "builtin"
mapping = "majority"

[depth]                    # from stereo disparity, min-max normalised per image (as the reference)
source = "disparity"
normalize = "minmax"

[instances]
grad_threshold = 0.20
min_area = {DEMO_MIN_AREA}
resolution = {res}

[panoptic]
resolution = {res}

[evaluate]                 # standard protocol = cityscapesscripts; the reference's and CUPS' beside it
semantic = true
also_protocols = ["reference", "cups"]

[sweep]
grad_thresholds = {json.dumps(list(DEMO_SWEEP_TAUS))}
min_areas = {json.dumps(list(DEMO_SWEEP_MIN_AREAS))}
resolution = {res}

[exports.cups]
overwrite = true
workers = 1

[exports.coco]
overwrite = true
workers = 1

[visualize]
n = 4

[report]
"""


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    text = demo_config_text(args.n, args.seed, args.workers)
    io.write_bytes(out / CONFIG_NAME, text.encode())
    print(f"demo config: {out / CONFIG_NAME} (pseudo-labels run --config {out / CONFIG_NAME} repeats the demo)")
    result = run_pipeline(parse_pipeline_text(text, out, str(out / CONFIG_NAME)))
    print_summary(result)
    return 0


def print_summary(result: PipelineResult) -> None:
    out = result.config.layout.out
    print("\n" + format_results(result, title="the synthetic city"))
    print("\nGround truth use: the majority mapping read gtFine labels (recorded in its manifest);"
          " evaluation and sweep compare against ground truth. Everything else is label-free.")
    print("\nStep times: " + ", ".join(f"{s.seconds:.1f}s" for s in result.steps) + f"  (total {result.seconds:.1f}s)")
    print(f"\nOutputs in {out}:")
    for name, what in [
        ("city/", "synthetic Cityscapes-layout dataset"),
        (f"city/pseudo_semantic_k{DEMO_K}/", "raw clusters, semantic pseudo-labels, centroids, manifest"),
        ("city/depth_disparity/", "depth maps (.npy)"),
        ("instances/", "instance pseudo-labels"),
        ("panoptic/ + panoptic.json", "Cityscapes-panoptic pseudo-labels"),
        ("evaluation.json", "PQ/SQ/RQ per class"),
        ("sweep.json / .csv / heatmap", "parameter sweep"),
        ("cups/", "CUPS training format"),
        ("coco/", "COCO panoptic (integer image ids)"),
        ("overlays/", "per-image panels and contact sheet"),
        ("report/report.md", "markdown report"),
        (CONFIG_NAME, "the pipeline config the demo ran"),
    ]:
        print(f"  {name:34s} {what}")


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.demo"))
