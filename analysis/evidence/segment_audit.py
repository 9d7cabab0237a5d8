"""Causal evidence for a segmenter, per class: does it still find the class when its context is filled?

For each non-core region (annotated, or the grid cells the maps point at; `analysis.evidence.stage`) and
each class present in an image's ground-truth map: the region's pixels, minus the class's own pixels, are
filled (`analysis.evidence.intervention.fill_region`, the images' mean colour by default), and so is an
equal-area control (`control_masks`: the region rolled to where it overlaps itself least, minus the class's
pixels). Per image, the class's pixel accuracy (the share of its true pixels predicted as it) before, under
the fill and under the control, and whether the class is found (pixel accuracy >= `FOUND`) changes;
`analysis.evidence.paired_effects` gives the drops with CIs and the exact McNemar test. The class's IoU
over the images (intersections over unions, pooled) before / after / control is reported beside.

The swap (`intervention: "swap"`), the classifier's counterfactual for a per-pixel task: the region's pixels
(minus the class's own) take the look of *another class's surroundings*, from another image: the pixels
within `RING` pixels of another class's objects in a donor image (`context_pools`, by the ground truth: not
that class, not the tested one), drawn at random into the region; the control gets the same donor pixels on
its equal-area mask. Why: taking a context away is weak evidence, and the flat fill can even keep it. On the
sample segmenter (boats on water, cars on road) the images' mean colour is a blue-grey (0.34, 0.41, 0.61):
filling the road around a car with it cost v1's cars 15 points of pixel accuracy more than the control, yet
almost no car fell below half its pixels (McNemar p = 1), although moving the car onto water costs it 83 points
of IoU. Giving the road the look of a boat's surroundings (water) costs the car 75 points net (McNemar p =
2.5e-32); at 20 points of true reliance (v2's boat) the swap's net drop is 15 points (p = 7.6e-6) where the
fill's was 7 (p = 0.11); the clean v5 moves by under 1 point either way. Other classes are those that cover
under half of the images they are in (objects, not the background the others sit on).
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
RING = 3  # pixels around another class's objects that count as its surroundings


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


def object_classes(truth: torch.Tensor, n_classes: int) -> list[int]:
    """Classes that cover under half of the images they appear in: objects that sit on a context, not the
    background they sit on."""
    out = []
    for c in range(n_classes):
        share = (truth == c).flatten(1).float().mean(1)
        present = share > 0
        if present.any() and float(share[present].mean()) < 0.5:
            out.append(c)
    return out


def context_pools(truth: torch.Tensor, c: int, others: list[int]) -> list[tuple[int, torch.Tensor]]:
    """Per image that holds one of the `others` classes: (image index, (H, W) bool of its objects'
    surroundings: within `RING` pixels of them, neither them nor class `c`)."""
    import torch.nn.functional as F

    pools = []
    for i in range(len(truth)):
        present = [d for d in others if d != c and bool((truth[i] == d).any())]
        if not present:
            continue
        objects = torch.zeros_like(truth[i], dtype=torch.bool)
        for d in present:
            objects |= truth[i] == d
        near = F.max_pool2d(objects[None, None].float(), 2 * RING + 1, 1, RING)[0, 0] > 0
        ring = near & ~objects & (truth[i] != c)
        if ring.any():
            pools.append((i, ring))
    return pools


def swap_in(images: torch.Tensor, where: torch.Tensor, controls: torch.Tensor, source: torch.Tensor,
            pools: list[tuple[int, torch.Tensor]], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`images` with `where` (and, in the second copy, `controls`) drawn from one donor's surroundings each
    (pixels of `source[j]` under pool j's ring, sampled with replacement; the same donor pixels for both)."""
    rng = np.random.default_rng(seed)
    swapped, control = images.clone(), images.clone()
    for i in range(len(images)):
        j, ring = pools[int(rng.integers(len(pools)))]
        pixels = source[j][:, ring.to(source.device)]
        for mask, out in ((where[i], swapped), (controls[i], control)):
            k = int(mask.sum())
            if k:
                out[i][:, mask] = pixels[:, torch.from_numpy(rng.integers(0, pixels.shape[1], k))]
    return swapped, control


def segment_interventions(loaded, dataset, store, *, seed: int = 0, batch_size: int = 32, fill: str = "mean",
                          max_images: int = MAX_IMAGES, n_boot: int = 1000) -> list[dict]:
    """One record per (class, region, intervention: fill | swap): `paired_effect` keys (on pixel accuracy) plus
    class, region, the pooled IoU before / after / control, fill (or the swap's donor) and control_overlap."""
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
    names = list(loaded.card.classes)
    objects = object_classes(resize_masks(truth, batch.inputs.shape[-2:]), len(names))
    out = []
    for region in candidate_regions(images, regions):
        masks = region_masks(batch, region)
        if masks is None or not masks.any():
            continue
        rolled, _ = control_masks(masks, seed=seed)
        for c, name in enumerate(names):
            own = resize_masks(truth == c, masks.shape[-2:])
            rows = (own.flatten(1).any(1) & (masks & ~own).flatten(1).any(1)).numpy()
            if not rows.any():
                continue
            where, control = (masks & ~own)[rows], (rolled & ~own)[rows]
            overlap = float(((control & where).flatten(1).sum(1).float() / where.flatten(1).sum(1).clamp_min(1)).mean())
            x, t, b0 = batch.inputs[rows], truth[rows], base[rows]
            variants = [("fill", fill, fill_region(x, where, fill, mean_colour=mean_colour),
                         fill_region(x, control, fill, mean_colour=mean_colour))]
            others = [d for d in objects if d != c]
            pools = context_pools(resize_masks(truth, masks.shape[-2:]), c, others) if others else []
            if pools:
                donor = "surroundings of " + ", ".join(names[d] for d in others)
                variants.append(("swap", donor, *swap_in(x, where, control, batch.inputs, pools, seed + c)))
            for kind, how, region_x, control_x in variants:
                after, ctrl = predict_maps(model, region_x, batch_size), predict_maps(model, control_x, batch_size)
                accuracy = [((p == c) & (t == c)).flatten(1).sum(1).float() / (t == c).flatten(1).sum(1).clamp_min(1)
                            for p in (b0, after, ctrl)]
                found = [a >= FOUND for a in accuracy]
                effect = paired_effect(*(a.numpy() for a in accuracy), (found[1] != found[0]).numpy(),
                                       (found[2] != found[0]).numpy(), seed=seed, n_boot=n_boot)
                out.append({"class": name, "region": region["name"], "intervention": kind,
                            **({"fill": how} if kind == "fill" else {"donor": how}),
                            "control_overlap": overlap, "iou_before": pooled_iou(b0, t, c),
                            "iou_after": pooled_iou(after, t, c), "iou_control": pooled_iou(ctrl, t, c), **effect})
                if kind == "swap":
                    out[-1]["test"] = "exact one-sided McNemar on flips (region swap vs equal-area control swap)"
    return out
