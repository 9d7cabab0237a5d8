"""Moving one image property, and the equal-size control that leaves it where it was.

Why: to show a model predicts a class from a property (blur, brightness, contrast, colour cast), the
property must be moved while the image stays what it is, and compared with a change of the same size that
does not move the property; a model that is merely fragile (any change of that size moves its answers)
then moves as much under the control. Each move takes images (B, 3, H, W) in [0, 1], an amount >= 0 and a
direction ("higher" / "lower": where the property goes), and returns images clipped to [0, 1].

| property | higher | lower | control |
|---|---|---|---|
| sharpness | unsharp mask x + a (x - blur_1px(x)) | Gaussian blur, sigma a px | the same change of detail with random phases |
| brightness | x + a | x - a | the same change times a zero-mean ramp |
| contrast | m + (1 + a)(x - m), m the image's channel means | m + (1 - a)(x - m) | zero-mean ramp |
| warmth | red + a, green - 0.315 a, blue - a (luma kept) | the reverse | zero-mean ramp |

The controls, and why these:
- *Zero-mean ramp* (brightness, contrast, warmth): the move's per-pixel change d times a linear ramp across
  the image in a random direction, scaled to mean 0 and mean square 1 (a lighting gradient). The change
  has the move's size exactly (the same L2 norm), but cancels over the image, so the image's mean
  (brightness), mean colour (warmth) and, to first order, spread (contrast: one side gains what the other
  loses) stay put. A ramp rather than random signs: signs per pixel add high-frequency noise (another
  property), and signs per block draw edges, which a shape classifier reads as shapes (tried: a 4x4 grid
  of +-0.08 blocks made a clean model call 87% of one class's images wrong).
- *Random-phase detail* (sharpness): a blur removes the detail h = x - blur(x); the control is blur(x) + h',
  where h' has h's amplitude spectrum (per image and channel) with random phases. The image loses its own
  fine structure as under the blur (a model that needs the object's edges suffers as much) but keeps the
  power at every frequency, which is what sharpness measures (the variance of the Laplacian is a weighted
  sum of the power spectrum); its change |h' - h| is larger than the blur's (about sqrt 2 times in L2), so
  the control is no smaller. For sharpening, x + a h' adds detail of the same spectrum and size as the
  unsharp mask's, with random phases; it raises the power less (1 + a^2 against (1 + a)^2 at high
  frequencies), so this control moves sharpness part of the way too and errs on the conservative side.
  The shift each control causes is measured and reported (`property_shift`).
Tint and noise are screened (`property_screen`) but not moved here.

API: `MOVED_PROPERTIES`; `move(images, prop, amount, direction) -> images`; `control(images, prop, amount,
direction, seeds) -> images` (one seed per image); `DEFAULT_STEP[prop]` (the amount used when the data gives no target: about
the size of the cues in `sample_models.property_shortcut`); `MAX_AMOUNT[prop]`; `match_amount(images, prop,
direction, target) -> float` (the amount whose moved images' median property reaches `target`);
`property_shift(before, after, prop) -> float` (median change of the property); `VERBS`, `CUES` (words).
"""
from __future__ import annotations

import numpy as np
import torch

from analysis.evidence.blur import separable_blur
from analysis.stats.image_properties import LUMA, pixel_properties

MOVED_PROPERTIES = ("sharpness", "brightness", "contrast", "warmth")
DEFAULT_STEP = {"sharpness": 1.2, "brightness": 0.08, "contrast": 0.25, "warmth": 0.06}
MAX_AMOUNT = {"sharpness": 3.0, "brightness": 0.4, "contrast": 0.9, "warmth": 0.3}
SHARPEN_RADIUS = 1.0  # the unsharp mask's blur, px
WARM = torch.tensor([1.0, -(LUMA[0] - LUMA[2]) / LUMA[1], -1.0])  # luma-neutral: brightness stays
# (property, direction) -> (verb for the images moved, the cue as a noun)
VERBS = {("sharpness", "lower"): "blurring", ("sharpness", "higher"): "sharpening",
         ("brightness", "higher"): "brightening", ("brightness", "lower"): "darkening",
         ("contrast", "higher"): "raising the contrast of", ("contrast", "lower"): "lowering the contrast of",
         ("warmth", "higher"): "warming", ("warmth", "lower"): "cooling"}
CUES = {("sharpness", "lower"): "blur", ("sharpness", "higher"): "sharpness",
        ("brightness", "higher"): "brightness", ("brightness", "lower"): "darkness",
        ("contrast", "higher"): "high contrast", ("contrast", "lower"): "low contrast",
        ("warmth", "higher"): "a warm colour cast", ("warmth", "lower"): "a cool colour cast"}


def opposite(direction: str) -> str:
    return "lower" if direction == "higher" else "higher"


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with `sigma` px (two 1-D passes, reflect padding); sigma <= 0: a copy."""
    if sigma <= 1e-6:
        return images.clone()
    h, w = images.shape[-2:]
    radius = max(1, min(int(round(3 * sigma)), min(h, w) // 2 - 1))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    return separable_blur(images, kernel, radius)


def _per_image(seeds, draw) -> torch.Tensor:
    """One draw per image, each from its own seeded generator (so an image's control never depends on which
    other images share its batch)."""
    return torch.stack([draw(torch.Generator().manual_seed(int(s))) for s in seeds])


def random_phase(x: torch.Tensor, seeds) -> torch.Tensor:
    """`x` (B, C, H, W) with its amplitude spectrum kept and its phases drawn at random (mean kept)."""
    spectrum = torch.fft.rfft2(x.float())
    noise = torch.fft.rfft2(_per_image(seeds, lambda g: torch.randn(x.shape[1:], generator=g)))
    phase = noise / noise.abs().clamp_min(1e-12)
    phase[..., 0, 0] = 1.0
    return torch.fft.irfft2(spectrum.abs() * phase, s=x.shape[-2:]).to(x.dtype)


def unit_ramps(h: int, w: int, seeds) -> torch.Tensor:
    """(B, 1, H, W): per image, a linear ramp across the image in a random direction, with mean 0 and mean
    square 1 over the pixels (a lighting gradient)."""
    angles = _per_image(seeds, lambda g: torch.rand(1, generator=g) * 2 * torch.pi).view(-1, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) - (h - 1) / 2,
                            torch.arange(w, dtype=torch.float32) - (w - 1) / 2, indexing="ij")
    ramp = torch.cos(angles) * xx + torch.sin(angles) * yy
    ramp = ramp - ramp.mean(dim=(1, 2), keepdim=True)
    return (ramp / ramp.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12))[:, None]


def _change(images: torch.Tensor, prop: str, amount: float, direction: str) -> torch.Tensor:
    """The move's per-pixel change before clipping (brightness, contrast, warmth)."""
    sign = 1.0 if direction == "higher" else -1.0
    if prop == "brightness":
        return torch.full_like(images, sign * amount)
    if prop == "contrast":
        return sign * amount * (images - images.mean(dim=(2, 3), keepdim=True))
    if prop == "warmth":
        return sign * amount * WARM.to(images.dtype).view(1, 3, 1, 1).expand_as(images)
    raise ValueError(f"no move for property {prop!r}; moved: {', '.join(MOVED_PROPERTIES)}")


def move(images: torch.Tensor, prop: str, amount: float, direction: str) -> torch.Tensor:
    """`images` with `prop` moved by `amount` in `direction` (see the module docstring)."""
    if prop == "sharpness":
        if direction == "lower":
            out = gaussian_blur(images, amount)
        else:
            out = images + amount * (images - gaussian_blur(images, SHARPEN_RADIUS))
    else:
        out = images + _change(images, prop, amount, direction)
    return out.clamp(0.0, 1.0)


def control(images: torch.Tensor, prop: str, amount: float, direction: str, seeds) -> torch.Tensor:
    """The move's equal-size control that keeps `prop` (see the module docstring); `seeds`: one per image."""
    if len(seeds) != len(images):
        raise ValueError(f"control needs one seed per image; got {len(seeds)} for {len(images)}")
    if prop == "sharpness":
        if direction == "lower":
            blurred = gaussian_blur(images, amount)
            out = blurred + random_phase(images - blurred, seeds)
        else:
            out = images + amount * random_phase(images - gaussian_blur(images, SHARPEN_RADIUS), seeds)
    else:
        h, w = images.shape[-2:]
        out = images + unit_ramps(h, w, seeds).to(images.dtype) * _change(images, prop, amount, direction)
    return out.clamp(0.0, 1.0)


def property_shift(before: torch.Tensor, after: torch.Tensor, prop: str) -> float:
    """Median over images of the property's change (after - before)."""
    if not len(before):
        return 0.0
    return float(np.median(pixel_properties(after, (prop,))[prop] - pixel_properties(before, (prop,))[prop]))


MATCH_IMAGES = 128  # images a bisection moves


def match_amount(images: torch.Tensor, prop: str, direction: str, target: float, *, steps: int = 14,
                 max_images: int = MATCH_IMAGES) -> float:
    """The amount (0 to MAX_AMOUNT) whose moved `images` have median `prop` nearest `target`, by bisection
    on at most `max_images` of them (the median moves monotonically with the amount)."""
    x = images[:max_images]
    now = float(np.median(pixel_properties(x, (prop,))[prop]))
    if (target - now) * (1 if direction == "higher" else -1) <= 0:
        return 0.0
    low, high = 0.0, MAX_AMOUNT[prop]
    moved = _mover(x, prop, direction)
    for _ in range(steps):
        mid = 0.5 * (low + high)
        value = float(np.median(pixel_properties(moved(mid), (prop,))[prop]))
        reached = value >= target if direction == "higher" else value <= target
        low, high = (low, mid) if reached else (mid, high)
    return high


def _mover(images: torch.Tensor, prop: str, direction: str):
    """amount -> `move(images, prop, amount, direction)`; sharpening's detail (the image minus its blur) is the
    same at every amount, so a bisection computes it once (the same operations, the same values)."""
    if prop == "sharpness" and direction == "higher":
        detail = images - gaussian_blur(images, SHARPEN_RADIUS)
        return lambda amount: (images + amount * detail).clamp(0.0, 1.0)
    return lambda amount: move(images, prop, amount, direction)
