"""RISE (Petsiuk et al. 2018): the expected target score under random smooth masks, per pixel.

One mask set is shared by every image of a batch, so a chunk of k masks costs one forward of k x B masked
images. The coarse binary grids and shifts for all N masks are drawn up front (tiny: N x cells x cells) from a
seeded generator on the inputs' device; full-resolution masks exist one chunk at a time. The map therefore
depends on the seed and the device, not on `chunk`. No hooks: works on TorchScript models. D-RISE draws its
masks with the same `mask_chunks`.
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
                 chunk: int = 32):
        if n_masks < 1 or cells < 1 or chunk < 1:
            raise InputError(f"rise needs n_masks, cells and chunk >= 1; got {n_masks}, {cells}, {chunk}")
        if not 0.0 < p <= 1.0:
            raise InputError(f"rise p is the probability a grid cell is kept, in (0, 1]; got {p}")
        super().__init__(model, n_masks=n_masks, cells=cells, p=float(p), seed=seed, chunk=chunk)

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        check_images(inputs)
        target = as_target(targets)
        mask_score = _probability_of(target) if isinstance(target, ClassTarget) else target
        batch, height, width = inputs.shape[0], inputs.shape[2], inputs.shape[3]
        n, p = self.params["n_masks"], self.params["p"]
        with torch.no_grad():
            scores = target(self.model(inputs))
            saliency = torch.zeros(batch, height, width, device=inputs.device)
            chunks = mask_chunks(n, self.params["cells"], p, self.params["seed"], (height, width), inputs.device,
                                 self.params["chunk"])
            for masks in chunks:  # (k, H, W)
                masked = (masks[:, None, None] * inputs[None]).flatten(0, 1)  # (k * B, C, H, W), mask-major
                output = self.model(masked)
                mask_scores = torch.stack(
                    [mask_score(output[i * batch:(i + 1) * batch]) for i in range(len(masks))]
                )  # (k, B)
                saliency += torch.einsum("kb,khw->bhw", mask_scores.float(), masks)
        return SaliencyBatch(saliency / (n * p), scores.detach().float(), self.name)


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


