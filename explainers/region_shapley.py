"""Region-level Shapley values: how much of a prediction each region (annotated or grid) carries.

The players are the image's regions; a coalition S is the image with every region outside S filled with a
flat colour (each image's own mean colour by default, or the caller's, e.g. the dataset mean as in
`analysis.evidence.intervention`); pixels in no region always stay. The value v(S) is the target's score: its logit,
its softmax probability or its sigmoid. phi_r is then the region's Shapley value, and the values add up
to v(all) - v(none) (efficiency): the share of the prediction each region carries, which is the question
a region audit asks, answered causally rather than by where a saliency map puts its mass.

With few regions (<= `exact_max`, 2^n coalitions per image, forwarded in batches) the values are exact by
enumeration; with more, Captum's KernelSHAP estimates them from `n_samples` coalitions, with the regions as
its feature mask. A region absent from an image is a null player there and gets exactly 0.
"""
from __future__ import annotations

import math

import torch
from captum.attr import KernelShap
from torch import nn

from explainers.errors import InputError
from explainers.shap import seeded

SCORES = ("logit", "softmax", "sigmoid")


def region_shapley(model: nn.Module, inputs: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, *,
                   fill: torch.Tensor | None = None, score: str = "logit", exact_max: int = 10,
                   n_samples: int = 512, batch_size: int = 64, seed: int = 0) -> torch.Tensor:
    """(B, R) Shapley values of the regions `masks` (B, R, H, W) bool, disjoint, for class `targets` (B,)."""
    if score not in SCORES:
        raise InputError(f"region Shapley score {score!r}: choose one of {', '.join(SCORES)}")
    if masks.ndim != 4 or masks.shape[0] != inputs.shape[0] or masks.shape[-2:] != inputs.shape[-2:]:
        raise InputError(f"region masks must be (B, R, H, W) matching the images {tuple(inputs.shape)}, "
                         f"got {tuple(masks.shape)}")
    masks = masks.to(inputs.device, torch.bool)
    if (masks.sum(dim=1) > 1).any():
        raise InputError("region Shapley needs disjoint regions: a pixel belongs to two regions")
    targets = torch.as_tensor(targets, dtype=torch.long, device=inputs.device).reshape(-1)
    colours = (inputs.mean(dim=(2, 3)) if fill is None
               else fill.to(inputs).reshape(1, -1).expand(inputs.shape[0], -1))
    filled = colours[:, :, None, None].expand_as(inputs)

    def value(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return scores_of(model(x), score).gather(1, target[:, None])[:, 0]

    n = masks.shape[1]
    out = torch.zeros(inputs.shape[0], n, device=inputs.device)
    with torch.no_grad():
        for i in range(inputs.shape[0]):
            if n <= exact_max:
                out[i] = exact_values(value, inputs[i], filled[i], masks[i], targets[i], batch_size)
            else:
                out[i] = kernel_values(model, score, inputs[i], filled[i], masks[i], targets[i],
                                       n_samples=n_samples, batch_size=batch_size, seed=seed)
            out[i, ~masks[i].flatten(1).any(dim=1)] = 0.0  # absent regions are null players
    return out


def scores_of(output: torch.Tensor, score: str) -> torch.Tensor:
    if score == "softmax":
        return output.softmax(dim=1)
    if score == "sigmoid":
        return output.sigmoid()
    return output


def coalitions(n: int, device=None) -> torch.Tensor:
    """(2^n, n) bool: row k has player j present when bit j of k is set."""
    k = torch.arange(2 ** n, device=device)
    return (k[:, None] >> torch.arange(n, device=device)[None]) & 1 == 1


def shapley_weights(n: int, device=None) -> torch.Tensor:
    """(n, 2^n) matrix C with phi = C @ v: C[j, S] = w(|S| - 1) if j in S, else -w(|S|), w(s) = s!(n-s-1)!/n!."""
    present = coalitions(n, device)
    size = present.sum(dim=1)
    w = torch.tensor([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
                     + [0.0], dtype=torch.float64, device=device)
    with_j = w[(size - 1).clamp(min=0)][None].expand(n, -1)
    without_j = -w[size.clamp(max=n)][None].expand(n, -1)
    return torch.where(present.T, with_j, without_j)


def exact_values(value, image, filled, masks, target, batch_size: int) -> torch.Tensor:
    n = masks.shape[0]
    present = coalitions(n, image.device)
    values = []
    for start in range(0, len(present), batch_size):
        chunk = present[start:start + batch_size]
        hidden = (masks[None] & ~chunk[:, :, None, None]).any(dim=1)  # (k, H, W): pixels of absent regions
        x = torch.where(hidden[:, None], filled[None], image[None])
        values.append(value(x, target.expand(len(chunk))).double())
    return (shapley_weights(n, image.device) @ torch.cat(values)).float()


def kernel_values(model, score, image, filled, masks, target, *, n_samples, batch_size, seed) -> torch.Tensor:
    """Captum's KernelSHAP with the regions as features; pixels in no region form one more feature whose
    baseline is the image itself (a null player), so the regions' game is unchanged."""
    n = masks.shape[0]
    ids = torch.full(masks.shape[-2:], n, dtype=torch.long, device=image.device)
    for j in range(n):
        ids[masks[j]] = j
    outside = ids == n
    baseline = torch.where(outside[None], image, filled)
    explainer = KernelShap(lambda x: scores_of(model(x), score))
    with seeded(seed, image.device):
        values = explainer.attribute(image[None], baselines=baseline[None], target=target[None],
                                     feature_mask=ids[None, None].expand(1, image.shape[0], -1, -1),
                                     n_samples=n_samples, perturbations_per_eval=batch_size,
                                     return_input_shape=False)[0, :n].float()
    out = torch.zeros(n, device=image.device)
    out[:len(values)] = values  # features past the last present id were never in the mask
    return out
