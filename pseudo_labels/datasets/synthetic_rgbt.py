"""Synthetic RGB-thermal street scenes in the MFNet layout (day and night frames).

Each frame is a scene of the synthetic city (:func:`pseudo_labels.datasets.synthetic_city.generate_scene`)
with three additions:

- **labels in the MFNet table** (:data:`pseudo_labels.datasets.mfnet.LABELS`): car (cars, trucks,
  buses), person (persons, riders), bike (bicycles, motorcycles), guardrail (the city's fences),
  curve (a kerb band: sidewalk pixels next to road pixels), color_cone (traffic cones painted on
  the road, 0-3 per frame), bump (a speed bump band across the road in about half the frames);
  everything else, also the city's void regions, is 0 ``unlabeled``. ``car_stop`` does not occur.
- **a thermal channel** (:func:`render_thermal`, (H, W) uint8, higher = warmer): persons warm with
  hotter skin; running cars (the city's driving cars, trucks and buses) warm with hot tyres /
  engine band and cold windows, parked cars near ambient; road warmer than ambient (asphalt) with
  fine texture; sidewalk, buildings (window grid), walls, vegetation and terrain each their own
  temperature and blotchy texture; sky cold. Atmospheric attenuation pulls far surfaces toward
  ambient; a slight blur (thermal optics), column fixed-pattern noise and sensor noise. The thermal
  image does not depend on day / night.
- **night frames** (:func:`night_rgb`): the RGB image darkened in linear light (gain 0.01-0.03),
  a sodium-light colour cast, Gaussian + signal-dependent noise: dark and noisy; thermal unchanged.

Frames ``i`` with ``ceil((i + 1) f) > ceil(i f)`` are night (``f`` = ``night_fraction``, default
0.5, so at least half the frames are night, alternating N, D, N, ...). Names are
``<split><index:05d><D|N>`` (MFNet convention: the last letter is day / night). Deterministic:
frame ``i`` of a split uses ``image_seed(seed, i, split)`` of the city and fixed extra streams for
thermal, night and cones.

Library: :func:`generate_rgbt_scene`, :func:`write_synthetic_rgbt`. Command: ``pseudo-labels synth-rgbt``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pseudo_labels.core import io as plio
from pseudo_labels.datasets import mfnet
from pseudo_labels.datasets.synthetic_city import generate_scene, image_seed
from pseudo_labels.datasets.synthetic_city import (
    BICYCLE, BUILDING, BUS, CAR, FENCE, LIGHT, MOTORCYCLE, PERSON, POLE, RIDER, ROAD, SIDEWALK, SIGN, SKY,
    TERRAIN, TRUCK, VEGETATION, WALL,
)

MANIFEST_NAME = "synth_rgbt_manifest.json"
DEFAULT_SIZE = (240, 320)  # (H, W); MFNet frames are 480 x 640
DEFAULT_SPLIT = "train"
DEFAULT_NIGHT_FRACTION = 0.5
_THERMAL_STREAM, _NIGHT_STREAM, _PROPS_STREAM = 0x7E2A, 0x4E16, 0xC0DE

#: Cityscapes labelId -> MFNet class id (others 0 'unlabeled')
CITY_TO_MFNET = {CAR: mfnet.CAR, TRUCK: mfnet.CAR, BUS: mfnet.CAR, PERSON: mfnet.PERSON, RIDER: mfnet.PERSON,
                 BICYCLE: mfnet.BIKE, MOTORCYCLE: mfnet.BIKE, FENCE: mfnet.GUARDRAIL}
#: apparent temperature (0..255 grey) per Cityscapes labelId: base, texture amplitude (blotchy noise)
_TEMPERATURE = {
    SKY: (18.0, 3.0), ROAD: (138.0, 6.0), SIDEWALK: (118.0, 5.0), TERRAIN: (96.0, 8.0),
    BUILDING: (108.0, 6.0), WALL: (112.0, 4.0), FENCE: (100.0, 3.0), POLE: (92.0, 2.0), SIGN: (88.0, 2.0),
    LIGHT: (160.0, 4.0), VEGETATION: (84.0, 9.0), PERSON: (182.0, 4.0), RIDER: (182.0, 4.0),
    CAR: (104.0, 3.0), TRUCK: (108.0, 3.0), BUS: (108.0, 3.0), BICYCLE: (98.0, 2.0), MOTORCYCLE: (126.0, 3.0),
}
_AMBIENT = 100.0
_RUNNING_BODY, _RUNNING_TYRES, _WINDOWS, _SKIN = 150.0, 196.0, 70.0, 212.0
_CONE_RGB, _CONE_TEMP = (236, 104, 24), 92.0
_BUMP_RGB, _BUMP_TEMP = (214, 190, 40), 124.0


@dataclass
class RGBTScene:
    """One synthetic RGB-T frame, all (H, W): ``rgb`` (H, W, 3) uint8 (dark and noisy at night),
    ``thermal`` uint8, ``label`` uint8 MFNet class ids 0..8, ``night`` flag, ``day_rgb`` the
    frame's RGB before the night transform."""

    rgb: np.ndarray
    thermal: np.ndarray
    label: np.ndarray
    night: bool
    day_rgb: np.ndarray
    info: dict = field(default_factory=dict)


def is_night_frame(index: int, night_fraction: float = DEFAULT_NIGHT_FRACTION) -> bool:
    """Frame ``index`` is night when ``ceil((index + 1) f) > ceil(index f)`` (ceil(n f) of n frames)."""
    f = float(night_fraction)
    return math.ceil(round((index + 1) * f, 9)) > math.ceil(round(index * f, 9))


def frame_name(index: int, split: str, night: bool) -> str:
    """``<split><index:05d><N|D>``."""
    return f"{split}{index:05d}{'N' if night else 'D'}"


def _rng(seed: Sequence[int] | int, stream: int) -> np.random.Generator:
    entropy = [int(v) for v in (seed if isinstance(seed, (tuple, list)) else [seed])]
    return np.random.default_rng([*entropy, stream])


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], step: int) -> np.ndarray:
    h, w = size
    small = rng.standard_normal((h // step + 2, w // step + 2)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)[:h, :w]


def _running_cars(info: dict) -> set[int]:
    """Instance ids (labelId * 1000 + k) of the city's driving vehicles (cars on lanes, trucks, buses)."""
    kinds = [kind for _x, _z, kind in info.get("objects", []) if kind in ("car", "parked_car")]
    return {CAR * 1000 + k for k, kind in enumerate(kinds) if kind == "car"}


def render_thermal(label_ids: np.ndarray, instance_ids: np.ndarray, depth: np.ndarray, day_rgb: np.ndarray,
                   running: set[int], rng: np.random.Generator) -> np.ndarray:
    """Apparent temperature image (H, W) uint8 from the city's labelIds, instanceIds, depth (metres)
    and day RGB (used only to find skin and dark glass/tyre pixels of objects)."""
    h, w = label_ids.shape
    base = np.full(256, _AMBIENT, np.float32)
    amp = np.zeros(256, np.float32)
    for lab, (t, a) in _TEMPERATURE.items():
        base[lab], amp[lab] = t, a
    temp = base[label_ids] + amp[label_ids] * _smooth_noise(rng, (h, w), max(2, min(h, w) // 20)) * 1.5
    temp += amp[label_ids] * 0.5 * rng.standard_normal((h, w)).astype(np.float32)
    vv, uu = np.mgrid[0:h, 0:w]
    unit = max(2, w // 256)
    windows = ((uu % (3 * unit)) >= unit) & ((vv % (4 * unit)) >= int(1.6 * unit))
    temp[(label_ids == BUILDING) & windows] -= 14.0
    temp[label_ids == SKY] += (vv[label_ids == SKY] / max(h, 1)) * 25.0  # warmer toward the horizon
    rgb = day_rgb.astype(np.int32)
    dark = rgb.sum(axis=2) < 3 * 60
    skin = (np.abs(rgb - np.array([206, 160, 130])).sum(axis=2) < 70) & np.isin(label_ids, (PERSON, RIDER))
    temp[skin] = _SKIN + rng.normal(0, 3, int(skin.sum()))
    for inst in np.unique(instance_ids[np.isin(label_ids, (CAR, TRUCK, BUS))]):
        m = instance_ids == inst
        rows = np.flatnonzero(m.any(axis=1))
        top, bottom = rows[0], rows[-1] + 1
        low = m & (vv >= bottom - 0.28 * (bottom - top))
        if int(inst) in running or int(inst) // 1000 in (TRUCK, BUS):
            temp[m] = _RUNNING_BODY + rng.normal(0, 5)
            temp[low] = _RUNNING_TYRES + rng.normal(0, 4)
        temp[m & dark & ~low] = _WINDOWS + rng.normal(0, 4)
    for inst in np.unique(instance_ids[np.isin(label_ids, (PERSON, RIDER))]):
        m = (instance_ids == inst) & ~skin
        temp[m] += rng.normal(0, 6)  # clothing differs per person
    far = np.exp(-np.minimum(depth, 200.0) / 180.0).astype(np.float32)
    temp = np.where(label_ids == SKY, temp, _AMBIENT + (temp - _AMBIENT) * far)
    temp = cv2.GaussianBlur(temp, (0, 0), 0.7)
    temp += rng.normal(0, 2.0, (1, w)).astype(np.float32)  # column fixed-pattern noise
    temp += rng.normal(0, 2.5, (h, w)).astype(np.float32)
    return np.clip(np.rint(temp), 0, 255).astype(np.uint8)


def night_rgb(day_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Night version of a day frame: linear-light gain 0.01-0.03, sodium cast, noise; (H, W, 3) uint8."""
    x = (day_rgb.astype(np.float32) / 255.0) ** 2.2
    x *= float(rng.uniform(0.01, 0.03))
    x *= np.array([1.25, 1.0, 0.65], np.float32)  # orange street light
    x = np.clip(x, 0, 1) ** (1 / 2.2) * 255.0
    sigma = float(rng.uniform(6.0, 10.0))
    x += rng.normal(0, 1, x.shape).astype(np.float32) * (sigma + 0.05 * x)
    x += rng.normal(0, sigma * 0.5, x.shape[:2] + (1,)).astype(np.float32)  # luminance noise
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _ground_row(camera: dict, horizon: float, z: float) -> float:
    return horizon + camera["extrinsic"]["z"] * camera["intrinsic"]["fy"] / z


def _add_props(label: np.ndarray, rgb: np.ndarray, thermal_base: np.ndarray, city_labels: np.ndarray,
               depth: np.ndarray, camera: dict, horizon: float, rng: np.random.Generator) -> dict:
    """Paint kerb (curve), cones and a speed bump into the MFNet label, day RGB and thermal, in place."""
    h, w = label.shape
    road = city_labels == ROAD
    r = max(1, w // 200)
    kerb = cv2.dilate(road.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    label[kerb & (city_labels == SIDEWALK)] = mfnet.CURVE
    info = {"cones": 0, "bump": False}
    fx, fy = camera["intrinsic"]["fx"], camera["intrinsic"]["fy"]
    if rng.random() < 0.5:  # speed bump: road pixels in a 0.5 m depth band
        zb = float(rng.uniform(7.0, 20.0))
        band = road & (depth >= zb) & (depth < zb + 0.5)
        if band.any():
            label[band] = mfnet.BUMP
            stripes = ((np.arange(w)[None, :] // max(2, w // 40)) % 2 == 0) & band
            rgb[band] = _BUMP_RGB
            rgb[stripes] = (30, 30, 30)
            thermal_base[band] = _BUMP_TEMP
            info["bump"] = True
    for _ in range(int(rng.integers(0, 4))):  # cones: 0.7 m tall, 0.4 m wide, on the road
        z = float(rng.uniform(6.0, 30.0))
        row = _ground_row(camera, horizon, z)
        cols = np.flatnonzero(road[min(h - 1, max(0, int(row)))])
        if not cols.size:
            continue
        uc = float(cols[int(rng.integers(cols.size))])
        half, tall = 0.2 * fx / z, 0.7 * fy / z
        tri = np.zeros((h, w), np.uint8)
        pts = np.array([[uc - half, row], [uc + half, row], [uc, row - tall]]) * 16
        cv2.fillPoly(tri, [np.rint(pts).astype(np.int32)], 1, cv2.LINE_8, 4)
        m = (tri > 0) & (depth > z)  # hidden behind anything closer
        if m.sum() < 2:
            continue
        label[m] = mfnet.COLOR_CONE
        rgb[m] = _CONE_RGB
        stripe = m & (np.abs(np.arange(h)[:, None] - (row - 0.55 * tall)) < max(1.0, 0.08 * tall))
        rgb[stripe] = (240, 240, 240)
        thermal_base[m] = _CONE_TEMP
        info["cones"] += 1
    return info


def generate_rgbt_scene(seed: int | Sequence[int], size: tuple[int, int] = DEFAULT_SIZE,
                        night: bool = False) -> RGBTScene:
    """One synthetic RGB-T frame of ``size`` = (H, W) (>= 64 x 128); deterministic in ``seed``."""
    scene = generate_scene(seed, size)
    city = scene.label_ids
    lut = np.zeros(256, np.uint8)
    for lab, cls in CITY_TO_MFNET.items():
        lut[lab] = cls
    label = lut[city]
    day = scene.image.copy()
    # props are painted first so the thermal renderer sees their temperatures as their 'class'
    props_thermal = np.full(city.shape, np.nan, np.float32)
    info = _add_props(label, day, props_thermal, city, scene.depth, scene.camera,
                      float(scene.info["horizon_row"]), _rng(seed, _PROPS_STREAM))
    thermal = render_thermal(city, scene.instance_ids, scene.depth, scene.image, _running_cars(scene.info),
                             _rng(seed, _THERMAL_STREAM))
    painted = ~np.isnan(props_thermal)
    if painted.any():
        noise = _rng(seed, _THERMAL_STREAM + 1).normal(0, 2.5, int(painted.sum()))
        thermal[painted] = np.clip(np.rint(props_thermal[painted] + noise), 0, 255).astype(np.uint8)
    rgb = night_rgb(day, _rng(seed, _NIGHT_STREAM)) if night else day
    info.update(n_objects=len(scene.info.get("objects", [])))
    return RGBTScene(rgb=rgb, thermal=thermal, label=label, night=bool(night), day_rgb=day, info=info)


def _write_one(job: tuple) -> str:
    root, name, seed_tuple, size, night = job
    s = generate_rgbt_scene(seed_tuple, size, night)
    mfnet.write_sample(root, name, s.rgb, s.thermal, s.label)
    return name


def write_synthetic_rgbt(out_dir: str | Path, n_images: int, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE,
                         split: str = DEFAULT_SPLIT, night_fraction: float = DEFAULT_NIGHT_FRACTION,
                         workers: int = 1) -> list[str]:
    """Write ``n_images`` frames of one split in the MFNet layout; return their names.

    Writes ``images/<name>.png`` (4 channels), ``labels/<name>.png``, ``<split>.txt`` and
    ``<out_dir>/synth_rgbt_manifest.json`` (splits merged, so several splits can share a root).
    Rerunning with the same parameters keeps the files.
    """
    from pseudo_labels.core.runner import run_per_image

    if n_images < 1:
        raise ValueError("n_images must be >= 1")
    if not 0.0 <= night_fraction <= 1.0:
        raise ValueError(f"night_fraction must be in [0, 1], got {night_fraction}")
    root = Path(out_dir)
    size = (int(size[0]), int(size[1]))
    nights = [is_night_frame(i, night_fraction) for i in range(n_images)]
    names = [frame_name(i, split, nights[i]) for i in range(n_images)]
    entry = {"n_images": n_images, "seed": int(seed), "size": list(size), "night_fraction": float(night_fraction),
             "names": names}
    old = plio.read_manifest(root, MANIFEST_NAME) if (root / MANIFEST_NAME).exists() else None
    splits = dict((old or {}).get("parameters", {}).get("splits", {}))
    if splits.get(split) == entry and (root / f"{split}.txt").exists():
        return names
    jobs = [(str(root), names[i], image_seed(seed, i, split), size, nights[i]) for i in range(n_images)]
    summary = run_per_image(_write_one, jobs, workers=workers, desc=f"synth-rgbt {split}",
                            name_of=lambda j: j[1], progress=False)
    summary.raise_if_failed()
    plio.write_bytes(root / f"{split}.txt", ("\n".join(names) + "\n").encode())
    splits[split] = entry
    plio.write_manifest(root, "synth_rgbt", {"splits": splits}, uses_ground_truth=False,
                        counts={s: v["n_images"] for s, v in splits.items()}, name=MANIFEST_NAME)
    return names
