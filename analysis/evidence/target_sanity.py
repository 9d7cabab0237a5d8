"""Model randomisation for taggers and segmenters: the same cascade the classifier's evidence runs
(`analysis.evidence.sanity.model_randomisation`), on a score per target the randomised models still have.

Why: a tagger's or a segmenter's verdict needs to know whether its explainer reflects the weights at all
(Adebayo et al. 2018), and until now their reports had no sanity check (`sanity: {}`), so no verdict on them
could be "clear" for the right reason. A tagger's output is (B, tags): its most probable tag per image is the
target, as a classifier's predicted class is. A segmenter's (B, C, h, w) logits are averaged over the image
(`ClassScores`) and each image's target is the class with the most predicted pixels after the one that covers
most of the batch (the background): the explainer is checked on the object classes it is asked about.
"""
from __future__ import annotations

import torch
from torch import nn

from analysis.evidence.sanity import MAX_IMAGES, model_randomisation
from analysis.evidence.stage import load_subset, module_layer_name


class ClassScores(nn.Module):
    """A segmenter's per-pixel logits as one score per class: their mean over the image."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x).float().mean(dim=(2, 3))


def target_sanity(loaded, dataset, store, method: str, layer_name: str | None, params: dict, *, task: str,
                  seed: int, n_images: int = MAX_IMAGES) -> dict:
    """`{"model_randomization": ...}` for the run's explainer on its first explained images: 8, doubled while the
    decision is open, up to `n_images` (`model_randomisation`)."""
    chosen = store.images().head(n_images)
    batch = load_subset(loaded, dataset, chosen)
    if not len(batch.inputs):
        return {}
    layer = module_layer_name(loaded, layer_name)
    if task == "segmentation":
        model, layer = ClassScores(loaded.module), (f"module.{layer}" if layer else None)
        with torch.no_grad():
            predicted = loaded.module(batch.inputs).argmax(dim=1)  # (B, h, w) class per pixel
        counts = torch.stack([(predicted == c).flatten(1).sum(1) for c in range(int(predicted.max()) + 1)], dim=1)
        counts[:, counts.sum(0).argmax()] = -1  # the class covering most of the batch: the background
        targets = counts.argmax(dim=1)
    else:
        model = loaded.module
        with torch.no_grad():
            targets = model(batch.inputs).argmax(dim=1)
    return {"model_randomization": model_randomisation(model, batch.inputs, method, layer_name=layer,
                                                       targets=targets, params=params, seed=seed, max_stages=8)}
