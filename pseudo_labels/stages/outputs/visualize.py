"""Overlays of panoptic pseudo-labels (library of the ``visualize`` command): per-image panels and
a contact sheet.

Panel: image | semantics (Cityscapes palette over the image) | instances | depth edges |
ground-truth semantics (when present). The contact sheet shows the panoptic overlay of many
images in a grid. Pure functions return (H, W, 3) uint8 RGB arrays; :func:`write_overlays` does a
whole folder.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pseudo_labels.core import io
from pseudo_labels.datasets.cityscapes import LABELS, index_by_stem, list_images, read_gt_train_ids
from pseudo_labels.core.defaults import DEPTH_BLUR_SIGMA, GRAD_THRESHOLD, VIS_N_PANELS
from pseudo_labels.core.defaults import VIS_OVERLAY_ALPHA as OVERLAY_ALPHA
from pseudo_labels.core.defaults import VIS_SHEET_COLUMNS as SHEET_COLUMNS
from pseudo_labels.core.defaults import VIS_SHEET_MAX_IMAGES as SHEET_MAX_IMAGES
from pseudo_labels.core.defaults import VIS_TILE_WIDTH as TILE_WIDTH
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.stages.instance.maps import depth_gradient_magnitude
from pseudo_labels.core.validate import validate_config


def colorize_semantic(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds (0..18; anything else = void) -> (H, W, 3) uint8 Cityscapes colours, void black."""
    return LABELS.colorize(train_ids)


def instance_colors(n: int) -> np.ndarray:
    """(n + 1, 3) uint8 distinct colours for ids 0..n (0 black): golden-ratio hues, fixed per id."""
    import colorsys

    out = np.zeros((n + 1, 3), np.uint8)
    for i in range(1, n + 1):
        h = (i * 0.618033988749895) % 1.0
        s = 0.65 + 0.35 * ((i * 7) % 3) / 2
        v = 0.75 + 0.25 * ((i * 5) % 2)
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return out


def colorize_instances(inst: np.ndarray) -> np.ndarray:
    """(H, W) instance ids (0 none, any positive ids) -> (H, W, 3) uint8, 0 black, one colour per id."""
    ids, inv = np.unique(np.asarray(inst), return_inverse=True)
    inv = inv.reshape(np.shape(inst))
    colors = instance_colors(len(ids))
    rank = np.arange(len(ids)) + (0 if ids[0] == 0 else 1)
    return colors[rank][inv]


def boundaries(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour has another id."""
    b = np.zeros(ids.shape, bool)
    b[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    b[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return b


def blend(image: np.ndarray, color: np.ndarray, alpha: float = OVERLAY_ALPHA, mask: np.ndarray | None = None) -> np.ndarray:
    """alpha * color + (1 - alpha) * image where ``mask`` (default: everywhere), (H, W, 3) uint8."""
    out = image.astype(np.float32)
    m = np.ones(image.shape[:2], bool) if mask is None else mask
    out[m] = alpha * color[m].astype(np.float32) + (1 - alpha) * out[m]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def semantic_overlay(image: np.ndarray, semantic: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Palette colours of non-void pixels blended over the image."""
    return blend(image, colorize_semantic(semantic), alpha, semantic < LABELS.num_classes)


def instance_overlay(image: np.ndarray, instances: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Instance colours blended over a darkened image, white instance outlines."""
    out = blend(image, np.zeros_like(image), 0.5)
    out = blend(out, colorize_instances(instances), alpha, instances > 0)
    out[boundaries(instances) & (instances > 0)] = 255
    return out


def gradient_magnitude(depth: np.ndarray, sigma: float = DEPTH_BLUR_SIGMA) -> np.ndarray:
    """|Sobel(gaussian(depth))|, the instance stage's edge measure (one implementation)."""
    return depth_gradient_magnitude(depth, sigma)


def depth_edges_image(depth: np.ndarray, grad_threshold: float = GRAD_THRESHOLD, sigma: float = DEPTH_BLUR_SIGMA,
                      normalize: bool = True) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8: min-max depth in grey, edges (gradient > threshold) in red.

    ``normalize``: min-max the depth first (as the reference's depth maps are) before the gradient.
    """
    d = np.asarray(depth, np.float64)
    finite = np.isfinite(d)
    lo, hi = (d[finite].min(), d[finite].max()) if finite.any() else (0.0, 1.0)
    dn = np.where(finite, (d - lo) / (hi - lo) if hi > lo else 0.0, 0.0)
    edges = gradient_magnitude(dn if normalize else np.where(finite, d, 0.0), sigma) > grad_threshold
    grey = np.round((1.0 - dn) * 200 + 30).astype(np.uint8)  # near = bright
    out = np.repeat(grey[:, :, None], 3, axis=2)
    out[edges] = (255, 40, 40)
    return out


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    h, w = size
    if a.shape[:2] == (h, w):
        return a
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def titled(tile: np.ndarray, title: str) -> np.ndarray:
    """Tile with a black title bar on top (cv2 text)."""
    import cv2

    bar_h = max(16, tile.shape[0] // 12)
    bar = np.zeros((bar_h, tile.shape[1], 3), np.uint8)
    scale = bar_h / 30
    cv2.putText(bar, title, (4, int(bar_h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def make_panel(
    image: np.ndarray,
    semantic: np.ndarray,
    instances: np.ndarray,
    depth: np.ndarray | None = None,
    gt_semantic: np.ndarray | None = None,
    *,
    tile_width: int = TILE_WIDTH,
    grad_threshold: float = GRAD_THRESHOLD,
    title: str | None = None,
) -> np.ndarray:
    """One row of tiles: image | semantics | instances | depth edges (if depth) | GT (if given).

    image (H, W, 3) uint8; semantic (h, w) trainIds (255 void); instances (h, w) ints (0 none);
    depth any size float; gt_semantic trainIds. Every tile is ``tile_width`` wide (aspect of the
    image); labels are resized nearest. Returns (h', W', 3) uint8.
    """
    th = max(1, round(image.shape[0] * tile_width / image.shape[1]))
    size = (th, tile_width)
    img = _resize(image, size, nearest=False)
    tiles = [titled(img, title or "image"),
             titled(semantic_overlay(img, _resize(semantic.astype(np.uint8), size, True)), "semantics"),
             titled(instance_overlay(img, _resize(instances.astype(np.int32), size, True)),
                    f"instances ({len(np.unique(instances[instances > 0]))})")]
    if depth is not None:
        d = _resize(np.asarray(depth, np.float32), size, nearest=False)
        tiles.append(titled(depth_edges_image(d, grad_threshold), f"depth edges (tau {grad_threshold:g})"))
    if gt_semantic is not None:
        tiles.append(titled(semantic_overlay(img, _resize(gt_semantic.astype(np.uint8), size, True)), "ground truth"))
    sep = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = []
    for k, t in enumerate(tiles):
        row += [t] if k == 0 else [sep, t]
    return np.concatenate(row, axis=1)


def panoptic_thumbnail(image: np.ndarray, semantic: np.ndarray, instances: np.ndarray, width: int = 384,
                       title: str = "") -> np.ndarray:
    """Semantic colours with instance outlines over the image, ``width`` wide (for contact sheets)."""
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    img = _resize(image, (h, width), False)
    sem = _resize(semantic.astype(np.uint8), (h, width), True)
    inst = _resize(instances.astype(np.int32), (h, width), True)
    out = semantic_overlay(img, sem)
    out[boundaries(inst) & (inst > 0)] = 255
    return titled(out, title) if title else out


def contact_sheet(tiles: Sequence[np.ndarray], columns: int = SHEET_COLUMNS, pad: int = 4) -> np.ndarray:
    """Grid of equally sized (h, w, 3) tiles, white padding; rows filled left to right."""
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * h + (rows + 1) * pad, columns * w + (columns + 1) * pad, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = _resize(t, (h, w), False)
    return sheet


# --------------------------------------------------------------------------- folder level
@dataclass
class VisualizeConfig:
    """What ``pseudo-labels visualize`` draws. Paths as given (the manifest records ``depth_dir`` verbatim)."""

    cityscapes_root: str | Path
    panoptic_dir: str | Path
    out: str | Path = "overlays"
    split: str = "val"
    panoptic_json: str | Path | None = None  # default: <panoptic_dir>.json
    depth_dir: str | Path | None = None  # depth .npy maps, searched recursively by stem
    n: int = VIS_N_PANELS  # per-image panels
    sheet_n: int = SHEET_MAX_IMAGES  # images in the contact sheet
    tile_width: int = TILE_WIDTH  # pixels
    grad_threshold: float = GRAD_THRESHOLD  # tau of the depth edge tile
    show_gt: bool = True  # last tile shows gtFine semantics when present

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)


def write_overlays(config: VisualizeConfig) -> dict:
    """Write ``<stem>_panel.png`` for the first ``n`` images, ``contact_sheet.png`` of the first
    ``sheet_n`` and a manifest into ``config.out``. Returns ``{"out", "panels", "contact_sheet_images",
    "panels_with_gt"}``. Images are those of the panoptic JSON that are in the split."""
    from pseudo_labels.stages.outputs.export import load_panoptic_input, read_panoptic_image

    c = config
    if c.n < 0 or c.sheet_n < 0:
        raise PseudoLabelsError("--n and --sheet-n must be >= 0")
    inp = load_panoptic_input(c.panoptic_dir, c.panoptic_json)
    entries = {e.stem: e for e in list_images(c.cityscapes_root, c.split)}
    images = [im for im in inp.images if im.stem in entries]
    if not images:
        raise PseudoLabelsError(
            f"{c.panoptic_dir}: none of its {len(inp.images)} images is in split {c.split!r} of {c.cityscapes_root}")
    depth_index = index_by_stem(c.depth_dir, ".npy") if c.depth_dir else {}
    out = Path(c.out)
    n_sheet = min(len(images), max(c.n, c.sheet_n))
    thumbs, panels, with_gt = [], [], 0
    for k, im in enumerate(images[:n_sheet]):
        entry = entries[im.stem]
        image = io.read_image_rgb(entry.image_path)
        _, sem, inst = read_panoptic_image(inp, im)
        if k < c.sheet_n:
            thumbs.append(panoptic_thumbnail(image, sem, inst, title=im.stem))
        if k < c.n:
            depth = io.read_npy(depth_index[im.stem]) if im.stem in depth_index else None
            gt = read_gt_train_ids(c.cityscapes_root, entry) if c.show_gt else None
            with_gt += gt is not None
            panel = make_panel(image, sem, inst, depth, gt, tile_width=c.tile_width,
                               grad_threshold=c.grad_threshold, title=im.stem)
            io.write_png(out / f"{im.stem}_panel.png", panel)
            panels.append(f"{im.stem}_panel.png")
    if thumbs:
        io.write_png(out / "contact_sheet.png", contact_sheet(thumbs))
    io.write_manifest(
        out, "visualize",
        {"split": c.split, "n": c.n, "sheet_n": c.sheet_n, "tile_width": c.tile_width,
         "grad_threshold": c.grad_threshold, "depth_dir": c.depth_dir, "show_gt": c.show_gt},
        uses_ground_truth={"display": "gtFine semantics shown in the last tile"} if with_gt else False,
        inputs={"panoptic_json": str(inp.json_path)},
        counts={"panels": len(panels), "contact_sheet_images": len(thumbs), "panels_with_gt": with_gt},
        extra={"panels": panels, "contact_sheet": "contact_sheet.png" if thumbs else None},
    )
    return {"out": str(out), "panels": len(panels), "contact_sheet_images": len(thumbs), "panels_with_gt": with_gt}
