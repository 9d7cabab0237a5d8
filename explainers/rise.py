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
norm of the map's spatial signal, centred, with the noise's own share taken out; the noise is that of the
centred terms, since the part common to every pixel moves no pixel against another) is below `tolerance` stops
there and leaves the batch, so later masks cost only the images still moving. What the estimate is: the
expected relative L2 distance to the map of infinitely many masks (the distance to the `n_masks` map is
smaller, by sqrt(1 - n / n_masks)). Why not "the change since half as many masks", the first version of
this: measured relative to the current, noisy map its denominator grows with the noise, so it understated
the error exactly where the map was noisiest (at tolerance 0.4 the stopped maps were 0.45 from the full
count, bench/README.md), and it could only stop at doublings. The checks do not depend on `chunk` or on
the other images of the batch. `extras["masks_used"]` (B,) and `extras["estimated_error"]` (B,) report it
per image; `tolerance=0` always uses all `n_masks`. Default 0.3: chosen from the convergence table in
bench/README.md (masks used against the error that buys) for a 300-image audit in minutes on 2 cores; the
audit reads region shares, which average much of the pixel noise out. With the control variate, 0.3 stops
at a median 500-2,250 masks with maps as close to the expectation as the original estimator's 4,000-mask map.

Control variate (default; `control_variate=False` is the original estimator, mask for mask): every mask
pixel has expectation exactly p (a bilinear upsampling is a convex combination of Bernoulli(p) cells; the
crop only selects pixels), so sum_m s_m M_m / (N p) - c (sum_m M_m / (N p) - 1) has RISE's expectation for
any c fixed in advance, and c near the mean masked score removes the noise that dominates on confident
models: mask coverage times a score that barely moves (measured: most images needed all 4,000 masks
without it, bench/README.md). c is the image's running mean score, the standard regression estimator; with
the (N - 1) of a sample covariance, map = mean s + sum (s_m - mean s)(M_m - mean M) / ((N - 1) p), it is
exactly unbiased (E = E[s] + Cov(s, M) / p = E[s M] / p because E[M] = p), not merely O(1/N). A constant
model's map is then the constant, exactly. (At a fixed N; where the stopping rule picks N from the data, any
estimator shares the small bias of optional stopping.) The stopping rule's variance is that of the new per-mask term
(s_m - mean s) M_m, from running sums of s M, s M^2, s^2 M^2, s per image and M, M^2 per pixel.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.params import Param
from explainers.registry import register
from explainers.targets import ClassTarget, as_target


@register
class RISE(Explainer):
    """Score of a mask: softmax probability of the target class (class targets), else the target's value.

    Map = sum_m score_m * mask_m / (N * p) (`control_variate=False`, the original), or by default the same
    expectation with the control variate: mean score + sample covariance(score, mask) / p. `chunk` is the
    number of masks per forward (times the batch size).
    """

    name = "rise"
    family = "perturbation"
    black_box = True
    schema = (Param("n_masks", int, low=1), Param("cells", int, low=1), Param("p", float, low=0, high=1, open_low=True),
              Param("seed", int), Param("chunk", int, low=1), Param("tolerance", float, low=0),
              Param("min_masks", int, low=1), Param("control_variate", bool))

    def __init__(self, model: nn.Module, *, n_masks: int = 4000, cells: int = 7, p: float = 0.5, seed: int = 0,
                 chunk: int = 32, tolerance: float = 0.3, min_masks: int = 250, control_variate: bool = True):
        if n_masks < 1 or cells < 1 or chunk < 1 or min_masks < 1:
            raise InputError(f"rise needs n_masks, cells, chunk and min_masks >= 1; got {n_masks}, {cells}, "
                             f"{chunk}, {min_masks}")
        if not 0.0 < p <= 1.0:
            raise InputError(f"rise p is the probability a grid cell is kept, in (0, 1]; got {p}")
        if tolerance < 0:
            raise InputError(f"rise tolerance is a relative error >= 0 (0: use all n_masks); got {tolerance}")
        super().__init__(model, n_masks=n_masks, cells=cells, p=float(p), seed=seed, chunk=chunk,
                         tolerance=float(tolerance), min_masks=min_masks, control_variate=bool(control_variate))

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
            sums = MaskSums(batch, height, width, device, self.params["control_variate"], errors=tolerance > 0)
            maps = torch.zeros(batch, height, width, device=device)
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
                    sums.add(active, mask_scores[:, keep].float(), masks)
                done = check
                if tolerance > 0:
                    error[active] = sums.error(active, check)
                stop = (torch.ones_like(active, dtype=torch.bool) if check == n
                        else error[active] < tolerance)
                used[active[stop]] = check
                maps[active[stop]] = sums.estimate(active[stop], check, p)
                active = active[~stop]
                if not len(active):
                    break
        extras = {"masks_used": used.cpu(), "estimated_error": error.cpu()}
        return SaliencyBatch(maps, scores.detach().float(), self.name, extras=extras)


class MaskSums:
    """Running sums over the masks seen so far, per image (B, H, W) and, shared by the images still moving
    (they have all seen the same masks), per pixel (H, W): what the map and its error estimate need.

    Plain RISE: sum t M and sum t^2 M^2 with t = s. Control variate: t = s - shift, shift = the image's mean
    score on its first chunk, a constant subtracted only so that float32 sums do not cancel (the estimate
    is algebraically independent of it), plus sum t, sum t M^2 and the shared sum M, sum M^2. The error
    estimate also needs the same sums of each term's spatial mean (scalars per image and mask)."""

    def __init__(self, batch: int, height: int, width: int, device, control_variate: bool, errors: bool):
        zeros = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        self.control_variate, self.errors = control_variate, errors
        self.total = zeros(batch, height, width)
        self.squares = zeros(batch, height, width) if errors else None
        # the same for each term's spatial mean (mask m's mean coverage c_m): sum t c, sum t^2 c^2 (B,)
        self.spatial_total, self.spatial_squares = zeros(batch), zeros(batch)
        if control_variate:
            self.spatial_cross, self.coverage_sum, self.coverage_squares = zeros(batch), zeros(()), zeros(())
            self.shift = torch.full((batch,), float("nan"), device=device)
            self.score_sum = zeros(batch)
            self.cross = zeros(batch, height, width) if errors else None
            self.mask_sum = zeros(height, width)
            self.mask_squares = zeros(height, width) if errors else None

    def add(self, rows: torch.Tensor, scores: torch.Tensor, masks: torch.Tensor) -> None:
        """Masks (k, H, W) and the scores (k, len(rows)) of the images `rows` under them. Matrix products over
        the flattened masks, their square taken once, accumulated per row (D-RISE adds its chunks
        at hundreds of masks per call: einsum and gather / scatter of the rows were a sixth of its time)."""
        flat = masks.flatten(1)  # (k, H*W)
        squares = flat.square() if self.errors else None
        coverage = flat.mean(dim=1)  # (k,)
        if self.control_variate:
            new = self.shift[rows].isnan()
            if new.any():
                self.shift[rows[new]] = scores.mean(dim=0)[new]
            scores = scores - self.shift[rows]
            self.score_sum[rows] += scores.sum(dim=0)
            self.mask_sum += flat.sum(dim=0).view_as(self.mask_sum)
            if self.errors:
                _add_rows(self.cross, rows, scores.T @ squares)
                self.mask_squares += squares.sum(dim=0).view_as(self.mask_squares)
                self.spatial_cross[rows] += coverage.square() @ scores
                self.coverage_sum += coverage.sum()
                self.coverage_squares += coverage.square().sum()
        _add_rows(self.total, rows, scores.T @ flat)
        if self.errors:
            _add_rows(self.squares, rows, scores.square().T @ squares)
            self.spatial_total[rows] += coverage @ scores
            self.spatial_squares[rows] += coverage.square() @ scores.square()

    def error(self, rows: torch.Tensor, count: int) -> torch.Tensor:
        """(len(rows),) `relative_standard_error` of the maps of `rows` after `count` masks, from the per-mask
        terms whose mean the map is, up to scale and offset: s M (plain), (s - mean s) M (control variate),
        and their spatial means."""
        if not self.control_variate:
            return relative_standard_error(self.total[rows], self.squares[rows], count,
                                           self.spatial_total[rows], self.spatial_squares[rows])
        mean = self.score_sum[rows] / count
        grid = mean[:, None, None]
        total = self.total[rows] - grid * self.mask_sum
        squares = self.squares[rows] - 2 * grid * self.cross[rows] + grid.square() * self.mask_squares
        spatial_total = self.spatial_total[rows] - mean * self.coverage_sum
        spatial_squares = (self.spatial_squares[rows] - 2 * mean * self.spatial_cross[rows]
                           + mean.square() * self.coverage_squares)
        return relative_standard_error(total, squares, count, spatial_total, spatial_squares)

    def estimate(self, rows: torch.Tensor, count: int, p: float) -> torch.Tensor:
        """(len(rows), H, W) maps after `count` masks: sum s M / (count p), or with the control variate
        mean s + sum (s - mean s)(M - mean M) / ((count - 1) p), unbiased for the same expectation."""
        if not self.control_variate:
            return self.total[rows] / (count * p)
        mean = self.score_sum[rows] / count
        covariance = (self.total[rows] - mean[:, None, None] * self.mask_sum) / (max(count - 1, 1) * p)
        return (self.shift[rows] + mean)[:, None, None] + covariance

    def centred(self, rows: torch.Tensor, count: int, p: float) -> torch.Tensor:
        """(len(rows), H, W) sum (s - mean s) M / (count p): D-RISE's centred map (control variate only)."""
        mean = self.score_sum[rows] / count
        return (self.total[rows] - mean[:, None, None] * self.mask_sum) / (count * p)


def _add_rows(sums: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """sums[rows] += values for (B, H, W) sums and (len(rows), H*W) values, in place; `rows` are distinct.
    An indexed read, add and write, not `index_add_`: with 2 intra-op threads on a busy machine `index_add_`
    of a few rows took 50-80 ms per call (0.004 ms with 1 thread), the indexed add 0.02 ms (same sums)."""
    flat = sums.view(sums.shape[0], -1)
    if len(rows) == len(flat) and bool((rows == torch.arange(len(flat), device=rows.device)).all()):
        flat.add_(values)  # every row, in order (no detection has stopped yet): one in-place add
    else:
        flat[rows] = flat[rows] + values


def checkpoints(n: int, every: int) -> list[int]:
    """Mask counts at which convergence is checked: every `every` masks, then `n` (always the last)."""
    return list(range(every, n, every)) + [n]


def relative_standard_error(total: torch.Tensor, squares: torch.Tensor, count: int,
                            spatial_total: torch.Tensor | None = None,
                            spatial_squares: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) estimated ||centred(map(count) - map(inf))|| / ||centred signal|| from the running sums (B, H, W)
    of the per-mask terms and of their squares: the root of the summed per-pixel variance of the mean over
    the norm of the centred mean with that noise subtracted (E||centred mean||^2 = signal^2 + noise^2); inf
    when the noise is all there is. A constant map that stays constant (no variance, no signal) gives 0.

    With the sums (B,) of each term's spatial mean and of its square, the noise is that of the centred terms
    (sum over pixels of Var(w - mean w) = sum of Var(w) - pixels * Var(mean w)): the part of the noise that
    is the same at every pixel (how much of the image a mask covered, times the score) moves no pixel's
    rank and is not counted, as the centred error it estimates does not count it."""
    mean = total / count
    noise = ((squares / count - mean.square()).clamp_min(0) / max(count - 1, 1)).flatten(1).sum(dim=1)
    if spatial_total is not None:
        spatial_mean = spatial_total / count
        common = (spatial_squares / count - spatial_mean.square()).clamp_min(0) / max(count - 1, 1)
        noise = (noise - mean[0].numel() * common).clamp_min(0)
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


