"""Synthetic street scenes in the Cityscapes layout, with GT, disparity and camera files.

A scene is a pinhole-camera street canyon rendered with a z-buffer: a ground plane
(road, sidewalk, terrain), building/vegetation facades on both sides and a frontal
backdrop, fences/walls, poles with signs and lights, trees, and thing objects
(cars, trucks, buses, persons, riders on bicycles/motorcycles, parked bicycles) as
flat shapes at constant depth standing on the ground, so that lower objects are
closer and larger. It contains touching/occluding instances of one class at
different depths, crowd groups (persons labelled 24 without an instance index),
and void regions (ego vehicle, static, unlabeled).

Camera: the Cityscapes intrinsics scaled to the image size, baseline 0.209313 m.
Depth is in metres along the optical axis; sky has depth :data:`SKY_DEPTH`.
Disparity PNG values: ``p = round(baseline * fx / depth * 256) + 1``, ``p = 0`` invalid
(sky, ego vehicle, a few random stereo holes), so
``depth = baseline * fx / ((p - 1) / 256)`` recovers ``depth`` up to quantisation.

Opt-in class dropout (``class_dropout`` / ``--class-dropout P``, default 0 with unchanged
output): each class is left out of each scene with probability P, deterministically per
seed, so image-level tags vary between images (for the weakly-supervised CAM path).

Files (:func:`write_synthetic_city`): ``layout="official"`` writes exactly what the four official
zips hold (leftImg8bit, gtFine color/labelIds/instanceIds PNGs + polygons JSON in the official
schema, disparity, camera); ``layout="extended"`` adds what cityscapesscripts' preparation scripts
make next to the data (labelTrainIds, panoptic GT), made by them. Both also write the provenance
manifest :data:`MANIFEST_NAME` at the root.

The label table is Cityscapes' (:data:`LABELS`, labelIds/trainIds of cityscapesscripts) and the
files are listed by the Cityscapes lister (:func:`list_images`).

Library: :func:`generate_scene`, :func:`write_synthetic_city`. Command: ``pseudo-labels synth``
(:mod:`pseudo_labels.commands.synth`).
"""

from __future__ import annotations

import math
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pseudo_labels.core import io as plio
from pseudo_labels.core.errors import PseudoLabelsError
from pseudo_labels.datasets.cityscapes import LABELS, label_id_to_train_id_lut, list_images  # noqa: F401  (LABELS, list_images: this data set's table and lister)
from pseudo_labels.core.defaults import SYNTH_LAYOUT_LIBRARY, SYNTH_LAYOUTS, SYNTH_SIZE, SYNTH_SPLIT
from pseudo_labels.core.validate import validate_config

# --------------------------------------------------------------------------- constants
#: real Cityscapes camera at 2048x1024 (scaled to the image size per scene)
CS_FX, CS_FY, CS_U0, CS_V0 = 2262.52, 2265.3017905988554, 1096.98, 513.137
CS_WIDTH, CS_HEIGHT = 2048, 1024
BASELINE = 0.209313  # metres
SKY_DEPTH = 150.0  # metres, depth given to sky pixels (their disparity is invalid)
EGO_DEPTH = 2.5  # metres, depth given to the ego-vehicle hood (disparity invalid)
MANIFEST_NAME = "synth_manifest.json"
MAX_ATTEMPTS = 8  # scene re-draws until every class of REQUIRED_LABEL_IDS is visible
MIN_CLASS_PIXELS = 8  # "visible": at least this many pixels
FRAME = 19  # Cityscapes annotated frames end in _000019

# Cityscapes labelIds used here
UNLABELED, EGO, STATIC = 0, 1, 4
ROAD, SIDEWALK, BUILDING, WALL, FENCE = 7, 8, 11, 12, 13
POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = 17, 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 32, 33
#: classes every scene contains (labelIds); motorcycle appears in some scenes only
REQUIRED_LABEL_IDS = (ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
                      PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE)
#: classes the opt-in ``class_dropout`` may remove from a scene (every train class the city draws)
DROPPABLE_LABEL_IDS = REQUIRED_LABEL_IDS + (MOTORCYCLE,)
#: what a dropped ground / facade class becomes (first of these not dropped); other dropped classes
#: are simply not drawn (what was behind shows), and a dropped sky is covered by a backdrop of
#: unbounded height
_DROP_SUBSTITUTES = {ROAD: (SIDEWALK, TERRAIN), SIDEWALK: (TERRAIN, ROAD), TERRAIN: (SIDEWALK, ROAD),
                     BUILDING: (VEGETATION,), VEGETATION: (BUILDING,)}
_DROP_STREAM = 0xC1A55D  # extra entropy word of the class-dropout random stream
_SKY_COVER_HEIGHT = 1.0e4  # metres: backdrop height that hides the sky

# Appearance per labelId: base RGB, per-surface RGB jitter, fine colour noise, blotchy
# (low-frequency) luminance noise, medium-frequency luminance noise.
_APPEARANCE: dict[int, tuple[tuple[int, int, int], float, float, float, float]] = {
    EGO: ((28, 28, 34), 6, 3, 4, 0),
    STATIC: ((105, 85, 60), 12, 6, 6, 4),
    ROAD: ((98, 94, 104), 6, 7, 9, 0),
    SIDEWALK: ((176, 150, 138), 8, 6, 5, 0),
    BUILDING: ((150, 108, 86), 18, 6, 8, 3),
    WALL: ((182, 178, 150), 10, 4, 6, 0),
    FENCE: ((116, 136, 84), 10, 5, 4, 0),
    POLE: ((72, 74, 84), 6, 4, 2, 0),
    LIGHT: ((34, 32, 30), 5, 4, 2, 0),
    SIGN: ((222, 196, 36), 14, 5, 3, 0),
    VEGETATION: ((58, 124, 42), 12, 8, 10, 26),
    TERRAIN: ((150, 152, 72), 10, 9, 12, 10),
    SKY: ((132, 182, 236), 8, 2, 5, 0),
    PERSON: ((168, 62, 118), 22, 6, 3, 5),
    RIDER: ((214, 122, 36), 16, 6, 3, 5),
    CAR: ((38, 64, 156), 22, 4, 3, 0),
    TRUCK: ((54, 134, 128), 14, 5, 4, 0),
    BUS: ((206, 206, 214), 10, 4, 3, 0),
    MOTORCYCLE: ((122, 40, 164), 14, 5, 3, 0),
    BICYCLE: ((226, 70, 184), 14, 6, 3, 0),
}
# Extra surface colours that keep their class label (windows, skin, lamps, markings)
_WINDOW_RGB = (30, 36, 48)
_SKIN_RGB = (206, 160, 130)
_MARKING_RGB = (228, 228, 220)
_TYRE_RGB = (24, 24, 24)


@dataclass
class SyntheticScene:
    """One synthetic image and its ground truth, all (H, W).

    ``image`` uint8 RGB; ``label_ids`` uint8 Cityscapes labelIds; ``train_ids`` uint8
    (255 void); ``instance_ids`` int32 in the ``_instanceIds`` convention (labelId*1000+k
    for thing instances, labelId for stuff, void and crowd); ``depth`` float32 metres
    (sky :data:`SKY_DEPTH`); ``disparity`` uint16 Cityscapes PNG values (0 invalid);
    ``camera`` the Cityscapes camera JSON dict.
    """

    image: np.ndarray
    label_ids: np.ndarray
    train_ids: np.ndarray
    instance_ids: np.ndarray
    depth: np.ndarray
    disparity: np.ndarray
    camera: dict
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- camera
def make_camera(size: tuple[int, int], pitch: float = 0.038, height: float = 1.22) -> dict:
    """Cityscapes camera JSON dict with intrinsics scaled to ``size`` = (H, W) pixels."""
    h, w = size
    return {
        "extrinsic": {"baseline": BASELINE, "pitch": float(pitch), "roll": 0.0, "x": 1.7, "y": 0.1,
                      "yaw": -0.0195, "z": float(height)},
        "intrinsic": {"fx": CS_FX * w / CS_WIDTH, "fy": CS_FY * h / CS_HEIGHT,
                      "u0": CS_U0 * w / CS_WIDTH, "v0": CS_V0 * h / CS_HEIGHT},
    }


def depth_to_disparity_png(depth: np.ndarray, camera: dict, invalid: np.ndarray | None = None) -> np.ndarray:
    """Depth (H, W) float32 metres -> Cityscapes disparity PNG values (H, W) uint16.

    ``p = round(baseline * fx / depth * 256) + 1`` clipped to 1..65535; ``p = 0`` where
    ``invalid`` (bool mask) is true or depth is not finite / not positive.
    """
    fx = camera["intrinsic"]["fx"]
    b = camera["extrinsic"]["baseline"]
    ok = np.isfinite(depth) & (depth > 0)
    disp = np.where(ok, b * fx / np.where(ok, depth, 1.0), 0.0)
    p = np.clip(np.rint(disp * 256.0) + 1.0, 1, 65535).astype(np.uint16)
    p[~ok] = 0
    if invalid is not None:
        p[invalid] = 0
    return p


def disparity_png_to_depth(p: np.ndarray, camera: dict) -> np.ndarray:
    """Inverse of :func:`depth_to_disparity_png`: (H, W) float32 metres, NaN where p <= 1."""
    fx = camera["intrinsic"]["fx"]
    b = camera["extrinsic"]["baseline"]
    d = (p.astype(np.float64) - 1.0) / 256.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(d > 0, b * fx / d, np.nan)
    return z.astype(np.float32)


# --------------------------------------------------------------------------- renderer
class _Canvas:
    """Z-buffered label/instance/depth/surface maps of one scene (internal)."""

    def __init__(self, size: tuple[int, int], camera: dict, rng: np.random.Generator,
                 dropped: frozenset = frozenset()):
        self.h, self.w = size
        self.rng = rng
        # class dropout (opt-in): labels not drawn, and the label a dropped ground/facade class becomes
        self.dropped = frozenset(dropped)
        self.swap = {c: next(r for r in _DROP_SUBSTITUTES[c] if r not in self.dropped)
                     for c in self.dropped if c in _DROP_SUBSTITUTES}
        intr, ext = camera["intrinsic"], camera["extrinsic"]
        self.fx, self.fy, self.u0 = intr["fx"], intr["fy"], intr["u0"]
        self.hc = ext["z"]
        self.yh = intr["v0"] - intr["fy"] * math.tan(ext["pitch"])  # horizon row
        self.label = np.full(size, SKY, np.uint8)
        self.inst = np.full(size, SKY, np.int32)
        self.depth = np.full(size, SKY_DEPTH, np.float32)
        self.zbuf = np.full(size, np.inf, np.float32)  # occluders only (ground does not write it)
        self.surf = np.zeros(size, np.int32)
        self.surf_rgb: list[tuple[float, float, float]] = []
        self.surf_gain: list[float] = []
        self.new_surface(SKY)  # surface 0 = sky
        self.instance_count: dict[int, int] = {}

    # -- surfaces: one colour per painted part (class base colour + jitter, or a fixed colour)
    def new_surface(self, label: int, rgb: Sequence[float] | None = None, jitter: float | None = None) -> int:
        label = self.swap.get(label, label)  # a substituted class looks like its substitute
        base, jit, *_ = _APPEARANCE.get(label, ((128, 128, 128), 10, 0, 0, 0))
        if rgb is not None:
            base = rgb
            jit = 8 if jitter is None else jitter
        col = np.asarray(base, np.float32) + self.rng.uniform(-jit, jit, 3)
        self.surf_rgb.append(tuple(float(c) for c in col))
        self.surf_gain.append(float(self.rng.uniform(0.9, 1.1)))
        return len(self.surf_rgb) - 1

    def next_instance(self, label: int) -> int:
        k = self.instance_count.get(label, 0)
        self.instance_count[label] = k + 1
        return label * 1000 + k

    # -- projection
    def u_of(self, x: np.ndarray | float, z: float) -> np.ndarray | float:
        return self.u0 + self.fx * np.asarray(x) / z

    def v_of(self, y: np.ndarray | float, z: np.ndarray | float) -> np.ndarray | float:
        """Row of a point at height ``y`` metres above the ground at depth ``z``."""
        return self.yh + (self.hc - np.asarray(y)) * self.fy / z

    def z_visible(self, x_abs: float, side: int, margin: float = 0.85) -> float:
        """Smallest depth at which lateral offset ``side * x_abs`` metres is inside the view."""
        half = (self.w - self.u0) if side > 0 else self.u0
        return self.fx * x_abs / max(margin * half, 1.0)

    def z_top_visible(self, height: float, margin: float = 0.05) -> float:
        """Smallest depth at which a point ``height`` metres above the ground is in the frame."""
        room = self.yh - margin * self.h
        return (height - self.hc) * self.fy / room if room > 1 else 0.0

    # -- ground plane
    def draw_ground(self, road_half: float, sidewalk: float, lane_marks: bool) -> None:
        v = np.arange(self.h, dtype=np.float32) + 0.5
        rows = v > self.yh + 0.5
        if not rows.any():
            return
        r0 = int(np.argmax(rows))
        z = (self.hc * self.fy / (v[r0:] - self.yh)).astype(np.float32)  # (R,)
        u = np.arange(self.w, dtype=np.float32) + 0.5
        x = (u[None, :] - self.u0) * z[:, None] / self.fx  # lateral metres, (R, W)
        ax = np.abs(x)
        lab = np.where(ax < road_half, ROAD, np.where(ax < road_half + sidewalk, SIDEWALK, TERRAIN)).astype(np.uint8)
        s_road, s_side, s_terr = (self.new_surface(c) for c in (ROAD, SIDEWALK, TERRAIN))
        surf = np.where(lab == ROAD, s_road, np.where(lab == SIDEWALK, s_side, s_terr)).astype(np.int32)
        if lane_marks:
            mark = (np.abs(x) < 0.08) & ((z[:, None] % 9.0) < 4.5)
            s_mark = self.new_surface(ROAD, _MARKING_RGB, 6)
            if ROAD not in self.dropped:
                surf[mark] = s_mark
        if self.swap:
            lut = np.arange(256, dtype=np.uint8)
            for c, r in self.swap.items():
                lut[c] = r
            lab = lut[lab]
        self.label[r0:] = lab
        self.inst[r0:] = lab
        self.depth[r0:] = np.broadcast_to(z[:, None], lab.shape)
        self.surf[r0:] = surf

    # -- planes parallel to the driving direction (facades, fences, walls), depth per column
    def draw_lateral_plane(self, side: int, x_off: float, z0: float, z1: float, y0: float, y1: float,
                           label: int, surface: int | None = None) -> None:
        """Vertical plane at lateral ``side * x_off`` metres, depth ``z0..z1``, height ``y0..y1``."""
        if z1 <= z0:
            return
        ua, ub = sorted((float(self.u_of(side * x_off, z0)), float(self.u_of(side * x_off, z1))))
        c0, c1 = max(0, int(math.floor(ua))), min(self.w, int(math.ceil(ub)) + 1)
        if c1 <= c0:
            return
        u = np.arange(c0, c1, dtype=np.float32) + 0.5
        du = side * (u - self.u0)
        with np.errstate(divide="ignore"):
            z = np.where(du > 0, self.fx * x_off / np.maximum(du, 1e-6), np.inf).astype(np.float32)
        ok = (z >= z0) & (z <= z1)
        top = self.v_of(y1, z)
        bot = self.v_of(y0, z)
        r0 = max(0, int(math.floor(np.min(np.where(ok, top, self.h)))))
        r1 = min(self.h, int(math.ceil(np.max(np.where(ok, bot, 0)))) + 1)
        if r1 <= r0:
            return
        v = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
        mask = ok[None, :] & (v >= top[None, :]) & (v < bot[None, :])
        zz = np.broadcast_to(z[None, :], mask.shape)
        surface = self.new_surface(label) if surface is None else surface
        label = self.swap.get(label, label)
        if label not in self.dropped:
            self._write(slice(r0, r1), slice(c0, c1), mask, zz, label, label, surface)

    def draw_frontal_band(self, z: float, x0: float, x1: float, y1: float, label: int) -> None:
        """Frontal rectangle at depth ``z`` from the ground to height ``y1`` (backdrop blocks)."""
        c0 = max(0, int(round(float(self.u_of(x0, z)))))
        c1 = min(self.w, int(round(float(self.u_of(x1, z)))))
        r0 = max(0, int(round(float(self.v_of(y1, z)))))
        r1 = min(self.h, int(round(float(self.v_of(0.0, z)))))
        if c1 <= c0 or r1 <= r0:
            return
        mask = np.ones((r1 - r0, c1 - c0), bool)
        surface = self.new_surface(label)
        label = self.swap.get(label, label)
        if label not in self.dropped:
            self._write(slice(r0, r1), slice(c0, c1), mask, np.float32(z), label, label, surface)

    def _write(self, rs: slice, cs: slice, mask: np.ndarray, z, label: int | np.ndarray,
               inst: int | np.ndarray, surf: int | np.ndarray) -> None:
        zcrop = self.zbuf[rs, cs]
        zz = np.broadcast_to(np.asarray(z, np.float32), mask.shape)
        m = mask & (zz < zcrop)
        if not m.any():
            return
        zcrop[m] = zz[m]
        self.depth[rs, cs][m] = zz[m]
        for arr, val in ((self.label, label), (self.inst, inst), (self.surf, surf)):
            crop = arr[rs, cs]
            crop[m] = val[m] if isinstance(val, np.ndarray) else val

    # -- objects: flat shapes at constant depth made of parts (polygons, ellipses, lines)
    def draw_object(self, x: float, z: float, parts: list[tuple]) -> None:
        """Draw parts at lateral ``x`` metres, depth ``z``; part coordinates are metres
        relative to the object's ground point (x right, y up).

        A part is ``(kind, geometry, label, instance_value, surface)`` with kind
        ``poly`` (list of (x, y)), ``ellipse`` (cx, cy, rx, ry), ``ring`` (cx, cy, r, t),
        ``line`` (x0, y0, x1, y1, t). Later parts cover earlier ones.
        """
        sx, sy = self.fx / z, self.fy / z
        u_c, v_g = float(self.u_of(x, z)), float(self.v_of(0.0, z))
        pts_all = []
        for kind, geo, *_ in parts:
            if kind == "poly":
                pts_all.extend(geo)
            elif kind in ("ellipse",):
                cx, cy, rx, ry = geo
                pts_all += [(cx - rx, cy - ry), (cx + rx, cy + ry)]
            elif kind == "ring":
                cx, cy, r, t = geo
                pts_all += [(cx - r - t, cy - r - t), (cx + r + t, cy + r + t)]
            elif kind == "line":
                x0, y0, x1, y1, t = geo
                pts_all += [(x0 - t, y0 - t), (x1 + t, y1 + t), (x0 + t, y0 + t), (x1 - t, y1 - t)]
        p = np.asarray(pts_all, np.float64)
        us = u_c + p[:, 0] * sx
        vs = v_g - p[:, 1] * sy
        c0, c1 = max(0, int(math.floor(us.min())) - 1), min(self.w, int(math.ceil(us.max())) + 2)
        r0, r1 = max(0, int(math.floor(vs.min())) - 1), min(self.h, int(math.ceil(vs.max())) + 2)
        if c1 <= c0 or r1 <= r0:
            return
        canvas = np.zeros((r1 - r0, c1 - c0), np.uint8)
        sh = 4  # fixed-point bits for sub-pixel drawing
        scale = float(1 << sh)

        def pix(px: float, py: float) -> tuple[int, int]:
            return (int(round((u_c + px * sx - c0 - 0.5) * scale)), int(round((v_g - py * sy - r0 - 0.5) * scale)))

        for j, (kind, geo, *_rest) in enumerate(parts, start=1):
            if self.dropped and _rest[0] in self.dropped:
                continue  # class dropout: this part is not drawn
            if kind == "poly":
                pts = np.array([pix(a, b) for a, b in geo], np.int32)
                cv2.fillPoly(canvas, [pts], j, cv2.LINE_8, sh)
            elif kind == "ellipse":
                cx, cy, rx, ry = geo
                axes = (max(1, int(round(rx * sx * scale))), max(1, int(round(ry * sy * scale))))
                cv2.ellipse(canvas, pix(cx, cy), axes, 0, 0, 360, j, -1, cv2.LINE_8, sh)
            elif kind == "ring":
                cx, cy, r, t = geo
                axes = (max(1, int(round(r * sx * scale))), max(1, int(round(r * sy * scale))))
                cv2.ellipse(canvas, pix(cx, cy), axes, 0, 0, 360, j, max(1, int(round(t * sx))), cv2.LINE_8, sh)
            elif kind == "line":
                x0, y0, x1, y1, t = geo
                cv2.line(canvas, pix(x0, y0), pix(x1, y1), j, max(1, int(round(t * sx))), cv2.LINE_8, sh)
        mask = canvas > 0
        if not mask.any():
            return
        lab_lut = np.zeros(len(parts) + 1, np.uint8)
        inst_lut = np.zeros(len(parts) + 1, np.int32)
        surf_lut = np.zeros(len(parts) + 1, np.int32)
        for j, (_k, _g, lab, inst, surf) in enumerate(parts, start=1):
            lab_lut[j], inst_lut[j], surf_lut[j] = lab, inst, surf
        self._write(slice(r0, r1), slice(c0, c1), mask, np.float32(z), lab_lut[canvas], inst_lut[canvas],
                    surf_lut[canvas])


# --------------------------------------------------------------------------- object shapes (metres)
def _car(cv: _Canvas, width: float, height: float, inst: int) -> list[tuple]:
    w2, hb = width / 2, height * 0.55
    body = cv.new_surface(CAR)
    win = cv.new_surface(CAR, _WINDOW_RGB, 6)
    tyre = cv.new_surface(CAR, _TYRE_RGB, 4)
    cab = [(-w2 * 0.8, hb), (-w2 * 0.62, height), (w2 * 0.62, height), (w2 * 0.8, hb)]
    glass = [(-w2 * 0.7, hb + 0.05), (-w2 * 0.57, height - 0.08), (w2 * 0.57, height - 0.08), (w2 * 0.7, hb + 0.05)]
    return [
        ("poly", [(-w2 * 0.95, 0.0), (-w2 * 0.95, 0.25), (w2 * 0.95, 0.25), (w2 * 0.95, 0.0)], CAR, inst, tyre),
        ("poly", [(-w2, 0.18), (-w2, hb), (w2, hb), (w2, 0.18)], CAR, inst, body),
        ("poly", cab, CAR, inst, body),
        ("poly", glass, CAR, inst, win),
    ]


def _big_vehicle(cv: _Canvas, label: int, width: float, height: float, inst: int) -> list[tuple]:
    w2 = width / 2
    body = cv.new_surface(label)
    win = cv.new_surface(label, _WINDOW_RGB, 6)
    tyre = cv.new_surface(label, _TYRE_RGB, 4)
    parts = [
        ("poly", [(-w2 * 0.9, 0.0), (-w2 * 0.9, 0.5), (w2 * 0.9, 0.5), (w2 * 0.9, 0.0)], label, inst, tyre),
        ("poly", [(-w2, 0.35), (-w2, height), (w2, height), (w2, 0.35)], label, inst, body),
    ]
    if label == BUS:
        parts.append(("poly", [(-w2 * 0.9, height * 0.55), (-w2 * 0.9, height * 0.88), (w2 * 0.9, height * 0.88),
                               (w2 * 0.9, height * 0.55)], label, inst, win))
    else:  # truck: cab window on top of a box
        parts.append(("poly", [(-w2 * 0.8, height * 0.6), (-w2 * 0.8, height * 0.8), (w2 * 0.8, height * 0.8),
                               (w2 * 0.8, height * 0.6)], label, inst, win))
    return parts


def _person(cv: _Canvas, label: int, height: float, inst: int, seated: bool = False) -> list[tuple]:
    """Person (or rider when ``label`` is RIDER); ``seated`` raises the figure onto a saddle."""
    cloth = cv.new_surface(label)
    legs = cv.new_surface(label, np.asarray(_APPEARANCE[label][0]) * 0.55, 10)
    skin = cv.new_surface(label, _SKIN_RGB, 14)
    s = height / 1.75
    y0 = 0.55 * s if seated else 0.0
    hw = 0.24 * s
    return [
        ("poly", [(-hw * 0.8, y0), (-hw * 0.6, y0 + 0.85 * s), (hw * 0.6, y0 + 0.85 * s), (hw * 0.8, y0)],
         label, inst, legs),
        ("poly", [(-hw, y0 + 0.8 * s), (-hw * 1.05, y0 + 1.45 * s), (hw * 1.05, y0 + 1.45 * s), (hw, y0 + 0.8 * s)],
         label, inst, cloth),
        ("ellipse", (0.0, y0 + 1.6 * s - 0.02, 0.11 * s, 0.14 * s), label, inst, skin),
    ]


def _two_wheeler(cv: _Canvas, label: int, inst: int) -> list[tuple]:
    """Bicycle or motorcycle seen from the side (1.7 m long)."""
    frame = cv.new_surface(label)
    tyre = cv.new_surface(label, _TYRE_RGB, 4)
    r = 0.34 if label == BICYCLE else 0.32
    t = 0.05 if label == BICYCLE else 0.12
    parts = [
        ("ring", (-0.55, r, r, t), label, inst, tyre),
        ("ring", (0.55, r, r, t), label, inst, tyre),
        ("line", (-0.55, r, 0.0, 0.8, 0.06), label, inst, frame),
        ("line", (0.0, 0.8, 0.55, r, 0.06), label, inst, frame),
        ("line", (-0.2, 0.85, 0.45, 0.9, 0.06), label, inst, frame),
    ]
    if label == MOTORCYCLE:
        parts.append(("poly", [(-0.45, 0.35), (-0.3, 0.75), (0.4, 0.75), (0.45, 0.35)], label, inst, frame))
    return parts


def _pole(cv: _Canvas, height: float, head: str | None) -> list[tuple]:
    pole = cv.new_surface(POLE)
    t = 0.09
    parts = [("poly", [(-t, 0.0), (-t, height), (t, height), (t, 0.0)], POLE, POLE, pole)]
    if head == "sign":
        s = cv.new_surface(SIGN)
        if cv.rng.random() < 0.5:
            parts.append(("ellipse", (0.0, height - 0.35, 0.33, 0.33), SIGN, SIGN, s))
        else:
            parts.append(("poly", [(-0.38, height - 0.75), (-0.38, height), (0.38, height), (0.38, height - 0.75)],
                          SIGN, SIGN, s))
    elif head == "light":
        box = cv.new_surface(LIGHT)
        parts.append(("poly", [(-0.2, height - 1.0), (-0.2, height), (0.2, height), (0.2, height - 1.0)],
                      LIGHT, LIGHT, box))
        lamp = cv.new_surface(LIGHT, [(230, 40, 30), (240, 200, 40), (40, 220, 90)][int(cv.rng.integers(3))], 10)
        parts.append(("ellipse", (0.0, height - 0.5, 0.1, 0.1), LIGHT, LIGHT, lamp))
    return parts


def _tree(cv: _Canvas, height: float) -> list[tuple]:
    trunk = cv.new_surface(VEGETATION, (92, 70, 48), 10)
    crown = cv.new_surface(VEGETATION)
    r = height * cv.rng.uniform(0.22, 0.32)
    return [
        ("poly", [(-0.15, 0.0), (-0.15, height - r), (0.15, height - r), (0.15, 0.0)], VEGETATION, VEGETATION, trunk),
        ("ellipse", (0.0, height - r, r, r * cv.rng.uniform(0.9, 1.2)), VEGETATION, VEGETATION, crown),
    ]


def _box(cv: _Canvas, label: int, w: float, h: float) -> list[tuple]:
    return [("poly", [(-w / 2, 0.0), (-w / 2, h), (w / 2, h), (w / 2, 0.0)], label, label, cv.new_surface(label))]


# --------------------------------------------------------------------------- scene layout
def _layout(cv: _Canvas) -> dict:
    """Place everything; returns a small description (counts) for tests and reports."""
    rng = cv.rng
    road_half = rng.uniform(4.0, 7.0)
    sidewalk = rng.uniform(2.5, 4.0)
    terrain = {s: rng.uniform(1.5, 6.0) for s in (-1, 1)}
    facade_x = {s: road_half + sidewalk + terrain[s] for s in (-1, 1)}
    z_back = rng.uniform(70.0, 100.0)
    info = {"road_half": road_half, "sidewalk": sidewalk, "z_backdrop": z_back, "objects": []}

    cv.draw_ground(road_half, sidewalk, lane_marks=bool(rng.random() < 0.7))

    # backdrop: frontal blocks across the whole view at z_back
    x_span = (cv.w / cv.fx) * z_back
    x = -x_span
    while x < x_span:
        bw = rng.uniform(6.0, 20.0)
        lab = VEGETATION if rng.random() < 0.25 else BUILDING
        top = rng.uniform(4.0, 14.0) if lab == BUILDING else rng.uniform(4.0, 10.0)
        cv.draw_frontal_band(z_back, x, x + bw, _SKY_COVER_HEIGHT if SKY in cv.dropped else top, lab)
        x += bw
    # side facades: building / vegetation blocks along the street
    for s in (-1, 1):
        z = 1.0
        while z < z_back:
            blen = rng.uniform(8.0, 25.0)
            r = rng.random()
            lab = VEGETATION if r < 0.2 else BUILDING
            top = rng.uniform(8.0, 25.0) if lab == BUILDING else rng.uniform(3.0, 8.0)
            if r < 0.9:  # else a gap: the backdrop and sky show through
                cv.draw_lateral_plane(s, facade_x[s], z, min(z + blen, z_back), 0.0, top, lab)
            z += blen
        # fence or wall at the outer edge of the sidewalk (guarantee one of each per scene)
        xf = road_half + sidewalk + 0.2
        for lab in (FENCE, WALL) if s == -1 else ((FENCE if rng.random() < 0.5 else WALL),):
            z0 = cv.z_visible(xf, s) * rng.uniform(0.5, 1.2)
            cv.draw_lateral_plane(s, xf, z0, z0 + rng.uniform(10.0, 30.0), 0.0, rng.uniform(1.0, 2.2), lab)
        # trees on the terrain strip
        for _ in range(int(rng.integers(1, 4))):
            xt = s * (road_half + sidewalk + rng.uniform(0.5, terrain[s] - 0.3))
            cv.draw_object(xt, rng.uniform(8.0, 50.0), _tree(cv, rng.uniform(4.0, 8.0)))
    # poles with signs and lights (first left pole has a sign, first right pole a light)
    for s in (-1, 1):
        z = max(rng.uniform(7.0, 14.0), cv.z_visible(road_half + 0.35, s))
        first = True
        while z < min(z_back, 70.0):
            r = rng.random()
            head = ("sign" if s == -1 else "light") if first else ("sign" if r < 0.35 else "light" if r < 0.55 else None)
            height = rng.uniform(3.5, 6.5)
            z = max(z, cv.z_top_visible(height))
            cv.draw_object(s * (road_half + 0.35), z, _pole(cv, height, head))
            first = False
            z += rng.uniform(10.0, 25.0)

    objects: list[tuple[float, float, str, int]] = []  # (x, z, kind, label) before drawing

    def add(x: float, z: float, parts: list[tuple], kind: str) -> None:
        cv.draw_object(x, z, parts)
        objects.append((float(x), float(z), kind))

    lane = lambda: rng.uniform(-road_half + 1.3, road_half - 1.3)  # noqa: E731
    walk = lambda s: s * (road_half + rng.uniform(0.5, sidewalk - 0.4))  # noqa: E731
    # trucks and buses on the road
    for lab, (w, h) in ((TRUCK, (2.5, 3.4)), (BUS, (2.6, 3.2))):
        for _ in range(1 + int(rng.random() < 0.25)):
            add(lane(), rng.uniform(18.0, 50.0),
                _big_vehicle(cv, lab, w * rng.uniform(0.95, 1.6), h * rng.uniform(0.95, 1.1), cv.next_instance(lab)),
                "big")
    # driving cars
    for _ in range(int(rng.integers(2, 6))):
        add(lane(), rng.uniform(8.0, 60.0), _car(cv, rng.uniform(1.7, 2.1), rng.uniform(1.4, 1.6),
                                                cv.next_instance(CAR)), "car")
    # a row of parked cars on one side: touching / occluding cars at increasing depth
    s = s_parked = int(rng.choice([-1, 1]))
    z = max(rng.uniform(7.0, 13.0), cv.z_visible(road_half + 1.0, s))
    for _ in range(int(rng.integers(2, 5))):
        add(s * (road_half - 1.1), z, _car(cv, rng.uniform(3.6, 4.5), rng.uniform(1.4, 1.55),
                                          cv.next_instance(CAR)), "parked_car")
        z += rng.uniform(5.5, 9.0)
    # pedestrians on the sidewalks (and one crossing the road)
    for _ in range(int(rng.integers(3, 8))):
        add(walk(int(rng.choice([-1, 1]))), rng.uniform(6.0, 45.0),
            _person(cv, PERSON, rng.uniform(1.55, 1.95), cv.next_instance(PERSON)), "person")
    add(lane(), rng.uniform(10.0, 35.0), _person(cv, PERSON, rng.uniform(1.55, 1.95), cv.next_instance(PERSON)),
        "person")
    # two persons of one class overlapping in the image at clearly different depths
    s = int(rng.choice([-1, 1]))
    x1 = walk(s)
    z1 = max(rng.uniform(7.0, 16.0), cv.z_visible(abs(x1) + 0.6, s))
    h1 = rng.uniform(1.6, 1.9)
    add(x1, z1, _person(cv, PERSON, h1, cv.next_instance(PERSON)), "person_pair_near")
    z2 = z1 * rng.uniform(1.35, 1.7)
    x2 = (x1 + rng.choice([-1, 1]) * 0.3) * z2 / z1  # same image column +- 0.3 m at the near depth
    x2 = float(np.clip(x2, -(road_half + sidewalk - 0.3), road_half + sidewalk - 0.3))
    add(x2, z2, _person(cv, PERSON, rng.uniform(1.6, 1.9), cv.next_instance(PERSON)), "person_pair_far")
    # a crowd: persons labelled 24 without an instance index (iscrowd in the panoptic GT)
    s = int(rng.choice([-1, 1]))
    xc = s * (road_half + sidewalk / 2)
    zc = max(rng.uniform(14.0, 35.0), cv.z_visible(abs(xc) + 1.5, s))
    for _ in range(int(rng.integers(4, 9))):
        xi = float(np.clip(xc + rng.uniform(-1.2, 1.2), -(road_half + sidewalk - 0.3), road_half + sidewalk - 0.3))
        add(xi, zc + rng.uniform(-1.5, 1.5), _person(cv, PERSON, rng.uniform(1.55, 1.9), PERSON), "crowd")
    # riders on bicycles / motorcycles near the road edge opposite the parked cars
    for i in range(int(rng.integers(1, 3))):
        lab = MOTORCYCLE if i > 0 and rng.random() < 0.5 else BICYCLE
        s = -s_parked
        xr = s * (road_half - rng.uniform(0.6, 1.4))
        zr = max(rng.uniform(8.0, 40.0), cv.z_visible(abs(xr) + 1.0, s))
        add(xr, zr, _two_wheeler(cv, lab, cv.next_instance(lab)), "two_wheeler")
        add(xr, zr - 0.05, _person(cv, RIDER, rng.uniform(1.6, 1.85), cv.next_instance(RIDER), seated=True), "rider")
    # parked bicycles and static objects (void) on the sidewalk
    for _ in range(int(rng.integers(0, 3))):
        add(walk(int(rng.choice([-1, 1]))), rng.uniform(6.0, 30.0),
            _two_wheeler(cv, BICYCLE, cv.next_instance(BICYCLE)), "bicycle")
    for _ in range(int(rng.integers(1, 3))):
        add(walk(int(rng.choice([-1, 1]))), rng.uniform(6.0, 30.0),
            _box(cv, STATIC, rng.uniform(0.5, 0.9), rng.uniform(0.8, 1.2)), "static")
    info["objects"] = objects
    return info


# --------------------------------------------------------------------------- appearance
def _render_image(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Colour the scene: per-surface colour, class textures, lighting, depth haze. (H, W, 3) uint8."""
    h, w = cv.h, cv.w
    n = 256
    amp_col = np.zeros(n, np.float32)
    amp_low = np.zeros(n, np.float32)
    amp_mid = np.zeros(n, np.float32)
    for lab, (_rgb, _j, a_col, a_low, a_mid) in _APPEARANCE.items():
        amp_col[lab], amp_low[lab], amp_mid[lab] = a_col, a_low, a_mid
    label = cv.label
    surf_rgb = np.asarray(cv.surf_rgb, np.float32) * np.asarray(cv.surf_gain, np.float32)[:, None]
    surf_flat = cv.surf.ravel()

    def smooth_noise(step: int) -> np.ndarray:
        small = rng.standard_normal((h // step + 2, w // step + 2), dtype=np.float32)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)[:h, :w]

    # luminance texture (H, W): blotchy + medium-frequency noise, class patterns, sky gradient
    lum = amp_low[label] * smooth_noise(max(2, min(h, w) // 24)) * np.float32(1.6)
    lum += amp_mid[label] * smooth_noise(max(1, min(h, w) // 180))
    # periodic patterns per class, in image coordinates (sizes scale with the image)
    unit = max(2, w // 256)
    vv = np.arange(h, dtype=np.int32)[:, None]
    uu = np.arange(w, dtype=np.int32)[None, :]
    p = 4 * unit
    tiles = ((uu % p) < max(1, unit // 2)) | ((vv % p) < max(1, unit // 2))
    windows = ((uu % (3 * unit)) >= unit) & ((vv % (4 * unit)) >= int(1.6 * unit))
    slats = (uu % (2 * unit)) < unit
    courses = (vv % (2 * unit)) == 0
    for lab, field_, amp in ((SIDEWALK, tiles, -28.0), (BUILDING, windows, -45.0), (FENCE, slats, 35.0),
                             (WALL, courses, -25.0)):
        m = (label == lab) & field_
        lum[m] += amp
    sky = label == SKY  # brighter toward the horizon
    grad = np.clip(vv.astype(np.float32) / max(cv.yh, 1.0), 0, 1.2) * np.float32(30.0)
    lum += np.where(sky, grad, np.float32(0.0))
    # distance haze (not on sky), global lighting and colour cast folded into out = x * A + B + cast
    gain = np.float32(rng.uniform(0.8, 1.15))
    cast = rng.uniform(-10, 10, 3).astype(np.float32)
    haze = np.float32(0.6) - np.float32(0.6) * np.exp(-cv.depth / np.float32(250.0))
    haze[sky] = 0.0
    a_mul = (np.float32(1.0) - haze) * gain
    b_add = haze * (np.float32(190.0) * gain)
    # per-pixel colour noise: uniform int8 scaled to the class amplitude (std of int8 uniform ~73.9)
    noise = rng.integers(-128, 128, (3, h, w), dtype=np.int8)
    n_scale = amp_col[label] * np.float32(1.0 / 73.9)
    planes = []
    for c in range(3):
        x = np.take(surf_rgb[:, c], surf_flat).reshape(h, w)
        x += lum
        x += n_scale * noise[c]
        x *= a_mul
        x += b_add
        x += cast[c]
        np.clip(x, 0, 255, out=x)
        planes.append(x.astype(np.uint8))
    return cv2.merge(planes)


# --------------------------------------------------------------------------- public API
def dropped_classes(seed: int | Sequence[int], class_dropout: float) -> frozenset:
    """labelIds that ``class_dropout`` removes from the scene of ``seed`` (empty for 0).

    Each class of :data:`DROPPABLE_LABEL_IDS` is dropped with probability ``class_dropout``,
    drawn from its own stream ``default_rng([*seed, _DROP_STREAM])`` (so the scene's own
    random stream is untouched and a larger ``class_dropout`` drops a superset). At least one
    ground class (road, sidewalk, terrain) and one facade class (building, vegetation) is
    kept: if all of a group were dropped, its first member (road, building) stays.
    """
    p = float(class_dropout)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"class_dropout must be in [0, 1], got {class_dropout}")
    if p == 0.0:
        return frozenset()
    entropy = [int(v) for v in (seed if isinstance(seed, (tuple, list, np.ndarray)) else [seed])]
    u = np.random.default_rng([*entropy, _DROP_STREAM]).random(len(DROPPABLE_LABEL_IDS))
    dropped = {c for c, x in zip(DROPPABLE_LABEL_IDS, u) if x < p}
    for group in ((ROAD, SIDEWALK, TERRAIN), (BUILDING, VEGETATION)):
        if dropped.issuperset(group):
            dropped.discard(group[0])
    return frozenset(dropped)


def generate_scene(seed: int | Sequence[int], size: tuple[int, int] = SYNTH_SIZE,
                   class_dropout: float = 0.0) -> SyntheticScene:
    """Render one synthetic street scene of ``size`` = (H, W) pixels (>= 64x128).

    ``seed``: an int or a sequence of ints (``numpy.random.default_rng`` entropy); the
    ``i``-th image of :func:`write_synthetic_city` uses :func:`image_seed`.
    Deterministic: the same seed and size give identical arrays.

    ``class_dropout`` (opt-in, default 0 = every class in every scene, output unchanged):
    probability with which each class is left out of this scene (:func:`dropped_classes`),
    so that image-level tags differ between images (weakly-supervised experiments). A
    dropped object class is not drawn; a dropped ground/facade class is replaced by a
    neighbour (road -> sidewalk, building -> vegetation, ...); a dropped sky is hidden behind
    the backdrop. The layout (positions, sizes, colours) is otherwise that of the full scene.
    ``info["dropped_label_ids"]`` lists what was dropped.
    """
    h, w = int(size[0]), int(size[1])
    if h < 64 or w < 128:
        raise ValueError(f"synthetic scene size must be at least 64x128 (H, W), got {h}x{w}")
    dropped = dropped_classes(seed, class_dropout)
    rng = np.random.default_rng(seed)
    vv = np.arange(h, dtype=np.float32)[:, None]
    uu = np.arange(w, dtype=np.float32)[None, :]
    for attempt in range(MAX_ATTEMPTS):  # re-draw (same stream) until every required class is visible
        camera = make_camera((h, w), pitch=float(rng.uniform(0.025, 0.05)), height=float(rng.uniform(1.18, 1.24)))
        cv = _Canvas((h, w), camera, rng, dropped)
        info = _layout(cv)
        # void: ego-vehicle hood at the bottom
        hood_top = h * rng.uniform(0.90, 0.94)
        hood = vv >= hood_top + (h - hood_top) * 0.8 * ((uu - w / 2) / (w / 2)) ** 2
        ego_surf = cv.new_surface(EGO)
        cv.label[hood], cv.inst[hood], cv.depth[hood], cv.surf[hood] = EGO, EGO, EGO_DEPTH, ego_surf
        counts = np.bincount(cv.label.ravel(), minlength=256)
        missing = [c for c in REQUIRED_LABEL_IDS if c not in dropped and counts[c] < MIN_CLASS_PIXELS]
        if not missing:
            break
    info["attempts"] = attempt + 1
    info["missing_classes"] = missing
    if dropped:
        info["dropped_label_ids"] = sorted(dropped)
    # void: unlabeled blobs (annotation holes; the image keeps its content)
    unlabeled = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        c = (int(rng.integers(0, w)), int(rng.integers(int(cv.yh), h)))
        cv2.ellipse(unlabeled, c, (int(rng.integers(2, max(3, w // 40))), int(rng.integers(2, max(3, h // 40)))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    image = _render_image(cv, rng)
    unl = unlabeled > 0
    cv.label[unl] = UNLABELED
    cv.inst[unl] = UNLABELED
    # stereo: invalid on sky, ego vehicle and a few random holes
    holes = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.ellipse(holes, c, (int(rng.integers(2, max(3, w // 30))), int(rng.integers(2, max(3, h // 30)))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    invalid = (cv.label == SKY) | hood | (holes > 0)
    disparity = depth_to_disparity_png(cv.depth, camera, invalid)
    train_ids = label_id_to_train_id_lut()[cv.label]
    info["horizon_row"] = cv.yh
    return SyntheticScene(image=image, label_ids=cv.label, train_ids=train_ids, instance_ids=cv.inst,
                          depth=cv.depth, disparity=disparity, camera=camera, info=info)


def image_seed(seed: int, index: int, split: str = SYNTH_SPLIT) -> tuple[int, int, int]:
    """Seed of image ``index`` of a split: (seed, index, crc32(split)), so splits differ."""
    return (int(seed), int(index), zlib.crc32(split.encode()) & 0x7FFFFFFF)


def city_names(split: str) -> tuple[str, str]:
    """The two city names used for a split (disjoint between splits, as in Cityscapes)."""
    known = {"val": ("synthcity", "mockburg"), "train": ("trainhausen", "fakecity"),
             "test": ("testdorf", "dummytown")}
    if split in known:
        return known[split]
    tag = "".join(ch for ch in split.lower() if ch.isalnum()) or "x"
    return (f"synth{tag}", f"mock{tag}")


def stem_for(index: int, split: str = SYNTH_SPLIT) -> str:
    """Cityscapes stem ``<city>_<seq>_<frame>`` of image ``index`` of a split."""
    city = city_names(split)[index % 2]
    return f"{city}_{index:06d}_{FRAME:06d}"


def _color_lut() -> np.ndarray:
    """(256, 1, 3) uint8 labelId -> Cityscapes colour (RGB), for ``cv2.LUT``."""
    from cityscapesscripts.helpers.labels import labels

    lut = np.zeros((256, 1, 3), np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256:
            lut[lab.id, 0] = lab.color
    return lut


def color_image(label_ids: np.ndarray) -> np.ndarray:
    """labelIds (H, W) uint8 -> the ``_gtFine_color`` image (H, W, 3) uint8 RGB."""
    return cv2.LUT(cv2.merge([label_ids] * 3), _color_lut())


def _write_rgb_png_fast(path: Path, image: np.ndarray) -> None:
    """RGB PNG with zlib's RLE strategy: ~2x faster than the default on noisy images."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:  # pragma: no cover
        raise RuntimeError(f"{path}: PNG encoding failed")
    plio.write_bytes(path, buf.tobytes())


def _segment_contours(values: np.ndarray, where: np.ndarray | None = None) -> list[tuple[float, int, np.ndarray]]:
    """(polygon area, value, (N, 2) int32 x/y vertices) of every 8-connected component of equal
    ``values`` (H, W) int (only pixels where ``where`` is true, if given): the outer boundary
    through the centres of its border pixels (``cv2.findContours``, simple chain)."""
    from scipy import ndimage

    if where is not None:
        values = np.where(where, values, -1)
    uniq, inverse = np.unique(values, return_inverse=True)
    compact = inverse.reshape(values.shape).astype(np.int32) + 1
    out = []
    for i, box in enumerate(ndimage.find_objects(compact), start=1):
        value = int(uniq[i - 1])
        if box is None or value < 0:
            continue
        mask = (compact[box] == i).astype(np.uint8)
        n, comp = cv2.connectedComponents(mask, connectivity=8)
        for j in range(1, n):
            contours, _ = cv2.findContours((comp == j).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            c = max(contours, key=len)[:, 0, :].astype(np.int32) + np.array([box[1].start, box[0].start], np.int32)
            if len(c) < 3:  # a pixel or a straight run: repeat vertices (polygons have >= 3 points)
                c = np.concatenate([c, c[::-1], c])[:max(3, len(c))]
            out.append((abs(float(cv2.contourArea(c))), value, c))
    return out


def _rasterize(objects: list[tuple[int, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """Fill the polygons in order with their values, as ``json2labelImg`` does (PIL ``ImageDraw.polygon``)."""
    from PIL import Image, ImageDraw

    img = Image.new("I", (shape[1], shape[0]), -1)
    draw = ImageDraw.Draw(img)
    for value, poly in objects:
        draw.polygon([(int(x), int(y)) for x, y in poly], fill=int(value))
    return np.asarray(img, np.int64)


def polygon_label_name(value: int) -> str:
    """Cityscapes polygon label of an ``_instanceIds`` value: the class name; a thing class
    without an instance index (crowd) is ``<name>group`` (e.g. ``persongroup``), as in gtFine."""
    from cityscapesscripts.helpers.labels import id2label

    lab = id2label[value // 1000 if value >= 1000 else value]
    return lab.name + ("group" if value < 1000 and lab.hasInstances else "")


def scene_polygons(instance_ids: np.ndarray, max_rounds: int = 8) -> dict:
    """The ``_gtFine_polygons.json`` of a scene in the official schema: ``{"imgHeight", "imgWidth",
    "objects": [{"label", "polygon": [[x, y], ...]}]}`` (x, y integer pixel coordinates).

    One polygon per 8-connected piece of every ``instance_ids`` (H, W) segment, larger
    (enclosing) polygons first, so that filling them in order (what cityscapesscripts'
    ``json2labelImg`` / ``createTrainIdLabelImgs`` do) repaints the segments; pixels the fill
    gets wrong (thin parts, pieces inside another segment's outline) get further polygons
    drawn after, until the fill equals the map (with the installed Pillow). So the label
    images made from the polygons equal the ``_labelIds`` PNG; an instance may be several
    polygons (so ``json2instanceImg`` numbering differs: the ``_instanceIds`` PNG is the instance truth).
    """
    h, w = instance_ids.shape
    inst = instance_ids.astype(np.int64)
    objects = [(v, c) for _, v, c in sorted(_segment_contours(inst), key=lambda t: -t[0])]
    for _ in range(max_rounds):
        wrong = _rasterize(objects, (h, w)) != inst
        if not wrong.any():
            break
        objects += [(v, c) for _, v, c in sorted(_segment_contours(inst, wrong), key=lambda t: -t[0])]
    else:
        wrong = _rasterize(objects, (h, w)) != inst
        ys, xs = np.nonzero(wrong)  # last resort: one polygon per remaining pixel
        objects += [(int(inst[y, x]), np.array([[x, y]] * 3, np.int32)) for y, x in zip(ys, xs)]
    return {"imgHeight": int(h), "imgWidth": int(w),
            "objects": [{"label": polygon_label_name(v), "polygon": c.tolist()} for v, c in objects]}


def write_scene(root: str | Path, split: str, stem: str, scene: SyntheticScene) -> None:
    """Write one scene's files as the official zips hold them, under ``root`` (atomic writes):
    ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``, ``gtFine/...<stem>_gtFine_{color,labelIds,
    instanceIds}.png`` + ``_gtFine_polygons.json``, ``disparity/..._disparity.png``, ``camera/..._camera.json``."""
    root = Path(root)
    city = stem.rsplit("_", 2)[0]
    rel = Path(split) / city
    _write_rgb_png_fast(root / "leftImg8bit" / rel / f"{stem}_leftImg8bit.png", scene.image)
    gt = root / "gtFine" / rel
    plio.write_png(gt / f"{stem}_gtFine_labelIds.png", scene.label_ids)
    plio.write_png(gt / f"{stem}_gtFine_instanceIds.png", scene.instance_ids.astype(np.uint16))
    plio.write_png(gt / f"{stem}_gtFine_color.png", color_image(scene.label_ids))
    plio.write_json(gt / f"{stem}_gtFine_polygons.json", scene_polygons(scene.instance_ids), indent=None)
    plio.write_png(root / "disparity" / rel / f"{stem}_disparity.png", scene.disparity)
    plio.write_json(root / "camera" / rel / f"{stem}_camera.json", scene.camera)


def _write_one(job: tuple) -> str:
    root, split, stem, seed_tuple, size, class_dropout = job
    write_scene(root, split, stem, generate_scene(seed_tuple, size, class_dropout))
    return stem


def _remove_extras(root: Path, split: str, stems: list[str]) -> None:
    """Remove the extras an earlier ``extended`` write left for this split (ours only: the
    trainId maps of ``stems`` and the split's panoptic GT), so ``official`` holds only what the zips hold."""
    from pseudo_labels.datasets.cityscapes_gt import panoptic_paths, train_ids_path

    j, folder = panoptic_paths(root, split)
    j.unlink(missing_ok=True)
    if folder.is_dir():
        shutil.rmtree(folder)
    for stem in stems:
        train_ids_path(root, split, stem).unlink(missing_ok=True)


def _complete(root: Path, split: str, stems: list[str], layout: str) -> bool:
    """Every file of the layout exists for ``stems`` (a rerun with the same parameters keeps them)."""
    from pseudo_labels.datasets.cityscapes_gt import panoptic_paths, train_ids_path

    for stem in stems:
        rel = Path(split) / stem.rsplit("_", 2)[0]
        if not all((root / p).is_file() for p in (Path("leftImg8bit") / rel / f"{stem}_leftImg8bit.png",
                                                  Path("gtFine") / rel / f"{stem}_gtFine_polygons.json",
                                                  Path("camera") / rel / f"{stem}_camera.json")):
            return False
        if layout == "extended" and not train_ids_path(root, split, stem).is_file():
            return False
    return layout == "official" or panoptic_paths(root, split)[0].is_file()


def write_synthetic_city(out_dir: str | Path, n_images: int, seed: int = 0, size: tuple[int, int] = SYNTH_SIZE,
                         split: str = SYNTH_SPLIT, workers: int = 1, manifest_name: str = MANIFEST_NAME,
                         class_dropout: float = 0.0, layout: str = SYNTH_LAYOUT_LIBRARY) -> list[str]:
    """Write ``n_images`` synthetic scenes of one split in the Cityscapes layout; return their stems.

    ``layout="official"``: exactly what the official zips hold (leftImg8bit_, gtFine_, disparity_,
    camera_trainvaltest): ``leftImg8bit``, ``gtFine`` (``_color``, ``_labelIds``, ``_instanceIds``
    PNGs + ``_polygons.json``), ``disparity``, ``camera`` (see :func:`write_scene`).
    ``layout="extended"`` (the library default, which the test fixtures and the pipeline's
    ``[synth]`` use): also what cityscapesscripts' preparation scripts would add next to the data,
    made by them (:func:`pseudo_labels.datasets.cityscapes_gt.prepare_ground_truth` in place):
    ``_gtFine_labelTrainIds.png`` and the panoptic GT ``gtFine/cityscapes_panoptic_<split>.json`` + folder.
    Both write ``<out_dir>/<manifest_name>`` (splits merged, so train and val can share a root).
    Image ``i`` uses ``image_seed(seed, i, split)``. ``class_dropout``: see :func:`generate_scene`
    (recorded in the manifest when > 0).
    """
    from pseudo_labels.core.runner import run_per_image
    from pseudo_labels.datasets.cityscapes_gt import prepare_ground_truth

    if n_images < 1:
        raise ValueError("n_images must be >= 1")
    if layout not in SYNTH_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(SYNTH_LAYOUTS)}, got {layout!r}")
    root = Path(out_dir)
    size = (int(size[0]), int(size[1]))
    stems = [stem_for(i, split) for i in range(n_images)]
    entry = {"n_images": n_images, "seed": int(seed), "size": list(size), "stems": stems, "layout": layout}
    if class_dropout:
        dropped_classes(0, class_dropout)  # validates the value
        entry["class_dropout"] = float(class_dropout)
    old = plio.read_manifest(root, manifest_name) if (root / manifest_name).exists() else None
    if not (old and old.get("stage") == "synth"):  # never mix synthetic scenes into a real data set
        held = [d for d in ("leftImg8bit", "gtFine") if (root / d).is_dir() and any((root / d).iterdir())]
        if held:
            raise PseudoLabelsError(
                f"{root}: holds a data set that synth did not write ({', '.join(d + '/' for d in held)} without "
                f"{manifest_name}); synthetic images would mix with it: give a new or empty folder")
    splits = dict((old or {}).get("parameters", {}).get("splits", {})) if old and old.get("stage") == "synth" else {}
    if splits.get(split) == entry and _complete(root, split, stems, layout):
        return stems  # already written with the same parameters: keep the files (and their mtimes)
    jobs = [(str(root), split, stems[i], image_seed(seed, i, split), size, float(class_dropout))
            for i in range(n_images)]
    summary = run_per_image(_write_one, jobs, workers=workers, desc=f"synth {split}",
                            name_of=lambda j: j[2], progress=False)
    summary.raise_if_failed()
    if layout == "extended":
        prepare_ground_truth(root, split, root, workers=workers, in_place=True)
    else:
        _remove_extras(root, split, stems)
    splits[split] = entry
    plio.write_manifest(root, "synth", {"splits": splits}, uses_ground_truth=False,
                        counts={s: v["n_images"] for s, v in splits.items()}, name=manifest_name)
    return stems


@dataclass(frozen=True)
class SyntheticCityConfig:
    """One split of a synthetic city: ``n`` images of ``size`` (H, W) pixels from ``seed``, written in
    ``layout`` (``official`` or ``extended``, see :func:`write_synthetic_city`).

    ``class_dropout``: probability of leaving each class out of each image (see :func:`generate_scene`).
    """

    n: int = 3
    seed: int = 0
    size: tuple[int, int] = SYNTH_SIZE
    class_dropout: float = 0.0
    layout: str = SYNTH_LAYOUT_LIBRARY

    def __post_init__(self) -> None:
        validate_config(self)  # one check for flags and TOML (issue 24)

    def check(self, name_of=lambda field: "--" + field.replace("_", "-")) -> None:
        """:class:`PseudoLabelsError` for values the generator cannot use; ``name_of(field)`` is how the
        message names a parameter (default: the command's flag, ``--class-dropout``)."""
        from pseudo_labels.core.errors import PseudoLabelsError

        h, w = self.size
        if self.n < 1:
            raise PseudoLabelsError(f"{name_of('n')} {self.n}: need at least one image")
        if h < 64 or w < 128:
            raise PseudoLabelsError(f"{name_of('size')} {h} {w}: need at least 64 128")
        if not 0.0 <= self.class_dropout <= 1.0:
            raise PseudoLabelsError(f"{name_of('class_dropout')} {self.class_dropout}: need 0 <= P <= 1")
        if self.layout not in SYNTH_LAYOUTS:
            raise PseudoLabelsError(f"{name_of('layout')} {self.layout!r}: choose from {', '.join(SYNTH_LAYOUTS)}")


def write_synthetic_city_config(out_dir: str | Path, config: SyntheticCityConfig, split: str = SYNTH_SPLIT,
                                workers: int = 1, name_of=None) -> list[str]:
    """:func:`write_synthetic_city` for a checked :class:`SyntheticCityConfig`; returns the stems.
    ``name_of``: see :meth:`SyntheticCityConfig.check`."""
    config.check(*([name_of] if name_of else []))
    return write_synthetic_city(out_dir, config.n, seed=config.seed, size=tuple(config.size), split=split,
                                workers=workers, class_dropout=config.class_dropout, layout=config.layout)
