"""The evidence stage of a classifier's run: what turns "the maps point at X" into "the model uses X".

Run in the worker after the maps (the model is already loaded there). `compute_evidence` draws the evidence
sample and asks the checks registry (`analysis.evidence.checks`) which checks apply to this model and data; the
`run_*` functions below are the registry's runners for classification, and the checks that do not apply (a
black box's sanity check, region Shapley not asked for) are recorded under `not_judged` with the reason.
For a subset of the run's images:
- interventions: every shortcut candidate (a non-core region whose lift is > 1 overall or for a class;
  grid regions when the dataset has no masks; regions discovered from the maps that follow a moving cue,
  `analysis.stats.discovered_regions`) is filled *and* swapped with another class's pixels, each against
  an equal-area control, on a sample that grows in chunks until the effect is decided
  (`analysis.evidence.sequential_interventions`);
- a second explainer from another family (CAM <-> input gradients) recomputes region lifts, so a flag
  does not rest on one method's quirks;
- the run's explainer goes through the model-randomisation sanity check (`analysis.evidence.sanity`) on a few images;
- deletion / insertion AUC of the run's stored maps (`analysis.evidence.faithfulness`);
- image properties (`analysis.evidence.property_stage`): the model-free screen of sharpness, brightness,
  contrast, colour cast, noise and the manifest's numeric columns against the labels, and property
  interventions (blur / brighten / warm the other classes' images against equal-size controls); run
  parameter `properties=false` skips them;
- opt-in (`region_shapley=N`): region-level Shapley values on N images (`analysis.evidence.region_shapley`).
The prediction-only forwards (interventions, faithfulness) run on a BatchNorm-folded copy of the model
(`explainers.loading.models.folded_for_prediction`, 14% faster on a resnet).
The result is JSON-able; the store writes it as evidence.json and `analysis.report.flags` reads it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from analysis.stats.aggregate import region_matrix, slice_stats
from analysis.evidence.faithfulness import deletion_insertion
from analysis.report.flags import effective_roles
from analysis.report.policy import policy_of
from analysis.evidence import intervention_cache
from analysis.evidence.intervention import resize_masks
from analysis.evidence.property_stage import property_evidence
from analysis.evidence.region_shapley import shapley_evidence
from analysis.evidence.sequential_interventions import run_trials, summarise
from analysis.stats.cue_appearance import cue_test
from analysis.stats.discovered_regions import discover_regions, searchable_pixels
from analysis.stats.regions import grid_regions, masked_shares, region_shares
from analysis.evidence.sanity import MAX_IMAGES as SANITY_IMAGES, model_randomisation
from analysis.evidence.checks import EvidenceContext, Subject, has_weights, run_checks
from explainers.base import is_black_box
from explainers.loading.models import folded_for_prediction

POLICY = policy_of("classification")
EVIDENCE_MEMORY = 2 * 1024 ** 3  # bytes the decoded evidence sample (inputs and masks) may hold


def evidence_sample_size(n_images: int, input_size: tuple[int, int], *, memory: int = EVIDENCE_MEMORY) -> int:
    """How many of a run's images the evidence sample decodes when the user gave no `evidence_images`: all of
    them while their float inputs and int64 masks fit in `memory` (2 GiB: ~2,100 images at 224 px, ~26,000 at
    64 px), else as many as fit. The sample is held decoded because the sequential interventions revisit its
    rows at every look; a 10,000-image audit at 224 px held ~10 GB and was killed (issue 26). Past ~2,000
    images the sequential design has long decided any effect it can (it stops at 400 usable pairs per look)."""
    height, width = (int(v) for v in input_size)
    per_image = height * width * (3 * 4 + 8)
    return max(1, min(int(n_images), int(memory // per_image)))


def compute_evidence(loaded, dataset, store, *, method: str, layer_name: str | None = None, seed: int = 0,
                     max_images: int | None = None, chunk: int = 100, params: dict | None = None, fill: str = "mean",
                     second_images: int = 64, sanity_images: int = SANITY_IMAGES, faithfulness_images: int = 32,
                     faithfulness_steps: int = 8, batch_size: int = 32, n_boot: int = 1000, alpha: float = 0.05,
                     threshold: float = POLICY.min_effect, discover: bool = True, on_stage=None, region_shapley: int = 0,
                     cache_dir=None, model_key: str | None = None, properties: bool = True) -> dict:
    """Evidence dict (keys: interventions, discovered_regions, sequential, second_explainer, sanity,
    faithfulness, config; region_shapley when `region_shapley` > 0 images are asked for). `max_images` caps
    the sequential sample (run parameter `evidence_images`); None (the default): every image the run
    explained that fits the decoded sample's memory (`evidence_sample_size`), so a region whose effect is
    undecided keeps sampling while the run has images (a fixed cap of 400 left a 7.8-point reliance undecided
    at 300 images, issue 25). Regions decided early stop early, so
    the cost grows only with what stays undecided.

    Faithfulness curves stop at `faithfulness_steps` (8; the `auc_error` of the last halving is reported
    beside the AUCs, which are reported, never flagged), each curve at the steps it needs, on 8 images
    doubled (16, up to `faithfulness_images`) only while a verdict is undecided: at 1,000 images the fixed
    16-step curves of 32 images cost ~2x the whole explainer pass (`bench.evidence`), these ~0.1x. The second
    explainer is sized the same way (`second_explainer_lifts`).

    `on_stage(name)` is told when each part starts ("second explainer", "sanity", "faithfulness", "region
    Shapley"), for the progress a person watches. With `cache_dir` and `model_key` (the registered model's
    id), the interventions of an earlier audit of the same model on the same sample are reused
    (`analysis.evidence.intervention_cache`)."""
    images = store.images()
    out = {"config": {"method": method, "seed": seed, "fill": fill, "max_images": max_images, "chunk": chunk},
           "interventions": {}, "discovered_regions": [], "sequential": {}, "second_explainer": {},
           "sanity": {}, "faithfulness": {}}
    if images.empty:
        return out
    max_images = evidence_sample_size(len(images), loaded.card.input_size) if max_images is None else max_images
    out["config"]["max_images"] = max_images
    batch = load_subset(loaded, dataset, sample_images(images, seed, max_images, in_image_order=False))
    labels = batch.images_frame["label_idx"].to_numpy().astype(np.int64)
    regions = store.regions()
    annotated = "region_id" in regions.columns and bool((regions["region_id"] >= 0).any())
    subject = Subject("classification", model_format=getattr(loaded, "format", ""),
                      black_box=is_black_box(loaded.module) or not has_weights(loaded.module),
                      region_masks=annotated and batch.masks is not None,
                      n_classes=len(set(labels.tolist())) if len(batch.inputs) else 0,
                      wants={"properties": properties, "region_shapley": region_shapley})
    context = EvidenceContext(subject, loaded, dataset, store, method, params or {}, seed, batch_size, layer_name,
                              options={"fill": fill, "chunk": chunk, "alpha": alpha, "threshold": threshold,
                                       "n_boot": n_boot, "discover": discover, "cache_dir": cache_dir,
                                       "model_key": model_key, "second_images": second_images,
                                       "sanity_images": sanity_images, "faithfulness_images": faithfulness_images,
                                       "faithfulness_steps": faithfulness_steps, "region_shapley": region_shapley,
                                       "on_stage": on_stage or (lambda name: None)},
                              state={"batch": batch, "labels": labels, "regions": regions, "annotated": annotated,
                                     "predictor": folded_for_prediction(loaded.module, batch.inputs[:2])
                                     if len(batch.inputs) else loaded.module, "trials": []})
    return run_checks(context, out, on_stage)


def run_interventions(ctx: EvidenceContext) -> dict:
    """Fill and swap every candidate region (annotated, grid, discovered from the maps) against its control, on a
    sample that grows until each effect is decided; with `cache_dir`, an earlier audit's of the same model."""
    batch, labels, regions, annotated = (ctx.state[k] for k in ("batch", "labels", "regions", "annotated"))
    o, store, seed, on_stage = ctx.options, ctx.store, ctx.seed, ctx.options["on_stage"]
    fill, chunk, alpha, threshold, n_boot = o["fill"], o["chunk"], o["alpha"], o["threshold"], o["n_boot"]
    out = {"interventions": {}, "discovered_regions": [], "sequential": {}}
    core = core_masks(batch, regions)
    trials = ctx.state["trials"]
    for region in candidate_regions(store.images(), regions):
        masks = region_masks(batch, region)
        if masks is not None and masks.any():
            trials.append({"name": region["name"], "masks": masks})
    # Discovery runs with and without masks: alongside masks only outside the core and the object-sized
    # annotated regions (cues nobody annotated), with components touching the core dropped.
    if o["discover"] and len(batch.inputs) and (not annotated or batch.masks is not None):
        found = discovered_regions(batch, store, regions, core, {t["name"]: t["masks"].numpy() for t in trials},
                                   seed=seed, n_boot=n_boot)
        out["discovered_regions"] = [{k: v for k, v in d.items() if k != "masks"} for d in found]
        trials += [{"name": d["name"], "masks": torch.as_tensor(d["masks"])} for d in found]
        ctx.state["discovered"] = {d["name"] for d in found}
    if not trials:
        return out
    slices = evidence_slices(batch.images_frame)
    appearance = {}
    if not annotated:  # no masks: is each candidate the object (where the model looks) or a cue beside it?
        appearance = {t["name"]: cue_test(batch.inputs.numpy(), t["masks"].numpy(), labels,
                                          clean_predictions(batch), seed=seed) for t in trials}
    key = cached = None
    if o["cache_dir"] is not None and o["model_key"]:
        arrays = {"inputs": batch.inputs, "labels": labels, **{f"slice {k}": v for k, v in slices.items()},
                  **{f"mask {t['name']}": t["masks"] for t in trials}, **({} if core is None else {"core": core})}
        key = intervention_cache.cache_key(o["model_key"], arrays, {
            "regions": [t["name"] for t in trials], "fill": fill, "chunk": chunk, "alpha": alpha,
            "threshold": threshold, "seed": seed, "batch_size": ctx.batch_size, "n_boot": n_boot})
        cached = intervention_cache.load(o["cache_dir"], key)
    if cached is not None:
        out["interventions"] = cached["interventions"]
        out["sequential"] = cached["sequential"]
    else:
        out["interventions"], design = intervene(
            ctx.state["predictor"], batch, labels, trials, appearance, slices, core=core, fill=fill, chunk=chunk,
            alpha=alpha, threshold=threshold, seed=seed, batch_size=ctx.batch_size, n_boot=n_boot,
            on_look=lambda k, n, used, active: on_stage(
                f"interventions, look {k} of {n} ({used} images, {active} region(s) undecided)"))
        out["sequential"] = design
        if key is not None:
            intervention_cache.save(o["cache_dir"], key, {"interventions": out["interventions"],
                                                          "sequential": design})
    for d in out["discovered_regions"]:
        out["interventions"][d["name"]]["discovered"] = True
    for name, found in appearance.items():
        out["interventions"][name]["appearance"] = found
    out["sequential"] = {**out["sequential"], **median_n(out["interventions"])}
    return out


def run_properties(ctx: EvidenceContext) -> dict:
    """The image-property screen and interventions (`analysis.evidence.property_stage`)."""
    batch = ctx.state["batch"]
    frame = batch.images_frame
    attributes = [{c[len("attr."):]: str(v) for c, v in row.items()}
                  for row in frame[[c for c in frame.columns if c.startswith("attr.")]].to_dict("records")]
    return {"properties": property_evidence(ctx.state["predictor"], batch.inputs, ctx.state["labels"],
                                            list(ctx.loaded.card.classes), attributes=attributes,
                                            base_predictions=clean_predictions(batch), seed=ctx.seed,
                                            batch_size=ctx.batch_size)}


def run_second_explainer(ctx: EvidenceContext) -> dict:
    """Region lifts of an explainer of another family (`second_method`), discovered regions included."""
    second = second_method(ctx.method, ctx.loaded)
    if second is None:
        return {}
    discovered = ctx.state.get("discovered", set())
    return {"second_explainer": second_explainer_lifts(
        ctx.loaded, ctx.state["batch"], ctx.state["regions"], second, seed=ctx.seed,
        limit=ctx.options["second_images"], batch_size=ctx.batch_size,
        extra={t["name"]: t["masks"].numpy() for t in ctx.state["trials"] if t["name"] in discovered})}


def run_sanity(ctx: EvidenceContext) -> dict:
    """Model randomisation of the run's explainer on the evidence sample's first 8 images, doubled while its
    decision is open, up to `sanity_images` (`analysis.evidence.sanity.model_randomisation`)."""
    batch = ctx.state["batch"]
    k = min(ctx.options["sanity_images"], len(batch.inputs))
    preds = torch.as_tensor(batch.images_frame["target_idx"].to_numpy()[:k].copy(), dtype=torch.long)
    return {"sanity": {"model_randomization": model_randomisation(
        ctx.loaded.module, batch.inputs[:k], ctx.method, layer_name=module_layer_name(ctx.loaded, ctx.layer_name),
        targets=preds, params=ctx.params, seed=ctx.seed, max_stages=8)}}


def run_faithfulness(ctx: EvidenceContext) -> dict:
    """Deletion / insertion AUC of the run's stored maps on the evidence sample's first images."""
    batch, limit = ctx.state["batch"], ctx.options["faithfulness_images"]
    ids, maps = ctx.store.maps(batch.ids)  # the evidence sample's maps only
    if not len(ids):
        return {}
    where = {int(i): j for j, i in enumerate(ids)}
    rows = [r for r in range(len(batch.ids)) if int(batch.ids[r]) in where][:limit]
    if not rows:
        return {}
    stored = torch.as_tensor(maps[[where[int(batch.ids[r])] for r in rows]].astype(np.float32))
    targets = torch.as_tensor(batch.images_frame["target_idx"].to_numpy()[rows], dtype=torch.long)
    return {"faithfulness": {"method": ctx.method, **deletion_insertion(
        ctx.state["predictor"], batch.inputs[rows], stored, targets, batch_size=ctx.batch_size, seed=ctx.seed,
        steps=ctx.options["faithfulness_steps"], min_images=min(8, limit))}}


def run_region_shapley(ctx: EvidenceContext) -> dict:
    """Region-level Shapley values on the first `region_shapley` images (opt-in)."""
    return {"region_shapley": shapley_evidence(ctx.loaded, ctx.state["batch"], ctx.state["regions"],
                                               n_images=ctx.options["region_shapley"], seed=ctx.seed,
                                               batch_size=ctx.batch_size)}


def intervene(predictor, batch: "Subset", labels: np.ndarray, trials: list[dict], appearance: dict, slices: dict,
              *, core, fill, chunk, alpha, threshold, seed, batch_size, n_boot, on_look) -> tuple[dict, dict]:
    """Each region's summarised interventions and the sequential design. Candidates are sampled until decided;
    a mask-free area whose look does not name the class (`appearance[name]["cue"]` False: the object's area)
    gets one look of `chunk` images, which says what removing it costs and is never tested for a flag:
    sampling the object until its (real) effect is decided cost every clean audit its whole sample."""
    base_predictions = clean_predictions(batch)
    out, design = {}, None
    cues = [t for t in trials if (appearance.get(t["name"]) or {}).get("cue", True)]
    areas = [t for t in trials if t not in cues]
    if cues:
        results, base, design = run_trials(predictor, batch.inputs, labels, cues, core=core, fill=fill, chunk=chunk,
                                           alpha=alpha, threshold=threshold, seed=seed, batch_size=batch_size,
                                           base_predictions=base_predictions, on_look=on_look)
        for trial in results:
            out[trial.name] = summarise(trial, base, labels, slices, design, fill=fill, n_boot=n_boot, seed=seed)
    if areas:
        k = min(chunk, len(batch.inputs))
        results, base, first = run_trials(
            predictor, batch.inputs[:k], labels[:k], [{"name": t["name"], "masks": t["masks"][:k]} for t in areas],
            core=None if core is None else core[:k], fill=fill, chunk=chunk, alpha=alpha, threshold=threshold,
            seed=seed, batch_size=batch_size, base_predictions=None if base_predictions is None else
            base_predictions[:k])
        for trial in results:
            out[trial.name] = summarise(trial, base, labels[:k], {name: v[:k] for name, v in slices.items()}, first,
                                        fill=fill, n_boot=n_boot, seed=seed)
        design = {**first, "object_areas": [t["name"] for t in areas]} if design is None else \
            {**design, "forwards": design["forwards"] + first["forwards"], "object_areas": [t["name"] for t in areas]}
    return out, design


def median_n(interventions: dict) -> dict:
    """The median (and largest) number of images a candidate's interventions used: what the sequential sample
    cost in practice, beside the cap it was allowed (the object's areas, one look each, left out)."""
    used = [int((iv.get("sequential") or {}).get("n") or 0) for iv in interventions.values()
            if (iv.get("appearance") or {}).get("cue", True)]
    return {"median_n": float(np.median(used)) if used else None, "max_n": max(used) if used else None}


def clean_predictions(batch: "Subset") -> np.ndarray | None:
    """The main pass's predictions of the sample's images (`pred_idx`), when the store has them all."""
    frame = batch.images_frame
    if "pred_idx" not in frame.columns or frame["pred_idx"].isna().any():
        return None
    return frame["pred_idx"].to_numpy().astype(np.int64)


def evidence_slices(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row selectors for the per-class and per-subgroup tests: {"class=cat": bool (B,), "in_cage=yes": ...}."""
    from analysis.stats.aggregate import attribute_columns

    out = {f"class={c}": (frame["label"].astype(str) == c).to_numpy() for c in sorted(frame["label"].astype(str).unique())}
    for column in attribute_columns(frame):
        for value in sorted(frame[column].dropna().astype(str).unique()):
            out[f"{column}={value}"] = (frame[column].astype(str) == value).to_numpy()
    return out


def discovered_regions(batch: "Subset", store, regions: pd.DataFrame, core: torch.Tensor | None,
                       fixed: dict[str, np.ndarray], *, seed: int, n_boot: int) -> list[dict]:
    """Candidate regions that follow a moving cue (`analysis.stats.discovered_regions`), with their attention.

    Without an annotated core, the grid's middle cell is the core (a corner cue blurred by a coarse map can
    peak inside the wider `centre` ring), and a component more than a quarter inside it is the object's. Alongside masks, candidates lie outside the core and the
    object-sized annotated regions (`searchable_pixels`). Each candidate's lift is reported,
    but it is high by construction (the components were cut from the maps), so only its interventions
    can flag it."""
    import torch.nn.functional as F

    ids, maps = store.maps(batch.ids)  # the evidence sample's maps only
    h, w = batch.inputs.shape[-2:]
    where = {int(i): j for j, i in enumerate(ids)}
    stack = np.zeros((len(batch.ids), h, w), np.float32)
    for r, image_id in enumerate(batch.ids):
        if int(image_id) in where:
            m = torch.as_tensor(maps[where[int(image_id)]].astype(np.float32))[None, None]
            stack[r] = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    # Without masks a component more than a quarter inside the assumed core is the object spilling out of the
    # middle cell (the moving-patch bar's ends: flagged on 2 of 7 clean seeds at 0.75), not a cue beside it
    searchable, max_core_overlap = None, 0.25
    if core is None:
        centre = dict(grid_regions(h, w))["middle-centre"]
        core_np = np.broadcast_to(centre, stack.shape)
    else:
        core_np = core.numpy()
    if batch.masks is not None and (regions["region_id"] >= 0).any():  # alongside masks
        annotated = regions.loc[regions["region_id"] >= 0].drop_duplicates("region_id")
        ids = {int(r): role == "core" for r, role in zip(annotated["region_id"], annotated["role"])}
        core_np = core_np if core is not None else np.zeros(stack.shape, bool)
        searchable, max_core_overlap = searchable_pixels(batch.masks.numpy(), core_np, ids), 0.1
    frame = batch.images_frame
    labels = frame["label_idx"].to_numpy().astype(np.int64)
    names = dict(zip(frame["label_idx"].astype(int), frame["label"].astype(str)))
    classes = [names.get(i, str(i)) for i in range(int(labels.max(initial=0)) + 1)]
    found = discover_regions(stack, batch.inputs.numpy(), labels, core_np, fixed, classes=classes, seed=seed,
                             searchable=searchable, max_core_overlap=max_core_overlap)
    positive = np.clip(stack, 0, None)
    total = positive.reshape(len(stack), -1).sum(1)
    for d in found:
        rows = np.asarray(d["rows"])
        mass = (positive[rows] * d["masks"][rows]).reshape(len(rows), -1).sum(1) / np.maximum(total[rows], 1e-12)
        area = d["masks"][rows].reshape(len(rows), -1).mean(1)
        stats = slice_stats(mass[:, None], area[:, None], n_boot=min(n_boot, 500), seed=seed)
        d["attention"] = {"mass_mean": float(stats["mass_mean"][0]), "area_mean": float(stats["area_mean"][0]),
                          "lift": _finite(stats["lift"][0]),
                          "lift_ci": [_finite(stats["lift_ci_low"][0]), _finite(stats["lift_ci_high"][0])],
                          "n": int(len(rows))}
        d["exemplars"] = [int(batch.ids[r]) for r in d.pop("exemplar_rows")]
        d["image_ids"] = [int(batch.ids[r]) for r in d.pop("rows")]
        d["n_images"] = int(len(batch.ids))
    return found


class Subset:
    """Decoded images (B, 3, H, W) in [0, 1], their masks at input size (or None) and store rows."""

    def __init__(self, ids, inputs, masks, images_frame):
        self.ids, self.inputs, self.masks, self.images_frame = ids, inputs, masks, images_frame


def sample_images(images: pd.DataFrame, seed: int, max_images: int, *, in_image_order: bool = True) -> pd.DataFrame:
    """Up to `max_images` rows of the explained `images`, drawn with `seed` (a resumed run draws the same ones);
    in the store's order, or in the draw's (`in_image_order=False`)."""
    drawn = np.random.default_rng(seed).permutation(len(images))[:max_images]
    return images.iloc[np.sort(drawn) if in_image_order else drawn].reset_index(drop=True)


def load_subset(loaded, dataset, chosen: pd.DataFrame) -> Subset:
    from explainers.preprocess import to_input

    by_id = {int(item.image_id): item for item in dataset.items}
    tensors, masks, keep = [], [], []
    for row, image_id in enumerate(chosen["image_id"].astype(int)):
        item = by_id.get(image_id)
        if item is None:
            continue
        try:
            image, mask = dataset.load(item)
        except Exception:  # the runner already recorded it as skipped
            continue
        tensor = to_input(image, loaded.card)
        tensors.append(tensor)
        if mask is not None:
            mask = resize_masks(torch.as_tensor(np.asarray(mask, dtype=np.int64))[None], tensor.shape[-2:])[0]
        masks.append(mask)
        keep.append(row)
    frame = chosen.iloc[keep].reset_index(drop=True)
    inputs = torch.stack(tensors) if tensors else torch.zeros(0, 3, 1, 1)
    stacked = torch.stack(masks) if masks and all(m is not None for m in masks) else None
    return Subset(frame["image_id"].to_numpy(), inputs, stacked, frame)


def candidate_regions(images: pd.DataFrame, regions: pd.DataFrame) -> list[dict]:
    """Every annotated non-core region, and grid regions with lift > 1 overall or for some class.

    Annotated regions are all tested, whatever their lift: a diffuse shortcut (a background colour, cage
    bars finer than the CAM grid) can drive predictions while the maps put no extra mass on it, and the
    intervention is what reveals it. Grid regions (no masks) are many and anonymous, so only those the
    maps point at are tested (cheap point estimates, no bootstrap).
    """
    matrix = region_matrix(regions, images["image_id"].to_numpy())
    ids = regions.drop_duplicates("region").set_index("region")["region_id"].to_dict()
    best = slice_stats(matrix.mass, matrix.area, n_boot=0)["lift"]
    for cls in images["label"].astype(str).unique():
        rows = (images["label"].astype(str) == cls).to_numpy()
        best = np.fmax(best, slice_stats(matrix.mass[rows], matrix.area[rows], n_boot=0)["lift"])
    roles = effective_roles(matrix.regions, matrix.roles)
    return [{"name": name, "region_id": int(ids[name]), "lift": float(best[j])}
            for j, name in enumerate(matrix.regions)
            if roles[j] != "core" and (ids[name] >= 0 or (np.isfinite(best[j]) and best[j] > 1.0))]


def core_masks(batch: Subset, regions: pd.DataFrame) -> torch.Tensor | None:
    """(B, H, W) bool: the annotated core region(s), the fallback control for regions too large to mirror."""
    core_ids = regions.loc[regions["role"] == "core", "region_id"].unique()
    if batch.masks is None or not len(core_ids) or (core_ids < 0).any():
        return None
    return torch.isin(batch.masks, torch.as_tensor(core_ids, dtype=batch.masks.dtype))


def region_masks(batch: Subset, region: dict) -> torch.Tensor | None:
    """(B, H, W) bool for an annotated region (mask == id) or a grid region (by name)."""
    h, w = batch.inputs.shape[-2:]
    if region["region_id"] >= 0:
        return None if batch.masks is None else batch.masks == region["region_id"]
    grid = dict(grid_regions(h, w))
    if region["name"] not in grid:
        return None
    return torch.as_tensor(grid[region["name"]]).expand(len(batch.inputs), h, w).clone()


def second_method(method: str, loaded) -> str | None:
    """An explainer of another family (the method's declared `family`): a CAM -> plain gradients; anything
    else -> Grad-CAM when layers are reachable; without layers (TorchScript) a gradient method -> occlusion,
    anything else -> plain gradients. A black box (ONNX) runs only perturbation methods: the other one."""
    from explainers.registry import method_class

    family = method_class(method).family
    if is_black_box(loaded.module):  # outputs only: no other family can run
        return "rise" if method == "occlusion" else "occlusion"
    if family == "cam":
        return "saliency"
    if getattr(loaded, "supports_hooks", True):
        return "gradcam"
    return "occlusion" if family == "gradient" else "saliency"


def second_explainer_lifts(loaded, batch: Subset, regions: pd.DataFrame, method: str, *, seed: int,
                           limit: int, batch_size: int, first: int = 32, extra: dict | None = None) -> dict:
    """Region lifts of another explainer on the sample's first images: `first` of them, more (one batch at a
    time, up to `limit`) only while some region's lift CI contains 1, the line `robustness` reads (its
    verdict is lift > 1). At 224 px a backward to the input costs ~3 forwards an image: 64 images were a
    fifth of a 1,000-image Grad-CAM pass, for lifts whose CIs had cleared 1 at 32. `extra`: name -> (B, H, W)
    bool per-image masks of the regions discovered from the maps, measured on the images that hold them (a
    discovered cue had no second opinion, so its finding lost a severity level for want of one)."""
    from explainers.registry import make_explainer
    from explainers.targets import ClassTarget

    kwargs = {"layer": loaded.layer(loaded.target_layer_name())} if method == "gradcam" else {}
    explainer = make_explainer(method, loaded.module, **kwargs)
    device = next((p.device for p in loaded.module.parameters()), torch.device("cpu"))
    limit = min(limit, len(batch.inputs))
    targets = torch.as_tensor(batch.images_frame["target_idx"].to_numpy()[:limit].copy(), dtype=torch.long)
    names = list(dict.fromkeys(regions["region"]))
    ids = regions.drop_duplicates("region").set_index("region")["region_id"].to_dict()
    h, w = batch.inputs.shape[-2:]
    grid = dict(grid_regions(h, w)) if any(ids[name] < 0 for name in names) else None
    cols = [j for j, name in enumerate(names) if grid is None or name in grid]
    stack = np.stack([grid[names[j]] for j in cols]) if grid is not None and cols else None
    region_ids = [int(ids[name]) for name in names]
    extra = {k: np.asarray(v, bool) for k, v in (extra or {}).items()}
    fixed = len(names)
    names = names + list(extra)
    mass, area = np.zeros((limit, len(names))), np.zeros((limit, len(names)))
    n, stats = 0, None
    while n < limit:
        x = batch.inputs[n:min(n + batch_size, limit)].to(device)
        maps = explainer.explain(x, ClassTarget(targets[n:n + len(x)])).maps.detach().cpu()
        for i in range(len(x)):
            if stack is not None:
                mass[n + i, cols], area[n + i, cols] = masked_shares(maps[i], stack)
            elif grid is None and batch.masks is not None:
                mass[n + i, :fixed], area[n + i, :fixed] = region_shares(maps[i], batch.masks[n + i].numpy(),
                                                                         region_ids)
            if extra:
                mass[n + i, fixed:], area[n + i, fixed:] = masked_shares(
                    maps[i], np.stack([m[n + i] for m in extra.values()]))
        n += len(x)
        if n < first and n < limit:  # no look before `first`: no bootstrap either
            continue
        stats = slice_stats(mass[:n], area[:n], n_boot=500, seed=seed)
        if not any(lo <= 1.0 <= hi for lo, hi in zip(stats["lift_ci_low"], stats["lift_ci_high"])
                                  if np.isfinite(lo) and np.isfinite(hi)):
            break
    if stats is None:
        stats = slice_stats(mass, area, n_boot=500, seed=seed)
    return {"method": method, "n": n, "regions": {
        name: {"mass_mean": float(stats["mass_mean"][j]), "area_mean": float(stats["area_mean"][j]),
               "lift": _finite(stats["lift"][j]),
               "lift_ci": [_finite(stats["lift_ci_low"][j]), _finite(stats["lift_ci_high"][j])]}
        for j, name in enumerate(names)}}


def module_layer_name(loaded, layer_name: str | None) -> str | None:
    """`layer_name` is relative to `loaded.net`; the sanity check randomises `loaded.module` in place and
    restores it."""
    if not layer_name:
        return None
    for prefix, module in loaded.module.named_modules():
        if module is loaded.net:
            return f"{prefix}.{layer_name}" if prefix else layer_name
    return layer_name


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None

