"""Procedural shortcut scenes: small RGB images with a region label map and one planted shortcut.

Each scenario has a *core* region (what the label is about: a shape difference, learnable but subtle) and a
*shortcut* region (a strong colour / texture cue, easier to learn) whose presence or style agrees with the
label with probability `leak`:

    leak = P(shortcut value == the value paired with the image's label)

`leak=0.5` decorrelates the shortcut, `leak=1` makes it a perfect proxy, and `flip=True` places it
against the label on every image (the shortcut-flipped test set: a model that learned the shortcut fails
there). Everything is drawn from `numpy.random.default_rng(seed)` and rendered with array operations, so
the same arguments give the same pixels (and the same PNG bytes), and 1000 images take well under a second.

`render(...)` returns arrays (used by training); `generate(...)` writes the dataset folder of docs/FORMATS.md
section 3 (manifest.csv, images/, masks/, regions.json) plus `scenario.json` with the planted ground truth.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

_CHUNK = 64  # images rendered at once (bounds memory; part of the seed -> pixels contract)


@dataclass(frozen=True)
class Scenario:
    """What a scenario is about: its classes, regions and the planted shortcut."""

    name: str
    classes: tuple[str, str]
    regions: tuple[str, ...]  # region id = position in this tuple
    core: str
    shortcut: str
    attribute: str
    attribute_values: tuple[str, str]  # (value paired with class 0, value paired with class 1)
    draw: Callable[["_Canvas", np.random.Generator, np.ndarray, np.ndarray], None] = field(repr=False)

    def regions_json(self) -> dict:
        regions = {}
        for rid, name in enumerate(self.regions):
            regions[str(rid)] = {"name": name, **({"role": "core"} if name == self.core else {})}
        return {"regions": regions}


@dataclass
class Scenes:
    """A rendered batch: uint8 images (n, H, W, 3), uint8 region maps (n, H, W), labels, shortcut flags."""

    scenario: Scenario
    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray  # (n,) int64 class index
    shortcut: np.ndarray  # (n,) int64: the attribute value index (1 = the value paired with class 1)

    @property
    def agrees(self) -> np.ndarray:
        """Whether the shortcut points at the true label (the realised leak is `agrees.mean()`)."""
        return self.shortcut == self.labels

    def attribute_values(self) -> list[str]:
        return [self.scenario.attribute_values[s] for s in self.shortcut]


class _Canvas:
    """Float RGB images and an int region map for a chunk of images; later paints cover earlier ones."""

    def __init__(self, m: int, size: int, regions: tuple[str, ...]):
        self.size = size
        self.rgb = np.zeros((m, size, size, 3), np.float32)
        self.mask = np.zeros((m, size, size), np.uint8)
        self._ids = {name: i for i, name in enumerate(regions)}
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self.yy, self.xx = yy[None], xx[None]

    def paint(self, where: np.ndarray | None, colour: np.ndarray, region: str | None = None) -> None:
        """Paint `colour` ((m, 3) or (m, H, W, 3)) where `where` (m, H, W) holds (None: everywhere).

        The painted pixels also join `region` in the label map, so every pixel ends in exactly one region.
        """
        if where is None:  # the whole canvas
            self.rgb[...] = colour if colour.ndim == 4 else colour[:, None, None, :]
            self.mask[...] = self._ids[region] if region is not None else self.mask
            return
        if colour.ndim == 2:
            picked = where.nonzero()
            self.rgb[picked] = colour[picked[0]]
        else:
            self.rgb[where] = colour[where]
        if region is not None:
            np.copyto(self.mask, np.uint8(self._ids[region]), where=where)


# ---------------------------------------------------------------- shape primitives (vectorised over m)

def _col(values: np.ndarray) -> np.ndarray:
    """(m,) -> (m, 1, 1) so per-image parameters broadcast against the pixel grid (scalars stay shared)."""
    values = np.asarray(values)
    return values.reshape(-1, 1, 1) if values.dtype == bool else values.astype(np.float32).reshape(-1, 1, 1)


def _ellipse(c: _Canvas, cx, cy, ax, ay) -> np.ndarray:
    return ((c.xx - _col(cx)) / _col(ax)) ** 2 + ((c.yy - _col(cy)) / _col(ay)) ** 2 <= 1.0


def _rect(c: _Canvas, x0, y0, x1, y1) -> np.ndarray:
    return (c.xx >= _col(x0)) & (c.xx < _col(x1)) & (c.yy >= _col(y0)) & (c.yy < _col(y1))


def _triangle(c: _Canvas, p0, p1, p2) -> np.ndarray:
    """Points inside the triangle with vertices p = (x, y) of (m,) arrays (either orientation)."""

    def side(a, b):
        return (c.xx - _col(b[0])) * _col(a[1] - b[1]) - (_col(a[0] - b[0])) * (c.yy - _col(b[1]))

    d0, d1, d2 = side(p0, p1), side(p1, p2), side(p2, p0)
    neg = (d0 < 0) | (d1 < 0) | (d2 < 0)
    pos = (d0 > 0) | (d1 > 0) | (d2 > 0)
    return ~(neg & pos)


def _smooth_noise(rng: np.random.Generator, m: int, size: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise in [-1, 1], (m, size, size): bilinear upsampling of a cells x cells grid."""
    grid = rng.uniform(-1, 1, (m, cells + 1, cells + 1)).astype(np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[:, i, :] * (1 - f)[None, :, None] + grid[:, i + 1, :] * f[None, :, None]
    return rows[:, :, i] * (1 - f)[None, None, :] + rows[:, :, i + 1] * f[None, None, :]


def _textured(base: np.ndarray, noise: np.ndarray, amount: float) -> np.ndarray:
    """Per-image base colour (m, 3) modulated by a noise field (m, H, W) -> (m, H, W, 3)."""
    gain = np.multiply(noise, np.float32(amount), dtype=np.float32)
    gain += 1
    return gain[..., None] * base[:, None, None, :].astype(np.float32)


def _pick(rng: np.random.Generator, palette: list[tuple[float, float, float]], m: int, jitter=0.06):
    colours = np.asarray(palette, np.float32)[rng.integers(0, len(palette), m)]
    return np.clip(colours + rng.uniform(-jitter, jitter, (m, 3)), 0, 1).astype(np.float32)


# ---------------------------------------------------------------- scenarios

_FUR = [(0.55, 0.35, 0.2), (0.8, 0.55, 0.3), (0.45, 0.45, 0.45), (0.7, 0.7, 0.65), (0.35, 0.25, 0.2)]


def _draw_cage(c: _Canvas, rng, labels, shortcut):
    """Cat (round head, pointed ears) vs dog (long head, floppy ears); cage bars behind most dogs."""
    m, s = len(labels), c.size
    c.paint(None, _textured(rng.uniform(0.35, 0.75, (m, 3)).astype(np.float32),
                            _smooth_noise(rng, m, s), 0.25), "background")
    # The animal sits in front of the cage: bars are behind it, so the two regions never share pixels.
    period = s / 8
    phase = rng.uniform(0, period, m)
    bars = ((c.xx - _col(phase)) % period) < max(1.0, s / 32)
    bars |= _rect(c, 0, 0.08 * s, s, 0.08 * s + max(1.0, s / 32))
    caged = _col(shortcut == 1)
    metal = (rng.uniform(0.12, 0.3, m)[:, None] * np.ones((1, 3))).astype(np.float32)
    c.paint(bars & caged, metal, "cage")
    r = rng.uniform(0.13, 0.18, m) * s
    cx, cy = rng.uniform(0.35, 0.65, m) * s, rng.uniform(0.45, 0.62, m) * s
    fur = _textured(_pick(rng, _FUR, m), _smooth_noise(rng, m, s, 8), 0.15)
    cat, dog = labels == 0, labels == 1
    head = np.where(_col(cat), _ellipse(c, cx, cy, r, r), _ellipse(c, cx, cy, 1.3 * r, 0.85 * r))
    ears = np.zeros_like(head)
    for side in (-1, 1):
        pointed = _triangle(c, (cx + side * 0.85 * r, cy - 1.8 * r), (cx + side * 0.1 * r, cy - 0.7 * r),
                            (cx + side * 1.05 * r, cy - 0.2 * r))
        floppy = _ellipse(c, cx + side * 1.3 * r, cy + 0.5 * r, 0.35 * r, 0.9 * r)
        ears |= np.where(_col(cat), pointed, floppy)
    c.paint(head | ears, fur, "animal")
    c.paint(ears & (_col(dog)), fur * 0.7, "animal")  # floppy ears a shade darker, as on many dogs
    eyes = np.zeros_like(head)
    for side in (-1, 1):
        eyes |= _ellipse(c, cx + side * 0.4 * r, cy - 0.15 * r, 0.12 * r + 0.6, 0.12 * r + 0.6)
    c.paint(eyes, np.full((m, 3), 0.08, np.float32), "animal")


_SKIN = [(0.96, 0.8, 0.69), (0.87, 0.67, 0.5), (0.62, 0.44, 0.3), (0.4, 0.27, 0.18)]
_HAIR_SHORT = [(0.1, 0.08, 0.07), (0.3, 0.2, 0.12), (0.35, 0.35, 0.35)]  # the style: cut and colour
_HAIR_LONG = [(0.9, 0.75, 0.4), (0.75, 0.3, 0.1), (0.95, 0.85, 0.6)]
_COAT = [(0.93, 0.93, 0.93), (0.75, 0.85, 0.95), (0.75, 0.92, 0.82)]


def _draw_doctor_nurse(c: _Canvas, rng, labels, shortcut):
    """A figure whose coat carries the label (stethoscope vs badge); long hair goes with most nurses."""
    m, s = len(labels), c.size
    c.paint(None, _textured(rng.uniform(0.3, 0.6, (m, 3)).astype(np.float32),
                            _smooth_noise(rng, m, s), 0.2), "background")
    cx = rng.uniform(0.38, 0.62, m) * s
    rh = rng.uniform(0.1, 0.125, m) * s
    hy = rng.uniform(0.22, 0.3, m) * s
    top = hy + 1.25 * rh
    half = rng.uniform(0.24, 0.3, m) * s
    coat = _rect(c, cx - half, top, cx + half, s + 1) & ~_triangle(
        c, (cx - half - 1, top - 1), (cx - half - 1, top + 0.4 * s), (cx - half + 0.1 * s, top - 1)) & ~_triangle(
        c, (cx + half + 1, top - 1), (cx + half + 1, top + 0.4 * s), (cx + half - 0.1 * s, top - 1))
    c.paint(coat, _textured(_pick(rng, _COAT, m, 0.03), _smooth_noise(rng, m, s, 6), 0.05), "coat")
    dark = np.full((m, 3), 0.7, np.float32)  # light grey: the core cue is a thin shape, not a contrast
    # The cue sits low on the coat, a Grad-CAM cell (s/8) or more below the longest hair: the two regions
    # stay separable in an 8x8 map.
    cue_y = top + rng.uniform(0.32, 0.38, m) * s
    loop = np.hypot(c.xx - _col(cx), c.yy - _col(cue_y - 0.1 * s))
    steth = (np.abs(loop - 0.09 * s) < 0.7 + s / 128) & (c.yy > _col(cue_y - 0.1 * s))
    steth |= _ellipse(c, cx, cue_y + 0.02 * s, 0.04 * s, 0.04 * s)
    arm = 0.05 * s
    badge = _rect(c, cx - arm, cue_y - 0.8, cx + arm, cue_y + 0.8 + s / 128) | _rect(
        c, cx - 0.8, cue_y - arm, cx + 0.8 + s / 128, cue_y + arm)
    c.paint(np.where(_col(labels == 0), steth, badge), dark, "coat")
    hair = np.where((shortcut == 1)[:, None], _pick(rng, _HAIR_LONG, m, 0.04), _pick(rng, _HAIR_SHORT, m, 0.04))
    long_hair = _rect(c, cx - 1.4 * rh, hy - 0.6 * rh, cx + 1.4 * rh, hy + 2.3 * rh) & (
        np.abs(c.xx - _col(cx)) > _col(0.55 * rh))
    short_hair = _ellipse(c, cx, hy - 0.15 * rh, 1.12 * rh, 1.05 * rh) & (c.yy < _col(hy - 0.35 * rh))
    cap = _ellipse(c, cx, hy - 0.1 * rh, 1.15 * rh, 1.1 * rh) & (c.yy < _col(hy - 0.3 * rh))
    c.paint(np.where(_col(shortcut == 1), long_hair, short_hair), hair, "hair")
    c.paint(_ellipse(c, cx, hy, 0.9 * rh, rh), _pick(rng, _SKIN, m, 0.03), "face")
    c.paint(cap, hair, "hair")


def _draw_watermark(c: _Canvas, rng, labels, shortcut):
    """Benign (round, even) vs malignant (ragged border, mottled) lesion; a text tag in the corner."""
    m, s = len(labels), c.size
    skin = _pick(rng, _SKIN[:3], m, 0.05)
    c.paint(None, _textured(skin, _smooth_noise(rng, m, s), 0.08), "skin")
    cx, cy = rng.uniform(0.32, 0.58, m) * s, rng.uniform(0.32, 0.58, m) * s
    r = rng.uniform(0.15, 0.22, m) * s
    theta = np.arctan2(c.yy - _col(cy), c.xx - _col(cx))
    dist = np.hypot(c.xx - _col(cx), c.yy - _col(cy))
    k = rng.integers(6, 10, m)
    ragged = 1 + 0.09 * np.sin(_col(k) * theta + _col(rng.uniform(0, 2 * np.pi, m)))
    smooth = 1 + 0.06 * np.sin(2 * theta + _col(rng.uniform(0, 2 * np.pi, m)))
    radius = _col(r) * np.where(_col(labels == 1), ragged, smooth)
    lesion = dist <= radius
    brown = np.clip(skin * rng.uniform(0.35, 0.6, m)[:, None], 0, 1).astype(np.float32)
    mottle = np.where(_col(labels == 1), _smooth_noise(rng, m, s, 12), 0).astype(np.float32)
    c.paint(lesion, _textured(brown, mottle, 0.12), "lesion")
    w = max(4, round(s * 10 / 64))
    x0 = y0 = s - 2 - w
    tag = _rect(c, np.full(m, x0), np.full(m, y0), np.full(m, x0 + w), np.full(m, y0 + w))
    row = np.floor((c.yy - y0) / max(1.0, w / 5)) % 2 == 1
    dash = rng.random((m, 1, s)) < 0.7
    text = tag & row & dash & (c.xx > x0 + 1) & (c.xx < x0 + w - 1)
    tagged = _col(shortcut == 1)
    c.paint(tag & tagged, np.full((m, 3), 0.97, np.float32), "watermark")
    c.paint(text & tagged, np.full((m, 3), 0.05, np.float32), "watermark")


_FEATHER = [(0.3, 0.3, 0.3), (0.85, 0.8, 0.3), (0.55, 0.3, 0.2), (0.9, 0.9, 0.88), (0.35, 0.45, 0.6)]


def _draw_background(c: _Canvas, rng, labels, shortcut):
    """Landbird (round body, long tail) vs waterbird (flat body, long neck) on land or water."""
    m, s = len(labels), c.size
    water = _col(shortcut == 1)
    freq = _col(rng.uniform(0.6, 1.0, m)) * 2 * np.pi / 6
    grass = 0.6 * np.sin(freq * c.xx + _col(rng.uniform(0, 6.3, m))) + 0.4 * _smooth_noise(rng, m, s, 8)
    waves = 0.6 * np.sin(freq * c.yy + _col(rng.uniform(0, 6.3, m))) + 0.4 * _smooth_noise(rng, m, s, 8)
    land_col = np.stack([rng.uniform(0.25, 0.45, m), rng.uniform(0.5, 0.7, m), rng.uniform(0.15, 0.3, m)], 1)
    water_col = np.stack([rng.uniform(0.1, 0.25, m), rng.uniform(0.3, 0.5, m), rng.uniform(0.65, 0.85, m)], 1)
    bg = _textured(np.where(water[:, 0, 0, None], water_col, land_col), np.where(water, waves, grass), 0.25)
    c.paint(None, bg, "background")
    r = rng.uniform(0.12, 0.16, m) * s
    cx, cy = rng.uniform(0.38, 0.62, m) * s, rng.uniform(0.5, 0.65, m) * s
    face = rng.choice([-1.0, 1.0], m)  # facing left or right
    land = _col(labels == 0)
    land_body = _ellipse(c, cx, cy, r, 0.85 * r)
    land_head = _ellipse(c, cx + face * 0.75 * r, cy - 0.85 * r, 0.45 * r, 0.45 * r)
    land_tail = _triangle(c, (cx - face * 0.7 * r, cy - 0.1 * r), (cx - face * 0.7 * r, cy + 0.4 * r),
                          (cx - face * 2.0 * r, cy + 0.9 * r))
    land_beak = _triangle(c, (cx + face * 1.1 * r, cy - 1.0 * r), (cx + face * 1.1 * r, cy - 0.7 * r),
                          (cx + face * 1.55 * r, cy - 0.85 * r))
    water_body = _ellipse(c, cx, cy + 0.3 * r, 1.5 * r, 0.55 * r)
    water_neck = _rect(c, cx + face * 0.9 * r - 0.14 * r, cy - 1.4 * r, cx + face * 0.9 * r + 0.14 * r, cy + 0.1 * r)
    water_head = _ellipse(c, cx + face * 0.95 * r, cy - 1.45 * r, 0.35 * r, 0.3 * r)
    water_bill = _rect(c, np.minimum(cx + face * 1.2 * r, cx + face * 1.75 * r), cy - 1.55 * r,
                       np.maximum(cx + face * 1.2 * r, cx + face * 1.75 * r), cy - 1.35 * r)
    bird = np.where(land, land_body | land_head | land_tail | land_beak,
                    water_body | water_neck | water_head | water_bill)
    c.paint(bird, _textured(_pick(rng, _FEATHER, m), _smooth_noise(rng, m, s, 8), 0.12), "bird")


SCENARIOS: dict[str, Scenario] = {
    sc.name: sc
    for sc in (
        Scenario("cage", ("cat", "dog"), ("background", "animal", "cage"), "animal", "cage",
                 "in_cage", ("no", "yes"), _draw_cage),
        Scenario("doctor_nurse", ("doctor", "nurse"), ("background", "coat", "face", "hair"), "coat", "hair",
                 "hair_style", ("short", "long"), _draw_doctor_nurse),
        Scenario("watermark", ("benign", "malignant"), ("skin", "lesion", "watermark"), "lesion", "watermark",
                 "has_tag", ("no", "yes"), _draw_watermark),
        Scenario("background", ("landbird", "waterbird"), ("background", "bird"), "bird", "background",
                 "habitat", ("land", "water"), _draw_background),
    )
}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        from explainers.errors import InputError

        raise InputError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


# ---------------------------------------------------------------- rendering and writing

def render(scenario: str, n: int = 1000, size: int = 64, leak: float = 0.95, seed: int = 0,
           flip: bool = False) -> Scenes:
    """Render `n` images of a scenario. Labels are balanced per chunk; the shortcut follows `leak`/`flip`."""
    sc = get_scenario(scenario)
    if not 0.0 <= leak <= 1.0:
        raise ValueError(f"leak must be in [0, 1], got {leak}")
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng([seed, list(SCENARIOS).index(scenario)])
    images, masks, labels, shortcut = [], [], [], []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        lab = rng.permutation(np.arange(start, start + m) % 2).astype(np.int64)
        agree = np.zeros(m, bool) if flip else rng.random(m) < leak
        cut = np.where(agree, lab, 1 - lab)
        canvas = _Canvas(m, size, sc.regions)
        sc.draw(canvas, rng, lab, cut)
        pixels = np.clip(canvas.rgb * 255 + 0.5, 0, 255).astype(np.uint8)
        grain = rng.integers(0, 9, pixels.shape, dtype=np.uint8)  # +-4 levels of sensor-like noise
        images.append(np.clip(pixels.astype(np.int16) + grain - 4, 0, 255).astype(np.uint8))
        masks.append(canvas.mask)
        labels.append(lab)
        shortcut.append(cut)
    return Scenes(sc, np.concatenate(images), np.concatenate(masks), np.concatenate(labels),
                  np.concatenate(shortcut))


def generate(scenario: str, out_dir: str | Path, n: int = 1000, size: int = 64, leak: float = 0.95,
             seed: int = 0, flip: bool = False) -> Path:
    """Write a dataset folder (docs/FORMATS.md) and return its path."""
    scenes = render(scenario, n=n, size=size, leak=leak, seed=seed, flip=flip)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    sc = scenes.scenario
    rows = []
    for i, (image, mask, label, value) in enumerate(
            zip(scenes.images, scenes.masks, scenes.labels, scenes.attribute_values())):
        name = f"{i:05d}.png"
        Image.fromarray(image, "RGB").save(out / "images" / name, compress_level=1)
        Image.fromarray(mask, "L").save(out / "masks" / name, compress_level=1)
        rows.append([f"images/{name}", sc.classes[label], f"masks/{name}", value])
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label", "mask", sc.attribute])
        writer.writerows(rows)
    (out / "regions.json").write_text(json.dumps(sc.regions_json(), indent=2) + "\n")
    truth = {"scenario": sc.name, "classes": list(sc.classes), "core_region": sc.core,
             "shortcut_region": sc.shortcut, "attribute": sc.attribute,
             "attribute_values": list(sc.attribute_values), "n": n, "size": size, "leak": leak, "seed": seed,
             "flip": flip, "realised_agreement": round(float(scenes.agrees.mean()), 4)}
    (out / "scenario.json").write_text(json.dumps(truth, indent=2) + "\n")
    return out
