"""Run the whole pipeline from one TOML config: ``pseudo-labels run --config pipeline.toml``.

The config names the data root, the split, the output folder and the stages with their
parameters (features, semantics, depth, instances, panoptic, evaluate, sweep, exports,
visualize, report); they run in order through the same library functions as their commands.
Rerunning the same config resumes (finished images and stages are kept). ``--print-config``
writes a commented default config; ``--print-config --preset NAME`` one that reproduces a row of
the reference's results table (``--preset list`` lists them). Before the first stage, every
stage's inputs are checked and all problems reported at once (exit 2, nothing written).
See :mod:`pseudo_labels.stages.pipeline`.
"""

from __future__ import annotations

import argparse
import sys

from pseudo_labels.core.arguments import add_option
from pseudo_labels.commands import module_main
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.pipeline import (PRESETS, default_config_text, format_results, load_pipeline_config,
                                           preset_config_text, preset_list_text, run_pipeline)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--config", default=None, help="pipeline TOML file")
    add_option(parser, "--print-config", action="store_true",
               help="write a commented default config to stdout and exit")
    add_option(parser, "--preset", default=None, metavar="NAME",
               help=f"with --print-config: a config reproducing a row of the reference's table "
                    f"({', '.join(PRESETS)}); 'list' lists them")


def run(args: argparse.Namespace) -> int:
    if args.preset and not args.print_config:
        raise PseudoLabelsError("--preset goes with --print-config (pseudo-labels run --print-config --preset list)")
    if args.print_config and args.config:
        raise PseudoLabelsError("--print-config writes a new config and runs nothing: give either --config FILE "
                                "(run it) or --print-config (write one)")
    if args.print_config:
        text = default_config_text() if not args.preset else (
            preset_list_text() if args.preset == "list" else preset_config_text(args.preset))
        sys.stdout.write(text)
        return 0
    if not args.config:
        raise PseudoLabelsError("give --config pipeline.toml (`pseudo-labels run --print-config` writes one)")
    result = run_pipeline(load_pipeline_config(args.config))
    table = format_results(result)
    if table:
        print("\n" + table)
    print(f"\n{len(result.steps)} stages in {result.seconds:.1f}s "
          f"({sum(s.skipped for s in result.steps)} kept from an earlier run); outputs in {result.config.layout.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.run"))
