"""Causal evidence for a region: remove what is in it and see whether predictions change.

Replacement ("fill"), default `"mean"`: the region's pixels become the mean colour of the images given
(the dataset's mean colour when the caller passes a representative sample). Why the mean rather than a
blur: a blur keeps a region's low frequencies, so a shortcut carried by colour or brightness (a green
background, a coloured watermark) survives it and the test would miss it; a flat mean fill removes
texture *and* colour. Its cost, an out-of-distribution flat patch, is what the control measures.
Alternatives: `"blur"` (heavy Gaussian blur of the same image, sigma = size / 8; keeps the image
natural, removes only texture, e.g. cage bars) and `"shuffle"` (the same region taken from another image
of the batch; in-distribution, but carries that image's shortcut, so it tests "does the region's
*content* matter" only when the shortcut differs between images).

Control: the same mask rolled (cyclically shifted) to the place among `control_tries` random shifts
that overlaps the tested region least. It has exactly the region's area and shape, so "a flat patch of
this size anywhere hurts" is separated from "this region matters". When a region covers so much of the
image that every shift overlaps it by more than half (a background), no equal-area control exists; the
control is then the core region (`control_kind: "core"`, when the caller gives it): filled the same way,
it asks "do predictions depend more on this region than on what the label is about?", which a model
that uses the object answers no, and one that uses the background answers yes. The overlap is reported
(`control_overlap`) either way.

Swap (the counterfactual, `swap_variants`): the region's pixels are replaced by the same region taken
from an image of another class, chosen among those that have the region. The swapped pixels are the
union of the recipient's region and the donor's, both taken from the donor: where the region sits in the
same place (an annotated watermark, a grid cell) this is the plain swap; where it moves (a patch in a
random corner), the recipient's own cue is covered with the donor's pixels at that place and the donor's
cue is transplanted at the donor's place, so an image without the region still receives it. Why: taking
a cue away is weak evidence (a model that uses the cue when present falls back on the core when it is
gone); a cue that points at another class *misleads* a model that relies on it. The signature of a
shortcut is a flip *towards the donor's class*; the control is the union mask rolled as above, swapped
from the same donor (for a background, the core swap: the donor's object transplanted), and the test is
the exact McNemar on towards-donor flips. The donor is drawn among the other class's images whose region
*points at the donor's class* by its look (`region_pointing`: its colour against class centroids of the
model's answers), the more clearly half of them: a random donor's cue points at the recipient's own class as
often as the data's correlation allows, and such a swap tests nothing. Beside it, the same-class swap
(`swap_donors(same_class=True)`, `same_class_effects`) moves the region between two images of one class: what
that costs is what any paste of the region costs, so a cross-class swap that costs more is the region's
class information moving, not the paste.

Tests: per image, is the prediction still right under the region fill, under the control fill? The
discordant pairs (the region fill makes it wrong and the control does not, or vice versa) go into an
exact one-sided McNemar (binomial) test, p = P(X >= b | b + c, 1/2) (`p_value_accuracy`, the one the flag
uses: its effect is the net accuracy drop). The same test on flips in any direction (`p_value`, with
`discordant`) is reported too, but it measures sensitivity, not reliance: filling most of an image with
a flat colour is a distribution shift that can move a fragile model's answers (a clean model at 54%
accuracy: 95% of predictions flipped, accuracy unchanged) without the region carrying anything it
predicts the label from. Accuracy drop and flip rate come with CIs (bootstrap over images, Wilson for
rates).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis.evidence.blur import separable_blur
from analysis.stats.aggregate import wilson_interval
from explainers.errors import InputError

FILLS = ("mean", "blur", "shuffle")
MAX_CONTROL_OVERLAP = 0.5  # above this, an equal-area control mostly re-tests the region itself


def overlaps_itself(overlap, keep) -> bool:
    """No equal-area roll avoids the region (a background): the least-overlapping roll still covers more than
    `MAX_CONTROL_OVERLAP` of it, on average over the images `keep` that have it. Then the core is the control."""
    overlap, keep = np.asarray(overlap, dtype=np.float64), np.asarray(keep, dtype=bool)
    return bool(keep.any()) and float(overlap[keep].mean()) > MAX_CONTROL_OVERLAP


def fill_colour(images: torch.Tensor, where: torch.Tensor, colour) -> torch.Tensor:
    """Images (B, 3, H, W) with the pixels of `where` (B, H, W) bool set to `colour`: one RGB triple in [0, 1], or
    one per image (B, 3). The one region fill of every task's intervention."""
    colour = torch.as_tensor(colour, dtype=images.dtype, device=images.device)
    colour = (colour[None] if colour.ndim == 1 else colour)[:, :, None, None]
    return torch.where(where.to(images.device)[:, None], colour.expand_as(images), images)


def fill_region(images: torch.Tensor, region: torch.Tensor, fill: str = "mean", *,
                mean_colour: torch.Tensor | None = None, donors: torch.Tensor | None = None) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] with `region` (B, H, W) bool replaced by `fill`."""
    if fill not in FILLS:
        raise InputError(f"unknown intervention fill {fill!r}; choose one of {', '.join(FILLS)}")
    if fill == "mean":
        return fill_colour(images, region, images.mean(dim=(0, 2, 3)) if mean_colour is None else mean_colour)
    if fill == "blur":
        replacement = heavy_blur(images)
    else:
        replacement = donors if donors is not None else images.roll(1, dims=0)
    return torch.where(region[:, None], replacement, images)


def heavy_blur(images: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with sigma = max(H, W) / 8 (reflect padding): shapes and textures gone, colours kept.

    The same kernel, padding and result as torchvision's `gaussian_blur` (a test holds it to 1e-5), but as
    two 1-D passes: torchvision convolves with the 2-D outer product, k^2 multiply-adds per pixel, and at
    224 px sigma is 28 and k = 169, so one batch of 32 images cost seconds; two passes cost 2k.
    """
    h, w = images.shape[-2:]
    sigma = max(h, w) / 8.0
    kernel = int(2 * round(3 * sigma) + 1)
    kernel = min(kernel, 2 * (min(h, w) // 2) - 1)
    half = (kernel - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel, dtype=torch.float32, device=images.device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    weights = (pdf / pdf.sum()).to(images.dtype)
    return separable_blur(images, weights, kernel // 2)


def control_masks(region: torch.Tensor, *, tries: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal-area controls: each mask rolled by the random shift (of `tries`) that overlaps it least.

    Returns (controls (B, H, W) bool, overlap fraction of the region per image). The shifts come from a
    seeded torch generator; the rolls and overlaps run in numpy, single-threaded: these are small boolean
    ops, and torch's intra-op threads cost 30x their work on a busy 2-core machine (bench/README.md).
    """
    gen = torch.Generator().manual_seed(seed)
    b, h, w = region.shape
    dy = torch.randint(0, h, (tries,), generator=gen)
    dx = torch.randint(0, w, (tries,), generator=gen)
    mask = region.bool().cpu().numpy()
    best = mask.copy()
    best_overlap = np.full(b, np.inf)
    for y, x in zip(dy.tolist(), dx.tolist()):
        shifted = np.roll(mask, (y, x), axis=(1, 2))
        overlap = np.count_nonzero((shifted & mask).reshape(b, -1), axis=1).astype(np.float64)
        better = overlap < best_overlap
        best[better] = shifted[better]
        best_overlap = np.minimum(best_overlap, overlap)
    size = np.maximum(np.count_nonzero(mask.reshape(b, -1), axis=1), 1).astype(np.float64)
    return (torch.from_numpy(best).to(region.device),
            torch.from_numpy(best_overlap / size).float())


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax class, softmax probabilities) for images in [0, 1], batched, on the model's device."""
    device = _device_of(model)
    preds, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start:start + batch_size].to(device))
        p = logits.float().softmax(dim=1)
        probs.append(p.cpu())
        preds.append(p.argmax(dim=1).cpu())
    return torch.cat(preds), torch.cat(probs)


def effects(base: np.ndarray, region: np.ndarray, control: np.ndarray, labels: np.ndarray, *,
            n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy drop, flip rate, their CIs, for the region and the control, plus the paired exact test."""
    n = int(base.size)
    out = {"n": n}
    if n == 0:
        return {**out, "accuracy_before": None, "accuracy_drop": None, "flip_rate": None, "p_value": None}
    ok_base = base == labels
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n)) if n_boot and n > 1 else None
    out["accuracy_before"] = float(ok_base.mean())
    for name, pred in (("region", region), ("control", control)):
        ok = pred == labels
        drop = ok_base.astype(float) - ok.astype(float)
        flips = pred != base
        stats = {
            "accuracy_after": float(ok.mean()),
            "accuracy_drop": float(drop.mean()),
            "accuracy_drop_ci": _boot_ci(drop, idx, level),
            "flip_rate": float(flips.mean()),
            "flip_rate_ci": list(wilson_interval(int(flips.sum()), n, level=level)),
        }
        if name == "region":
            out.update(stats)
        else:
            out["control"] = stats
    region_flip, control_flip = region != base, control != base
    b = int((region_flip & ~control_flip).sum())
    c = int((~region_flip & control_flip).sum())
    out["discordant"] = [b, c]
    out["p_value"] = mcnemar_exact_greater(b, c)
    out["test"] = "exact one-sided McNemar on flips (region vs equal-area control)"
    out["accuracy_discordant"] = list(losses_discordant(region, control, labels))
    out["p_value_accuracy"] = mcnemar_exact_greater(*out["accuracy_discordant"])
    return out


def losses_discordant(region: np.ndarray, control: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """(b, c): images the region's variant gets wrong and the control's gets right, and the reverse; their
    difference over n is the net accuracy drop."""
    wrong_region, wrong_control = region != labels, control != labels
    return int((wrong_region & ~wrong_control).sum()), int((~wrong_region & wrong_control).sum())


def mcnemar_exact_greater(b: int, c: int) -> float:
    """P(X >= b) for X ~ Binomial(b + c, 1/2): region flips more often than its control."""
    if b + c == 0:
        return 1.0
    from scipy.stats import binom

    return float(binom.sf(b - 1, b + c, 0.5))


def resize_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize of (B, h, w) masks (bool or integer ids) to `size`."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    out = F.interpolate(masks[:, None].float(), size=tuple(size), mode="nearest")[:, 0]
    return out.bool() if masks.dtype == torch.bool else out.to(masks.dtype)


def swap_donors(labels: np.ndarray, has_region: np.ndarray, *, seed: int = 0, pointing: np.ndarray | None = None,
                strength: np.ndarray | None = None, same_class: bool = False) -> np.ndarray:
    """Per image, the index of a donor of another class (one that has the region when any does), or -1.

    `pointing` (B,) the class each image's region looks like (`region_pointing`) and `strength` (B,) how
    clearly: the donor is then drawn among those whose region points at the donor's own class, the more
    clearly half of them. A random donor of another class carries a cue that points at the recipient's own
    class as often as the data's correlation allows (a fifth of them at rho 0.8), and its swap tests nothing:
    the model that reads the cue keeps its answer. `same_class`: a donor of the recipient's class (another
    image), whose region points at that class when the pointing is given: the same-class swap, the control
    that moves the region without moving its class (`same_class_effects`)."""
    labels, has_region = np.asarray(labels), np.asarray(has_region, bool)
    rng = np.random.default_rng(seed)
    donors = np.full(len(labels), -1, dtype=np.int64)
    index = np.arange(len(labels))
    for i, label in enumerate(labels):
        others = np.flatnonzero((labels == label) & (index != i)) if same_class else np.flatnonzero(labels != label)
        with_region = others[has_region[others]]
        pool = with_region if len(with_region) else others
        if pointing is not None and len(pool):
            aimed = pool[np.asarray(pointing)[pool] == labels[pool]]
            if len(aimed):
                pool = aimed if strength is None else aimed[strength[aimed] >= np.median(strength[aimed])]
        if len(pool):
            donors[i] = int(rng.choice(pool))
    return donors


def region_pointing(inputs: torch.Tensor, masks: torch.Tensor, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class each image's region looks like, how clearly: the margin between its nearest and next class
    centroid), from the region's look (`analysis.stats.cue_appearance.appearance`: its mean colour against the
    rest of the image) and class centroids of `targets` (the model's answers, or the labels) over the images
    that hold it. Pixels and answers only, never an intervention's outcome: a test that draws its donors by it
    keeps its level. Images without the region point at -1."""
    from analysis.stats.cue_appearance import appearance

    features, present = appearance(inputs.numpy(), masks.numpy())
    targets = np.asarray(targets)
    pointing, strength = np.full(len(targets), -1), np.zeros(len(targets))
    classes = np.unique(targets[present]) if present.any() else []
    if len(classes) < 2:
        return pointing, strength
    x = features[present]
    scale = np.where(x.std(0) > 1e-9, x.std(0), 1.0)
    centroids = np.stack([x[targets[present] == c].mean(0) for c in classes]) / scale
    distance = np.sqrt((((features / scale)[:, None] - centroids[None]) ** 2).sum(-1))
    order = np.sort(distance, axis=1)
    pointing = np.where(present, np.asarray(classes)[distance.argmin(1)], -1)
    strength = np.where(present, order[:, 1] - order[:, 0], 0.0)
    return pointing, strength


def swap_variants(images: torch.Tensor, region: torch.Tensor, donors: np.ndarray, *, control_tries: int = 16,
                  seed: int = 0, keep_out: torch.Tensor | None = None, control: str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(swapped images, swapped control images, keep, control kind) for images (B, 3, H, W) and region (B, H, W).

    Pixels in region_i | region_donor come from the donor (see the module docstring); the control swaps
    the same donor's pixels under the union mask rolled away from itself ("equal-area"). `keep`: images with
    a donor and a non-empty union. `keep_out` (B, H, W) bool (the recipient's core): never swapped, so a cue
    transplanted at the donor's place cannot cover the recipient's object (a flip would then be the core's).
    When the least-overlapping roll still overlaps the union by more than `MAX_CONTROL_OVERLAP` on average over
    the kept images (a background) and the core is known, the swapped pixels are those that are the region in
    *both* images (the union would carry the donor's other regions, its cue among them, into the swap), and
    the control is the *core swap* ("core": core_i | core_donor from the donor, the donor's object
    transplanted): as the fill's core control, it asks whether predictions follow the donor's region more
    than the donor's object, which a model that uses the object answers no; a rolled background would swap
    mostly the same background and hide any effect. `control` ("equal-area" or "core") imposes the kind (a
    later look of the sequential sample keeps the first look's).
    """
    has_donor = torch.as_tensor(donors >= 0)
    index = torch.as_tensor(np.where(donors >= 0, donors, np.arange(len(donors))))
    donor_images = images[index]
    union = (region | region[index]) & has_donor[:, None, None]
    if keep_out is not None:
        union &= ~keep_out.bool()
    controls, overlap = control_masks(union, tries=control_tries, seed=seed + 1)
    keep = union.flatten(1).any(1)
    kind = "equal-area"
    if keep_out is not None and (control == "core" if control else overlaps_itself(overlap, keep)):
        # a background: only the pixels that are background in both images. The union would take in the
        # donor's other regions (its cue, where the recipient has background) and cover the recipient's:
        # a swap of the scene around them that is really a swap of the cue.
        union = region & region[index] & has_donor[:, None, None] & ~keep_out.bool()
        keep = union.flatten(1).any(1)
        core = keep_out.bool()
        controls, kind = (core | core[index]) & has_donor[:, None, None], "core"
    swapped = torch.where(union[:, None], donor_images, images)
    control = torch.where(controls[:, None], donor_images, images)
    return swapped, control, keep, kind


def towards_donor(base: np.ndarray, after: np.ndarray, donor_labels: np.ndarray) -> np.ndarray:
    """Per image: the prediction moved to the donor's class (it was not that class before)."""
    return (after == donor_labels) & (base != donor_labels)


def swap_effects(base: np.ndarray, region: np.ndarray, control: np.ndarray, labels: np.ndarray,
                 donor_labels: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """`effects` of a swap plus the shortcut's signature: flips towards the donor's class, region vs control.

    `p_value` is the exact one-sided McNemar on towards-donor flips (region vs control)."""
    out = effects(base, region, control, labels, n_boot=n_boot, seed=seed)
    if not out["n"]:
        return {**out, "towards_donor_rate": None}
    to_region, to_control = towards_donor(base, region, donor_labels), towards_donor(base, control, donor_labels)
    n = int(base.size)
    out["towards_donor_rate"] = float(to_region.mean())
    out["towards_donor_rate_ci"] = list(wilson_interval(int(to_region.sum()), n))
    out["control"]["towards_donor_rate"] = float(to_control.mean())
    b, c = int((to_region & ~to_control).sum()), int((~to_region & to_control).sum())
    out["discordant"] = [b, c]
    out["p_value"] = mcnemar_exact_greater(b, c)
    out["test"] = "exact one-sided McNemar on flips towards the donor's class (region swap vs control swap)"
    return out


def same_class_effects(base: np.ndarray, swapped: np.ndarray, same: np.ndarray, labels: np.ndarray) -> dict:
    """The same-class swap beside the cross-class one, per image: {n, accuracy_drop (same-class swap),
    flip_rate, cross_accuracy_drop, net_effect (cross minus same), discordant, p_value}.

    Moving the region between two images of one class keeps what it says about the class, so what it costs is
    what any paste of that region costs (its seams, an object cut in two). A shortcut's cross-class swap costs
    more than that; a region whose same-class swap costs as much is sensitive to pasting, not read for the
    class. `p_value`: exact one-sided McNemar on answers lost to the cross-class swap and kept under the
    same-class one, against the reverse."""
    n = int(base.size)
    if not n:
        return {"n": 0, "accuracy_drop": None, "net_effect": None, "p_value": None}
    right, cross_right, same_right = base == labels, swapped == labels, same == labels
    b, c = losses_discordant(swapped, same, labels)
    return {"n": n, "accuracy_drop": float(right.mean() - same_right.mean()),
            "flip_rate": float((same != base).mean()),
            "flip_rate_ci": list(wilson_interval(int((same != base).sum()), n)),
            "cross_accuracy_drop": float(right.mean() - cross_right.mean()),
            "net_effect": float(same_right.mean() - cross_right.mean()), "discordant": [b, c],
            "p_value": mcnemar_exact_greater(b, c),
            "test": "exact one-sided McNemar on correct predictions lost (cross-class swap vs same-class swap)"}


def _boot_ci(values: np.ndarray, idx: np.ndarray | None, level: float) -> list[float]:
    if idx is None:
        return [float(values.mean())] * 2
    alpha = (1 - level) / 2
    means = values[idx].mean(axis=1)
    return [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))]


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
