"""RISE (Petsiuk et al. 2018): the expected target score under random smooth masks, per pixel.

One mask set is shared by every image of a batch, so a chunk of k masks costs one forward of k x B masked
images. The coarse binary grids and shifts for all N masks are drawn up front (tiny: N x cells x cells) from a
seeded generator on the inputs' device; full-resolution masks exist one chunk at a time. The map therefore
depends on the seed and the device, not on `chunk`. No hooks: works on TorchScript models. D-RISE draws its
masks with the same `mask_chunks`.

Stopping when the map has converged (issue 15): the masks are checked at counts that double from
`min_masks` (250, 500, 1000, ... up to `n_masks`); at each check an image whose map moved by less than
`tolerance` since the last check, relative to the map's spatial variation (both centred: the constant
part of a RISE map says nothing), stops there and leaves the batch, so later masks cost only the images
still moving. Why doubling: the change between M(n/2) and M(n) has the variance of M(n)'s own sampling
error, while its distance to the full-count map is smaller still, so "changed < tolerance" puts the map within
about the tolerance of the full count (tests/explainers/test_perturbation.py). The checkpoints do not
depend on `chunk` or on the other images of the batch. `extras["masks_used"]` (B,) and
`extras["converged_change"]` (B,) report it per image; `tolerance=0` always uses all `n_masks`.
The default 0.25 is loose on purpose: a RISE map is noisy (on the planted PatchNet the centred relative
change from 1000 to 2000 masks is still 0.2-0.34, so even 4000 masks leave ~0.15), and the audit reads
region shares, which average that noise out; a tighter tolerance only buys masks.
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
                 chunk: int = 32, tolerance: float = 0.25, min_masks: int = 250):
        if n_masks < 1 or cells < 1 or chunk < 1 or min_masks < 1:
            raise InputError(f"rise needs n_masks, cells, chunk and min_masks >= 1; got {n_masks}, {cells}, "
                             f"{chunk}, {min_masks}")
        if not 0.0 < p <= 1.0:
            raise InputError(f"rise p is the probability a grid cell is kept, in (0, 1]; got {p}")
        if tolerance < 0:
            raise InputError(f"rise tolerance is a relative change >= 0 (0: use all n_masks); got {tolerance}")
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
            used = torch.full((batch,), n, dtype=torch.long, device=device)
            change = torch.full((batch,), float("nan"), device=device)
            active = torch.arange(batch, device=device)
            grids, shifts = draw_cells(n, self.params["cells"], p, self.params["seed"], device)
            previous, done = None, 0
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
                    saliency[active] += torch.einsum("kb,khw->bhw", mask_scores[:, keep].float(), masks)
                done = check
                if check == n:
                    break
                current = saliency[active] / check
                if previous is not None:
                    moved = relative_change(current, previous)
                    change[active] = moved
                    stop_here = moved < tolerance
                    used[active[stop_here]] = check
                    saliency[active[stop_here]] *= n / check  # the mean over `check` masks, in full-count units
                    active, current = active[~stop_here], current[~stop_here]
                    if not len(active):
                        break
                previous = current
        extras = {"masks_used": used.cpu(), "converged_change": change.cpu()}
        return SaliencyBatch(saliency / (n * p), scores.detach().float(), self.name, extras=extras)


def checkpoints(n: int, first: int) -> list[int]:
    """Mask counts at which convergence is checked: `first`, doubling, then `n` (always the last)."""
    counts, k = [], first
    while k < n:
        counts.append(k)
        k *= 2
    return counts + [n]


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


