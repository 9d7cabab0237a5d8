"""A second explainer for taggers and segmenters: per (tag / class, region), the lift another explainer family
gives, so a tagger's or segmenter's finding does not rest on one method's quirks (the classifier's rule,
`analysis.evidence.stage.second_explainer_lifts`, per target instead of per class).

Why per target: a tagger explains each tag of an image and a segmenter each class, with their own maps; the
region a finding names is about one target, so the check must be too. The method is the classifier's choice
(`analysis.evidence.stage.second_method`: CAM -> plain gradients, gradients -> Grad-CAM where layers are
reachable). Plain gradients take class indices only, so a segmenter's target (its class's logits summed over
its pixels, `explainers.targets.SegmentationTarget`) is given to them as a model whose output is that sum per
class (`PixelSums`): the same score, one index per row.

The maps are computed on the first `n_images` images of the interventions' evidence sample, for every
(image, target) the run explained there; the result reads like the classifier's `second_explainer` (method,
n) with `targets: {target: {region: {mass_mean, area_mean, lift, lift_ci, n}}}`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from analysis.evidence.intervention import resize_masks
from analysis.evidence.stage import load_subset, sample_images, second_method
from analysis.runs.tasks.classification import region_rows
from analysis.stats.aggregate import slice_stats

N_IMAGES = 32


class PixelSums(nn.Module):
    """A segmenter as (B, C) scores: each class's logits summed over that row's fixed pixels (`masks` (B, h, w)),
    what `SegmentationTarget` scores, for explainers that take class indices."""

    def __init__(self, module: nn.Module, masks: torch.Tensor):
        super().__init__()
        self.module, self.masks = module, masks

    def forward(self, x):
        from explainers.targets import segmentation_logits

        logits = segmentation_logits(self.module(x)).float()
        return (logits * self.masks.to(logits.device, logits.dtype)[:, None]).sum(dim=(2, 3))


def explained_targets(store, task: str, ids) -> list[tuple[int, int, str]]:
    """(image id, target index, target name) the run explained, for the images `ids`, in their order."""
    table = store.table("tags" if task == "multilabel" else "segments")
    if table.empty:
        return []
    key, idx = ("tag", "tag_idx") if task == "multilabel" else ("class", "class_idx")
    chosen = table[table["target"].astype(bool)]
    order = {int(i): k for k, i in enumerate(ids)}
    rows = [(int(i), int(j), str(n)) for i, j, n in chosen[["image_id", idx, key]].itertuples(index=False)
            if int(i) in order]
    return sorted(rows, key=lambda r: (order[r[0]], r[1]))


def target_masks(loaded, dataset, batch, rows: list[int], classes: list[int], source: str) -> torch.Tensor:
    """(M, h, w) float: the pixels each segmentation target is summed over (predicted or true), at the logits'
    resolution, as the run's own explain pass chose them."""
    from explainers.targets import segmentation_logits

    with torch.no_grad():
        logits = segmentation_logits(loaded.module(batch.inputs[rows]))
    size = tuple(logits.shape[-2:])
    if source == "gt":
        by_id = {int(item.image_id): item for item in dataset.items}
        truth = torch.cat([resize_masks(torch.as_tensor(np.asarray(dataset.load_target(by_id[int(batch.ids[r])]),
                                                                   np.int64))[None], size) for r in rows])
    else:
        truth = logits.argmax(1).cpu()
    return (truth == torch.as_tensor(classes)[:, None, None]).float()


def make_second(loaded, method: str, module: nn.Module, layer_name: str | None = None):
    from explainers.registry import make_explainer

    kwargs = {"layer": loaded.layer(layer_name or loaded.target_layer_name())} if method == "gradcam" else {}
    return make_explainer(method, module, **kwargs)


def target_second_explainer(loaded, dataset, store, method: str, regions, *, task: str, seed: int,
                            max_images: int, source: str = "pred", layer_name: str | None = None, n_images: int = N_IMAGES,
                            batch_size: int = 32, n_boot: int = 500) -> dict:
    """`{method, n, targets: {name: {region: {...lift...}}}}`, or `{}` when no other family can run.

    `regions`: the run's region spec (`analysis.runs.tasks.classification.region_spec`, None: the 3x3 grid);
    `max_images`: the evidence sample's cap, so the images are the first of the interventions' sample;
    `source`: a segmenter's target pixels ("pred" or "gt", the run's `target`); `layer_name`: the run's `layer`
    parameter, the layer a Grad-CAM second explainer hooks (default: the card's or the detected one)."""
    from explainers.targets import TagTarget

    second = second_method(method, loaded)
    images = store.images()
    if second is None or images.empty:
        return {}
    batch = load_subset(loaded, dataset, sample_images(images, seed, max_images).head(n_images))
    if regions is not None and batch.masks is None:  # annotated regions, but a mask could not be read
        return {}
    targets = explained_targets(store, task, batch.ids)
    if not targets:
        return {}
    row_of = {int(i): r for r, i in enumerate(batch.ids)}
    rows = [row_of[i] for i, _, _ in targets]
    device = next((p.device for p in loaded.module.parameters()), torch.device("cpu"))
    maps = []
    for start in range(0, len(rows), batch_size):
        part, idx = rows[start:start + batch_size], [j for _, j, _ in targets[start:start + batch_size]]
        x = batch.inputs[part].to(device)
        if task == "segmentation":
            module = PixelSums(loaded.module, target_masks(loaded, dataset, batch, part, idx, source))
            explainer = make_second(loaded, second, module, layer_name)
        else:
            explainer = make_second(loaded, second, loaded.module, layer_name)
        maps.append(explainer.explain(x, TagTarget(torch.as_tensor(idx))).maps.detach().float().cpu())
    maps = torch.cat(maps)
    out: dict[str, dict] = {}
    for name in dict.fromkeys(n for _, _, n in targets):
        mine = [m for m, t in enumerate(targets) if t[2] == name]
        shares = [list(region_rows(m, maps[m], None if batch.masks is None else batch.masks[rows[m]], regions))
                  for m in mine]
        names = [r["region"] for r in shares[0]]
        mass = np.array([[r["mass"] for r in s] for s in shares])
        area = np.array([[r["area"] for r in s] for s in shares])
        stats = slice_stats(mass, area, n_boot=n_boot, seed=seed)
        out[name] = {region: {"mass_mean": float(stats["mass_mean"][j]), "area_mean": float(stats["area_mean"][j]),
                              "lift": _finite(stats["lift"][j]),
                              "lift_ci": [_finite(stats["lift_ci_low"][j]), _finite(stats["lift_ci_high"][j])],
                              "n": len(mine)}
                     for j, region in enumerate(names)}
    return {"method": second, "n": int(len(set(rows))), "n_maps": len(targets), "targets": out}


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
