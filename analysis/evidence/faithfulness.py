"""Deletion and insertion AUC (Petsiuk et al., RISE, 2018): does the map rank pixels by their effect?

Pixels are ordered by saliency (the signed map resized to the input, highest first). Deletion removes
them in `steps` equal chunks (replaced by `deletion_fill`, black by default as in the paper) and
follows the target's softmax probability (for a detector: the D-RISE similarity of its output to the
explained detection, `score_aucs`): a faithful map makes it fall fast (low AUC is good).
Insertion starts from `insertion_fill` (a heavy blur, as in the paper, so the start image is not an
out-of-distribution black frame) and puts the pixels back: the probability should rise fast (high AUC is
good). AUC is the trapezoid area over the fraction of pixels in [0, 1]. A random pixel order (seeded)
gives the reference each AUC should beat.

Cost scales with need (issue 15): each image's pixel ranks and its blur are computed once; every curve
point still missing (all four curves, all images) is one perturbed input in one stream of batches of
`batch_size`, built on the model's device; the points shared by all curves (the clean image, the fill) are
scored once. `score_aucs` starts at `min_steps` and halves the step while the mean AUCs move by more than
`tolerance`; `auc_error` is the last halving's change |T(h) - T(2h)| of the mean AUCs, a conservative
estimate of the trapezoid error (Richardson's is a third of it), and the test holds the AUCs to the
step-by-step reference within it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis.evidence.intervention import heavy_blur

SCORE_DIRECTION = {"deletion_auc": "lower is better", "insertion_auc": "higher is better"}


def pixel_ranks(maps: torch.Tensor, size) -> torch.Tensor:
    """(B, H * W) rank of each pixel by saliency, 0 = most salient (stable on ties)."""
    maps = torch.as_tensor(maps).float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    b, h, w = maps.shape
    order = maps.reshape(b, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1).contiguous())
    return rank


def pixel_order_masks(maps: torch.Tensor, size, steps: int) -> torch.Tensor:
    """(steps + 1, B, H, W) bool: at step t, the top t/steps fraction of pixels by saliency."""
    rank = pixel_ranks(maps, size)
    b, (h, w) = rank.shape[0], tuple(size)
    return torch.stack([(rank < _cut(t, steps, h * w)).view(b, h, w) for t in range(steps + 1)])


def _cut(t: int, steps: int, n_pixels: int) -> int:
    return round(t * n_pixels / steps)


def curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
           steps: int = 16, mode: str = "deletion", fill: str | None = None,
           batch_size: int = 64) -> np.ndarray:
    """(B, steps + 1) target probabilities along the deletion or insertion path."""
    return score_curves(class_probability(model, targets), _on_model_device(model, images), maps, steps=steps,
                        mode=mode, fill=fill, batch_size=batch_size)


def class_probability(model: nn.Module, targets: torch.Tensor):
    """The classifier's score: the softmax probability of each image's target class (on the model's device:
    no copy back per batch)."""
    device = _device(model)
    targets = torch.as_tensor(targets).long().to(device)

    def score(batch: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        p = model(batch.to(device, non_blocking=True)).float().softmax(dim=1)
        return p.gather(1, targets[rows.to(device)][:, None])[:, 0]
    return score


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _on_model_device(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return images.to(_device(model))


def score_curves(score, images: torch.Tensor, maps: torch.Tensor, *, steps: int = 16, mode: str = "deletion",
                 fill: str | None = None, batch_size: int = 64) -> np.ndarray:
    """(B, steps + 1) scores along the deletion or insertion path; `score(batch, rows)` scores perturbed
    copies of images `rows` (a classifier's class probability, a detector's D-RISE similarity...)."""
    fill = fill or ("zero" if mode == "deletion" else "blur")
    paths = _Paths(score, images, batch_size)
    path = paths.path(maps, mode, fill)
    return paths.points(path, range(steps + 1), steps)


class _Paths:
    """Deletion / insertion paths of fixed images: ranks and fills computed once, points scored on demand in
    one stream of batches, each (path, fraction) point at most once."""

    def __init__(self, score, images: torch.Tensor, batch_size: int):
        self.score, self.images, self.batch_size = score, images.float(), batch_size
        self.fills = {"zero": torch.zeros_like(self.images)}
        self.known: dict[tuple, torch.Tensor] = {}  # (path key, fraction) -> (B,) scores

    def fill(self, name: str) -> torch.Tensor:
        if name not in self.fills:
            self.fills[name] = heavy_blur(self.images)  # once per image, whatever the steps
        return self.fills[name]

    def path(self, maps: torch.Tensor, mode: str, fill: str) -> dict:
        rank = pixel_ranks(torch.as_tensor(maps).to(self.images.device), self.images.shape[-2:])
        return {"rank": rank, "mode": mode, "fill": fill, "key": (len(self.known), id(rank))}

    def points(self, path: dict, indices, steps: int) -> np.ndarray:
        """(B, len(indices)) scores at fractions t / steps, t in `indices`."""
        self.score_missing([(path, t, steps) for t in indices])
        return torch.stack([self.known[self._key(path, t, steps)] for t in indices], 1).cpu().numpy()

    def _key(self, path: dict, t: int, steps: int) -> tuple:
        fraction = (t / steps)
        if fraction == 0.0 or fraction == 1.0:  # the clean image or the fill alone: shared by every path
            start_clean = (path["mode"] == "deletion") == (fraction == 0.0)
            return ("clean",) if start_clean else ("fill", path["fill"])
        return (path["key"], _cut(t, steps, self.images.shape[-2] * self.images.shape[-1]))

    @torch.no_grad()
    def score_missing(self, wanted: list[tuple]) -> None:
        todo, seen = [], set()
        for path, t, steps in wanted:
            key = self._key(path, t, steps)
            if key not in self.known and key not in seen:
                seen.add(key)
                todo.append((key, path, t, steps))
        b = self.images.shape[0]
        jobs = [(j, i) for j in range(len(todo)) for i in range(b)]
        out = []
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start:start + self.batch_size]
            rows = torch.tensor([i for _, i in chunk])
            batch = torch.stack([self._perturbed(todo[j], i) for j, i in chunk])
            out.append(self.score(batch, rows).float())
        scores = torch.cat(out) if out else torch.zeros(0)
        for j, (key, *_rest) in enumerate(todo):
            self.known[key] = scores[j * b:(j + 1) * b]

    def _perturbed(self, job: tuple, i: int) -> torch.Tensor:
        key, path, t, steps = job
        if key == ("clean",):
            return self.images[i]
        if key[0] == "fill":
            return self.fill(key[1])[i]
        h, w = self.images.shape[-2:]
        chosen = (path["rank"][i] < key[1]).view(1, h, w)
        fill = self.fill(path["fill"])[i]
        if path["mode"] == "deletion":
            return torch.where(chosen, fill, self.images[i])
        return torch.where(chosen, self.images[i], fill)


def auc(curve: np.ndarray) -> np.ndarray:
    """Trapezoid area under (B, T) curves sampled at equally spaced fractions of [0, 1]."""
    curve = np.asarray(curve, dtype=np.float64)
    return (curve[:, 1:] + curve[:, :-1]).sum(axis=1) / (2 * (curve.shape[1] - 1))


def deletion_insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                       steps: int = 16, batch_size: int = 64, seed: int = 0, min_steps: int | None = 4,
                       tolerance: float = 0.01) -> dict:
    """Mean deletion / insertion AUC of the maps, and of a random pixel order for reference."""
    return score_aucs(class_probability(model, targets), _on_model_device(model, images), maps, steps=steps,
                      batch_size=batch_size, seed=seed, min_steps=min_steps, tolerance=tolerance)


def score_aucs(score, images: torch.Tensor, maps: torch.Tensor, *, steps: int = 16, batch_size: int = 64,
               seed: int = 0, min_steps: int | None = 4, tolerance: float = 0.01) -> dict:
    """`deletion_insertion` for any `score(batch, rows)` (see `score_curves`).

    `steps` is the most steps; from `min_steps` (None: `steps`, the fixed step-by-step curve) the step count
    doubles while any mean AUC changed by more than `tolerance` at the last doubling.
    """
    gen = torch.Generator().manual_seed(seed)
    random_maps = torch.rand(tuple(maps.shape), generator=gen)
    paths = _Paths(score, images, batch_size)
    named = {f"{name}{mode}": paths.path(m, mode, "zero" if mode == "deletion" else "blur")
             for name, m in (("", maps), ("random_", random_maps)) for mode in ("deletion", "insertion")}
    n_steps = max(1, min(min_steps or steps, steps))
    means, error = None, None
    while True:
        paths.score_missing([(p, t, n_steps) for p in named.values() for t in range(n_steps + 1)])
        curves_now = {name: paths.points(p, range(n_steps + 1), n_steps) for name, p in named.items()}
        now = {name: auc(c).mean() for name, c in curves_now.items()}
        if means is not None:
            error = max(abs(now[k] - means[k]) for k in now)
        means = now
        if n_steps * 2 > steps or (error is not None and error <= tolerance):
            break
        n_steps *= 2
    out = {"n": int(images.shape[0]), "steps": n_steps, "score_direction": SCORE_DIRECTION,
           "auc_error": None if error is None else float(error), "n_scored": len(paths.known) * len(images)}
    for name, value in means.items():
        out[f"{name}_auc"] = float(value)
        if not name.startswith("random_"):
            out[f"{name}_curve"] = curves_now[name].mean(axis=0).round(6).tolist()
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
