"""Pictures for the eye: a saliency map blended over its image, region masks outlined.

Display shaping only (numpy + PIL). The scale is explicit (`vmax`) so that the gallery can draw every image
of a run on one shared scale: per-image min-max would make a faint map look as hot as a strong one, which
is the very comparison the report is about.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

# Anchor colours of an "inferno"-like ramp (dark purple -> red -> yellow), interpolated linearly.
_RAMP = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)

# Distinct outline colours for regions, cycled by region id.
REGION_PALETTE = [
    (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 255, 0), (255, 128, 0), (0, 128, 255), (255, 255, 255),
]

REGION_COLOR_NAMES = ["cyan", "magenta", "green", "yellow", "orange", "blue", "white"]


def display_scale(maps: np.ndarray, percentile: float = 99.0) -> float:
    """One `vmax` for a set of maps: a high percentile of their positive parts (robust to a few hot pixels)."""
    positive = np.clip(np.asarray(maps, dtype=np.float32), 0, None)
    if positive.size == 0:
        return 1.0
    value = float(np.percentile(positive, percentile))
    return value if value > 0 else float(positive.max()) or 1.0


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB `(h, w, 3)` on the ramp."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(v).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    frac = (v - low)[..., None]
    rgb = _RAMP[low] * (1 - frac) + _RAMP[high] * frac
    return np.rint(rgb).astype(np.uint8)


def scaled_map(saliency: np.ndarray, size: tuple[int, int], vmax: float) -> np.ndarray:
    """The positive part of `saliency` resized (bilinear) to `size` = (width, height), divided by `vmax`, in [0, 1]."""
    positive = np.clip(np.asarray(saliency, dtype=np.float32), 0, None)
    resized = np.asarray(Image.fromarray(positive, mode="F").resize(size, Image.BILINEAR), dtype=np.float32)
    return np.clip(resized / max(float(vmax), 1e-12), 0.0, 1.0)


def blend(image: Image.Image, saliency: np.ndarray, opacity: float, vmax: float) -> Image.Image:
    """The image with the heatmap laid over it; a pixel's alpha is `opacity` x sqrt(its scaled saliency).

    Cold pixels stay the original picture, so what the model ignores is still visible; the square root
    keeps moderate attention visible under a run-wide scale set by the hottest maps.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    values = scaled_map(saliency, image.size, vmax)
    alpha = (float(np.clip(opacity, 0.0, 1.0)) * np.sqrt(values))[..., None]
    out = base * (1 - alpha) + colorize(values).astype(np.float32) * alpha
    return Image.fromarray(np.rint(out).astype(np.uint8), mode="RGB")


def region_edges(inside: np.ndarray) -> np.ndarray:
    """Boolean `(h, w)`: pixels of the region with a 4-neighbour outside it (the picture frame counts as outside)."""
    inside = np.asarray(inside, dtype=bool)
    padded = np.pad(inside, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inside & ~interior


def outline_regions(image: Image.Image, mask: np.ndarray, region_ids: list[int] | None = None) -> Image.Image:
    """Draw the inner outline of each region in `region_ids` (all ids in the mask when None) in its colour.

    The mask is resized (nearest) to the image first, so masks stored at another resolution still line up.
    """
    rgb = np.asarray(image.convert("RGB")).copy()
    mask = np.asarray(mask)
    if mask.shape != (image.height, image.width):
        mask = np.asarray(Image.fromarray(mask.astype(np.int32), mode="I").resize(image.size, Image.NEAREST))
    ids = sorted(int(i) for i in np.unique(mask)) if region_ids is None else [int(i) for i in region_ids]
    for region_id in ids:
        rgb[region_edges(mask == region_id)] = REGION_PALETTE[region_id % len(REGION_PALETTE)]
    return Image.fromarray(rgb, mode="RGB")


def region_color_hex(region_id: int) -> str:
    r, g, b = REGION_PALETTE[int(region_id) % len(REGION_PALETTE)]
    return f"#{r:02x}{g:02x}{b:02x}"


def enlarged(image: Image.Image, min_side: int = 512) -> Image.Image:
    """Small images scaled up by an integer factor (nearest) so outlines stay one crisp pixel when shown big."""
    factor = max(1, -(-min_side // max(1, min(image.size))))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)
