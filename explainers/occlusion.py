"""Occlusion (Zeiler & Fergus 2014) by Captum: slide a grey square, record how much the target logit drops.

Positive where hiding the pixels lowers the score. The window spans all colour channels, so every channel
gets the same attribution; the map is their mean (equal to any one channel). Pixels that no window position
covers (when (side - window) is not a multiple of the stride) get 0. Captum's first forward is on the clean
input; the scores are read from it rather than from a forward of our own.

Stopping early (issue 15, `tolerance` > 0): a fixed-stride occlusion is deterministic and exhaustive, so
"converged" cannot mean "more samples change little"; it means "the finer windows change little". The window
positions are split into three interleaved lattices of the position grid, by index parity per axis (even
indices and the last one, E; the others, O): E x E first (at the default stride of half the window these
windows tile the image, so every pixel has a value), then O x O (a shifted tiling), then the rest
(E x O and O x E). After the second lattice, an image whose map moved by less than `tolerance`
(`explainers.rise.relative_change`, centred L2 relative to the map's own variation) stops there; the rest get
every window, which is the full map (equal to Captum's up to summation order). Why that predicts the error:
at the default stride every interior pixel is covered by one window of each lattice pair, and the change
EE -> mean(EE, OO) is half the EE/OO difference, while the error of mean(EE, OO) against the mean of all four
is a quarter of a difference of two such pairs, so for windows whose drops differ like noise the error is
about the change / sqrt 2 (bench/README.md measures it). `extras["windows_used"]` (B,) reports it per image;
`tolerance=0` (the default) is Captum's Occlusion, untouched.
"""
from __future__ import annotations

import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.gradients import KeepsFirstOutput, indices_for
from explainers.params import Param
from explainers.registry import register
from explainers.rise import relative_change


@register
class Occlusion(Explainer):
    """`window`/`stride` in pixels; None means 1/8 of each side and half the window (sensible at 64 and 224)."""

    name = "occlusion"
    family = "perturbation"
    black_box = True
    schema = (Param("window", int, low=1, optional=True), Param("stride", int, low=1, optional=True),
              Param("fill", float, low=0, high=1), Param("perturbations_per_eval", int, low=1),
              Param("tolerance", float, low=0))

    def __init__(self, model: nn.Module, *, window: int | None = None, stride: int | None = None,
                 fill: float = 0.5, perturbations_per_eval: int = 16, tolerance: float = 0.0):
        if window is not None and window < 1 or stride is not None and stride < 1:
            raise InputError(f"occlusion window and stride must be >= 1 pixel, got {window} and {stride}")
        if not 0.0 <= fill <= 1.0:
            raise InputError(f"occlusion fill is a pixel value in [0, 1], got {fill}")
        if perturbations_per_eval < 1:
            raise InputError(f"occlusion perturbations_per_eval must be >= 1, got {perturbations_per_eval}")
        if tolerance < 0:
            raise InputError(f"occlusion tolerance is a relative change >= 0 (0: every window); got {tolerance}")
        super().__init__(model, window=window, stride=stride, fill=float(fill),
                         perturbations_per_eval=perturbations_per_eval, tolerance=float(tolerance))

    def window_and_stride(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        window = self.params["window"]
        windows = (window, window) if window else (max(1, height // 8), max(1, width // 8))
        windows = (min(windows[0], height), min(windows[1], width))
        stride = self.params["stride"]
        strides = (stride, stride) if stride else (max(1, windows[0] // 2), max(1, windows[1] // 2))
        return windows, strides

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        check_images(inputs)
        indices = indices_for(self.name, targets, inputs)
        channels, height, width = inputs.shape[1:]
        windows, strides = self.window_and_stride(height, width)
        if self.params["tolerance"] > 0:
            return self.explain_until_converged(inputs, indices, windows, strides)
        model = KeepsFirstOutput(self.model)
        with torch.no_grad():
            attributions = CaptumOcclusion(model).attribute(
                inputs, sliding_window_shapes=(channels, *windows), strides=(channels, *strides),
                baselines=self.params["fill"], target=indices,
                perturbations_per_eval=self.params["perturbations_per_eval"],
            )
        scores = model.first_output.gather(1, indices[:, None])[:, 0]
        windows_used = torch.full((len(inputs),), sum(map(len, lattices(height, width, windows, strides))))
        return SaliencyBatch(attributions.mean(dim=1).float(), scores.float(), self.name,
                             extras={"windows_used": windows_used})

    def explain_until_converged(self, inputs, indices, windows, strides) -> SaliencyBatch:
        """The lattices in order, each image stopping after the second when its map moved < tolerance."""
        batch, height, width = inputs.shape[0], inputs.shape[2], inputs.shape[3]
        fill, per_eval = self.params["fill"], self.params["perturbations_per_eval"]
        total = torch.zeros(batch, height, width, device=inputs.device)
        counts = torch.zeros(batch, height, width, device=inputs.device)
        used = torch.zeros(batch, dtype=torch.long)
        change = torch.full((batch,), float("nan"))
        active = torch.arange(batch, device=inputs.device)
        with torch.no_grad():
            clean = self.model(inputs).gather(1, indices[:, None])[:, 0]
            previous = None
            for level, positions in enumerate(lattices(height, width, windows, strides)):
                rows = active
                for start in range(0, len(positions), per_eval):
                    masks = window_masks(positions[start:start + per_eval], windows, height, width, inputs.device)
                    occluded = inputs[rows][None] * (1 - masks[:, None, None]) + fill * masks[:, None, None]
                    logits = self.model(occluded.flatten(0, 1)).view(len(masks), len(rows), -1)
                    scores = logits.gather(2, indices[rows][None, :, None].expand(len(masks), -1, 1))[..., 0]
                    drops = clean[rows][None] - scores  # (k, b)
                    total[rows] += torch.einsum("kb,khw->bhw", drops.float(), masks)
                    counts[rows] += masks.sum(dim=0)
                used[rows.cpu()] += len(positions)
                current = total[rows] / counts[rows].clamp_min(1)
                if level == 1:
                    moved = relative_change(current, previous)
                    change[rows.cpu()] = moved.cpu()
                    active = rows[~(moved < self.params["tolerance"])]
                    if not len(active):
                        break
                previous = current
        maps = torch.where(counts > 0, total / counts.clamp_min(1), torch.zeros_like(total))
        return SaliencyBatch(maps, clean.float(), self.name,
                             extras={"windows_used": used, "converged_change": change})


def lattices(height: int, width: int, windows, strides) -> list[list[tuple[int, int]]]:
    """Captum's window positions (top-left corners; the last one per axis may run past the edge and is cut)
    in three lattices by index parity: E x E, O x O, then E x O and O x E (E: even indices and the last)."""
    def split(side, window, stride):
        n = -(-(side - window) // stride) + 1  # Captum's shift count: ceil((side - window) / stride) + 1
        even = [i for i in range(n) if i % 2 == 0 or i == n - 1]
        return [i * stride for i in even], [i * stride for i in range(n) if i not in even]

    (ey, oy), (ex, ox) = split(height, windows[0], strides[0]), split(width, windows[1], strides[1])
    grid = lambda ys, xs: [(y, x) for y in ys for x in xs]  # noqa: E731
    return [grid(ey, ex), grid(oy, ox), grid(ey, ox) + grid(oy, ex)]


def window_masks(positions, windows, height: int, width: int, device) -> torch.Tensor:
    """(k, H, W) 1 inside each window, cut at the image's edge."""
    masks = torch.zeros(len(positions), height, width, device=device)
    for k, (y, x) in enumerate(positions):
        masks[k, y:y + windows[0], x:x + windows[1]] = 1
    return masks
