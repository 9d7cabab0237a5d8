"""The classification task: softmax classifiers, one class target per image, region shares per image.

Everything the user can get wrong (labels not in the card's classes, unknown layer, CAM on TorchScript) is
checked in `prepare`, before the first image is explained. One forward per image: for methods whose first
target call is the clean forward (`Explainer.observes_clean_output`, the CAM family), the logits, the
prediction and the predicted-class target all come from the explainer's own forward; other methods (Captum's
take class indices up front) get a no-grad forward for the logits first.

Shard tables: `images` (`image_id, image, label, label_idx, pred, pred_idx, confidence, correct, target_idx,
score`, `attr.<name>` per subgroup attribute, the explainer's per-image budget such as RISE's `masks_used`), `regions` (one row per image x region: annotated regions, or a
3x3 grid when the dataset has no masks), `maps`.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from analysis.runs.task import SKIPPED_COLUMNS, Decoded, Prepared, Tables, attribute_columns, skip_row
from analysis.stats.artifacts import REGION_ARTIFACT_COLUMNS
from analysis.store.run_store import REGION_COLUMNS, pool_maps
from explainers.errors import InputError

# the task's own parameters; the rest go to the explainer
RUN_PARAMS = ("target", "layer", "region_shapley", "evidence_images", "properties")
IMAGE_COLUMNS = ["image_id", "image", "label", "label_idx", "pred", "pred_idx", "confidence", "correct",
                 "target_idx", "score"]


@dataclass
class RegionSpec:
    ids: list[int]
    names: list[str]
    roles: list[str | None]


def settings(params: dict) -> dict:
    """The task's own parameters with defaults; InputError naming the fix for a bad value."""
    target_mode = params.get("target", "pred")
    if target_mode not in ("pred", "label"):
        raise InputError(f"parameter target={target_mode!r}: use 'pred' (predicted class) or 'label'")
    shapley_images = params.get("region_shapley", 0)
    if not isinstance(shapley_images, int) or isinstance(shapley_images, bool) or shapley_images < 0:
        raise InputError(f"parameter region_shapley={shapley_images!r}: give the number of images whose region "
                         "Shapley values the evidence stage computes, e.g. --param region_shapley=32 (0: off)")
    evidence_images = params.get("evidence_images", 1)
    if not isinstance(evidence_images, int) or isinstance(evidence_images, bool) or evidence_images < 1:
        raise InputError(f"parameter evidence_images={evidence_images!r}: the most images the evidence stage "
                         "tests, a whole number >= 1, e.g. --param evidence_images=400")
    if not isinstance(params.get("properties", True), bool):
        raise InputError(f"parameter properties={params['properties']!r}: use true (test image properties such "
                         "as blur and brightness as cues, the default) or false")
    return {"target": target_mode, "region_shapley": shapley_images}


def explainer_params(run: dict) -> dict:
    return {k: v for k, v in (run.get("params") or {}).items() if k not in RUN_PARAMS}


def region_spec(dataset) -> RegionSpec | None:
    """The dataset's annotated regions, or None (grid regions) when it has no masks."""
    regions = getattr(dataset, "regions", None)
    if not regions or not getattr(dataset, "has_masks", True):
        return None
    values = list(regions.values()) if isinstance(regions, dict) else list(regions)
    values.sort(key=lambda r: int(r.id))
    return RegionSpec([int(r.id) for r in values], [str(r.name) for r in values],
                      [getattr(r, "role", None) for r in values])


def region_rows(image_id: int, saliency, mask, regions: RegionSpec | None, on_artifacts=None) -> Iterator[dict]:
    """One row per region of one image's map (`regions` None: the 3x3 grid). `on_artifacts`: the regions'
    (artifact mass, artifact area) from `artifact_shares`, stored as `artifact_mass` / `artifact_area`."""
    from analysis.stats.regions import grid_shares, region_shares

    if regions is not None:
        mass, area = region_shares(saliency, mask, regions.ids)
        names, ids, roles = regions.names, regions.ids, regions.roles
    else:
        names, mass, area = grid_shares(saliency, *saliency.shape[-2:])
        ids, roles = [-1] * len(names), [None] * len(names)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(area > 0, mass / np.where(area > 0, area, 1), np.nan)
    extra = [{}] * len(names)
    if on_artifacts is not None:
        extra = [{"artifact_mass": float(m), "artifact_area": float(a)} for m, a in zip(*on_artifacts)]
    for k, name in enumerate(names):
        yield {"image_id": image_id, "region": name, "region_id": int(ids[k]), "role": roles[k],
               "mass": float(mass[k]), "area": float(area[k]), "lift": float(lift[k]), **extra[k]}


def artifact_shares(saliency, mask, regions: RegionSpec | None, artifacts):
    """(per-region artifact mass, area, image artifact mass, area) at the resolution the shares use: the
    mask's, or the map's for grid regions (`analysis.stats.artifacts`)."""
    import torch

    from analysis.stats.artifacts import masked_artifact_shares
    from analysis.stats.regions import grid_regions, resize_map
    from explainers.registers import artifact_pixels

    if regions is not None:
        mask = np.asarray(mask)
        masks = np.stack([mask == rid for rid in regions.ids])
    else:
        masks = np.stack([m for _, m in grid_regions(*saliency.shape[-2:])])
    size = masks.shape[1:]
    positive = np.clip(resize_map(saliency, size), 0.0, None)
    pixels = artifact_pixels(torch.as_tensor(artifacts)[None], size)[0].numpy()
    return masked_artifact_shares(positive, masks, pixels)


class ClassificationTask:
    name = "classification"
    model_kind = "classifier"
    default_method = "gradcam"
    view = "classification"
    extra_tables: tuple[str, ...] = ()
    own_dataset_format = True
    dataset_hint = ""
    run_params = RUN_PARAMS  # the task's own; the rest are the method's (`explainers.registry.check_params`)

    def check_settings(self, method: str, params: dict) -> None:
        """InputError for a bad value of the task's own parameters, before a run is created."""
        settings(params)

    def takes_dataset(self, path: Path) -> bool:
        return True  # a detection dataset too: its boxes are the object (`analysis.data.box_core`)

    def new_run_params(self, params: dict) -> dict:
        return dict(params)

    def prepare(self, workspace, run: dict, device: str) -> Prepared:
        from analysis.data.box_core import as_classification
        from analysis.runs.methods import check_method_kind
        from explainers.base import refuse_black_box
        from explainers.loading.models import hooks_fix, load_model
        from explainers.registry import make_explainer, method_class

        params = dict(run["params"])
        target_mode = settings(params)["target"]
        check_method_kind(run["method"], self.model_kind)
        model_row = workspace.model(run["model_id"])
        loaded = load_model(model_row["abspath"], device=device)
        dataset = as_classification(workspace.open_dataset(run["dataset_id"]))  # boxes: the object is the core
        dataset.validate(list(loaded.card.classes))

        layer_name = None
        refuse_black_box(method_class(run["method"]), loaded.module)  # gradient/CAM methods on ONNX: the fix, not a crash
        if method_class(run["method"]).needs_layer:
            if not loaded.supports_hooks:
                raise InputError(f"{model_row['path']}: method {run['method']!r} hooks an internal layer, which a "
                                 f"{loaded.format} model does not expose; {hooks_fix(loaded.format)}, or use a "
                                 f"gradient/perturbation method (e.g. --method saliency)")
            layer_name = params.get("layer") or loaded.target_layer_name()
            source = ("given" if params.get("layer") else
                      "card" if getattr(loaded.card, "target_layer", None) else "detected")
            layer = loaded.layer(layer_name)  # InputError naming close names for a typo
            print(f"target layer: {layer_name} ({source})", file=sys.stderr)
            explainer = make_explainer(run["method"], loaded.module, layer=layer, **explainer_params(run))
        else:
            explainer = make_explainer(run["method"], loaded.module, **explainer_params(run))
        return Prepared(loaded, dataset, explainer, layer_name,
                        {"target": target_mode, "classes": list(loaded.card.classes), "regions": region_spec(dataset)})

    def compute_scope(self, prepared: Prepared, device: str):
        return nullcontext()

    def empty_tables(self) -> Tables:
        return Tables(pd.DataFrame(columns=IMAGE_COLUMNS), pd.DataFrame(columns=REGION_COLUMNS),
                      np.zeros((0, 1, 1), np.float16), pd.DataFrame(columns=SKIPPED_COLUMNS))

    def explain_batch(self, prepared: Prepared, batch: Decoded, device: str) -> Tables:
        import torch

        classes, regions = prepared.options["classes"], prepared.options["regions"]
        explainer = prepared.explainer
        label_idx = torch.tensor([classes.index(str(it.label)) for it in batch.items])
        logits, target_idx, result = explain_with_logits(
            batch.inputs.to(device, non_blocking=True), label_idx, prepared.loaded, explainer, prepared.options["target"])
        saliency, scores = result.maps.detach().float().cpu(), result.scores.detach().float().cpu()
        per_image = per_image_extras(result, len(label_idx))
        artifacts = None if result.artifact_tokens is None else result.artifact_tokens.cpu()
        probs = torch.softmax(logits.nan_to_num(0.0), dim=1)
        confidence, pred_idx = probs.max(dim=1)
        # per-image numbers as Python lists once per batch, not a tensor indexing per image and field
        confidence, pred_idx, target_idx, scores = (t.tolist() for t in (confidence, pred_idx, target_idx, scores))
        labels = label_idx.tolist()
        finite_logits = torch.isfinite(logits).flatten(1).all(1).tolist()
        finite_maps = torch.isfinite(saliency).flatten(1).all(1).tolist()
        image_rows, rows, kept, skipped = [], [], [], []
        for k, item in enumerate(batch.items):
            if not finite_logits[k]:
                skipped.append(skip_row(item, "model returned non-finite outputs (NaN/inf)"))
                continue
            if not finite_maps[k]:
                skipped.append(skip_row(item, f"{explainer.name} returned a non-finite map (NaN/inf)"))
                continue
            pred = int(pred_idx[k])
            row = {"image_id": int(item.image_id), "image": str(item.image), "label": str(item.label),
                   "label_idx": int(labels[k]), "pred": classes[pred], "pred_idx": pred,
                   "confidence": float(confidence[k]), "correct": pred == int(labels[k]),
                   "target_idx": int(target_idx[k]), "score": float(scores[k])}
            row.update({name: float(values[k]) for name, values in per_image.items()})
            row.update(attribute_columns(item))
            on_artifacts = None
            if artifacts is not None:  # a token layer: the mass on register-like tokens (`analysis.stats.artifacts`)
                *on_artifacts, on_mass, on_area = artifact_shares(saliency[k], batch.masks[k], regions, artifacts[k])
                row.update({"artifact_tokens": int(artifacts[k].sum()), "artifact_mass": on_mass,
                            "artifact_area": on_area})
            image_rows.append(row)
            rows.extend(region_rows(int(item.image_id), saliency[k], batch.masks[k], regions, on_artifacts))
            kept.append(saliency[k])
        empty = self.empty_tables()
        return Tables(pd.DataFrame(image_rows) if image_rows else empty.images,
                      pd.DataFrame(rows, columns=REGION_COLUMNS + (REGION_ARTIFACT_COLUMNS if artifacts is not None
                                                                    else [])),
                      pool_maps(torch.stack(kept)) if kept else empty.maps,
                      pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))

    def evidence(self, store, run: dict, prepared: Prepared, device: str, batch_size: int) -> dict:
        from analysis.evidence.stage import compute_evidence

        def stage(name: str) -> None:  # the catalog's `runs.stage`, for the CLI and the dashboard
            if store.workspace is not None:
                store.workspace.update_run(run["id"], stage=name)

        stage("interventions")
        params = run["params"]  # evidence_images: the cap of the sequential evidence sample
        extra = {"max_images": int(params["evidence_images"])} if "evidence_images" in params else {}
        if store.workspace is not None:  # a second explainer on the same model reuses the interventions
            extra.update(cache_dir=store.workspace.root / "cache" / "interventions", model_key=run["model_id"])
        return compute_evidence(prepared.loaded, prepared.dataset, store, method=run["method"],
                                layer_name=prepared.target_layer, seed=int(run["seed"]), params=explainer_params(run),
                                on_stage=stage, region_shapley=int(run["params"].get("region_shapley", 0)),
                                properties=bool(params.get("properties", True)), **extra)

    def findings(self, store, run: dict, *, n_boot: int, seed: int) -> dict:
        from analysis.report.flags import report_findings

        images = store.images()
        if not len(images):
            return {}
        found = report_findings(images, store.regions(), store.evidence(), maps=store, n_boot=n_boot,
                                seed=seed)
        return {**found, "metrics": {"accuracy": float(images["correct"].astype(bool).mean()),
                                     **budget_summary(images), **(found.get("metrics") or {})}}

    def compare(self, stores: list, names: list[str], **options) -> dict:
        from analysis.report.compare import compare_runs

        return compare_runs(stores, names, **options)


def forward_and_explain(inputs, label_idx, loaded, explainer, target_mode):
    """(logits, target indices, maps, scores, per-image extras) on CPU, with one forward where the method allows
    it. The extras are the explainer's numeric (B,) side results (RISE's `masks_used`, occlusion's
    `windows_used`, ...): they become columns of the images table."""
    logits, target_idx, result = explain_with_logits(inputs, label_idx, loaded, explainer, target_mode)
    return (logits, target_idx, result.maps.detach().float().cpu(), result.scores.detach().float().cpu(),
            per_image_extras(result, len(inputs)))


def explain_with_logits(inputs, label_idx, loaded, explainer, target_mode):
    """(logits and target indices on CPU, the explainer's `SaliencyBatch`), one forward where the method allows."""
    import torch

    from explainers.targets import ClassTarget, ObservedOutput, PredictedClass

    if explainer.observes_clean_output:
        target = PredictedClass() if target_mode == "pred" else ObservedOutput(ClassTarget(label_idx))
        result = explainer.explain(inputs, target)
        logits, target_idx = target.output.float().cpu(), target.indices.cpu()
    else:
        with torch.no_grad():
            logits = loaded.module(inputs).float()
        probs = torch.softmax(logits.nan_to_num(0.0), dim=1)
        target_idx = probs.max(dim=1).indices.cpu() if target_mode == "pred" else label_idx
        result = explainer.explain(inputs, ClassTarget(target_idx))
        logits = logits.cpu()
    return logits, target_idx, result


def per_image_extras(result, n: int) -> dict:
    """The explainer's numeric (n,) side results by name, on CPU (not the images table's own columns)."""
    import torch

    return {name: value.detach().float().cpu() for name, value in result.extras.items()
            if isinstance(value, torch.Tensor) and value.shape == (n,) and name not in IMAGE_COLUMNS}


def budget_summary(images: pd.DataFrame) -> dict:
    """Per-image budget of an early-stopping explainer (`masks_used`, `windows_used` columns): median, p90, max
    and how many images there were, for the report's metrics; {} when the method has none."""
    out = {}
    for column in ("masks_used", "windows_used"):
        if column in images.columns and images[column].notna().any():
            used = images[column].dropna().astype(float)
            out[column] = {"median": float(used.median()), "p90": float(used.quantile(0.9)),
                           "max": float(used.max()), "n_images": int(len(used))}
    return out


TASK = ClassificationTask()
