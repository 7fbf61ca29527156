"""Markdown report of a sweep (library of the ``report`` command): results table, best
configuration, heatmap(s), overlays.

Every number comes from the sweep JSON (``{split, k, eval_resolution, depth_subdir, protocol,
results: [{grad_threshold, min_area, PQ, PQ_stuff, PQ_things, SQ, RQ, avg_instances, n_images,
...}], best}``); ``best`` is recomputed (highest PQ) when absent. A PQ heatmap over
grad_threshold x min_area is drawn with matplotlib when no heatmap PNG sits next to the JSON.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pseudo_labels.core import io
from pseudo_labels.core.errors import InputFileError, PseudoLabelsError
from pseudo_labels.core.validate import validate_config

PARAM_KEYS = ("k", "grad_threshold", "min_area", "depth_blur_sigma", "sigma", "dilation_iters")
METRIC_KEYS = ("PQ", "PQ_stuff", "PQ_things", "SQ", "RQ", "mIoU", "avg_instances", "n_images")
HEADER_KEYS = ("split", "k", "eval_resolution", "depth_subdir", "protocol")


def load_sweep(path: str | os.PathLike) -> dict:
    """Read and check a sweep JSON (InputFileError naming the file when ``results`` is unusable)."""
    data = io.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("results"), list) or not data["results"]:
        raise InputFileError(path, "not a sweep JSON (needs a non-empty 'results' list)")
    for i, row in enumerate(data["results"]):
        if not isinstance(row, dict) or not isinstance(row.get("PQ"), (int, float)):
            raise InputFileError(path, f"results[{i}] has no numeric 'PQ'")
    return data


def best_result(results: Sequence[Mapping[str, Any]], metric: str = "PQ") -> dict:
    """The row with the highest ``metric`` (first one on ties)."""
    return dict(max(results, key=lambda r: (r.get(metric, float("-inf")), -results.index(r))))


def table_columns(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Scalar columns in a fixed order: parameters, metrics, then the rest as first seen."""
    seen: list[str] = []
    for r in results:
        for k, v in r.items():
            if k not in seen and not isinstance(v, (dict, list)):
                seen.append(k)
    first = [k for k in PARAM_KEYS if k in seen] + [k for k in METRIC_KEYS if k in seen]
    return first + [k for k in seen if k not in first]


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    return str(value).replace("|", "\\|")


def results_table(results: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None = None) -> str:
    """Markdown table of every row; the best row in bold."""
    cols = table_columns(results)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for r in results:
        cells = [fmt(r.get(c, "")) for c in cols]
        if best is not None and all(r.get(c) == best.get(c) for c in cols):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heatmap_grid(results: Sequence[Mapping[str, Any]], metric: str = "PQ", rows: str = "grad_threshold",
                 cols: str = "min_area") -> tuple[list, list, np.ndarray]:
    """(row values, column values, (R, C) float grid of the max ``metric``, NaN where missing)."""
    rv = sorted({r[rows] for r in results if rows in r})
    cv = sorted({r[cols] for r in results if cols in r})
    grid = np.full((len(rv), len(cv)), np.nan)
    for r in results:
        if rows in r and cols in r and metric in r:
            i, j = rv.index(r[rows]), cv.index(r[cols])
            grid[i, j] = r[metric] if np.isnan(grid[i, j]) else max(grid[i, j], r[metric])
    return rv, cv, grid


def _tick(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot_heatmap(results: Sequence[Mapping[str, Any]], path: str | os.PathLike, metric: str = "PQ",
                 title: str = "", *, rows: str = "grad_threshold", cols: str = "min_area",
                 row_label: str = "grad_threshold (tau)", col_label: str = "min_area (A_min)",
                 colorbar_label: str | None = None, value_format: str = "{:.2f}") -> Path:
    """PNG heatmap of ``metric`` over ``rows`` x ``columns`` of sweep result rows, values printed
    (default: grad_threshold x min_area of the panoptic sweep; the CAM sweep uses it too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rv, cv, grid = heatmap_grid(results, metric, rows, cols)
    if not rv or not cv:
        raise PseudoLabelsError(f"sweep results lack {rows} / {cols}: no heatmap can be drawn")
    fig, ax = plt.subplots(figsize=(1.2 * len(cv) + 2.5, 0.7 * len(rv) + 1.8), dpi=100)
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cv)), [_tick(v) for v in cv])
    ax.set_yticks(range(len(rv)), [_tick(v) for v in rv])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(rv)):
        for j in range(len(cv)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, value_format.format(grid[i, j]), ha="center", va="center",
                        color="black" if grid[i, j] > mid else "white", fontsize=9)
    fig.colorbar(im, ax=ax, label=colorbar_label or metric)
    ax.set_title(title or metric)
    fig.tight_layout()
    path = Path(path)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def find_heatmaps(sweep_json: str | os.PathLike, data: Mapping[str, Any]) -> list[Path]:
    """Heatmap PNGs the sweep refers to (keys containing 'heatmap') or next to the JSON with its stem."""
    p = Path(sweep_json)
    found = []
    for k, v in data.items():
        if "heatmap" in k and isinstance(v, str):
            q = Path(v) if Path(v).is_absolute() else p.parent / v
            if q.is_file():
                found.append(q)
    found += [q for q in sorted(p.parent.glob(f"{p.stem}*.png")) if "heatmap" in q.name and q not in found]
    return found


def varying_keys(results: Sequence[Mapping[str, Any]], exclude: Sequence[str] = ("grad_threshold", "min_area")) -> list[str]:
    return [k for k in PARAM_KEYS if k not in exclude and len({r.get(k) for r in results}) > 1]


def build_report(sweep_json: str | os.PathLike, out_md: str | os.PathLike, overlays: str | os.PathLike | None = None,
                 title: str | None = None, n_panels: int = 3) -> dict:
    """Write the markdown report (and a heatmap if none exists); return what it contains."""
    sweep_json, out_md = Path(sweep_json), Path(out_md)
    data = load_sweep(sweep_json)
    results = data["results"]
    best = data.get("best") or best_result(results)
    best_src = "from the sweep JSON" if data.get("best") else "highest PQ among the results"
    out_dir = out_md.parent
    rel = lambda q: os.path.relpath(Path(q).resolve(), out_dir.resolve())  # noqa: E731
    heatmaps = find_heatmaps(sweep_json, data)
    generated = False
    if not heatmaps:
        heatmaps = [plot_heatmap(results, out_dir / f"{out_md.stem}_heatmap_PQ.png",
                                 title=f"PQ, {data.get('split', '')} k={data.get('k', '')}")]
        generated = True
    lines = [f"# {title or 'Sweep report: ' + sweep_json.stem}", ""]
    lines.append(f"Source: `{rel(sweep_json)}` ({len(results)} configurations).")
    lines.append("")
    for k in HEADER_KEYS:
        if k in data:
            lines.append(f"- **{k}**: {fmt(data[k])}")
    lines += ["", "## Best configuration", "", f"Chosen {best_src}.", ""]
    cols = [c for c in table_columns([best]) if c in best]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|",
              "| " + " | ".join(fmt(best[c]) for c in cols) + " |", ""]
    lines += ["## All results", "", "Best row in bold.", "", results_table(results, best), ""]
    lines += ["## Heatmap", ""]
    vk = varying_keys(results)
    if generated and vk:
        lines.append(f"Each cell is the best PQ over {', '.join(vk)}.")
        lines.append("")
    for h in heatmaps:
        lines.append(f"![{h.stem}]({rel(h)})")
        lines.append("")
    shown = []
    if overlays:
        od = Path(overlays)
        if not od.is_dir():
            raise InputFileError(od, "overlay folder not found")
        sheet = od / "contact_sheet.png"
        panels = sorted(od.glob("*_panel.png"))[:n_panels]
        shown = ([sheet] if sheet.is_file() else []) + panels
        if shown:
            lines += ["## Overlays", ""]
            for q in shown:
                lines += [f"![{q.stem}]({rel(q)})", ""]
    io.write_bytes(out_md, ("\n".join(lines).rstrip() + "\n").encode())
    return {"report": str(out_md), "best": best, "heatmaps": [str(h) for h in heatmaps],
            "heatmap_generated": generated, "overlays": [str(q) for q in shown]}


@dataclass(frozen=True)
class ReportConfig:
    """What ``pseudo-labels report`` writes: ``out_md`` from ``sweep_json`` (+ overlay images)."""

    sweep_json: str | Path
    out_md: str | Path
    overlays: str | Path | None = None  # folder written by ``visualize``
    title: str | None = None  # default "Sweep report: <sweep name>"
    n_panels: int = 3  # per-image overlay panels shown (besides the contact sheet)

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def write_report(config: ReportConfig) -> dict:
    """:func:`build_report` of a :class:`ReportConfig`."""
    return build_report(config.sweep_json, config.out_md, config.overlays, config.title, config.n_panels)
