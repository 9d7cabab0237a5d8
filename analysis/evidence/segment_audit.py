"""Causal evidence for a segmenter, per class: does it still find the class when its context is filled?

For each non-core region (annotated, or the grid cells the maps point at; `analysis.evidence.stage`) and
each class present in an image's ground-truth map: the region's pixels, minus the class's own pixels, are
filled (`analysis.evidence.intervention.fill_region`, the images' mean colour by default), and so is an
equal-area control (`control_masks`: the region rolled to where it overlaps itself least, minus the class's
pixels). Per image, the class's pixel accuracy (the share of its true pixels predicted as it) before, under
the fill and under the control, and whether the class is found (pixel accuracy >= `FOUND`) changes;
`analysis.evidence.paired_effects` gives the drops with CIs and the exact McNemar test. The class's IoU
over the images (intersections over unions, pooled) before / after / control is reported beside.
"""
from __future__ import annotations

import numpy as np
import torch

from analysis.evidence.intervention import control_masks, fill_region, resize_masks
from analysis.evidence.paired_effects import paired_effect
from analysis.evidence.stage import candidate_regions, load_subset, region_masks, sample_images
from explainers.loading.models import folded_for_prediction

MAX_IMAGES = 200
FOUND = 0.5
IGNORE_INDEX = 255


@torch.no_grad()
def predict_maps(module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(B, h, w) argmax class maps for images in [0, 1], batched on the model's device."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    parts = [module(images[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, 1, 1, dtype=torch.long)


def pooled_iou(pred: torch.Tensor, truth: torch.Tensor, c: int) -> float | None:
    p, t = pred == c, truth == c
    union = int((p | t).sum())
    return int((p & t).sum()) / union if union else None


def segment_interventions(loaded, dataset, store, *, seed: int = 0, batch_size: int = 32, fill: str = "mean",
                          max_images: int = MAX_IMAGES, n_boot: int = 1000) -> list[dict]:
    """One record per (class, region): `paired_effect` keys (on pixel accuracy) plus class, region, the pooled
    IoU before / after / control, fill and control_overlap."""
    images, regions = store.images(), store.regions()
    if images.empty or regions.empty:
        return []
    batch = load_subset(loaded, dataset, sample_images(images, seed, max_images))
    if not len(batch.ids):
        return []
    by_id = {int(item.image_id): item for item in dataset.items}
    truth = torch.cat([torch.as_tensor(np.asarray(dataset.load_target(by_id[int(i)]), np.int64))[None]
                       for i in batch.ids])
    truth = resize_masks(truth, batch.inputs.shape[-2:])
    model = folded_for_prediction(loaded.module, batch.inputs[:2])  # prediction-only forwards
    base = predict_maps(model, batch.inputs, batch_size)
    truth = resize_masks(truth, base.shape[-2:])
    mean_colour = batch.inputs.mean(dim=(0, 2, 3))
    out = []
    for region in candidate_regions(images, regions):
        masks = region_masks(batch, region)
        if masks is None or not masks.any():
            continue
        rolled, _ = control_masks(masks, seed=seed)
        for c, name in enumerate(loaded.card.classes):
            own = resize_masks(truth == c, masks.shape[-2:])
            rows = (own.flatten(1).any(1) & (masks & ~own).flatten(1).any(1)).numpy()
            if not rows.any():
                continue
            where, control = (masks & ~own)[rows], (rolled & ~own)[rows]
            overlap = float(((control & where).flatten(1).sum(1).float() / where.flatten(1).sum(1).clamp_min(1)).mean())
            x = batch.inputs[rows]
            after = predict_maps(model, fill_region(x, where, fill, mean_colour=mean_colour), batch_size)
            ctrl = predict_maps(model, fill_region(x, control, fill, mean_colour=mean_colour), batch_size)
            t, b0 = truth[rows], base[rows]
            accuracy = [((p == c) & (t == c)).flatten(1).sum(1).float() / (t == c).flatten(1).sum(1).clamp_min(1)
                        for p in (b0, after, ctrl)]
            found = [a >= FOUND for a in accuracy]
            effect = paired_effect(*(a.numpy() for a in accuracy), (found[1] != found[0]).numpy(),
                                   (found[2] != found[0]).numpy(), seed=seed, n_boot=n_boot)
            out.append({"class": name, "region": region["name"], "intervention": "fill", "fill": fill,
                        "control_overlap": overlap,
                        "iou_before": pooled_iou(b0, t, c), "iou_after": pooled_iou(after, t, c),
                        "iou_control": pooled_iou(ctrl, t, c), **effect})
    return out
