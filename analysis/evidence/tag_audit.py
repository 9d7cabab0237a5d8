"""Causal evidence for a tagger, per tag: does filling a region change that tag, more than an equal-area fill?

For each non-core region (`analysis.evidence.stage.candidate_regions`: annotated regions, or the grid cells
the maps point at) and each tag, over the explained images on which the tag is a target and the region is
present: the tag's sigmoid probability before, under the region fill (`analysis.evidence.intervention.
fill_region`, the images' mean colour by default) and under the control fill (`control_masks`: the same
mask rolled to where it overlaps itself least; for a region so large that no shift avoids it, the core
regions, as in the classifier's evidence), and whether the tag flips (its predicted state at `threshold`
changes). `analysis.evidence.paired_effects` turns that into drops with CIs and the exact McNemar test.
Forwards run on the BatchNorm-folded copy (`explainers.loading.models.folded_for_prediction`).
"""
from __future__ import annotations

import numpy as np
import torch

from analysis.evidence.intervention import control_masks, fill_region, overlaps_itself
from analysis.evidence.paired_effects import paired_effect
from analysis.evidence.stage import candidate_regions, core_masks, load_subset, region_masks, sample_images
from explainers.loading.models import folded_for_prediction

MAX_IMAGES = 200


@torch.no_grad()
def sigmoid_scores(module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(B, T) tag probabilities for images in [0, 1], batched on the model's device."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    parts = [torch.sigmoid(module(images[i:i + batch_size].to(device)).float()).cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def tag_interventions(loaded, dataset, store, *, threshold: float = 0.5, seed: int = 0, batch_size: int = 32,
                      fill: str = "mean", max_images: int = MAX_IMAGES, n_boot: int = 1000) -> list[dict]:
    """One record per (tag, region): `paired_effect` keys plus tag, region, fill, control_kind, control_overlap."""
    images, regions, tags = store.images(), store.regions(), store.table("tags")
    if images.empty or regions.empty or tags.empty:
        return []
    batch = load_subset(loaded, dataset, sample_images(images, seed, max_images))
    if not len(batch.ids):
        return []
    targets = tags[tags["target"].astype(bool)]
    names = list(loaded.card.classes)
    is_target = np.zeros((len(batch.ids), len(names)), bool)
    row_of = {int(i): r for r, i in enumerate(batch.ids)}
    for image_id, tag_idx in targets[["image_id", "tag_idx"]].itertuples(index=False):
        if int(image_id) in row_of:
            is_target[row_of[int(image_id)], int(tag_idx)] = True
    mean_colour = batch.inputs.mean(dim=(0, 2, 3))
    model = folded_for_prediction(loaded.module, batch.inputs[:2])
    base = sigmoid_scores(model, batch.inputs, batch_size).numpy()
    core = core_masks(batch, regions)
    out = []
    for region in candidate_regions(images, regions):
        masks = region_masks(batch, region)
        if masks is None or not masks.any():
            continue
        present = masks.flatten(1).any(1).numpy()
        controls, overlap = control_masks(masks, seed=seed)
        control_kind = "equal-area"
        if core is not None and overlaps_itself(overlap, present):
            controls, control_kind = core & ~masks, "core"
        # only the images that hold the region: filling an absent one is the clean image
        filled, control = base.copy(), base.copy()
        x, where = batch.inputs[present], torch.as_tensor(present)
        filled[present] = sigmoid_scores(model, fill_region(x, masks[where], fill, mean_colour=mean_colour),
                                         batch_size).numpy()
        control[present] = sigmoid_scores(model, fill_region(x, controls[where], fill, mean_colour=mean_colour),
                                          batch_size).numpy()
        for j, tag in enumerate(names):
            rows = is_target[:, j] & present
            before, after, ctrl = base[rows, j], filled[rows, j], control[rows, j]
            was = before > threshold
            effect = paired_effect(before, after, ctrl, (after > threshold) != was, (ctrl > threshold) != was,
                                   seed=seed, n_boot=n_boot)
            out.append({"tag": tag, "region": region["name"], "intervention": "fill", "fill": fill,
                        "control_kind": control_kind, "control_overlap": float(overlap[present].mean()), **effect})
    return out
