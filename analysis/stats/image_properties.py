"""Per-image properties read from the pixels: the global cues a region-based audit cannot see.

Why: a model can predict a class from how its images were taken (blurrier, brighter, warmer, noisier, more
compressed, another size) rather than from anything in a region; saliency does not show it (Adebayo et al.,
ICLR 2022). These numbers are the candidates of the property screen (`analysis.evidence.property_screen`)
and the targets the property interventions (`analysis.evidence.property_interventions`) move.

API
- `pixel_properties(images) -> dict[str, np.ndarray]`: images float (B, 3, H, W) in [0, 1] (torch or numpy),
  vectorised over the batch; keys `PIXEL_PROPERTIES`, each (B,) float64:
    sharpness   variance of the Laplacian of the luma (Pech-Pacheco et al. 2000): falls with blur
    brightness  mean luma (Rec. 601 weights)
    contrast    RMS contrast: the standard deviation of the luma
    warmth      mean red minus mean blue (colour cast: warm > 0 > cool)
    tint        mean green minus the mean of red and blue (green > 0 > magenta)
    noise       Immerkaer's noise sigma made robust: 1.4826 x the median absolute response of the
                Laplacian-difference kernel (which cancels smooth image content), over its norm 6, per
                channel, averaged over the channels
- `file_properties(path) -> dict[str, float]`: from the file as stored, before any resize: `width`, `height`,
  `aspect_ratio` (width / height), `jpeg_quality` (NaN unless a JPEG with readable quantisation tables:
  the libjpeg quality whose scaled standard luminance table has the same sum; exact for files libjpeg wrote)
- `attribute_properties(attributes) -> dict[str, np.ndarray]`: the manifest's per-image attribute columns
  whose every non-empty value is a number, as `attr.<name>` (NaN where empty)
- `image_properties(images, paths=None, attributes=None) -> dict[str, np.ndarray]`: all of the above for one
  sample (pixel properties, then file properties when `paths` are given, then the numeric attributes): the
  screen's input
- `WORDS[name] -> (word when higher, word when lower)`: "class h images are blurrier"; `describe(name, higher)`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_PROPERTIES = ("sharpness", "brightness", "contrast", "warmth", "tint", "noise")
FILE_PROPERTIES = ("width", "height", "aspect_ratio", "jpeg_quality")
WORDS = {
    "sharpness": ("sharper", "blurrier"),
    "brightness": ("brighter", "darker"),
    "contrast": ("higher in contrast", "lower in contrast"),
    "warmth": ("warmer (redder)", "cooler (bluer)"),
    "tint": ("greener", "more magenta"),
    "noise": ("noisier", "less noisy"),
    "width": ("wider", "narrower"),
    "height": ("taller", "shorter"),
    "aspect_ratio": ("wider in aspect ratio", "taller in aspect ratio"),
    "jpeg_quality": ("less compressed (higher JPEG quality)", "more compressed (lower JPEG quality)"),
}
LUMA = (0.299, 0.587, 0.114)
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_NOISE_KERNEL = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])  # Immerkaer 1996
# libjpeg's standard luminance quantisation table (ITU T.81 Annex K), quality 50
_STD_LUMINANCE_SUM = sum((
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99))


def describe(name: str, higher: bool) -> str:
    """The adjective for images whose `name` is higher (or lower) than the rest's."""
    up, down = WORDS.get(name, (f"higher in {name}", f"lower in {name}"))
    return up if higher else down


def pixel_properties(images, names=PIXEL_PROPERTIES, chunk: int = 32) -> dict[str, np.ndarray]:
    """`names` (default: all of `PIXEL_PROPERTIES`) per image, for images (B, 3, H, W) in [0, 1]; `chunk`
    images at a time: the filters and the noise's median take ~10 MB per 224-px image, so the screen of a
    1,000-image evidence sample in one call peaked at ~10 GB (an audit was killed for memory). Every value
    is per image, so chunking does not change it (checked bit for bit)."""
    images = torch.as_tensor(images)
    if images.ndim == 4 and len(images) > chunk:
        parts = [_pixel_properties(images[i:i + chunk], names) for i in range(0, len(images), chunk)]
        return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    return _pixel_properties(images, names)


def _pixel_properties(images, names) -> dict[str, np.ndarray]:
    x = torch.as_tensor(images).float()
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"pixel_properties needs images (B, 3, H, W); got {tuple(x.shape)}")
    unknown = set(names) - set(PIXEL_PROPERTIES)
    if unknown:
        raise ValueError(f"unknown pixel properties {sorted(unknown)}; known: {', '.join(PIXEL_PROPERTIES)}")
    luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    channel = x.mean(dim=(2, 3)) if {"warmth", "tint"} & set(names) else None
    compute = {
        "sharpness": lambda: F.conv2d(luma, _LAPLACIAN.view(1, 1, 3, 3)).flatten(1).var(dim=1),
        "brightness": lambda: luma.mean(dim=(1, 2, 3)),
        "contrast": lambda: luma.flatten(1).std(dim=1),
        "warmth": lambda: channel[:, 0] - channel[:, 2],
        "tint": lambda: channel[:, 1] - 0.5 * (channel[:, 0] + channel[:, 2]),
        "noise": lambda: (1.4826 / 6.0) * F.conv2d(x.reshape(-1, 1, *x.shape[-2:]), _NOISE_KERNEL.view(1, 1, 3, 3))
        .reshape(len(x), 3, -1).abs().median(dim=2).values.mean(dim=1),
    }
    return {k: compute[k]().double().numpy() for k in names}


def jpeg_quality(image) -> float:
    """The libjpeg quality (1..100) that produced a PIL JPEG's luminance table, NaN for other images."""
    tables = getattr(image, "quantization", None)
    if getattr(image, "format", None) != "JPEG" or not tables or 0 not in tables:
        return math.nan
    scale = 100.0 * sum(tables[0]) / _STD_LUMINANCE_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale
    return float(min(100.0, max(1.0, round(quality))))


def file_properties(path) -> dict[str, float]:
    """Size, aspect ratio and JPEG quality of an image file (the header only: nothing decoded)."""
    from PIL import Image

    with Image.open(Path(path)) as image:
        width, height = image.size
        return {"width": float(width), "height": float(height), "aspect_ratio": width / max(height, 1),
                "jpeg_quality": jpeg_quality(image)}


def attribute_properties(attributes: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """Numeric manifest columns (per image dicts, as `Item.attributes`) as float arrays named `attr.<name>`."""
    names = sorted({k for row in attributes for k in row})
    out = {}
    for name in names:
        values = [(row.get(name) or "").strip() for row in attributes]
        try:
            column = np.array([float(v) if v else math.nan for v in values])
        except ValueError:
            continue  # a categorical column: a subgroup, not a property
        if np.isfinite(column).any():
            out[f"attr.{name}"] = column
    return out


def image_properties(images, paths=None, attributes=None) -> dict[str, np.ndarray]:
    """Every property of a sample: pixels (B, 3, H, W) in [0, 1], the files as stored (`paths`, one per image),
    the manifest's numeric columns (`attributes`, one dict per image)."""
    out = pixel_properties(images)
    if paths is not None:
        files = [file_properties(p) for p in paths]
        out.update({name: np.array([f[name] for f in files], dtype=np.float64) for name in FILE_PROPERTIES})
    if attributes is not None:
        out.update(attribute_properties(list(attributes)))
    return out
