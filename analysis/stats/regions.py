"""Per-image region shares: how much of a map's positive saliency falls on each region.

`mass_r = sum(S+ * M_r) / sum(S+)` and `area_r = |M_r| / |image|`, computed at the mask's own resolution
(the map is resized bilinearly to it), so thin regions are not blurred away by a downsampled mask.
One `bincount` over the mask gives every region at once: cost is one pass over the pixels, whatever the
number of regions. torch (for the resize) is imported when a map is resized, not by readers of the grid.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

GRID_NAMES = [f"{row}-{col}" for row in ("top", "middle", "bottom") for col in ("left", "centre", "right")]
BORDER_FRACTION = 1 / 6


def resize_map(saliency, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (H, W) map to `size` (h, w), as float64 numpy (exact sums downstream)."""
    import torch  # here, not at the top: the dashboard reads GRID_NAMES without computing a tensor
    import torch.nn.functional as F

    tensor = torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, torch.Tensor) else saliency)
    tensor = tensor.detach().to("cpu", torch.float32)
    if tensor.ndim != 2:
        raise ValueError(f"saliency map must be (H, W), got shape {tuple(tensor.shape)}")
    if tuple(tensor.shape) != tuple(size):
        tensor = F.interpolate(tensor[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    return tensor.numpy().astype(np.float64)


def region_shares(saliency, mask: np.ndarray, region_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(mass, area) arrays aligned with `region_ids` for one image.

    Pixels whose mask value is not in `region_ids` count in the total (they are part of the image) but in
    no region. A map without positive mass gives mass 0 everywhere (not NaN): nothing was attended.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (h, w), got shape {mask.shape}")
    positive = np.clip(resize_map(saliency, mask.shape), 0.0, None).ravel()
    labels = mask.astype(np.int64, copy=False).ravel()
    ids = np.asarray(region_ids, dtype=np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError("mask values must be non-negative region ids")
    size = int(max(labels.max(initial=0), ids.max(initial=0))) + 1
    mass_per_id = np.bincount(labels, weights=positive, minlength=size)
    area_per_id = np.bincount(labels, minlength=size).astype(np.float64)
    total = positive.sum()
    mass = mass_per_id[ids] / total if total > 0 else np.zeros(len(ids))
    area = area_per_id[ids] / labels.size
    return mass, area


def grid_regions(h: int, w: int) -> list[tuple[str, np.ndarray]]:
    """Regions for datasets without masks: a 3x3 grid, plus an outer `border` ring and its `centre`.

    The border ring is ~1/6 of each side wide (at least one pixel), a common place for shortcuts
    (watermarks, frames, cage bars at the edge).
    """
    rows = np.minimum(np.arange(h) * 3 // h, 2)
    cols = np.minimum(np.arange(w) * 3 // w, 2)
    cell = rows[:, None] * 3 + cols[None, :]
    regions = [(name, cell == k) for k, name in enumerate(GRID_NAMES)]
    bh, bw = max(1, round(h * BORDER_FRACTION)), max(1, round(w * BORDER_FRACTION))
    border = np.ones((h, w), dtype=bool)
    border[bh : h - bh, bw : w - bw] = False
    regions.append(("border", border))
    regions.append(("centre", ~border))
    return regions


def masked_shares(saliency, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mass, area) for possibly overlapping boolean masks (R, h, w): one matrix product, no loop."""
    masks = np.asarray(masks, dtype=bool)
    positive = np.clip(resize_map(saliency, masks.shape[1:]), 0.0, None).ravel()
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    total = positive.sum()
    mass = flat @ positive / total if total > 0 else np.zeros(len(masks))
    area = flat.sum(axis=1) / flat.shape[1]
    return mass, area


def grid_shares(saliency, h: int, w: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, mass and area of the grid regions of an (h, w) image."""
    regions = grid_regions(h, w)
    mass, area = masked_shares(saliency, np.stack([m for _, m in regions]))
    return [name for name, _ in regions], mass, area
