"""Markdown report of a sweep: results table, best configuration, heatmap(s), overlays.

Every number comes from the sweep JSON (see :mod:`pseudo_labels.stages.outputs.report` for its keys); a
PQ heatmap over grad_threshold x min_area is drawn when none sits next to the JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pseudo_labels.commands import module_main
from pseudo_labels.stages.outputs.report import ReportConfig, fmt, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_json", help="sweep result JSON")
    parser.add_argument("--out", default=None, help="report path (default reports/<sweep name>.md in the working folder); given or "
                        "default, an existing file there that pseudo_labels did not write is never replaced")
    parser.add_argument("--overlays", default=None, help="folder written by `pseudo-labels visualize`")
    parser.add_argument("--title", default=None, help="report title")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("reports") / (Path(args.sweep_json).stem + ".md")
    res = write_report(ReportConfig(args.sweep_json, out, args.overlays, args.title))
    b = res["best"]
    print(f"wrote {out} (best PQ {fmt(b.get('PQ'))} at grad_threshold {b.get('grad_threshold')}, "
          f"min_area {b.get('min_area')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(module_main("pseudo_labels.commands.report"))
