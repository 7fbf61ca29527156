"""The whole pipeline from one TOML file: ``pseudo-labels run --config pipeline.toml``.

A config names the data (``[data]``: root, split, output folder, the sub-folders of the root
that hold semantics / depth / features), how per-image stages run (``[runner]``) and the
stages to run, one table each, in this order::

    synth -> features -> semantics | cause27 -> dynaseg -> refine -> depth -> instances -> panoptic
          -> evaluate -> sweep -> exports.cups -> exports.coco -> visualize -> report

A stage runs when its table is present. Its keys are the fields of the stage's config
dataclass (``SemanticConfig``, ``DepthConfig``, ...; defaults from
:mod:`pseudo_labels.core.defaults`) except the input/output paths, which the pipeline fills
from ``[data]`` (:class:`Layout`), so the stages chain. Each stage is run through the same
folder-level library function its command calls, so a run gives the same files as the
commands typed by hand. A key that no stage knows is an error naming the key and the file.

Resume: per-image stages skip finished images (their manifests decide, as when the
command is rerun). Whole-split stages (evaluate, sweep, exports, visualize, report) are
skipped when ``<out>/pipeline_state.json`` records the same configuration for them, their
output exists and no earlier stage did any work in this run.

Before the first stage, :func:`preflight` checks what every chosen stage needs and the run stops
with all problems listed (nothing written). Ground truth the official zips lack (panoptic, trainIds)
is made into ``<out>/gt_cache`` by :mod:`pseudo_labels.datasets.cityscapes_gt`. :data:`PRESETS`:
one config per row of the reference's results table (``run --print-config --preset NAME``).

Relative paths in a config file are relative to the file's folder.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import os
import time
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pseudo_labels.core import defaults, io
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.runner import RunOptions
from pseudo_labels.core.validate import validate_config

STATE_NAME = "pipeline_state.json"

#: keys of the tables the pipeline itself reads (value: default)
DATA_KEYS: dict[str, Any] = {
    "root": None,  # required: dataset root in the Cityscapes layout
    "split": "val",
    "out": "pipeline_out",
    "semantic_subdir": "pseudo_semantic_k80",
    "depth_subdir": "depth_disparity",
    "features_subdir": "features",
    "segments_subdir": "dynaseg_segments",  # <root>/<segments_subdir>/<split>: DynaSeg segments of [dynaseg]
    "refined_subdir": "pseudo_semantic_refined",  # <root>/<refined_subdir>/<split>: semantics after [refine]
    "dataset": "cityscapes",  # label table (pseudo_labels.datasets.label_table) of every stage that has one
    "preset": "",  # the reference's results-table row this config reproduces (shown beside ours): PRESETS
}
#: config fields set from [data] in every stage that has them (not allowed in the stage tables)
FROM_DATA = ("dataset",)
#: a key every stage table accepts: its own worker count (outputs do not depend on it)
WORKERS_KEY = "workers"
RUNNER_KEYS: dict[str, Any] = {"workers": 1, "executor": "local", "ray_address": "", "fail_fast": False,
                               "overwrite": False}


# --------------------------------------------------------------------------- where things go
@dataclass(frozen=True)
class Layout:
    """Every path of one run. Semantics, depth and features live under the data root (as the
    commands write them); everything else under ``out``."""

    root: Path
    split: str
    out: Path
    semantic_subdir: str
    depth_subdir: str
    features_subdir: str
    segments_subdir: str = DATA_KEYS["segments_subdir"]
    refined_subdir: str | None = None  # set when the config has [refine]: later stages read the refined maps

    #: ``out`` may hold the root (the demo's synthetic city) but not lie in one of its data folders
    PATH_ROLES = {"root": "root", "out": "output_file"}

    def __post_init__(self) -> None:
        validate_config(self)  # sub-folder names stay inside the root; out not in its data folders (issue 24)

    @property
    def features_dir(self) -> Path:
        return self.root / self.features_subdir

    @property
    def raw_semantic_dir(self) -> Path:
        """What [semantics] writes: ``<root>/<semantic_subdir>/<split>``."""
        return self.root / self.semantic_subdir / self.split

    @property
    def used_semantic_subdir(self) -> str:
        """The semantic folder the later stages read: the refined one when [refine] runs."""
        return self.refined_subdir or self.semantic_subdir

    @property
    def semantic_dir(self) -> Path:
        """The semantic trainId PNGs the later stages read (``<root>/<used_semantic_subdir>/<split>``)."""
        return self.root / self.used_semantic_subdir / self.split

    @property
    def segments_dir(self) -> Path:
        return self.root / self.segments_subdir / self.split

    @property
    def depth_dir(self) -> Path:
        return self.root / self.depth_subdir / self.split

    @property
    def cause27_dir(self) -> Path:
        """What [cause27] writes before the 27 -> 19 remap: CAUSE class ids 0..26 (``<dir>/<split>/...``)."""
        return self.root / "pseudo_semantic_cause"

    @property
    def gt_semantic_dir(self) -> Path:
        return self.root / "gtFine" / self.split

    @property
    def gt_panoptic(self) -> tuple[Path, Path]:
        """(JSON, PNG folder) of the Cityscapes panoptic ground truth of the split."""
        gt = self.root / "gtFine"
        return gt / f"cityscapes_panoptic_{self.split}.json", gt / f"cityscapes_panoptic_{self.split}"

    instances_dir = property(lambda self: self.out / "instances")
    panoptic_json = property(lambda self: self.out / "panoptic.json")
    panoptic_dir = property(lambda self: self.out / "panoptic")
    evaluation_json = property(lambda self: self.out / "evaluation.json")
    sweep_json = property(lambda self: self.out / "sweep.json")
    cups_dir = property(lambda self: self.out / "cups")
    coco_dir = property(lambda self: self.out / "coco")
    overlays_dir = property(lambda self: self.out / "overlays")
    report_md = property(lambda self: self.out / "report" / "report.md")


# --------------------------------------------------------------------------- the stages
@dataclass
class StepOutcome:
    """What one stage did: ``did_work`` False when everything was already there."""

    did_work: bool
    line: str
    result: Any = None
    ground_truth: str = ""  # what ground truth the stage read ("" none)


@dataclass(frozen=True)
class StageSpec:
    """One table of the config: its config dataclass (``module:Class``), the fields the pipeline
    fills (``paths(layout) -> {field: value}``), extra keys the pipeline reads itself, and how it runs."""

    name: str
    title: str
    config_class: str
    paths: Callable[[Layout], dict]
    run: Callable[[Any, RunOptions, Layout, Callable[[str], None]], StepOutcome]
    per_image: bool = False  # resumes by itself, image by image
    output: Callable[[Layout], Path] | None = None  # whole-split stages: the file/folder that proves it finished
    pipeline_keys: Mapping[str, Any] = field(default_factory=dict)
    takes_extras: bool = False  # run(..., extras): the pipeline's own keys of its table + "unchanged" (same config ran)

    def cls(self) -> type:
        module, name = self.config_class.split(":")
        return getattr(importlib.import_module(module), name)

    def keys(self) -> dict[str, tuple[Any, Any]]:
        """Keys allowed in the table -> (default or ``dataclasses.MISSING`` when required, type hint)."""
        out = {}
        filled = set(self.paths(_DUMMY_LAYOUT)) | set(FROM_DATA)
        hints = _field_hints(self.cls())
        for f in dataclasses.fields(self.cls()):
            if f.name in filled or not f.init:
                continue
            default = f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            out[f.name] = (default, hints.get(f.name, Any))
        out.update({k: (v, type(v)) for k, v in self.pipeline_keys.items()})
        out[WORKERS_KEY] = (None, int)  # this stage's worker count (default: [runner] workers)
        return out


_DUMMY_LAYOUT = Layout(Path("root"), "split", Path("out"), "semantic", "depth", "features")


def _summary_outcome(summary, ground_truth: str = "") -> StepOutcome:
    """A RunSummary (done / skipped / failed; raises when an image failed) -> StepOutcome."""
    summary.raise_if_failed()
    return StepOutcome(did_work=summary.done > 0, line=summary.line(), result=summary, ground_truth=ground_truth)


def _run_synth(config, options: RunOptions, layout: Layout, log) -> StepOutcome:
    from pseudo_labels.datasets.synthetic_city import MANIFEST_NAME, write_synthetic_city_config

    manifest = layout.root / MANIFEST_NAME
    before = manifest.stat().st_mtime_ns if manifest.exists() else None
    stems = write_synthetic_city_config(layout.root, config, split=layout.split, workers=options.workers,
                                        name_of=lambda f: f"[synth] {f}")
    wrote = not manifest.exists() or manifest.stat().st_mtime_ns != before
    h, w = config.size
    what = "wrote" if wrote else "kept (same parameters)"
    return StepOutcome(wrote, f"{what} {len(stems)} synthetic images ({h}x{w}, split {layout.split}) in {layout.root}")


def _run_features(config, options, layout, log):
    from pseudo_labels.stages.semantic.features import extract_features_folder

    return _summary_outcome(extract_features_folder(config, options))


def _run_semantics(config, options, layout, log):
    from pseudo_labels.stages.semantic.semantics import generate_semantics

    summary = generate_semantics(config, options, notify=lambda note: log(f"    {note}"))
    gt = "" if summary.uses_ground_truth else "no (label-free)"  # a use is announced by the stage itself
    if summary.status != "finished":
        raise PseudoLabelsError(f"stopped ({summary.status}), the next stages need every image labelled: "
                                f"{summary.message}")
    return _summary_outcome(summary, gt)


def _run_cause27(config, options, layout, log, extras):
    from pseudo_labels.stages.semantic.cause27 import RemapConfig, generate_cause27_semantics, remap_cause27_folder

    from pseudo_labels.stages.semantic.cause27 import MAPPING_FILE

    if extras.get("unchanged") and config.mode == "all" and (layout.cause27_dir / MAPPING_FILE).is_file():
        config = dataclasses.replace(config, mode="generate")  # same config as the last run: keep its naming
        log(f"    kept the Hungarian naming of the last run with this configuration ({MAPPING_FILE})")
    made = generate_cause27_semantics(config, options)
    table = extras.get("table", "reference")
    summary = remap_cause27_folder(RemapConfig(str(layout.cause27_dir), str(layout.root / layout.semantic_subdir),
                                               split=layout.split, table=table), options)
    did_work = summary.done > 0 or any(s.done for s in made["summaries"].values())
    return StepOutcome(did_work, f"CAUSE-27 classes -> trainIds ({table} table): {summary.line()}", summary,
                       "Hungarian naming of the 27 clusters on gtFine labelIds (recorded)")


def _run_dynaseg(config, options, layout, log):
    from pseudo_labels.stages.refine.dynaseg import generate_dynaseg_segments

    run = generate_dynaseg_segments(config, options)
    return StepOutcome(True, f"{run['summary']}; mean {run['mean_seconds'] or 0:.1f} s/image", run)


def _run_refine(config, options, layout, log):
    from pseudo_labels.stages.refine.refine_semantics import refine_semantics

    result = refine_semantics(config, options)
    return StepOutcome(True, f"{result['summary']}; {100 * result['changed_pixel_fraction']:.2f}% of pixels changed",
                       result)


def _run_depth(config, options, layout, log):
    from pseudo_labels.stages.instance.depth import generate_depth_maps

    return _summary_outcome(generate_depth_maps(config, options))


def _run_instances(config, options, layout, log):
    from pseudo_labels.stages.instance.instances import generate_instances

    return _summary_outcome(generate_instances(config, options))


def _run_panoptic(config, options, layout, log):
    from pseudo_labels.stages.instance.panoptic import generate_panoptic

    return _summary_outcome(generate_panoptic(config, options))


def _with_prepared_gt(config, layout: Layout, log):
    """The evaluate config pointed at the split's panoptic GT (and trainId maps for the mIoU): the
    dataset's own, or made by cityscapesscripts into ``<out>/gt_cache`` (the official zips hold
    neither; :mod:`pseudo_labels.datasets.cityscapes_gt`)."""
    from pseudo_labels.datasets.cityscapes_gt import PANOPTIC, TRAIN_IDS, default_cache, prepare_ground_truth

    if config.dataset != "cityscapes":
        return config
    kinds = (PANOPTIC, TRAIN_IDS) if config.gt_semantic_dir else (PANOPTIC,)
    prepared = prepare_ground_truth(layout.root, layout.split, default_cache(layout.out), kinds,
                                    log=lambda line: log(f"    {line}"))
    gt_json, gt_folder = prepared.panoptic
    paths = {"gt_json": str(gt_json), "gt_folder": str(gt_folder)}
    if config.gt_semantic_dir:
        paths["gt_semantic_dir"] = str(prepared.gt_root[TRAIN_IDS] / "gtFine" / layout.split)
    return dataclasses.replace(config, **paths)


def _run_evaluate(config, options, layout, log):
    from pseudo_labels.stages.outputs.scoring import evaluate_folders

    result = evaluate_folders(_with_prepared_gt(config, layout, log), options)
    line = f"PQ {result['PQ']:.2f}  SQ {result['SQ']:.2f}  RQ {result['RQ']:.2f}"
    if "semantic" in result:
        line += f"  mIoU {result['semantic']['mIoU']:.2f}"
    return StepOutcome(True, line + f" -> {layout.evaluation_json}", result,
                       "panoptic ground truth" + (" and gtFine semantics" if "semantic" in result else "")
                       + " (scoring only)")


def _run_sweep(config, options, layout, log):
    from pseudo_labels.stages.outputs.sweep_cups import run_sweep_any

    result = run_sweep_any(config, options)  # any protocol (cups: two passes)
    b = result.get("best")
    line = f"{len(result['results'])} rows" + (
        f"; best tau={b['grad_threshold']:g} A_min={b['min_area']}: PQ {b['PQ']:.2f}" if b else "")
    return StepOutcome(True, line + f" -> {layout.sweep_json}", result, "panoptic ground truth (scoring only)")


def _run_cups(config, options, layout, log):
    from pseudo_labels.stages.outputs.export import export_cups

    result = export_cups(config, options)
    return StepOutcome(True, f"CUPS export -> {layout.cups_dir}", result)


def _run_coco(config, options, layout, log):
    from pseudo_labels.stages.outputs.export import export_coco

    result = export_coco(config, options)
    return StepOutcome(True, f"COCO panoptic export -> {layout.coco_dir}", result)


def _run_visualize(config, options, layout, log):
    from pseudo_labels.stages.outputs.visualize import write_overlays

    res = write_overlays(config)
    return StepOutcome(True, f"wrote {res['panels']} panels and a contact sheet of {res['contact_sheet_images']} "
                             f"images to {res['out']}", res,
                       "gtFine semantics shown in the panels" if res["panels_with_gt"] else "")


def _run_report(config, options, layout, log):
    from pseudo_labels.stages.outputs.report import write_report

    res = write_report(config)
    return StepOutcome(True, f"wrote {res['report']}", res)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("synth", "synthetic city", "pseudo_labels.datasets.synthetic_city:SyntheticCityConfig",
              lambda L: {}, _run_synth),
    StageSpec("features", "features", "pseudo_labels.stages.semantic.features:FeatureConfig",
              lambda L: {"cityscapes_root": str(L.root), "out": str(L.features_dir), "split": L.split},
              _run_features, per_image=True),
    StageSpec("semantics", "features + k-means + cluster-to-class mapping", "pseudo_labels.stages.semantic.semantics:SemanticConfig",
              lambda L: {"cityscapes_root": str(L.root), "split": L.split, "output_subdir": L.semantic_subdir},
              _run_semantics, per_image=True),
    StageSpec("cause27", "CAUSE-27 semantics (cluster probe, Hungarian naming, 27 -> 19 trainIds)",
              "pseudo_labels.stages.semantic.cause27:Cause27Config",
              lambda L: {"cityscapes_root": str(L.root), "split": L.split, "output_dir": str(L.cause27_dir)},
              _run_cause27, per_image=True, pipeline_keys={"table": "reference"}, takes_extras=True),
    StageSpec("dynaseg", "DynaSeg segments per image", "pseudo_labels.stages.refine.dynaseg:DynaSegConfig",
              lambda L: {"cityscapes_root": str(L.root), "split": L.split, "out_dir": str(L.root / L.segments_subdir)},
              _run_dynaseg, per_image=True),
    StageSpec("refine", "refinement of the semantic pseudo-labels", "pseudo_labels.stages.refine.refine_semantics:RefineConfig",
              lambda L: {"semantic_dir": str(L.raw_semantic_dir), "output_dir": str(L.semantic_dir),
                         "segments_dir": str(L.segments_dir), "images_dir": str(L.root / "leftImg8bit" / L.split)},
              _run_refine, per_image=True),
    StageSpec("depth", "depth maps", "pseudo_labels.stages.instance.depth:DepthConfig",
              lambda L: {"cityscapes_root": str(L.root), "split": L.split, "output_dir": str(L.root / L.depth_subdir)},
              _run_depth, per_image=True),
    StageSpec("instances", "depth-guided instance splitting", "pseudo_labels.stages.instance.instances:InstanceConfig",
              lambda L: {"semantic_dir": str(L.semantic_dir), "depth_dir": str(L.depth_dir),
                         "output_dir": str(L.instances_dir)},
              _run_instances, per_image=True),
    StageSpec("panoptic", "panoptic assembly", "pseudo_labels.stages.instance.panoptic:PanopticConfig",
              lambda L: {"semantic_dir": str(L.semantic_dir), "instance_dir": str(L.instances_dir),
                         "out_json": str(L.panoptic_json), "out_folder": str(L.panoptic_dir)},
              _run_panoptic, per_image=True),
    StageSpec("evaluate", "evaluation against the panoptic ground truth", "pseudo_labels.stages.outputs.scoring:EvaluateConfig",
              lambda L: {"gt_json": str(L.gt_panoptic[0]), "gt_folder": str(L.gt_panoptic[1]),
                         "pred_json": str(L.panoptic_json), "pred_folder": str(L.panoptic_dir),
                         "gt_semantic_dir": str(L.gt_semantic_dir), "pred_semantic_dir": str(L.semantic_dir),
                         "cityscapes_root": str(L.root), "split": L.split, "out": str(L.evaluation_json)},
              _run_evaluate, output=lambda L: L.evaluation_json, pipeline_keys={"semantic": True}),
    StageSpec("sweep", "parameter sweep (tau x A_min)", "pseudo_labels.stages.outputs.sweep:SweepConfig",
              lambda L: {"cityscapes_root": str(L.root), "split": L.split, "semantic_subdirs": (L.used_semantic_subdir,),
                         "depth_subdir": L.depth_subdir, "out": str(L.sweep_json)},
              _run_sweep, output=lambda L: L.sweep_json),
    StageSpec("exports.cups", "CUPS export", "pseudo_labels.stages.outputs.export:CupsExportConfig",
              lambda L: {"panoptic_dir": str(L.panoptic_dir), "panoptic_json": str(L.panoptic_json),
                         "cityscapes_root": str(L.root), "split": L.split, "out": str(L.cups_dir)},
              _run_cups, output=lambda L: L.cups_dir / io.MANIFEST_NAME, pipeline_keys={"link_key_frames": False}),
    StageSpec("exports.coco", "COCO panoptic export", "pseudo_labels.stages.outputs.export:CocoExportConfig",
              lambda L: {"panoptic_dir": str(L.panoptic_dir), "panoptic_json": str(L.panoptic_json),
                         "out": str(L.coco_dir)},
              _run_coco, output=lambda L: L.coco_dir / io.MANIFEST_NAME),
    StageSpec("visualize", "overlays", "pseudo_labels.stages.outputs.visualize:VisualizeConfig",
              lambda L: {"cityscapes_root": str(L.root), "split": L.split, "panoptic_dir": str(L.panoptic_dir),
                         "panoptic_json": str(L.panoptic_json), "depth_dir": str(L.depth_dir),
                         "out": str(L.overlays_dir)},
              _run_visualize, output=lambda L: L.overlays_dir / io.MANIFEST_NAME),
    StageSpec("report", "markdown report", "pseudo_labels.stages.outputs.report:ReportConfig",
              lambda L: {"sweep_json": str(L.sweep_json), "out_md": str(L.report_md), "overlays": str(L.overlays_dir)},
              _run_report, output=lambda L: L.report_md),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
TOP_TABLES = ("data", "runner", *{s.name.split(".")[0] for s in STAGES})


# --------------------------------------------------------------------------- the config
@dataclass
class PipelineConfig:
    """A parsed, checked pipeline: where things are, how to run, and one config per chosen stage
    (in :data:`STAGES` order). ``extras[stage]`` holds the pipeline's own keys of a table
    (e.g. ``evaluate.semantic``)."""

    layout: Layout
    options: RunOptions
    stages: dict[str, Any]
    extras: dict[str, dict] = field(default_factory=dict)
    source: str = "<config>"
    workers: dict[str, int] = field(default_factory=dict)  # per-stage worker counts (``[<stage>] workers``)
    preset: str = ""  # ``[data] preset``: the reference row shown beside ours in the results table

    def options_for(self, stage: str) -> RunOptions:
        """The run options of one stage: ``[runner]`` with the stage's own ``workers`` if it has one."""
        if stage in self.workers:
            return dataclasses.replace(self.options, workers=self.workers[stage])
        return self.options


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` from TOML checked against the type hint of a config field: ints are accepted
    for floats, lists become tuples for tuple / Sequence fields; unions take the first arm that fits."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is None or isinstance(hint, typing.TypeVar):
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, arm, where)
            except PseudoLabelsError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else PseudoLabelsError(f"{where}: {value!r} does not fit {_hint_text(hint)}")
    if hint is bool or hint is int or hint is float or hint is str:
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise PseudoLabelsError(f"{where}: expected {_hint_text(hint)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise PseudoLabelsError(f"{where}: expected a table of {hint.__name__} fields, got {value!r}")
        known = {f.name: (f.default, _field_hints(hint).get(f.name, Any)) for f in dataclasses.fields(hint) if f.init}
        for key in value:
            if key not in known:
                raise PseudoLabelsError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        return hint(**{k: _check_value(v, known[k][1], f"{where}.{k}") for k, v in value.items()})
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list):
            raise PseudoLabelsError(f"{where}: expected a list ({_hint_text(hint)}), got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise PseudoLabelsError(f"{where}: expected {len(args)} values, got {value!r}")
            items = [_check_value(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            items = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list else tuple(items)
    return value


def _hint_text(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint).replace("typing.", ""))


def _field_hints(cls: type) -> dict[str, Any]:
    """Type hints of a config dataclass's fields (Any where they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only loses the type check
        return {}


def _table(data: Mapping, name: str, source: str) -> dict:
    node: Any = data
    for part in name.split("."):
        node = node.get(part, None) if isinstance(node, Mapping) else None
        if node is None:
            return {}
    if not isinstance(node, Mapping):
        raise PseudoLabelsError(f"{source}: [{name}] must be a table")
    return dict(node)


def _checked_keys(table: Mapping, known: Mapping[str, tuple[Any, Any]], name: str, source: str) -> dict:
    """The table's values checked against ``known`` (key -> (default, type hint)); unknown keys and
    missing required ones are errors naming the key and ``source``."""
    for key in table:
        if key not in known:
            raise PseudoLabelsError(
                f"{source}: unknown key '{key}' in [{name}] (known: {', '.join(sorted(known))})")
    out = {}
    for key, (default, hint) in known.items():
        if key in table:
            out[key] = _check_value(table[key], hint, f"{source}: [{name}] {key}")
        elif default is dataclasses.MISSING:
            raise PseudoLabelsError(f"{source}: [{name}] needs '{key}'")
    return out


def _typed(keys: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: default} of the pipeline's own tables -> {key: (default, type)} (root: a string)."""
    return {k: (v, str if v is None else type(v)) for k, v in keys.items()}


def _resolve(path: str, base: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base / p


def parse_pipeline_config(data: Mapping, base_dir: str | os.PathLike = ".", source: str = "<config>") -> PipelineConfig:
    """Check a config mapping (as read from TOML) and build every stage's config.

    Relative paths of ``[data]`` are taken relative to ``base_dir``. Errors name ``source``
    and the key.
    """
    for key, value in data.items():
        if key not in TOP_TABLES:
            raise PseudoLabelsError(f"{source}: unknown table or key '{key}' (known tables: {', '.join(TOP_TABLES)})")
        if not isinstance(value, Mapping):
            raise PseudoLabelsError(f"{source}: '{key}' must be a table ([{key}])")
    exports = _table(data, "exports", source)
    for key in exports:
        if f"exports.{key}" not in STAGE_NAMES:
            raise PseudoLabelsError(f"{source}: unknown table [exports.{key}] (known: [exports.cups], [exports.coco])")
    d = _checked_keys(_table(data, "data", source), _typed(DATA_KEYS), "data", source)
    if "root" not in d:
        raise PseudoLabelsError(f"{source}: [data] needs 'root' (the dataset root in the Cityscapes layout)")
    base = Path(base_dir)
    layout = Layout(_resolve(d["root"], base), d.get("split", DATA_KEYS["split"]),
                    _resolve(d.get("out", DATA_KEYS["out"]), base),
                    *(d.get(k, DATA_KEYS[k]) for k in ("semantic_subdir", "depth_subdir", "features_subdir",
                                                       "segments_subdir")),
                    d.get("refined_subdir", DATA_KEYS["refined_subdir"]) if _has_table(data, "refine") else None)
    r = _checked_keys(_table(data, "runner", source), _typed(RUNNER_KEYS), "runner", source)
    r = {**RUNNER_KEYS, **r}
    if r["workers"] < 1:
        raise PseudoLabelsError(f"{source}: [runner] workers {r['workers']}: need at least 1")
    if r["executor"] not in ("local", "ray"):
        raise PseudoLabelsError(f"{source}: [runner] executor {r['executor']!r}: choose local or ray")
    options = RunOptions(workers=r["workers"], executor=r["executor"], ray_address=r["ray_address"] or None,
                         fail_fast=r["fail_fast"], overwrite=r["overwrite"])
    stages, extras, workers = {}, {}, {}
    for spec in STAGES:
        if not _has_table(data, spec.name):
            continue
        values = _checked_keys(_table(data, spec.name, source), spec.keys(), spec.name, source)
        own = {k: values.pop(k) if k in values else v for k, v in spec.pipeline_keys.items()}
        if WORKERS_KEY in values:
            workers[spec.name] = values.pop(WORKERS_KEY)
            if workers[spec.name] < 1:
                raise PseudoLabelsError(f"{source}: [{spec.name}] workers {workers[spec.name]}: need at least 1")
        paths = spec.paths(layout)
        names = {f.name for f in dataclasses.fields(spec.cls())}
        paths.update({k: d.get(k, DATA_KEYS[k]) for k in FROM_DATA if k in names})
        if spec.name == "semantics" and "features" in stages and not values.get("features_dir"):
            values["features_dir"] = str(layout.features_dir)  # read what [features] wrote
        if spec.name == "evaluate" and not own["semantic"]:
            paths.update(gt_semantic_dir=None, pred_semantic_dir=None)
        try:
            stages[spec.name] = spec.cls()(**paths, **values)
        except (TypeError, ValueError) as exc:
            raise PseudoLabelsError(f"{source}: [{spec.name}]: {exc}") from None
        extras[spec.name] = own
    if not stages:
        raise PseudoLabelsError(f"{source}: no stage to run (add a table such as [semantics]; "
                                "`pseudo-labels run --print-config` writes a full example)")
    preset = d.get("preset", "")
    if preset and preset not in PRESETS:
        raise PseudoLabelsError(f"{source}: [data] preset {preset!r}: choose from {', '.join(PRESETS)}")
    return PipelineConfig(layout, options, stages, extras, source, workers, preset)


def _has_table(data: Mapping, name: str) -> bool:
    node: Any = data
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def load_pipeline_config(path: str | os.PathLike) -> PipelineConfig:
    """Read a pipeline TOML file (:class:`PseudoLabelsError` naming the file on any problem)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise PseudoLabelsError(f"{path}: config file not found "
                                "(`pseudo-labels run --print-config > pipeline.toml` writes one)") from None
    except tomllib.TOMLDecodeError as exc:
        raise PseudoLabelsError(f"{path}: not valid TOML ({exc})") from None
    return parse_pipeline_config(data, path.resolve().parent, str(path))


def parse_pipeline_text(text: str, base_dir: str | os.PathLike = ".", source: str = "<config>") -> PipelineConfig:
    """:func:`parse_pipeline_config` of TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PseudoLabelsError(f"{source}: not valid TOML ({exc})") from None
    return parse_pipeline_config(data, base_dir, source)


# --------------------------------------------------------------------------- pre-flight
#: bytes each stage writes per image pixel (H x W). Measured on the official-layout synthetic city at
#: 1024x2048 (default run): semantics 0.07 (trainIds + hidden raw clusters), depth 4.0 (float32 .npy),
#: instances 0.007, panoptic 0.022, COCO 0.025, GT cache 0.032; real frames compress less, hence the
#: margin (x2 to x5) below; the rest (dynaseg, refine, CUPS, features) are estimates of the same kind
DISK_PER_PIXEL = {"semantics": 0.15, "cause27": 0.15, "dynaseg": 0.2, "refine": 0.1, "depth": 4.0,
                  "instances": 0.05, "panoptic": 0.1, "exports.cups": 0.1, "exports.coco": 0.1, "features": 0.02,
                  "evaluate": 0.1}
#: where the files of the official download come from (named in pre-flight messages)
ZIPS = {"leftImg8bit": "leftImg8bit_trainvaltest.zip", "gtFine": "gtFine_trainvaltest.zip",
        "disparity": "disparity_trainvaltest.zip", "camera": "camera_trainvaltest.zip",
        "leftImg8bit_sequence": "leftImg8bit_sequence_trainvaltest.zip"}


def _links_key_frames(config: PipelineConfig) -> bool:
    """Whether [exports.cups] links leftImg8bit_sequence -> leftImg8bit (synthetic city, or asked for)."""
    return "synth" in config.stages or bool(config.extras.get("exports.cups", {}).get("link_key_frames"))


def _files(folder: Path, suffix: str) -> dict[str, Path]:
    """Stem -> file under ``folder`` (recursive) ending in ``suffix``; {} when the folder is absent."""
    from pseudo_labels.datasets import cityscapes

    return cityscapes.index_by_stem(folder, suffix) if folder.is_dir() else {}


def _has_files(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and next(folder.rglob(pattern), None) is not None


def _missing_text(what: str, paths: list[Path], zip_name: str | None) -> str:
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    src = f" (from {zip_name})" if zip_name else ""
    return f"{what} missing for {len(paths)} image(s){src}: " + ", ".join(map(str, paths[:3])) + more


def _weights_problems(name: str, cfg: Any) -> list[str]:
    """Backbone / head weight files of a features or semantics config."""
    out = []
    backbone = getattr(cfg, "backbone", "builtin")
    for key in ("weights", "head_weights", "codebook"):
        path = getattr(cfg, key, None)
        if path and not Path(path).exists():
            out.append(f"[{name}] {key} = {str(path)!r}: file not found (weights are never downloaded)")
    if backbone != "builtin" and not getattr(cfg, "weights", None):
        out.append(f"[{name}] backbone = {backbone!r} needs weights = \"<local DINOv2 checkpoint>\"")
    if getattr(cfg, "head", None) and not getattr(cfg, "head_weights", None):
        out.append(f"[{name}] head = {cfg.head!r} needs head_weights = \"<CAUSE segment_tr.pth>\"")
    return out


def _gt_problem(layout: Layout, images: dict[str, Path], stage: str, kind: str) -> str | None:
    """None when the split's ``kind`` of derived ground truth (panoptic / trainIds) is in the dataset or
    can be made from its gtFine files (by :mod:`pseudo_labels.datasets.cityscapes_gt`); else the problem."""
    from pseudo_labels.datasets.cityscapes_gt import PANOPTIC, SOURCES

    if kind == PANOPTIC and layout.gt_panoptic[0].exists():
        return None
    if kind != PANOPTIC and _has_files(layout.gt_semantic_dir, "*_gtFine_labelTrainIds.png"):
        return None
    suffix = SOURCES[kind]
    found = _files(layout.gt_semantic_dir, suffix)
    missing = [layout.gt_semantic_dir / images[s].parent.name / f"{s}{suffix}" for s in sorted(images) if s not in found]
    if images and not missing:
        return None
    what = "panoptic ground truth" if kind == PANOPTIC else "trainId maps"
    if not images:
        return f"[{stage}] needs gtFine/{layout.split}/<city>/*{suffix} (the tool makes the {what} from them)"
    return f"[{stage}] " + _missing_text(f"gtFine *{suffix} (the tool makes the {what} from them)", missing,
                                         ZIPS["gtFine"])


def _depth_problems(d: Any, L: Layout, images: dict[str, Path]) -> list[str]:
    """What [depth] needs for its source: disparity + camera files of every image, a folder of .npy
    maps, SPIdepth's two weight files, or a Depth Anything model folder."""
    if d.source == "disparity":
        out = []
        for kind, suffix in (("disparity", "_disparity.png"), ("camera", "_camera.json")):
            found = _files(L.root / kind / L.split, suffix)
            miss = [L.root / kind / L.split / p.parent.name / f"{s}{suffix}" for s, p in sorted(images.items())
                    if s not in found]
            if miss:
                out.append("[depth] source = 'disparity': " + _missing_text(f"{kind}/*{suffix}", miss, ZIPS[kind]))
        return out
    if d.source == "npy" and not (d.input_dir and Path(d.input_dir).is_dir()):
        return ["[depth] source = 'npy' needs input_dir = \"<folder of <stem>*.npy maps>\""
                + (f" ({d.input_dir} not found)" if d.input_dir else "")]
    if d.source == "spidepth":
        w = Path(d.weights or "")
        if not d.weights or not all((w / f).is_file() for f in ("encoder.pth", "depth.pth")):
            return ["[depth] source = 'spidepth' needs weights = \"<folder with encoder.pth and depth.pth>\""
                    + (f" ({w} lacks them)" if d.weights else "")]
    if d.source == "depth-anything" and not (d.model_dir and Path(d.model_dir).is_dir()):
        return ["[depth] source = 'depth-anything' needs model_dir = \"<local model folder>\""
                + (f" ({d.model_dir} not found)" if d.model_dir else "")]
    return []


def _semantic_problems(config: PipelineConfig, gt_missing: Callable[[str, str], str | None]) -> list[str]:
    """Weights, features, centroids and label files of [features], [semantics] and [cause27]."""
    st, on = config.stages, set(config.stages)
    out = []
    for name in ("features", "semantics", "dynaseg"):
        if name in on and not (name == "semantics" and st[name].features_dir):
            out += _weights_problems(name, st[name])
    if "semantics" in on:
        sem = st["semantics"]
        if sem.features_dir and "features" not in on and not Path(sem.features_dir).is_dir():
            out.append(f"[semantics] features_dir = {sem.features_dir!r}: folder not found (add [features])")
        if sem.load_centroids and not Path(sem.load_centroids).is_file():
            out.append(f"[semantics] load_centroids = {sem.load_centroids!r}: file not found")
        mapping = sem.mapping or ("majority" if not sem.load_centroids else "")
        if mapping in ("majority", "hungarian"):
            out.append(gt_missing("semantics", f"mapping = {mapping!r} (reads labels)"))
        if sem.sample_filter == "gt-nonvoid":
            out.append(gt_missing("semantics", "sample_filter = 'gt-nonvoid'"))
    if "cause27" in on:
        from pseudo_labels.stages.semantic.cause import CAUSE27_CHECKPOINT_FILES

        folder = Path(st["cause27"].checkpoint_dir)
        out += [f"[cause27] checkpoint_dir: {folder / f} not found" for f in CAUSE27_CHECKPOINT_FILES.values()
                if not (folder / f).is_file()]
        if st["cause27"].mode in ("hungarian", "all"):
            out.append(gt_missing("cause27", "the Hungarian naming"))
        if "semantics" in on:
            out.append("[semantics] and [cause27] both write the semantic pseudo-labels: keep one")
    return out


def _chain_problems(config: PipelineConfig) -> list[str]:
    """Inputs a stage reads from an earlier one: present when that stage runs too, or already on disk."""
    L, st, on = config.layout, config.stages, set(config.stages)
    out = []
    makes_semantics = bool(on & {"semantics", "cause27"})
    has_semantics = makes_semantics or "refine" in on or _has_files(L.semantic_dir, "*.png")
    if "refine" in on:
        if not makes_semantics and not _has_files(L.raw_semantic_dir, "*.png"):
            out.append(f"[refine] no semantic pseudo-labels: {L.raw_semantic_dir} is empty (add [semantics])")
        if st["refine"].method == "dynaseg" and "dynaseg" not in on and not L.segments_dir.is_dir():
            out.append(f"[refine] method = 'dynaseg' needs segments: {L.segments_dir} not found (add [dynaseg])")
    uses_depth = [n for n in ("instances", "sweep") if n in on and getattr(st[n], "depth", "") != "none"]
    if uses_depth and "depth" not in on and not _has_files(L.depth_dir, "*.npy"):
        out.append(f"[{', '.join(uses_depth)}] no depth maps: {L.depth_dir} holds no .npy (add [depth])")
    out += [f"[{name}] no semantic pseudo-labels: {L.semantic_dir} holds no PNG (add [semantics])"
            for name in ("instances", "sweep") if name in on and not has_semantics]
    if "panoptic" in on and "instances" not in on and not L.instances_dir.is_dir():
        out.append(f"[panoptic] no instances: {L.instances_dir} not found (add [instances])")
    out += [f"[{name}] no panoptic pseudo-labels: {L.panoptic_json} not found (add [panoptic])"
            for name in ("evaluate", "exports.cups", "exports.coco", "visualize")
            if name in on and "panoptic" not in on and not L.panoptic_json.is_file()]
    if "report" in on and "sweep" not in on and not L.sweep_json.is_file():
        out.append(f"[report] no sweep results: {L.sweep_json} not found (add [sweep])")
    return out


def preflight(config: PipelineConfig) -> list[str]:
    """Every problem that would stop a stage of ``config``, found before anything runs: missing
    images, ground truth (what the tool can prepare itself counts as present), depth inputs,
    weights, features, checkpoints, the CUPS image folder, free disk. Each names the file or key.
    Outputs of an earlier stage of the same run count as present; a [synth] city has everything."""
    L, st = config.layout, config.stages
    on = set(st)
    synth = "synth" in on
    if not synth and not L.root.is_dir():  # one problem, not one per missing file under it
        return [f"[data] root = {str(L.root)!r}: no such folder (the four official Cityscapes zips unpacked "
                f"there, or a [synth] table to write a synthetic city)"]
    images = {} if synth else _files(L.root / "leftImg8bit" / L.split, "_leftImg8bit.png")
    problems: list[str] = []
    needs_images = on & {"features", "semantics", "cause27", "dynaseg", "depth", "visualize"}
    needs_images |= {"refine"} if "refine" in on and st["refine"].method == "crf" else set()
    if needs_images and not synth and not images:
        problems.append(f"[{', '.join(sorted(needs_images))}] no images: {L.root / 'leftImg8bit' / L.split}/<city>/"
                        f"*_leftImg8bit.png not found (unpack {ZIPS['leftImg8bit']} into {L.root})")
    has_labels = synth or _has_files(L.gt_semantic_dir, "*_gtFine_labelIds.png") or _has_files(
        L.gt_semantic_dir, "*_gtFine_labelTrainIds.png")

    def gt_missing(stage: str, why: str) -> str | None:
        return None if has_labels else (f"[{stage}] {why} needs gtFine/{L.split}/<city>/*_gtFine_labelIds.png "
                                        f"under {L.root} (from {ZIPS['gtFine']})")

    problems += _semantic_problems(config, gt_missing)
    if "depth" in on and not (st["depth"].source == "disparity" and (synth or not images)):
        problems += _depth_problems(st["depth"], L, images)
    problems += _chain_problems(config)
    scoring = [n for n in ("evaluate", "sweep") if n in on]
    if scoring and not synth:
        problems.append(_gt_problem(L, images, ", ".join(scoring), "panoptic"))
    if "evaluate" in on and config.extras.get("evaluate", {}).get("semantic", True) and not synth:
        problems.append(_gt_problem(L, images, "evaluate", "trainIds"))
    if "exports.cups" in on and not _links_key_frames(config):
        seq = L.root / "leftImg8bit_sequence" / L.split
        if not seq.is_dir():
            problems.append(f"[exports.cups] CUPS reads its images from {seq}, not found (unpack "
                            f"{ZIPS['leftImg8bit_sequence']}, or set link_key_frames = true to link the key frames)")
    problems += _disk_problems(config, images)
    return [p for p in problems if p]


def _size_text(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _disk_problems(config: PipelineConfig, images: dict[str, Path]) -> list[str]:
    """Free space under the data root and the output folder against a rough estimate of what the run writes."""
    import shutil

    L, on = config.layout, set(config.stages)
    if "synth" in on:
        n, (h, w) = config.stages["synth"].n, config.stages["synth"].size
    elif images:
        from pseudo_labels.stages.semantic.semantics import image_size

        try:
            n, (h, w) = len(images), image_size(next(iter(images.values())))
        except PseudoLabelsError:  # an unreadable image is the reading stage's error, named there
            return []
    else:
        return []
    need = {"root": 0.0, "out": 0.0}
    for name, per_pixel in DISK_PER_PIXEL.items():
        if name in on:
            where = "root" if name in ("semantics", "cause27", "dynaseg", "refine", "depth", "features") else "out"
            need[where] += per_pixel * h * w * n
    if "synth" in on:
        need["root"] += 8.0 * h * w * n
    out = []
    for where, folder in (("root", L.root), ("out", L.out)):
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if need[where] > free:
            out.append(f"free disk: {folder} needs about {_size_text(need[where])} for {n} images at {h}x{w}, "
                       f"{_size_text(free)} free")
    return out


# --------------------------------------------------------------------------- running
@dataclass
class StepRecord:
    """One stage of a run: ``skipped`` when kept whole from an earlier run, ``did_work`` when it
    wrote anything (a per-image stage whose images were all finished did none)."""

    name: str
    title: str
    seconds: float
    skipped: bool
    did_work: bool
    line: str
    result: Any = None


@dataclass
class PipelineResult:
    """What a run did: one :class:`StepRecord` per stage, the evaluation and sweep results
    (None when those stages are absent), total seconds."""

    config: PipelineConfig
    steps: list[StepRecord]
    evaluation: dict | None
    sweep: dict | None
    seconds: float


def _stage_hash(spec: StageSpec, config: Any, extras: dict) -> str:
    return io.config_hash({"stage": spec.name, "config": dataclasses.asdict(config), "extras": extras})


def link_sequence_folder(root: Path) -> bool:
    """CUPS reads images from ``leftImg8bit_sequence``; a synthetic city has only the key frames,
    which have the same names: link the folder (True when a link was made)."""
    seq = root / "leftImg8bit_sequence"
    if seq.exists() or seq.is_symlink():
        return False
    seq.symlink_to("leftImg8bit", target_is_directory=True)
    return True


def in_run_terms(message: str) -> str:
    """A stage's error as ``run`` users act on it: ``run`` has no ``--overwrite`` flag, its
    ``[runner]`` table has ``overwrite = true``."""
    return message.replace("or --overwrite to", "or overwrite = true in [runner] to")


def run_pipeline(config: PipelineConfig, log: Callable[[str], None] = print) -> PipelineResult:
    """Run the chosen stages in order; ``log`` gets one header and one summary line per stage."""
    layout = config.layout
    problems = preflight(config)
    if problems:
        raise PseudoLabelsError(
            f"{config.source}: {len(problems)} problem(s) found before any stage ran (nothing was written): "
            + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1)))
    state_path = layout.out / STATE_NAME
    state = (io.read_json(state_path) if state_path.exists() else {}) if not config.options.overwrite else {}
    chosen = [s for s in STAGES if s.name in config.stages]
    t_start = time.perf_counter()
    steps: list[StepRecord] = []
    results: dict[str, Any] = {}
    upstream_work = False
    for i, spec in enumerate(chosen, 1):
        stage_config = config.stages[spec.name]
        log(f"\n[{i}/{len(chosen)}] {spec.name}: {spec.title}")
        digest = _stage_hash(spec, stage_config, config.extras.get(spec.name, {}))
        t0 = time.perf_counter()
        finished = (not spec.per_image and spec.output is not None and not upstream_work
                    and state.get(spec.name) == digest and spec.output(layout).exists())
        if finished:
            line = f"finished in an earlier run with the same configuration: kept {spec.output(layout)}"
            outcome = StepOutcome(False, line, _load_result(spec, layout))
        else:
            if (spec.name == "exports.cups" and _links_key_frames(config) and link_sequence_folder(layout.root)):
                log("    (linked leftImg8bit_sequence -> leftImg8bit: CUPS reads its images from the sequence folder; "
                    "the key frames stand in for it)")
            try:
                unchanged = state.get(spec.name) == digest
                extra = ({**config.extras.get(spec.name, {}), "unchanged": unchanged},) if spec.takes_extras else ()
                outcome = spec.run(stage_config, config.options_for(spec.name), layout, log, *extra)
            except PseudoLabelsError as exc:
                raise PseudoLabelsError(f"stage [{spec.name}] of {config.source}: {in_run_terms(str(exc))}") from exc
        seconds = time.perf_counter() - t0
        log(f"    {outcome.line}  ({seconds:.1f}s)")
        if outcome.ground_truth:
            log(f"    uses ground truth: {outcome.ground_truth}")
        upstream_work = upstream_work or outcome.did_work
        results[spec.name] = outcome.result
        steps.append(StepRecord(spec.name, spec.title, seconds, finished, outcome.did_work, outcome.line,
                                outcome.result))
        state[spec.name] = digest
        io.write_json(state_path, state)
    return PipelineResult(config, steps, results.get("evaluate"), results.get("sweep"),
                          time.perf_counter() - t_start)


def _load_result(spec: StageSpec, layout: Layout) -> Any:
    if spec.name in ("evaluate", "sweep"):
        return io.read_json(spec.output(layout))
    return None


# --------------------------------------------------------------------------- presets: the reference's table
@dataclass(frozen=True)
class Preset:
    """One row of the reference's results table (qbit-glitch/monocular_ups README, Cityscapes val,
    its own evaluator at 512x1024): how it was made and what it scored."""

    row: str
    k: int
    tau: float | None  # None: connected components only (no depth)
    min_area: int | None
    published: tuple[float, float, float, float, float]  # PQ, PQ_st, PQ_th, SQ, RQ
    semantics: str = "kmeans"  # kmeans (CAUSE-TR features + k-means + majority) or cause27 (cluster probe)


PRESETS: dict[str, Preset] = {
    "k80-depth": Preset("k=80 + depth", 80, 0.20, 1000, (26.74, 32.08, 19.41, 71.88, 31.41)),
    "k60-depth": Preset("k=60 + depth", 60, 0.20, 1000, (25.83, 30.74, 19.08, 71.69, 30.21)),
    "k50-depth": Preset("k=50 + depth", 50, 0.30, 1000, (25.78, 34.80, 13.37, 73.11, 30.61)),
    "k300-cc": Preset("k=300 CC-only", 300, None, None, (25.60, 33.10, 15.20, 71.90, 22.30)),
    "cause27-depth": Preset("CAUSE-27 + depth", 27, 0.10, 500, (23.10, 31.40, 11.70, 74.30, 31.20), "cause27"),
}
#: the row shown beside ours when a config names no preset
DEFAULT_COMPARISON = "k80-depth"
PUBLISHED_PROTOCOL = "protocol reference: its own evaluator at 512x1024"
PUBLISHED_CUPS = (27.80, 35.10, 17.70, 57.40, 35.20)  # PQ, PQ_st, PQ_th, SQ, RQ (the reference README's CUPS row)


def preset_list_text() -> str:
    """``run --print-config --preset list``: one line per preset."""
    lines = []
    for name, p in PRESETS.items():
        how = (f"tau={p.tau:.2f} A_min={p.min_area}" if p.tau is not None else "connected components only, no depth")
        what = "CAUSE-27 cluster probe" if p.semantics == "cause27" else f"CAUSE-TR k-means k={p.k}"
        lines.append(f"{name:14s} {p.row:18s} {what}, {how}: published PQ {p.published[0]:.2f}")
    return "\n".join(lines) + "\n"


def preset_config_text(name: str) -> str:
    """``run --print-config --preset NAME``: a config that reproduces that row of the reference's table
    on the official Cityscapes download, given the weight paths (set them, and ``root``)."""
    if name not in PRESETS:
        raise PseudoLabelsError(f"--preset {name!r}: unknown (choose from {', '.join(PRESETS)}, or list)")
    p = PRESETS[name]
    pq, st, th, sq, rq = p.published
    depth = p.tau is not None
    if p.semantics == "cause27":
        semantic = """\
[cause27]                  # DINOv2 ViT-B/14 + CAUSE Segment_TR + cluster probe (27 classes), then 27 -> 19 trainIds
checkpoint_dir = "checkpoints/cause"   # dinov2_vitb14_pretrain.pth, segment_tr.pth, cluster_tr.pth, modular.npy
mode = "all"               # Hungarian naming of the 27 clusters on gtFine (reads labels, recorded), then labels
hungarian_split = "val"
table = "reference"        # 27 -> 19 as the reference (polegroup -> pole, caravan -> car, trailer -> truck)
device = "cpu"             # "cuda" on a GPU
"""
    else:
        semantic = f"""\
[semantics]                # CAUSE-TR features (DINOv2 ViT-B/14 + Segment_TR, 90-d) -> k-means -> majority mapping
k = {p.k}
backbone = "dinov2_vitb14"
weights = "checkpoints/dinov2_vitb14_pretrain.pth"
head = "cause"
head_weights = "checkpoints/segment_tr.pth"   # modular.npy next to it
sample_filter = "gt-nonvoid"   # the reference fits on patches with non-void GT (reads labels, recorded)
kmeans_backend = "sklearn"     # MiniBatchKMeans(batch 10000, max_iter 300, n_init 3, random_state 42)
upsample = "labels"            # argmax on the feature grid, nearest to the image (the reference's path)
mapping = "majority"
device = "cpu"                 # "cuda" on a GPU
"""
    if depth:
        depth_text = f"""\
[depth]                    # SPIdepth, Cityscapes checkpoint, whole frame as the reference
source = "spidepth"
weights = "checkpoints/spidepth"   # folder with encoder.pth and depth.pth
spidepth_preprocess = "full-frame"
normalize = "minmax"

[instances]
grad_threshold = {p.tau:.2f}      # tau
min_area = {p.min_area}           # A_min, pixels at the working resolution (half of 1024x2048: the reference's 512x1024)
"""
    else:
        depth_text = """\
[instances]                # no depth: one instance per connected component of each thing class
depth = "none"
"""
    return f"""\
# Reference row "{p.row}" (qbit-glitch/monocular_ups, Cityscapes val, its evaluator at 512x1024):
#   PQ {pq:.2f}  PQ_st {st:.2f}  PQ_th {th:.2f}  SQ {sq:.2f}  RQ {rq:.2f}
# Set root and the weight paths, then: pseudo-labels run --config <this file>
# (relative paths are relative to this file; weights are never downloaded)

[data]
root = "cityscapes"        # the four official zips unpacked here (leftImg8bit, gtFine, disparity, camera)
split = "val"
out = "out_{name}"
semantic_subdir = "pseudo_semantic_{name}"
depth_subdir = "depth_spidepth"
preset = "{name}"          # the results table shows the published row beside ours

[runner]
workers = 2

{semantic}
{depth_text}
[panoptic]

[evaluate]
protocol = "reference"     # as the published row; "standard" scores at the ground truth's 1024x2048 (cityscapesscripts)
semantic = true
"""


# --------------------------------------------------------------------------- results table
def format_results(result: PipelineResult, title: str | None = None) -> str:
    """The results table: PQ/PQ_st/PQ_th/SQ/RQ of the pipeline (evaluate, one row per protocol scored)
    and of the sweep's best configuration, each naming its protocol; the published row of the
    reference's table beside them (the config's ``preset``, else k=80 + depth; Cityscapes only; and
    CUPS' own row when the cups protocol was scored); the semantic mIoU. Empty when neither
    evaluate nor sweep ran."""
    ev, sweep = result.evaluation, result.sweep
    if ev is None and sweep is None:
        return ""
    cfg = result.config.stages
    where = title or f"{result.config.layout.root} ({result.config.layout.split})"
    rows = []
    if ev is not None:
        inst = cfg.get("instances")
        tau = getattr(inst, "grad_threshold", None)
        name = "ours" + (" (connected components)" if getattr(inst, "depth", "") == "none"
                         else f" at tau={tau:.2f}" if tau is not None else "")
        rows.append((name, ev, ev.get("protocol", "standard")))
        rows += [(name + (f" ({r['num_classes']} classes)" if p == "cups" else ""), r, p)
                 for p, r in ev.get("also", {}).items() if "PQ" in r]  # [evaluate] also_protocols: same files
    if sweep is not None:
        best = sweep.get("best") or max(sweep["results"], key=lambda r: r["PQ"])
        rows.append((f"sweep best (tau={best['grad_threshold']}, A_min={best['min_area']})", best,
                     sweep.get("protocol", "standard")))
    preset = result.config.preset or DEFAULT_COMPARISON
    dataset = next((c.dataset for c in cfg.values() if hasattr(c, "dataset")), "cityscapes")
    if dataset == "cityscapes":  # the reference's table is Cityscapes val
        for label, values, protocol in ((f"published: {PRESETS[preset].row}", PRESETS[preset].published, "reference"),
                                        ("published: CUPS (CVPR 2025)", PUBLISHED_CUPS, "cups")):
            if protocol == "reference" or any(r[2] == "cups" for r in rows):
                rows.append((label, dict(zip(("PQ", "PQ_stuff", "PQ_things", "SQ", "RQ"), values)), protocol))
    named = ", ".join(dict.fromkeys(r[2] for r in rows if not r[0].startswith("published")))
    lines = [f"Results on {where} (protocol{'s' if ',' in named else ''}: {named})",
             f"{'':40s} {'PQ':>6s} {'PQ_st':>6s} {'PQ_th':>6s} {'SQ':>6s} {'RQ':>6s}  protocol"]
    for name, r, protocol in rows:
        lines.append(f"{name:40s} {r['PQ']:6.2f} {r['PQ_stuff']:6.2f} {r['PQ_things']:6.2f} {r['SQ']:6.2f} "
                     f"{r['RQ']:6.2f}  {protocol}")
    if dataset == "cityscapes":
        cups_row = any(r[0].startswith("published: CUPS") for r in rows)
        lines.append(f"(published: the reference repository's README, Cityscapes val, {PUBLISHED_PROTOCOL}"
                     + ("; CUPS: its paper, its protocol" if cups_row else "") + ")")
    if ev is not None and "semantic" in ev:
        sem = cfg.get("semantics")
        what = "the semantic pseudo-labels"
        if sem is not None and not sem.load_centroids:
            what = f"the k={sem.k or defaults.K} {sem.mapping or 'majority'}-mapped clusters"
        lines.append(f"semantic mIoU of {what}: {ev['semantic']['mIoU']:.2f}")
    protocol = (ev or {}).get("protocol")
    cups = ev.get("also", {}).get("cups", ev if protocol == "cups" else None) if ev is not None else None
    if cups is not None:
        lines.append(f"CUPS' mIoU / accuracy ({cups['num_classes']} classes, Hungarian): {cups['mIoU']:.2f} / "
                     f"{cups['accuracy']:.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- default config
def default_config_text() -> str:
    """A commented config with every stage and its defaults (``pseudo-labels run --print-config``)."""
    return DEFAULT_CONFIG_TEXT


DEFAULT_CONFIG_TEXT = """\
# pseudo-labels run --config pipeline.toml
# One table per stage; a stage runs when its table is present, in this order:
# synth, features, semantics (or cause27), dynaseg, refine, depth, instances, panoptic, evaluate, sweep,
# exports, visualize, report.
# Keys are the stage's parameters (the command's flags with '_' for '-'); input and output paths
# are set from [data] so that the stages chain. Relative paths are relative to this file.
# Rerunning the same config resumes: finished images and finished stages are kept.
# Before the first stage, every input of every stage is checked (all problems listed at once).
# One row of the reference's results table: pseudo-labels run --print-config --preset list

[data]
root = "cityscapes"                      # the official zips unpacked here: leftImg8bit/, gtFine/, disparity/, camera/
split = "val"
out = "pipeline_out"                     # instances/, panoptic/ + panoptic.json, evaluation.json, sweep.json, ...
semantic_subdir = "pseudo_semantic_k80"  # <root>/<semantic_subdir>/<split>: semantic pseudo-labels
depth_subdir = "depth_disparity"         # <root>/<depth_subdir>/<split>: depth maps (.npy)
features_subdir = "features"             # <root>/<features_subdir>: features of [features]
segments_subdir = "dynaseg_segments"     # <root>/<segments_subdir>/<split>: segments of [dynaseg]
refined_subdir = "pseudo_semantic_refined"  # with [refine]: refined semantics, read by every later stage
dataset = "cityscapes"                   # label table of every stage (pseudo_labels.datasets)
# preset = "k80-depth"                   # the published row shown beside ours (default: k80-depth)

[runner]
workers = 2                              # processes per per-image stage
executor = "local"                       # local or ray
ray_address = ""                         # with executor = "ray": a running cluster ("" starts a local one)
fail_fast = false
overwrite = false                        # true: recompute everything

# Every stage table also takes workers = N: that stage's processes (default: [runner] workers).

# [synth]                                # write a synthetic city into [data] root first
# n = 12
# seed = 0
# size = [1024, 2048]

# [features]                             # extract features into <root>/<features_subdir> first
# backbone = "builtin"

[semantics]                              # features -> k-means -> cluster-to-class mapping
k = 80
backbone = "builtin"                     # builtin, or a DINOv2 ViT with weights = "<local file>"
mapping = "majority"                     # majority / hungarian read gtFine labels (recorded); none: raw clusters

# [dynaseg]                              # DynaSeg segments per image (for [refine] method = "dynaseg")
# params = { variant = "scf", steps = 50 }

# [refine]                               # sharpen the semantics: majority inside DynaSeg segments, or a dense CRF
# method = "crf"                         # dynaseg (needs [dynaseg]), crf (pydensecrf2) or none

[depth]
source = "disparity"                     # disparity, npy, spidepth, depth-anything
normalize = "minmax"

[instances]
grad_threshold = 0.2                     # tau
# resolution = [512, 1024]               # working resolution; default: half of each image (512x1024 for Cityscapes)
# min_area = 1000                        # A_min in pixels at the working resolution; default: 1000 at 512x1024,
                                         # scaled by the pixel count elsewhere (250 at 256x512)

[panoptic]                               # assembled at the working resolution, written at the images' size

[evaluate]
protocol = "standard"                    # standard (= cityscapesscripts, at the ground truth's size), reference,
                                         # or cups (CUPS' metric)
# also_protocols = ["reference", "cups"]  # also score the same files under these (side by side in the table)
semantic = true                          # also mIoU of the semantic pseudo-labels against gtFine
# (ground truth the official zips lack, panoptic and trainIds, is made by cityscapesscripts into <out>/gt_cache)

[sweep]
grad_thresholds = [0.1, 0.2, 0.3]
# min_areas = [250, 500, 1000, 2000]     # default: these at 512x1024, scaled like min_area

# [exports.cups]                         # CUPS reads <root>/leftImg8bit_sequence (leftImg8bit_sequence_trainvaltest.zip)
# overwrite = true
# link_key_frames = true                 # without that zip: link leftImg8bit_sequence -> leftImg8bit (key frames only)

[exports.coco]
overwrite = true

[visualize]
n = 4                                    # per-image panels

[report]
"""
