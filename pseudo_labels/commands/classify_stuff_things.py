"""Classify semantic (pseudo-)classes as stuff or things with the reference's depth-split rule.

The rule of the reference repository's ``classify_stuff_things.py`` (label-free): per class,
how many more connected components appear when depth-edge pixels are removed from its mask
(``depth_split_ratio``); big, image-covering classes are forced to stuff, then the
``--n-things`` classes with the highest ratio are things. Writes the reference's
``stuff_things.json`` (``classification``, ``statistics``, ``stuff_ids``, ``thing_ids``).
Our own label-free rule is ``generate-depth-guided-instances --thing-classes auto``.
"""

from __future__ import annotations

import argparse

from pseudo_labels.core.arguments import add_option, add_runner_arguments, runner_options
from pseudo_labels.commands import module_main
from pseudo_labels.stages.instance.thing_stuff_reference import REFERENCE_DEFAULTS, StuffThingsConfig, classify_stuff_things_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = REFERENCE_DEFAULTS
    add_option(parser, "--semantic-dir", required=True, help="folder of class-id PNGs (searched recursively)")
    add_option(parser, "--depth-dir", required=True, help="depth .npy maps, same relative folders and stems")
    add_option(parser, "--output-path", required=True, help="stuff_things.json to write")
    add_option(parser, "--num-classes", type=int, default=d["num_classes"], help="class ids 0..N-1 (default 19)")
    add_option(parser, "--n-things", type=int, default=d["n_things"],
               help="classes to call things among the non-big-stuff ones (default 8; 12 catches all Cityscapes "
                    "things on the reference's data)")
    add_option(parser, "--max-images", type=int, default=None, help="first N PNGs only")
    add_option(parser, "--grad-threshold", type=float, default=d["grad_threshold"],
               help="depth-edge threshold on |Sobel(gaussian(depth))| (default 0.05)")
    add_option(parser, "--depth-blur", type=float, default=d["depth_blur"], help="gaussian sigma (default 1.0)")
    add_option(parser, "--big-stuff-size-thresh", type=float, default=d["big_stuff_size_thresh"],
               help="stage 1: mean region size / image area above which a class may be big stuff (default 0.02)")
    add_option(parser, "--big-stuff-pix-thresh", type=float, default=d["big_stuff_pix_thresh"],
               help="stage 1: and pixels per image above which it is (default 5000)")
    add_runner_arguments(parser, workers=1, shard=False, overwrite=False)


def run(args: argparse.Namespace) -> int:
    config = StuffThingsConfig(
        semantic_dir=args.semantic_dir, depth_dir=args.depth_dir, output_path=args.output_path,
        num_classes=args.num_classes, n_things=args.n_things, max_images=args.max_images,
        grad_threshold=args.grad_threshold, depth_blur=args.depth_blur,
        big_stuff_size_thresh=args.big_stuff_size_thresh, big_stuff_pix_thresh=args.big_stuff_pix_thresh)
    doc = classify_stuff_things_folder(config, runner_options(args))
    print(f"{'id':>3}  {'label':5}  {'score':>8}  {'regions':>7}  {'split':>7}  {'ratio':>6}  {'rel.size':>8}")
    order = sorted(range(args.num_classes), key=lambda k: -doc["classification"][str(k)]["score"])
    for k in order:
        c, s = doc["classification"][str(k)], doc["statistics"][str(k)]
        print(f"{k:3d}  {c['label']:5}  {c['score']:8.3f}  {s['avg_region_count']:7.1f}  {s['avg_split_count']:7.1f}"
              f"  {s['depth_split_ratio']:6.2f}  {s['avg_relative_size']:8.4f}")
    print(f"images: {doc['n_images']} ({doc['n_missing_depth']} without depth, skipped)")
    print(f"stuff ids: {doc['stuff_ids']}\nthing ids: {doc['thing_ids']}")
    print("uses ground truth: no (label-free)")
    print(f"wrote {args.output_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.classify_stuff_things"))
