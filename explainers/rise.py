"""RISE (Petsiuk et al. 2018): the expected target score under random smooth masks, per pixel.

One mask set is shared by every image of a batch, so a chunk of k masks costs one forward of k x B masked
images. The coarse binary grids and shifts for all N masks are drawn up front (tiny: N x cells x cells) from a
seeded generator on the inputs' device; full-resolution masks exist one chunk at a time. The map therefore
depends on the seed and the device, not on `chunk`. No hooks: works on TorchScript models. D-RISE draws its
masks with the same `mask_chunks`.

Stopping when the map has converged (issue 15): a RISE map is the mean of N per-mask terms score_m * mask_m,
so its sampling error can be estimated as it accumulates, from the per-pixel sum of squares of those terms:
E||map(n) - map(inf)||^2 = sum over pixels of their variance / n. Every `min_masks` masks (250, 500, 750, ...
up to `n_masks`) an image whose `estimated_error` (`relative_standard_error`: that root-sum variance over the
norm of the map's spatial signal, centred, with the noise's own share taken out) is below `tolerance` stops
there and leaves the batch, so later masks cost only the images still moving. What the estimate is: the
expected relative L2 distance to the map of infinitely many masks (the distance to the `n_masks` map is
smaller, by sqrt(1 - n / n_masks)). Why not "the change since half as many masks", the first version of
this: measured relative to the current, noisy map its denominator grows with the noise, so it understated
the error exactly where the map was noisiest (at tolerance 0.4 the stopped maps were 0.45 from the full
count, bench/README.md), and it could only stop at doublings. The checks do not depend on `chunk` or on
the other images of the batch. `extras["masks_used"]` (B,) and `extras["estimated_error"]` (B,) report it
per image; `tolerance=0` always uses all `n_masks`. Default 0.3: chosen from the convergence table in
bench/README.md (masks used against the error that buys) for a 300-image audit in minutes on 2 cores; the
audit reads region shares, which average much of the pixel noise out.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.registry import register
from explainers.targets import ClassTarget, as_target


@register
class RISE(Explainer):
    """Score of a mask: softmax probability of the target class (class targets), else the target's value.

    Map = sum_m score_m * mask_m / (N * p). `chunk` is the number of masks per forward (times the batch size).
    """

    name = "rise"
    black_box = True

    def __init__(self, model: nn.Module, *, n_masks: int = 4000, cells: int = 7, p: float = 0.5, seed: int = 0,
                 chunk: int = 32, tolerance: float = 0.3, min_masks: int = 250):
        if n_masks < 1 or cells < 1 or chunk < 1 or min_masks < 1:
            raise InputError(f"rise needs n_masks, cells, chunk and min_masks >= 1; got {n_masks}, {cells}, "
                             f"{chunk}, {min_masks}")
        if not 0.0 < p <= 1.0:
            raise InputError(f"rise p is the probability a grid cell is kept, in (0, 1]; got {p}")
        if tolerance < 0:
            raise InputError(f"rise tolerance is a relative error >= 0 (0: use all n_masks); got {tolerance}")
        super().__init__(model, n_masks=n_masks, cells=cells, p=float(p), seed=seed, chunk=chunk,
                         tolerance=float(tolerance), min_masks=min_masks)

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        check_images(inputs)
        target = as_target(targets)
        mask_score = _probability_of(target) if isinstance(target, ClassTarget) else target
        batch, height, width = inputs.shape[0], inputs.shape[2], inputs.shape[3]
        n, p, chunk = self.params["n_masks"], self.params["p"], self.params["chunk"]
        tolerance = self.params["tolerance"]
        device = inputs.device
        # class targets follow the images that are still moving; any other callable scores the whole batch
        narrow = isinstance(target, ClassTarget)
        with torch.no_grad():
            scores = target(self.model(inputs))
            saliency = torch.zeros(batch, height, width, device=device)
            squares = torch.zeros(batch, height, width, device=device) if tolerance > 0 else None
            used = torch.full((batch,), n, dtype=torch.long, device=device)
            error = torch.full((batch,), float("nan"), device=device)
            active = torch.arange(batch, device=device)
            grids, shifts = draw_cells(n, self.params["cells"], p, self.params["seed"], device)
            done = 0
            for check in checkpoints(n, self.params["min_masks"] if tolerance > 0 else n):
                rows = active if narrow else torch.arange(batch, device=device)
                scorer = _probability_of(ClassTarget(target.indices[rows.cpu()])) if narrow else mask_score
                keep = torch.arange(len(rows), device=device) if narrow else active
                for start in range(done, check, chunk):
                    masks = smooth_masks(grids[start:min(start + chunk, check)],
                                         shifts[start:min(start + chunk, check)], height, width)  # (k, H, W)
                    b = len(rows)
                    output = self.model((masks[:, None, None] * inputs[rows][None]).flatten(0, 1))  # mask-major
                    mask_scores = torch.stack([scorer(output[i * b:(i + 1) * b]) for i in range(len(masks))])
                    mask_scores = mask_scores[:, keep].float()
                    saliency[active] += torch.einsum("kb,khw->bhw", mask_scores, masks)
                    if squares is not None:
                        squares[active] += torch.einsum("kb,khw->bhw", mask_scores.square(), masks.square())
                done = check
                if squares is not None:
                    error[active] = relative_standard_error(saliency[active], squares[active], check)
                if check == n:
                    break
                stop_here = error[active] < tolerance
                used[active[stop_here]] = check
                saliency[active[stop_here]] *= n / check  # the mean over `check` masks, in full-count units
                active = active[~stop_here]
                if not len(active):
                    break
        extras = {"masks_used": used.cpu(), "estimated_error": error.cpu()}
        return SaliencyBatch(saliency / (n * p), scores.detach().float(), self.name, extras=extras)


def checkpoints(n: int, every: int) -> list[int]:
    """Mask counts at which convergence is checked: every `every` masks, then `n` (always the last)."""
    return list(range(every, n, every)) + [n]


def relative_standard_error(total: torch.Tensor, squares: torch.Tensor, count: int) -> torch.Tensor:
    """(B,) estimated ||map(count) - map(inf)|| / ||centred signal|| from the running sums (B, H, W) of the
    per-mask terms and of their squares: the root of the summed per-pixel variance of the mean over the
    norm of the centred mean with that noise subtracted (E||centred mean||^2 = signal^2 + noise^2); inf when
    the noise is all there is. A constant map that stays constant (no variance, no signal) gives 0."""
    mean = total / count
    noise = ((squares / count - mean.square()).clamp_min(0) / max(count - 1, 1)).flatten(1).sum(dim=1)
    spread = (mean - mean.mean(dim=(1, 2), keepdim=True)).flatten(1).square().sum(dim=1)
    signal = spread - noise
    ratio = (noise / signal.clamp_min(1e-30)).sqrt()
    return torch.where(signal > 0, ratio, torch.where(noise > 0, torch.full_like(ratio, float("inf")),
                                                      torch.zeros_like(ratio)))


def relative_change(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """(B,) ||centred(current - previous)|| / ||centred(current)||: 0 for a constant map that stays constant."""
    centre = lambda m: m - m.mean(dim=(1, 2), keepdim=True)  # noqa: E731
    moved = centre(current - previous).flatten(1).norm(dim=1)
    spread = centre(current).flatten(1).norm(dim=1)
    return torch.where(spread > 0, moved / spread.clamp_min(1e-30), (moved > 0).float() * float("inf"))


def _probability_of(target: ClassTarget):
    return lambda output: target(output.softmax(dim=1))


def draw_cells(n: int, cells: int, p: float, seed: int,
               device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary (n, 1, cells, cells) grids, Bernoulli(p), and per-mask shifts (n, 2) in [0, 1), from one seeded
    generator: everything random about a mask set, drawn up front, so it depends only on the seed and device."""
    generator = torch.Generator(device=device).manual_seed(seed)
    grids = (torch.rand(n, 1, cells, cells, generator=generator, device=device) < p).float()
    shifts = torch.rand(n, 2, generator=generator, device=device)
    return grids, shifts


def mask_chunks(n: int, cells: int, p: float, seed: int, size: tuple[int, int], device: torch.device | str,
                chunk: int) -> Iterator[torch.Tensor]:
    """The seeded set of `n` RISE masks (k, H, W) in [0, 1], `chunk` at a time: only one chunk of
    full-resolution masks is ever in memory, and the set does not depend on `chunk`."""
    grids, shifts = draw_cells(n, cells, p, seed, device)
    for start in range(0, n, chunk):
        yield smooth_masks(grids[start:start + chunk], shifts[start:start + chunk], *size)


def smooth_masks(grids: torch.Tensor, shifts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Upsample each grid bilinearly to (cells + 1) * cell size and crop H x W at a random shift within one cell."""
    cells = grids.shape[-1]
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    upsampled = F.interpolate(grids, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                              align_corners=False)[:, 0]
    dy = (shifts[:, 0] * cell_h).long().clamp(max=cell_h - 1)
    dx = (shifts[:, 1] * cell_w).long().clamp(max=cell_w - 1)
    rows = dy[:, None] + torch.arange(height, device=grids.device)  # (k, H)
    cols = dx[:, None] + torch.arange(width, device=grids.device)  # (k, W)
    index = torch.arange(grids.shape[0], device=grids.device)[:, None, None]
    return upsampled[index, rows[:, :, None], cols[:, None, :]]


