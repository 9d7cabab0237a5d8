"""Region-level Shapley values over a run: the share of each prediction that each region carries.

Opt-in (run parameter `region_shapley=N`, default 0): in the evidence stage, for the first N images of
the evidence subset, `explainers.region_shapley` computes every region's Shapley value for the explained
class (the players: the annotated regions, or the 3x3 grid cells when the dataset has no masks, since the
border/centre grid regions overlap the cells; absent regions filled with the subset's mean colour, as the
interventions do; the value: the class probability, softmax or sigmoid for multilabel models). Exact by
enumeration up to 10 regions, KernelSHAP beyond.

The report aggregates them like the maps: per region, overall and per class, the mean value and the mean
share, share = phi_r / sum_r |phi_r| of the image (signed; a region that pushes the prediction down has a
negative share), each with a bootstrap CI over images (`analysis.stats.aggregate.bootstrap_means`).
torch and pandas are imported where they are used: a reader of a cached report imports this module
(through the report builder) and needs neither.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.stats.regions import GRID_NAMES, grid_regions
from explainers.loading.model_tasks import MODEL_TASKS

if TYPE_CHECKING:
    import pandas as pd
    import torch

PARAM = "region_shapley"


def shapley_evidence(loaded, batch, regions: pd.DataFrame, *, n_images: int, seed: int = 0,
                     batch_size: int = 64) -> dict:
    """{"score", "n", "regions", "roles", "image_ids", "labels", "values" (n x R)} for the evidence file."""
    import torch  # here: the report reads `shapley_table` in the dashboard's process, which has no torch

    from explainers.region_shapley import region_shapley

    n = min(int(n_images), len(batch.inputs))
    names, roles, masks = players(batch, regions, n)
    if n == 0 or masks is None:
        return {}
    score = MODEL_TASKS[loaded.card.task].scores
    device = next((p.device for p in loaded.module.parameters()), torch.device("cpu"))
    targets = torch.as_tensor(batch.images_frame["target_idx"].to_numpy()[:n].copy(), dtype=torch.long)
    fill = batch.inputs.mean(dim=(0, 2, 3))
    values = []
    for start in range(0, n, 8):
        stop = min(n, start + 8)
        values.append(region_shapley(loaded.module, batch.inputs[start:stop].to(device), masks[start:stop].to(device),
                                     targets[start:stop].to(device), fill=fill, score=score,
                                     batch_size=batch_size, seed=seed).cpu())
    return {"score": score, "fill": "mean", "n": n, "regions": names, "roles": roles,
            "image_ids": [int(i) for i in batch.ids[:n]],
            "labels": [str(v) for v in batch.images_frame["label"].to_numpy()[:n]],
            "values": torch.cat(values).tolist()}


def players(batch, regions: pd.DataFrame, n: int) -> tuple[list[str], list, torch.Tensor | None]:
    """Region names, roles and (n, R, H, W) masks: annotated regions, else the grid cells."""
    import torch

    first = regions.drop_duplicates("region")
    h, w = batch.inputs.shape[-2:]
    if len(first) and (first["region_id"] >= 0).all():
        if batch.masks is None:
            return [], [], None
        ids = torch.as_tensor(first["region_id"].to_numpy().astype(np.int64))
        masks = batch.masks[:n, None] == ids.to(batch.masks.dtype)[None, :, None, None]
        return first["region"].tolist(), [_role(r) for r in first["role"]], masks
    grid = dict(grid_regions(h, w))
    cells = torch.as_tensor(np.stack([grid[name] for name in GRID_NAMES]))
    return list(GRID_NAMES), [None] * len(GRID_NAMES), cells[None].expand(n, -1, -1, -1)


def shapley_table(evidence: dict, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """Rows per (class, region): value_mean / share_mean with bootstrap CIs; class None = all images."""
    from analysis.stats.aggregate import bootstrap_means

    if not evidence or not evidence.get("values"):
        return []
    values = np.asarray(evidence["values"], dtype=np.float64)
    total = np.abs(values).sum(axis=1, keepdims=True)
    shares = np.divide(values, total, out=np.zeros_like(values), where=total > 0)
    labels = np.asarray(evidence["labels"])
    rows = []
    slices = [(None, np.ones(len(values), dtype=bool))] + [(c, labels == c) for c in sorted(set(labels))]
    alpha = (1 - level) / 2
    for cls, keep in slices:
        stacked = np.stack([values[keep], shares[keep]], axis=2)
        means = stacked.mean(axis=0)
        if keep.sum() >= 2 and n_boot > 0:
            boot = bootstrap_means(stacked, n_boot=n_boot, rng=np.random.default_rng(seed))
            low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
        else:
            low = high = means
        for j, name in enumerate(evidence["regions"]):
            rows.append({"region": name, "role": evidence["roles"][j], "class": cls, "n": int(keep.sum()),
                         "value_mean": float(means[j, 0]), "value_ci": [float(low[j, 0]), float(high[j, 0])],
                         "share_mean": float(means[j, 1]), "share_ci": [float(low[j, 1]), float(high[j, 1])]})
    return rows


def _role(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value
