"""One validation of parameters, for flags and TOML alike: :func:`validate_config`.

Every typed stage config calls ``validate_config(self)`` from ``__post_init__``, so a value
given as a flag and the same value given as a ``run`` TOML key meet the same check, before
anything is read or written. It checks:

- every float (also inside tuples / nested configs) is finite: NaN and Inf are refused;
- the fields named in :data:`RULES` (shared by name across configs: ``lr``, ``epochs``,
  ``grad_threshold``, ``batch_size``, ...) lie in their documented range; a config may add
  or override rules in a class attribute ``RANGES`` (field -> :class:`Range`);
- names joined below a root (:data:`NAME_FIELDS`: ``output_subdir``, ``depth_subdir``,
  ``name``, ...) stay inside it (:func:`pseudo_labels.core.paths.check_name`);
- outputs do not overwrite inputs (:func:`pseudo_labels.core.paths.refuse_overlap`), with the
  roles of path fields taken from :data:`ROOT_FIELDS` / :data:`INPUT_FIELDS` /
  :data:`OUTPUT_FIELDS` / :data:`OUTPUT_FILE_FIELDS`, or a class attribute ``PATH_ROLES``
  (field -> ``"root" | "input" | "output" | "output_file" | None``) where a config differs.

Every failure is a :class:`~pseudo_labels.core.errors.PseudoLabelsError` naming the field as
flag and key (``--grad-threshold / grad_threshold nan: must be a finite number >= 0``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Mapping

from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.core.paths import check_name, confine, refuse_overlap


@dataclass(frozen=True)
class Range:
    """A numeric range: ``lo <= x <= hi`` (``lo_open``: ``lo < x``; ``hi_open``: ``x < hi``);
    ``integer``: whole numbers only; ``none_ok``: ``None`` means "not set" (the default)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    none_ok: bool = True
    allowed: tuple = ()  # extra values allowed outside the range (e.g. k = 0 "automatic")
    choices: tuple = ()  # when set: only these values

    def text(self) -> str:
        if self.choices:
            return "must be one of " + ", ".join(map(str, self.choices))
        kind = "a whole number" if self.integer else "a finite number"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
        extra = f" (or {', '.join(map(str, self.allowed))})" if self.allowed else ""
        return f"must be {kind}" + (" " + " and ".join(parts) if parts else "") + extra

    def ok(self, x: Any) -> bool:
        if self.choices:
            return not isinstance(x, bool) and x in self.choices
        if x in self.allowed and not isinstance(x, bool):
            return True
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            return False
        if not math.isfinite(float(x)):
            return False
        if self.integer and float(x) != int(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        if self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi):
            return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


POSITIVE = Range(0, lo_open=True)
NONNEG = Range(0)
UNIT = Range(0, 1)
COUNT = Range(1, integer=True)  # >= 1
NONNEG_INT = Range(0, integer=True)

#: rules shared by field name across every config (a field holding a tuple is checked per element)
RULES: dict[str, Range] = {
    # optimisation
    "lr": POSITIVE, "weight_decay": NONNEG, "momentum": Range(0, 1, hi_open=True),
    "epochs": COUNT, "steps": COUNT, "batch_size": COUNT, "log_every": COUNT,
    "iterations": NONNEG_INT,  # CRF mean-field iterations; 0 = no CRF pass
    # depth-guided splitting
    "grad_threshold": NONNEG, "grad_thresholds": NONNEG, "min_area": NONNEG_INT, "min_areas": NONNEG_INT,
    "sigma": NONNEG, "sigmas": NONNEG, "depth_blur": NONNEG, "dilation_iters": NONNEG_INT,
    "connectivity": Range(choices=(4, 8)),
    "stuff_min_area": NONNEG_INT, "big_stuff_size_thresh": UNIT, "big_stuff_pix_thresh": NONNEG,
    # sizes and counts
    "resolution": COUNT, "input_size": COUNT, "output_size": COUNT, "tile_width": COUNT,
    "mask_patch_size": COUNT, "width": COUNT, "decoder_dim": COUNT, "heads": COUNT, "code_dim": COUNT,
    "hidden": NONNEG_INT, "knn": COUNT, "channels": COUNT, "n_blocks": COUNT, "max_labels": Range(2, integer=True),
    "feature_short_side": COUNT, "work_long_side": COUNT, "samples_per_image": COUNT, "max_samples": COUNT,
    "max_images": COUNT, "limit": NONNEG_INT, "n": NONNEG_INT, "sheet_n": NONNEG_INT, "n_panels": NONNEG_INT,
    "refine_band": NONNEG_INT, "threads": NONNEG_INT, "crop": NONNEG_INT, "tags_min_pixels": NONNEG_INT,
    "num_classes": COUNT, "num_labels": COUNT, "n_things": NONNEG_INT, "feature_samples": COUNT,
    "k_min": Range(2, integer=True), "k_max": Range(2, integer=True), "silhouette_sample": COUNT,
    "kmeans_fit_sample": COUNT, "kmeans_iter": COUNT, "ignore_classes": NONNEG_INT,
    "k": Range(2, integer=True, allowed=(0,)), "seed": NONNEG_INT, "sweep_seeds": NONNEG_INT,
    # thresholds, ratios and weights
    "bg_threshold": UNIT, "sweep_bg_thresholds": UNIT, "threshold": UNIT, "mask_ratio": UNIT,
    "class_dropout": Range(0, 1, hi_open=True), "input_dropout": Range(0, 1, hi_open=True), "gt_prob": UNIT,
    "sdc_weight": NONNEG, "sdn_weight": NONNEG, "mws_weight": NONNEG, "deal_weight": NONNEG,
    "sweep_deal_weights": NONNEG, "deal_mu": POSITIVE, "mu": POSITIVE, "mlp_ratio": POSITIVE,
    "w_rgb": NONNEG, "w_thermal": NONNEG, "w_cross": NONNEG,
    "pos_intra_weight": NONNEG, "pos_inter_weight": NONNEG, "neg_inter_weight": NONNEG,
    "pos_xy_std": POSITIVE, "bi_xy_std": POSITIVE, "bi_rgb_std": POSITIVE, "pos_weight": NONNEG, "bi_weight": NONNEG,
}

#: grids and lists that need at least one value
NONEMPTY_FIELDS = ("grad_thresholds", "min_areas", "sigmas", "semantic_subdirs", "sweep_bg_thresholds", "modalities")

#: fields holding a name joined below a root (checked to stay inside it)
NAME_FIELDS = ("output_subdir", "depth_subdir", "refine_depth_subdir", "semantic_subdirs", "semantic_subdir",
               "features_subdir", "segments_subdir", "refined_subdir", "name", "split", "hungarian_split")

ROOT_FIELDS = ("cityscapes_root", "data_root")
INPUT_FIELDS = ("semantic_dir", "depth_dir", "instance_dir", "panoptic_dir", "segments_dir", "images_dir",
                "input_dir", "features", "gt_json", "gt_folder", "pred_json", "pred_folder", "gt_semantic_dir",
                "pred_semantic_dir", "panoptic_json", "sweep_json", "overlays", "tags_file", "load_centroids",
                "labels_dir", "checkpoint_dir", "features_dir", "run", "weights", "head_weights", "model_dir",
                "backbone_weights", "codebook")
OUTPUT_FIELDS = ("out", "out_dir", "output_dir", "out_folder")
OUTPUT_FILE_FIELDS = ("out_json", "out_md", "output_path", "sweep_out")


def flag_name(field: str) -> str:
    """How a field is named in errors: its flag and its config key."""
    return f"--{field.replace('_', '-')} / {field}"


def check_value(field: str, value: Any, rule: Range | None = None) -> None:
    """Check one value (or each element of a tuple / list) against ``rule`` and finiteness."""
    if value is None:
        if rule is not None and not rule.none_ok:
            raise PseudoLabelsError(f"{flag_name(field)}: a value is required")
        return
    items = value if isinstance(value, (tuple, list)) else [value]
    for x in items:
        if isinstance(x, bool) or isinstance(x, str) or x is None:
            continue
        if isinstance(x, numbers.Real) and not math.isfinite(float(x)):
            raise PseudoLabelsError(f"{flag_name(field)} {x}: must be a finite number"
                                    + (f" ({rule.text()[5:]})" if rule else ""))
        if rule is not None and isinstance(x, numbers.Real) and not rule.ok(x):
            raise PseudoLabelsError(f"{flag_name(field)} {x}: {rule.text()}")
    if isinstance(value, (tuple, list)) and not value and field in NONEMPTY_FIELDS:
        raise PseudoLabelsError(f"{flag_name(field)}: needs at least one value")


def validate_config(cfg: Any, *, overlap: bool = True) -> None:
    """Validate a config dataclass (see the module docstring); nested configs are checked too."""
    ranges: Mapping[str, Range] = {**RULES, **getattr(cfg, "RANGES", {})}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_config(value, overlap=False)
            continue
        check_value(f.name, value, ranges.get(f.name))
        if f.name in NAME_FIELDS and value is not None:
            root = next((getattr(cfg, r) for r in ROOT_FIELDS if getattr(cfg, r, None)), None)
            for v in (value if isinstance(value, (tuple, list)) else [value]):
                if root is not None and f.name != "name":  # joined below the data root: resolved too
                    confine(root, v, flag_name(f.name))
                else:
                    check_name(v, flag_name(f.name))
    if overlap:
        check_paths(cfg)


def path_roles(cfg: Any) -> dict[str, str | None]:
    """Field -> role of every path field of ``cfg`` (see the module docstring)."""
    roles: dict[str, str | None] = {}
    for f in dataclasses.fields(cfg):
        if f.name in ROOT_FIELDS:
            roles[f.name] = "root"
        elif f.name in INPUT_FIELDS:
            roles[f.name] = "input"
        elif f.name in OUTPUT_FIELDS:
            roles[f.name] = "output"
        elif f.name in OUTPUT_FILE_FIELDS:
            roles[f.name] = "output_file"
    roles.update(getattr(cfg, "PATH_ROLES", {}))
    return roles


def check_paths(cfg: Any) -> None:
    """Refuse outputs of ``cfg`` that equal, contain or lie inside its inputs."""
    groups: dict[str, dict[str, Any]] = {"root": {}, "input": {}, "output": {}, "output_file": {}}
    for name, role in path_roles(cfg).items():
        value = getattr(cfg, name, None)
        if role is None or value is None or not isinstance(value, (str, os.PathLike)) or os.fspath(value) == "":
            continue
        groups[role][flag_name(name)] = value
    if not (groups["output"] or groups["output_file"]):
        return
    refuse_overlap(groups["input"], groups["output"], roots=groups["root"], output_files=groups["output_file"])


def check_not_upscaled(path: str | os.PathLike, shape: tuple[int, ...], other: tuple[int, ...], what: str,
                       other_what: str, *, both: bool = False) -> None:
    """Refuse a paired map smaller than its partner (``both``: smaller in both dimensions): a
    semantic map silently upscaled beside a finer depth or instance map means the pair does not
    match. ``path`` (the smaller map's file) is named in the error."""
    from pseudo_labels.core.errors import InputFileError

    h, w = shape[:2]
    H, W = other[:2]
    smaller = (h < H and w < W) if both else (h < H or w < W)
    if smaller:
        raise InputFileError(path, f"{what} is {h}x{w}, smaller than its {other_what} ({H}x{W}): the pair does not "
                                   f"match (it would be upscaled silently); give maps of the same image size")
