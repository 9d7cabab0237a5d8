"""Faithfulness for taggers and segmenters: deletion / insertion of a tag's or class's stored map against a
random pixel order (`analysis.evidence.faithfulness.score_aucs`, Petsiuk et al. 2018), per (image, target).

Why: the classifier's report says whether its maps rank pixels by their effect on the score; a tagger's or
segmenter's had no such line, so its maps' trust rested on the sanity check alone. The score followed is the
one the run explained, as a probability: a tag's sigmoid probability; a class's softmax probability averaged
over its pixels (the pixels the run's `SegmentationTarget` sums its logits over, fixed from the clean image:
predicted or true, the run's `target`). Not the summed logit itself: it is unbounded (AUCs in the thousands on
the sample segmenter), so the verdict's margin of 0.05 would mean nothing. Reported, never flagged, as the
classifier's. The images are the first of the interventions' evidence sample.
"""
from __future__ import annotations

import numpy as np
import torch

from analysis.evidence.faithfulness import score_aucs
from analysis.evidence.stage import load_subset, sample_images
from analysis.evidence.target_second_explainer import explained_targets, target_masks
from explainers.loading.models import folded_for_prediction

N_IMAGES = 32


def target_score(model, task: str, indices: torch.Tensor, masks: torch.Tensor | None):
    """`score(batch, rows)` for `score_aucs`: row m's tag probability, or its class's mean probability over its
    pixels."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    indices = indices.to(device)
    masks = None if masks is None else masks.to(device)

    def score(batch: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(device)
        out = model(batch.to(device)).float()
        if task == "multilabel":
            return torch.sigmoid(out).gather(1, indices[rows][:, None])[:, 0]
        probs = out.softmax(dim=1)
        picked = probs.gather(1, indices[rows][:, None, None, None].expand(-1, 1, *out.shape[-2:]))[:, 0]
        return (picked * masks[rows]).sum(dim=(1, 2)) / masks[rows].sum(dim=(1, 2)).clamp_min(1)
    return score


def target_faithfulness(loaded, dataset, store, method: str, *, task: str, seed: int, max_images: int,
                        source: str = "pred", n_images: int = N_IMAGES, steps: int = 8, batch_size: int = 32) -> dict:
    """`{method, n_targets, deletion_auc, insertion_auc, random_*, ...}` (`score_aucs`' keys), or `{}`."""
    images = store.images()
    stored = store.arrays("tag_maps" if task == "multilabel" else "segment_maps")
    if images.empty or not len(stored.get("image_ids", [])):
        return {}
    idx_key = "tag_idx" if task == "multilabel" else "class_idx"
    where = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(stored["image_ids"], stored[idx_key]))}
    batch = load_subset(loaded, dataset, sample_images(images, seed, max_images).head(n_images))
    targets = [t for t in explained_targets(store, task, batch.ids) if (t[0], t[1]) in where]
    if not targets:
        return {}
    row_of = {int(i): r for r, i in enumerate(batch.ids)}
    rows = [row_of[i] for i, _, _ in targets]
    indices = torch.as_tensor([j for _, j, _ in targets])
    maps = torch.as_tensor(stored["maps"][[where[(i, j)] for i, j, _ in targets]].astype(np.float32))
    device = next((p.device for p in loaded.module.parameters()), torch.device("cpu"))
    inputs = batch.inputs[rows].to(device)
    masks = None
    if task == "segmentation":  # the pixels each target is summed over, from the clean images
        masks = torch.cat([target_masks(loaded, dataset, batch, rows[k:k + batch_size],
                                        indices[k:k + batch_size].tolist(), source)
                           for k in range(0, len(rows), batch_size)])
    model = folded_for_prediction(loaded.module, inputs[:2])
    result = score_aucs(target_score(model, task, indices, masks), inputs, maps, steps=steps, batch_size=batch_size,
                        seed=seed, min_images=min(8, len(targets)))
    return {"method": method, "score": "tag probability" if task == "multilabel" else "class probability, mean "
            "over its pixels", "n_targets": len(targets), **result}
