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
scored once. `score_aucs` starts each curve at `min_steps` and halves its step while its mean AUC moves by
more than `tolerance` (a random order's smooth curve stops at 4 steps, a map's sharp one goes to 8);
`auc_error` is the largest last halving's change |T(h) - T(2h)|, a conservative estimate of the
trapezoid error (Richardson's is a third of it), and the test holds the AUCs to the step-by-step
reference within it. With `min_images` the image sample starts small and doubles only while a verdict
(the map beats the random order by the margin) is undecided; the gain's t-interval (`gain_ci`) is taken at
1 - 0.05 / L for the L looks the doubling can make (`gain_level`), so it stays valid after the stop.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis.evidence.intervention import heavy_blur
from analysis.report.policy import policy_of

POLICY = policy_of("classification")  # the margin over a random order (the same for every task)

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
                       steps: int = 16, batch_size: int = 64, seed: int = 0, min_steps: int | None = 2,
                       tolerance: float = 0.01, min_images: int | None = None, margin: float = POLICY.faithfulness_margin) -> dict:
    """Mean deletion / insertion AUC of the maps, and of a random pixel order for reference."""
    return score_aucs(class_probability(model, targets), _on_model_device(model, images), maps, steps=steps,
                      batch_size=batch_size, seed=seed, min_steps=min_steps, tolerance=tolerance,
                      min_images=min_images, margin=margin)


CURVES = ("deletion", "insertion", "random_deletion", "random_insertion")


def score_aucs(score, images: torch.Tensor, maps: torch.Tensor, *, steps: int = 16, batch_size: int = 64,
               seed: int = 0, min_steps: int | None = 2, tolerance: float = 0.01, min_images: int | None = None,
               margin: float = POLICY.faithfulness_margin) -> dict:
    """`deletion_insertion` for any `score(batch, rows)` (see `score_curves`).

    Steps, per curve: from `min_steps` (None: `steps`, the fixed step-by-step curve) a curve's step count
    doubles while its mean AUC changed by more than `tolerance` at its last doubling, up to `steps`; a
    random order's curve is smooth and stops early, a sharp map's goes on. `auc_error` is the largest last
    change. Images: with `min_images`, the first `min_images` decide the steps, then the sample doubles (at
    the same steps) while a verdict (`verdicts`: the map beats the random order by `margin`) is undecided,
    i.e. the t-interval of the per-image gain (at `gain_level`, see the module docstring) contains `margin`;
    `n` says how many were used.
    """
    gen = torch.Generator().manual_seed(seed)
    random_maps = torch.rand(tuple(maps.shape), generator=gen)
    total = int(images.shape[0])
    n = total if not min_images else min(int(min_images), total)
    # the doubling looks at the gain's interval up to `looks` times: each look at 1 - 0.05 / looks (Bonferroni),
    # so the interval that stops the sample, and the one reported, hold whatever look it stopped at
    looks = 1 + max(0, math.ceil(math.log2(total / n))) if n else 1
    level = 1 - 0.05 / looks
    per_image = {name: [] for name in CURVES}
    curve_sums = {name: None for name in CURVES}
    done, n_scored, curve_steps, errors = 0, 0, None, {}
    while True:
        rows = slice(done, n)
        # `score` takes rows of the whole set (a target per image): this chunk's rows start at `done`
        paths = _Paths(lambda batch, local, offset=done: score(batch, local + offset), images[rows], batch_size)
        named = {name: paths.path((random_maps if name.startswith("random_") else maps)[rows],
                                  name.replace("random_", ""), "zero" if name.endswith("deletion") else "blur")
                 for name in CURVES}
        if curve_steps is None:
            curve_steps, errors = _adaptive_steps(paths, named, steps, min_steps, tolerance)
        paths.score_missing([(p, t, curve_steps[k]) for k, p in named.items() for t in range(curve_steps[k] + 1)])
        for name, path in named.items():
            c = paths.points(path, range(curve_steps[name] + 1), curve_steps[name])
            per_image[name].append(auc(c))
            total_curve = c.sum(axis=0)
            curve_sums[name] = total_curve if curve_sums[name] is None else curve_sums[name] + total_curve
        n_scored += len(paths.known) * (n - done)
        done = n
        aucs = {k: np.concatenate(v) for k, v in per_image.items()}
        if done >= total or all(_decided(g, margin, level) for g in _gains(aucs).values()):
            break
        n = min(total, 2 * done)
    error = max(errors.values()) if errors else None
    out = {"n": done, "n_available": total, "steps": max(curve_steps["deletion"], curve_steps["insertion"]),
           "steps_per_curve": dict(curve_steps), "score_direction": SCORE_DIRECTION,
           "auc_error": None if error is None else float(error), "n_scored": n_scored,
           "gain_ci": {m: [float(v) for v in _t_interval(g, level)] for m, g in _gains(aucs).items()},
           "gain_level": level}
    for name in CURVES:
        out[f"{name}_auc"] = float(aucs[name].mean())
        if not name.startswith("random_"):
            out[f"{name}_curve"] = (curve_sums[name] / done).round(6).tolist()
    return out


def _adaptive_steps(paths: "_Paths", named: dict, steps: int, min_steps: int | None,
                    tolerance: float) -> tuple[dict, dict]:
    """Per curve, the step count where its mean AUC stopped moving (see `score_aucs`), and its last change."""
    current = {k: max(1, min(min_steps or steps, steps)) for k in named}
    means, errors, open_ = {}, {}, set(named)
    while open_:
        paths.score_missing([(named[k], t, current[k]) for k in open_ for t in range(current[k] + 1)])
        for k in sorted(open_):
            now = float(auc(paths.points(named[k], range(current[k] + 1), current[k])).mean())
            if k in means:
                errors[k] = abs(now - means[k])
            means[k] = now
            if current[k] * 2 > steps or (k in errors and errors[k] <= tolerance):
                open_.discard(k)
            else:
                current[k] *= 2
    return current, errors


def _gains(aucs: dict) -> dict[str, np.ndarray]:
    """Per image, how much the map beats the random order: lower deletion, higher insertion."""
    return {"deletion": aucs["random_deletion"] - aucs["deletion"],
            "insertion": aucs["insertion"] - aucs["random_insertion"]}


def _t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean
    half = float(t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean - half, mean + half


def _decided(gains: np.ndarray, margin: float, level: float = 0.95) -> bool:
    low, high = _t_interval(gains, level)
    return len(gains) >= 2 and (low > margin or high < margin)


def verdicts(result: dict, *, margin: float = POLICY.faithfulness_margin) -> list[dict]:
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
