"""Deletion and insertion AUC (Petsiuk et al., RISE, 2018): does the map rank pixels by their effect?

Pixels are ordered by saliency (the signed map resized to the input, highest first). Deletion removes
them in `steps` equal chunks (replaced by `deletion_fill`, black by default as in the paper) and
follows the target's softmax probability (for a detector: the D-RISE similarity of its output to the
explained detection, `score_aucs`): a faithful map makes it fall fast (low AUC is good).
Insertion starts from `insertion_fill` (a heavy blur, as in the paper, so the start image is not an
out-of-distribution black frame) and puts the pixels back: the probability should rise fast (high AUC is
good). AUC is the trapezoid area over the fraction of pixels in [0, 1]. A random pixel order (seeded)
gives the reference each AUC should beat. All (images x steps) perturbed inputs go through the model in
batches of `batch_size`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis.evidence.intervention import heavy_blur

SCORE_DIRECTION = {"deletion_auc": "lower is better", "insertion_auc": "higher is better"}


def pixel_order_masks(maps: torch.Tensor, size, steps: int) -> torch.Tensor:
    """(steps + 1, B, H, W) bool: at step t, the top t/steps fraction of pixels by saliency."""
    maps = torch.as_tensor(maps).float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    b, h, w = maps.shape
    order = maps.reshape(b, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(b, -1).contiguous())
    cuts = [round(t * h * w / steps) for t in range(steps + 1)]
    return torch.stack([(rank < c).view(b, h, w) for c in cuts])


def curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
           steps: int = 16, mode: str = "deletion", fill: str | None = None,
           batch_size: int = 64) -> np.ndarray:
    """(B, steps + 1) target probabilities along the deletion or insertion path."""
    return score_curves(class_probability(model, targets), images, maps, steps=steps, mode=mode, fill=fill,
                        batch_size=batch_size)


def class_probability(model: nn.Module, targets: torch.Tensor):
    """The classifier's score: the softmax probability of each image's target class."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    targets = torch.as_tensor(targets).long().cpu()

    def score(batch: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        p = model(batch.to(device)).float().softmax(dim=1).cpu()
        return p.gather(1, targets[rows][:, None])[:, 0]
    return score


@torch.no_grad()
def score_curves(score, images: torch.Tensor, maps: torch.Tensor, *, steps: int = 16, mode: str = "deletion",
                 fill: str | None = None, batch_size: int = 64) -> np.ndarray:
    """(B, steps + 1) scores along the deletion or insertion path; `score(batch, rows)` scores perturbed
    copies of images `rows` (a classifier's class probability, a detector's D-RISE similarity...)."""
    images = images.float().cpu()
    fill = fill or ("zero" if mode == "deletion" else "blur")
    baseline = torch.zeros_like(images) if fill == "zero" else heavy_blur(images)
    masks = pixel_order_masks(maps, images.shape[-2:], steps)  # (T, B, H, W)
    t_steps, b = masks.shape[0], images.shape[0]
    probs = torch.empty(t_steps * b)
    flat_index = torch.arange(t_steps * b)
    for start in range(0, t_steps * b, batch_size):
        idx = flat_index[start:start + batch_size]
        step, img = idx // b, idx % b
        chosen = masks[step, img][:, None]
        if mode == "deletion":
            batch = torch.where(chosen, baseline[img], images[img])
        else:
            batch = torch.where(chosen, images[img], baseline[img])
        probs[start:start + len(idx)] = score(batch, img).float().cpu()
    return probs.view(t_steps, b).T.numpy()


def auc(curve: np.ndarray) -> np.ndarray:
    """Trapezoid area under (B, T) curves sampled at equally spaced fractions of [0, 1]."""
    curve = np.asarray(curve, dtype=np.float64)
    return (curve[:, 1:] + curve[:, :-1]).sum(axis=1) / (2 * (curve.shape[1] - 1))


def deletion_insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                       steps: int = 16, batch_size: int = 64, seed: int = 0) -> dict:
    """Mean deletion / insertion AUC of the maps, and of a random pixel order for reference."""
    return score_aucs(class_probability(model, targets), images, maps, steps=steps, batch_size=batch_size,
                      seed=seed)


def score_aucs(score, images: torch.Tensor, maps: torch.Tensor, *, steps: int = 16, batch_size: int = 64,
               seed: int = 0) -> dict:
    """`deletion_insertion` for any `score(batch, rows)` (see `score_curves`)."""
    gen = torch.Generator().manual_seed(seed)
    random_maps = torch.rand(tuple(maps.shape), generator=gen)
    out = {"n": int(images.shape[0]), "steps": steps, "score_direction": SCORE_DIRECTION}
    for name, m in (("", maps), ("random_", random_maps)):
        for mode in ("deletion", "insertion"):
            c = score_curves(score, images, m, steps=steps, mode=mode, batch_size=batch_size)
            out[f"{name}{mode}_auc"] = float(auc(c).mean())
            if not name:
                out[f"{mode}_curve"] = c.mean(axis=0).round(6).tolist()
    return out


def verdicts(result: dict, *, margin: float = 0.05) -> list[dict]:
    """Per measure in a `score_aucs` result: the map's AUC beside the random order's, and whether it beats it.

    "Beats" means by at least `margin` of probability-AUC (the scale is [0, 1]): a deletion AUC of 0.639
    against a random 0.650 is a map no better than noise at ranking pixels, and the verdict says so.
    """
    out = []
    for measure, lower_is_better in (("deletion", True), ("insertion", False)):
        score, baseline = result.get(f"{measure}_auc"), result.get(f"random_{measure}_auc")
        if score is None or baseline is None:
            continue
        gain = (baseline - score) if lower_is_better else (score - baseline)
        out.append({"measure": measure, "score": float(score), "random": float(baseline), "gain": float(gain),
                    "better_than_random": bool(gain >= margin),
                    "direction": SCORE_DIRECTION[f"{measure}_auc"]})
    return out
