"""The detection task: D-RISE per detection, one atomic shard per batch, then the context evidence.

The engine (`analysis.runs.engine`) gives it the guarantees of every task: per-batch shards through
`RunStore`, resume after a kill (images already in a recorded shard are not redone), undecodable images
skipped with the reason, an image on which the detector or D-RISE raises retried alone and skipped, never
the whole run.

What a shard holds for detection (beside the usual `images`, empty `regions`, `skipped`, `maps`):
- `detections.parquet`: one row per detection the detector makes itself (score >= `score_threshold`):
  `image_id, image, det, class, score, x0, y0, x1, y1` (box in the image's pixels), `mass_box, area_box,
  mass_outside, area_outside`, and `mass.<region>, area.<region>` per context region;
- `ground_truth.parquet`: one row per annotated object: `image_id, object, class, x0, y0, x1, y1, found`
  (some detection of its class with IoU >= 0.5 and score >= threshold): recall without the dataset;
- `detection_maps.npz`: `image_ids, dets, maps` (float16, <= 64x64), one D-RISE map per detection;
- `maps.npz`: per image the sum of its detections' maps (what the gallery overlays).
`images` rows: `image_id, image, label` (first object class), `n_objects, n_detections`.

Evidence (`evidence.json`, once all shards are in): the context-fill intervention of
`analysis.evidence.detection_audit` per (class, region) over the explained images, with the control fill and,
where the dataset has boxes, ground-truth recall before / after; and D-RISE's trust checks on the first
`sanity_images` images with detections: the cascading model randomisation of `analysis.evidence.sanity` (D-RISE
maps of the original detections, recomputed as the detector's layers are re-initialised from the output
side; `SANITY_STAGES` stages), and deletion / insertion AUC of `analysis.evidence.faithfulness` for up to
`FAITHFULNESS_DETECTIONS` of those detections, scored by the D-RISE similarity of the detector's output to
the detection. They cost about `sanity_images x (SANITY_STAGES + 1)` images' worth of D-RISE;
`--param sanity_images=0` skips them. A second explainer of another family (plain gradients of each detection's
D-RISE score, `analysis.evidence.detection_second_explainer`) maps the detections of the first `SECOND_IMAGES`
images with context regions (one backward pass per detection; "not applicable" for a detector without gradients).

D-RISE parameters come from the run's params. Defaults are sized for CI on 64x64 images: an 8x8 grid and
a ceiling of 1000 masks, each detection stopping earlier once its map's estimated error is below D-RISE's
`tolerance` (0.3; `--param tolerance=0` uses every mask). The paper (Petsiuk et al. 2021) uses 5000 masks of
a 16x16 grid (the explainer's own ceiling): pass `--param n_masks=5000 --param cells=16` for photographs.
The sanity check's randomised detectors get the original maps' largest count, as RISE's do.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

# torch, torchvision and the D-RISE evidence are imported where a run computes: the task registry (and with it
# this module) is read by the dashboard's process, which never computes a tensor on its pages' first render
from analysis.runs.decoding import prefetched
from analysis.runs.task import SKIPPED_COLUMNS, Prepared, Tables, skip_row
from analysis.store.run_store import REGION_COLUMNS, pool_maps
from explainers.errors import InputError

RUN_PARAMS = ("score_threshold", "fill", "outside_threshold", "min_drop", "sanity_images")  # the rest: D-RISE
DRISE_DEFAULTS = {"n_masks": 1000, "cells": 8, "chunk": 250, "batch_size": 250}
SCORE_THRESHOLD = 0.5
SANITY_IMAGES, SANITY_STAGES, FAITHFULNESS_DETECTIONS = 4, 3, 8
SECOND_IMAGES = 16  # images whose detections the second explainer (plain gradients) maps
DETECTION_METHODS = ("drise",)
EXTRA_TABLES = ("detections", "ground_truth", "detection_maps")  # a detection shard's tables beyond the usual
IMAGE_COLUMNS = ["image_id", "image", "label", "n_objects", "n_detections"]
GROUND_TRUTH_COLUMNS = ["image_id", "object", "class", "x0", "y0", "x1", "y1", "found"]


def settings(run: dict) -> dict:
    """The runner's own parameters, with defaults (also what the report shows)."""
    from analysis.evidence.detection_audit import MIN_DROP, OUTSIDE_THRESHOLD

    params = run.get("params") or {}
    fill = params.get("fill", "surround")
    if not (fill == "surround" or (isinstance(fill, (list, tuple)) and len(fill) == 3
                                   and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in fill))):
        raise InputError(f"parameter fill={fill!r}: use \"surround\" or an RGB triple in [0, 1], e.g. [0.35, 0.55, 0.25]")
    threshold = float(params.get("score_threshold", SCORE_THRESHOLD))
    if not 0 < threshold < 1:
        raise InputError(f"parameter score_threshold={threshold}: must be between 0 and 1")
    sanity_images = params.get("sanity_images", SANITY_IMAGES)
    if not isinstance(sanity_images, int) or sanity_images < 0:
        raise InputError(f"parameter sanity_images={sanity_images!r}: a whole number >= 0 (0 skips the sanity check)")
    return {"score_threshold": threshold, "fill": fill,
            "outside_threshold": float(params.get("outside_threshold", OUTSIDE_THRESHOLD)),
            "min_drop": float(params.get("min_drop", MIN_DROP)), "sanity_images": sanity_images}


def prepare(workspace, run: dict, device: str = "cpu") -> Prepared:
    """The loaded model, detection dataset, D-RISE explainer and `settings`; InputError before any compute."""
    from analysis.data.detection_data import DetectionDataset
    from analysis.runs.methods import check_method_kind
    from explainers.loading.models import load_model
    from explainers.registry import make_explainer

    check_method_kind(run["method"], DetectionTask.model_kind)
    options = settings(run)
    model_row = workspace.model(run["model_id"])
    loaded = load_model(model_row["abspath"], device=device)
    dataset = workspace.open_dataset(run["dataset_id"])
    if not isinstance(dataset, DetectionDataset):
        raise InputError(f"{model_row['name']} is a detection model but dataset {run['dataset_id']} is not a "
                         "detection dataset; give a folder with instances.json (COCO) and images")
    dataset.validate(list(loaded.card.classes))
    params = {**DRISE_DEFAULTS, "seed": int(run["seed"]),
              **{k: v for k, v in (run.get("params") or {}).items() if k not in RUN_PARAMS + ("target", "layer")}}
    try:
        explainer = make_explainer(run["method"], loaded.module, **params)
    except TypeError as exc:  # an unknown keyword
        raise InputError(f"{run['method']}: {exc}; D-RISE takes n_masks, cells, p, seed, chunk, batch_size, center, "
                         f"tolerance, min_masks "
                         f"and the run takes {', '.join(RUN_PARAMS)} (--param KEY=VALUE)") from None
    return Prepared(loaded, dataset, explainer, None, options)


@contextmanager
def small_model_threads(loaded, device: str, max_pixels: int = 128 * 128):
    """One intra-op thread while D-RISE runs a small detector on CPU, restored afterwards.

    D-RISE sends thousands of masked images through the detector and scores each output (NMS, IoU, a max
    over a few boxes): on a 64x64 model those are tiny ops, where extra threads only add synchronisation
    (measured on 2 busy cores: 0.7 ms per masked image with one thread, 3.4 ms with two).
    """
    import torch

    h, w = loaded.card.input_size
    if torch.device(device).type != "cpu" or h * w > max_pixels:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def explain_batch(prepared: Prepared, batch, device: str) -> Tables:
    """One decoded batch (every image decoded) -> the shard's tables (see the module docstring)."""
    import torch

    from analysis.evidence.detection_audit import detection_rows, gt_found

    loaded, explainer, dataset, options = prepared.loaded, prepared.explainer, prepared.dataset, prepared.options
    classes = class_names(loaded)
    region_names = {rid: r.name for rid, r in sorted(dataset.regions.items())}
    skipped = []
    images, dets, gts, det_maps, det_ids, det_idx, image_maps = [], [], [], [], [], [], []
    if batch.inputs is not None:
        inputs = batch.inputs.to(device, non_blocking=True)
        regions = input_regions(batch.masks, inputs.shape[-2:], device)
        outputs = _detect_and_explain(inputs, loaded, explainer, options["score_threshold"])
        h, w = inputs.shape[-2:]
        for k, item in enumerate(batch.items):
            clean, target, score, maps, used = outputs[k]
            if not bool(torch.isfinite(maps).all()):
                skipped.append(skip_row(item, f"{explainer.name} returned a non-finite map (NaN/inf)"))
                continue
            width, height = dataset.image_size(item)
            sx, sy = width / w, height / h
            rows = detection_rows([target], [score], [maps], regions[k:k + 1], region_names, classes,
                                  image_keys=[int(item.image_id)])
            for row, n_masks in zip(rows, used.tolist()):
                row["masks_used"] = n_masks  # D-RISE's stopping rule: the masks this detection's map used
                row["image_id"] = row.pop("image")
                row["image"] = str(item.image)
                row.update(x0=row["x0"] * sx, x1=row["x1"] * sx, y0=row["y0"] * sy, y1=row["y1"] * sy)
            dets.extend(rows)
            boxes, labels = dataset.ground_truth(item)
            scaled = boxes * np.array([1 / sx, 1 / sy, 1 / sx, 1 / sy], np.float32)
            found = gt_found(scaled, labels, {k2: v.cpu() for k2, v in clean.items()}, classes,
                             options["score_threshold"])
            gts.extend({"image_id": int(item.image_id), "object": j, "class": c, "x0": float(b[0]),
                        "y0": float(b[1]), "x1": float(b[2]), "y1": float(b[3]), "found": bool(f)}
                       for j, (b, c, f) in enumerate(zip(boxes.tolist(), labels, found)))
            images.append({"image_id": int(item.image_id), "image": str(item.image), "label": str(item.label),
                           "n_objects": len(labels), "n_detections": len(rows)})
            det_maps.append(maps.cpu())
            det_ids.extend([int(item.image_id)] * len(maps))
            det_idx.extend(range(len(maps)))
            image_maps.append(maps.sum(0).cpu() if len(maps) else torch.zeros(h, w))
    all_det_maps = torch.cat(det_maps) if det_maps else torch.zeros(0, 1, 1)
    return Tables(
        pd.DataFrame(images, columns=IMAGE_COLUMNS), pd.DataFrame(columns=REGION_COLUMNS),
        pool_maps(torch.stack(image_maps)) if image_maps else np.zeros((0, 1, 1), np.float16),
        pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
        {"detections": pd.DataFrame(dets),
         "ground_truth": pd.DataFrame(gts, columns=GROUND_TRUTH_COLUMNS),
         "detection_maps": {"image_ids": np.asarray(det_ids, np.int64), "dets": np.asarray(det_idx, np.int64),
                            "maps": pool_maps(all_det_maps) if len(all_det_maps) else np.zeros((0, 1, 1), np.float16)}})


def empty_tables() -> Tables:
    return Tables(pd.DataFrame(columns=IMAGE_COLUMNS), pd.DataFrame(columns=REGION_COLUMNS),
                  np.zeros((0, 1, 1), np.float16), pd.DataFrame(columns=SKIPPED_COLUMNS),
                  {"detections": pd.DataFrame(), "ground_truth": pd.DataFrame(columns=GROUND_TRUTH_COLUMNS),
                   "detection_maps": {"image_ids": np.zeros(0, np.int64), "dets": np.zeros(0, np.int64),
                                      "maps": np.zeros((0, 1, 1), np.float16)}})


def evidence(store, run: dict, prepared: Prepared, device: str, batch_size: int) -> dict:
    """The context-fill intervention over every explained image and D-RISE's sanity and faithfulness checks
    (`evidence.json`), as the checks registry (`analysis.evidence.checks`) applies them: no interventions without
    context regions, no sanity check on a black box (ONNX: no weights), neither trust check with
    `sanity_images=0`; each check left out is under `not_judged` with its reason. The engine runs it under
    `compute_scope`, the shard loop's thread setting, so a Ray driver's evidence has the same float sums as a
    local run's."""
    from analysis.evidence.checks import EvidenceContext, Subject, has_weights, run_checks
    from explainers.base import is_black_box

    loaded, dataset, options = prepared.loaded, prepared.dataset, prepared.options
    explained = set(store.images()["image_id"].astype(int).tolist())
    items = [item for item in dataset.items if int(item.image_id) in explained]
    subject = Subject("detection", model_format=loaded.format,
                      black_box=is_black_box(loaded.module) or not has_weights(loaded.module),
                      region_masks=bool(dataset.regions), wants={"sanity_images": options["sanity_images"]})
    context = EvidenceContext(subject, loaded, dataset, store, run["method"], {}, int(run["seed"]), batch_size,
                              options={**options, "device": device, "explainer": prepared.explainer},
                              state={"items": items})
    return run_checks(context, {"task": "detection", "settings": options, "interventions": [], "sanity": {},
                                "faithfulness": {}, "n_images": len(items)})


def _evidence_pass(ctx, *, interventions: bool):
    """One pass over the explained images: the context-fill effects (`interventions`) and, on the way, the first
    `sanity_images` images with detections and their detections (`ctx.state["sample"]`), which the trust checks
    explain."""
    import torch

    from analysis.evidence.detection_audit import fill_effects, own_detections

    loaded, dataset, options, device = ctx.loaded, ctx.dataset, ctx.options, ctx.options["device"]
    classes = class_names(loaded)
    region_names = {rid: r.name for rid, r in sorted(dataset.regions.items())} if interventions else {}
    effects, gt_effects, sanity_inputs, sanity_targets = [], [], [], []
    second_inputs, second_targets, second_regions = [], [], []
    for batch in prefetched(dataset, loaded.card, ctx.state["items"], ctx.batch_size):
        if batch.inputs is None or (not region_names and len(sanity_inputs) >= options["sanity_images"]):
            continue
        inputs = batch.inputs.to(device, non_blocking=True)
        h, w = inputs.shape[-2:]
        with torch.no_grad():
            clean = loaded.module(inputs)
        targets, _ = own_detections(clean, options["score_threshold"])
        for k, target in enumerate(targets):
            if len(target) and len(sanity_inputs) < options["sanity_images"]:
                sanity_inputs.append(inputs[k])
                sanity_targets.append(target)
        if not region_names:
            continue
        regions = input_regions(batch.masks, (h, w), device)
        for k, target in enumerate(targets):
            if len(target) and len(second_inputs) < SECOND_IMAGES:
                second_inputs.append(inputs[k])
                second_targets.append(target)
                second_regions.append(regions[k])
        truth = []
        for item in batch.items:
            boxes, labels = dataset.ground_truth(item)
            width, height = dataset.image_size(item)
            truth.append((boxes * np.array([w / width, h / height, w / width, h / height], np.float32), labels))
        e, g = fill_effects(loaded.module, inputs, regions, region_names, targets, classes, clean=clean,
                            fill=options["fill"], score_threshold=options["score_threshold"], seed=ctx.seed,
                            image_keys=[int(it.image_id) for it in batch.items], ground_truth=truth)
        effects.append(e)
        gt_effects.append(g)
    ctx.state["sample"] = (sanity_inputs, sanity_targets)
    ctx.state["second_sample"] = (second_inputs, second_targets, second_regions, region_names, classes)
    return effects, gt_effects


def run_interventions(ctx) -> dict:
    """The checks registry's runner: context-fill effects per (class, region) against the control fill."""
    from analysis.evidence.detection_audit import summarize_interventions

    effects, gt_effects = _evidence_pass(ctx, interventions=True)
    effects_frame = pd.concat(effects, ignore_index=True) if effects else pd.DataFrame(
        columns=["image", "det", "class", "region", "score", "score_fill", "score_control", "found_fill",
                 "found_control"])
    gt_frame = pd.concat(gt_effects, ignore_index=True) if gt_effects else None
    return {"interventions": summarize_interventions(effects_frame, gt_frame, seed=ctx.seed).to_dict("records")}


def run_second_explainer(ctx) -> dict:
    """The checks registry's runner: plain gradients of each detection's D-RISE score (another family than
    D-RISE) on the first images with detections that the intervention pass kept, with their context regions
    (`analysis.evidence.detection_second_explainer`; a black box reads "not applicable" with the reason)."""
    import torch

    from analysis.evidence.detection_second_explainer import detection_second_explainer

    if "second_sample" not in ctx.state:
        _evidence_pass(ctx, interventions=True)
    inputs, targets, regions, region_names, classes = ctx.state["second_sample"]
    if not inputs:
        return {}
    return {"second_explainer": detection_second_explainer(ctx.loaded.module, torch.stack(inputs), targets,
                                                           torch.stack(regions), region_names, classes)}


def _explained_sample(ctx):
    """(images, their detections, D-RISE's maps and mask counts) of the trust checks' sample, computed once;
    None when no image has a detection."""
    import torch

    if "explained" not in ctx.state:
        if "sample" not in ctx.state:
            _evidence_pass(ctx, interventions=False)
        inputs, targets = ctx.state["sample"]
        ctx.state["explained"] = None
        if inputs:
            images = torch.stack(inputs)
            ctx.state["explained"] = (images, targets,
                                      ctx.options["explainer"].explain_detections_with_counts(images, targets))
    return ctx.state["explained"]


def run_sanity(ctx) -> dict:
    """The checks registry's runner: D-RISE under cascading model randomisation (`detection_sanity`)."""
    import torch

    sample = _explained_sample(ctx)
    if sample is None:
        return {}
    images, targets, explained = sample
    # randomised detectors' maps are noise that never converges: they get the originals' largest count
    budget = max(int(u.max()) for u in explained.masks_used if len(u))
    explainer = ctx.options["explainer"]
    return {"sanity": {"model_randomization": detection_sanity(ctx.loaded.module, explainer.fixed_budget(budget),
                                                               images, targets, seed=ctx.seed,
                                                               original=torch.cat(explained.maps))}}


def run_faithfulness(ctx) -> dict:
    """The checks registry's runner: deletion / insertion AUC of D-RISE's maps (`detection_faithfulness`)."""
    sample = _explained_sample(ctx)
    if sample is None:
        return {}
    images, targets, explained = sample
    faithfulness = detection_faithfulness(ctx.loaded.module, images, targets, explained.maps, seed=ctx.seed)
    return {"faithfulness": {**faithfulness, "method": ctx.options["explainer"].name}}


def detection_sanity(detector, explainer, images: torch.Tensor, targets: list, *, seed: int = 0,
                     max_stages: int = SANITY_STAGES, original: torch.Tensor | None = None) -> dict:
    """`analysis.evidence.sanity.randomisation_test` on D-RISE: the maps of the original detections (one per detection),
    recomputed while the detector's layers are re-initialised. `explainer` must wrap `detector` itself."""
    import torch

    from analysis.evidence.sanity import randomisation_test

    return randomisation_test(detector, lambda: torch.cat(explainer.explain_detections(images, targets)),
                              method=explainer.name, n=int(images.shape[0]), seed=seed, max_stages=max_stages,
                              original=original)


def detection_faithfulness(detector, images: torch.Tensor, targets: list, maps: list, *, seed: int = 0,
                           max_detections: int = FAITHFULNESS_DETECTIONS, steps: int = 16) -> dict:
    """Deletion / insertion AUC of D-RISE maps (`analysis.evidence.faithfulness.score_aucs`), one row per detection
    (its image, its map), scored by the D-RISE similarity of the detector's output to that detection."""
    import torch

    from analysis.evidence.faithfulness import score_aucs
    from explainers.detection import DetectionTarget

    rows = [(i, one) for i, target in enumerate(targets) for one in target.split()][:max_detections]
    row_images = images[[i for i, _ in rows]]
    row_maps = torch.cat(maps)[:len(rows)].float().cpu()
    device = images.device

    def score(batch: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        chosen = [rows[int(k)][1] for k in picked]
        masks = None if chosen[0].masks is None else torch.cat([t.masks for t in chosen])
        target = DetectionTarget(torch.cat([t.boxes for t in chosen]), torch.cat([t.probs for t in chosen]), masks)
        return target.to(device)(detector(batch.to(device)))  # score_curves runs without autograd

    result = score_aucs(score, row_images, row_maps, steps=steps, seed=seed)
    return {**result, "unit": "detection", "score": "D-RISE similarity to the explained detection"}


def class_names(loaded) -> list[str]:
    from explainers.loading.architectures import detector_class_names

    return detector_class_names(loaded.card.architecture, loaded.card.classes)


def input_regions(masks: list, size, device) -> torch.Tensor:
    """(B, H, W) long context label maps at the model's input size (nearest), -1 where none."""
    import torch
    import torch.nn.functional as F

    h, w = size
    out = []
    for mask in masks:
        if mask is None:
            out.append(torch.full((h, w), -1, dtype=torch.long))
            continue
        m = torch.as_tensor(np.asarray(mask, dtype=np.int64))
        if tuple(m.shape) != (h, w):
            m = F.interpolate(m[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        out.append(m)
    return torch.stack(out).to(device)


def _detect_and_explain(inputs: torch.Tensor, loaded, explainer, score_threshold: float) -> list:
    import torch

    from analysis.evidence.detection_audit import own_detections

    with torch.no_grad():
        clean = loaded.module(inputs)
    targets, scores = own_detections(clean, score_threshold)
    explained = explainer.explain_detections_with_counts(inputs, targets)
    return [(c, t, s.cpu(), m.float().cpu(), u) for c, t, s, m, u in
            zip(clean, targets, scores, explained.maps, explained.masks_used)]


class DetectionTask:
    """Detectors and instance segmenters (card `task: detection`), explained by D-RISE."""
    name = "detection"
    model_kind = "detector"
    default_method = "drise"
    view = "detection"
    extra_tables = EXTRA_TABLES
    own_dataset_format = True
    dataset_hint = "register a COCO folder (images/, instances.json)"
    run_params = RUN_PARAMS + ("layer",)  # `layer` is ignored: D-RISE needs none

    def check_settings(self, method: str, params: dict) -> None:
        settings({"params": params})

    def takes_dataset(self, path: Path) -> bool:
        from analysis.data.detection_data import is_detection_dataset

        return is_detection_dataset(Path(path))

    def new_run_params(self, params: dict) -> dict:
        return {k: v for k, v in params.items() if k != "target"}  # every detection the model makes is explained

    def prepare(self, workspace, run: dict, device: str) -> Prepared:
        return prepare(workspace, run, device)

    def compute_scope(self, prepared: Prepared, device: str):
        return small_model_threads(prepared.loaded, device)

    def explain_batch(self, prepared: Prepared, batch, device: str) -> Tables:
        return explain_batch(prepared, batch, device)

    def empty_tables(self) -> Tables:
        return empty_tables()

    def evidence(self, store, run: dict, prepared: Prepared, device: str, batch_size: int) -> dict:
        return evidence(store, run, prepared, device, batch_size)

    def findings(self, store, run: dict, *, n_boot: int, seed: int) -> dict:
        from analysis.report.detection_report import detection_findings

        found = detection_findings(store, n_boot=n_boot, seed=seed)
        return {**found, "run": {"settings": found["detection"]["settings"]}}

    def compare(self, stores: list, names: list[str], **options) -> dict:
        from analysis.report.detection_compare import compare_detection_runs

        return compare_detection_runs(stores, names, **options)


TASK = DetectionTask()
