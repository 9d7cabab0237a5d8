"""The multi-label (tagger) task: sigmoid scores, one target per positive tag, evidence per tag.

Card `"task": "multilabel"`: `classes` are the tags in output order, scores are sigmoids, a tag is predicted
when its probability exceeds `threshold` (run param, default 0.5). The manifest's `label` holds the image's
tags joined by `|` (empty: no tag). Targets (run param `target`): `pred` (default) explains every predicted
tag, `gt` every ground-truth tag; one map per (image, target tag), all of a batch in one explainer call
(`explainers.targets.MultiLabelTargets`).

Shard tables:
- `images`: `image_id, image, label` (true tags), `pred` (predicted tags), `n_true, n_pred, n_targets`,
  `correct` (the predicted tag set is the true one), `attr.<name>`; `regions` and `maps`: the image's summed
  target maps (what the gallery overlays);
- `tags.parquet`: one row per (image, tag): `image_id, tag, tag_idx, prob, truth, predicted, target, score`;
- `tag_regions.parquet`: the region rows (`REGION_COLUMNS`) of each target map, with its `tag`;
- `tag_maps.npz`: `image_ids, tag_idx, maps` (float16, <= 64x64), one map per target.

Evidence (`analysis.evidence.tag_audit`): per (tag, non-core region), the change of the tag's probability and
its flips (positive -> negative) under a fill of the region against an equal-area control, with an exact
McNemar test on the flips. Findings and flags: `analysis.report.tag_report`; comparison across versions:
`analysis.report.target_compare`.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs.task import SKIPPED_COLUMNS, Decoded, Prepared, Tables, skip_row
from analysis.runs.tasks.classification import region_rows, region_spec
from analysis.store.run_store import REGION_COLUMNS, pool_maps
from explainers.errors import InputError

RUN_PARAMS = ("target", "layer", "threshold")  # the task's own parameters; the rest go to the explainer
TARGET_MODES = ("pred", "gt")
IMAGE_COLUMNS = ["image_id", "image", "label", "pred", "n_true", "n_pred", "n_targets", "correct"]
TAG_COLUMNS = ["image_id", "tag", "tag_idx", "prob", "truth", "predicted", "target", "score"]
EXTRA_TABLES = ("tags", "tag_regions", "tag_maps")  # the task's own shard tables


def settings(run: dict) -> dict:
    """The task's parameters with defaults; InputError naming the fix for a bad value."""
    params = run.get("params") or {}
    target = params.get("target", "pred")
    if target == "label":  # the classifier's word for it
        target = "gt"
    if target not in TARGET_MODES:
        raise InputError(f"parameter target={target!r}: use 'pred' (the tagger's predicted tags) or 'gt' "
                         "(the manifest's tags)")
    threshold = params.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise InputError(f"parameter threshold={threshold!r}: a probability between 0 and 1 (default 0.5)")
    return {"target": target, "threshold": float(threshold)}


def explainer_params(run: dict) -> dict:
    return {k: v for k, v in (run.get("params") or {}).items() if k not in RUN_PARAMS}


def make_cam_or_plain_explainer(run: dict, loaded, model_row: dict):
    """(explainer, layer name) for the run's method on `loaded.module`; shared by the tagger and segmenter."""
    from explainers.registry import METHODS, make_explainer

    params = run.get("params") or {}
    if not METHODS[run["method"]].needs_layer:
        return make_explainer(run["method"], loaded.module, **explainer_params(run)), None
    if not loaded.supports_hooks:
        raise InputError(f"{model_row['path']}: method {run['method']!r} hooks an internal layer, which a "
                         f"{loaded.format} model does not expose; export the model with torch.export (.pt2) "
                         "or use a gradient/perturbation method (e.g. --method saliency)")
    layer_name = params.get("layer") or loaded.target_layer_name()
    layer = loaded.layer(layer_name)
    print(f"target layer: {layer_name}", file=sys.stderr)
    return make_explainer(run["method"], loaded.module, layer=layer, **explainer_params(run)), layer_name


class MultilabelTask:
    name = "multilabel"
    model_kind = "classifier"
    default_method = "gradcam"
    view = "multilabel"
    extra_tables = EXTRA_TABLES
    own_dataset_format = False  # a classifier's manifest (labels joined by "|"): never how a dataset is recognised

    def takes_dataset(self, path: Path) -> bool:
        from analysis.data.detection_data import is_detection_dataset

        return not is_detection_dataset(Path(path))

    def new_run_params(self, params: dict) -> dict:
        return dict(params)

    def prepare(self, workspace, run: dict, device: str) -> Prepared:
        from analysis.runs.methods import check_method_kind
        from explainers.models import load_model

        options = settings(run)
        check_method_kind(run["method"], self.model_kind)
        model_row = workspace.model(run["model_id"])
        loaded = load_model(model_row["abspath"], device=device)
        dataset = workspace.open_dataset(run["dataset_id"])
        dataset.validate(list(loaded.card.classes), task=self.name)
        explainer, layer_name = make_cam_or_plain_explainer(run, loaded, model_row)
        return Prepared(loaded, dataset, explainer, layer_name,
                        {**options, "tags": list(loaded.card.classes), "regions": region_spec(dataset)})

    def compute_scope(self, prepared: Prepared, device: str):
        return nullcontext()

    def empty_tables(self) -> Tables:
        return Tables(pd.DataFrame(columns=IMAGE_COLUMNS), pd.DataFrame(columns=REGION_COLUMNS),
                      np.zeros((0, 1, 1), np.float16), pd.DataFrame(columns=SKIPPED_COLUMNS),
                      {"tags": pd.DataFrame(columns=TAG_COLUMNS),
                       "tag_regions": pd.DataFrame(columns=[*REGION_COLUMNS, "tag"]),
                       "tag_maps": {"image_ids": np.zeros(0, np.int64), "tag_idx": np.zeros(0, np.int64),
                                    "maps": np.zeros((0, 1, 1), np.float16)}})

    def explain_batch(self, prepared: Prepared, batch: Decoded, device: str) -> Tables:
        import torch

        from analysis.data.datasets import split_tags
        from explainers.targets import MultiLabelTargets

        tags, regions, options = prepared.options["tags"], prepared.options["regions"], prepared.options
        inputs = batch.inputs.to(device, non_blocking=True)
        with torch.no_grad():
            logits = prepared.loaded.module(inputs).float()
        probs = torch.sigmoid(logits).cpu()
        truth = torch.zeros_like(probs, dtype=torch.bool)
        for k, item in enumerate(batch.items):
            for tag in split_tags(str(item.label)):
                truth[k, tags.index(tag)] = True
        predicted = probs > options["threshold"]
        chosen = predicted if options["target"] == "pred" else truth
        image_idx, target = MultiLabelTargets.from_tags(chosen)
        if len(image_idx):
            result = prepared.explainer.explain(inputs[image_idx.to(inputs.device)], target)
            maps, scores = result.maps.detach().float().cpu(), result.scores.detach().float().cpu()
        else:
            maps, scores = torch.zeros(0, *inputs.shape[-2:]), torch.zeros(0)
        score_of = {(int(i), int(t)): float(s) for i, t, s in zip(image_idx, target.indices, scores)}
        image_rows, rows, kept, skipped = [], [], [], []
        tag_rows, tag_region_rows, tag_maps, tag_map_ids, tag_map_idx = [], [], [], [], []
        for k, item in enumerate(batch.items):
            mine = (image_idx == k).nonzero().flatten().tolist()
            if not bool(torch.isfinite(logits[k]).all()):
                skipped.append(skip_row(item, "model returned non-finite outputs (NaN/inf)"))
                continue
            if mine and not bool(torch.isfinite(maps[mine]).all()):
                skipped.append(skip_row(item, f"{prepared.explainer.name} returned a non-finite map (NaN/inf)"))
                continue
            image_id = int(item.image_id)
            row = {"image_id": image_id, "image": str(item.image), "label": str(item.label),
                   "pred": "|".join(t for j, t in enumerate(tags) if predicted[k, j]),
                   "n_true": int(truth[k].sum()), "n_pred": int(predicted[k].sum()), "n_targets": len(mine),
                   "correct": bool((truth[k] == predicted[k]).all())}
            for name, value in (getattr(item, "attributes", None) or {}).items():
                row[f"attr.{name}"] = None if value is None else str(value)
            image_rows.append(row)
            for j, tag in enumerate(tags):
                tag_rows.append({"image_id": image_id, "tag": tag, "tag_idx": j, "prob": float(probs[k, j]),
                                 "truth": bool(truth[k, j]), "predicted": bool(predicted[k, j]),
                                 "target": bool(chosen[k, j]), "score": score_of.get((k, j), float("nan"))})
            for m in mine:
                tag = tags[int(target.indices[m])]
                tag_region_rows.extend({**r, "tag": tag} for r in region_rows(image_id, maps[m], batch.masks[k], regions))
                tag_maps.append(maps[m])
                tag_map_ids.append(image_id)
                tag_map_idx.append(int(target.indices[m]))
            summed = maps[mine].sum(0) if mine else torch.zeros(inputs.shape[-2:])
            rows.extend(region_rows(image_id, summed, batch.masks[k], regions))
            kept.append(summed)
        empty = self.empty_tables()
        return Tables(
            pd.DataFrame(image_rows) if image_rows else empty.images,
            pd.DataFrame(rows, columns=REGION_COLUMNS),
            pool_maps(torch.stack(kept)) if kept else empty.maps,
            pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
            {"tags": pd.DataFrame(tag_rows, columns=TAG_COLUMNS),
             "tag_regions": pd.DataFrame(tag_region_rows, columns=[*REGION_COLUMNS, "tag"]),
             "tag_maps": {"image_ids": np.asarray(tag_map_ids, np.int64), "tag_idx": np.asarray(tag_map_idx, np.int64),
                          "maps": pool_maps(torch.stack(tag_maps)) if tag_maps else pool_maps(torch.zeros(1, *inputs.shape[-2:]))[:0]}})

    def evidence(self, store, run: dict, prepared: Prepared, device: str, batch_size: int) -> dict:
        from analysis.evidence.tag_audit import tag_interventions

        return {"task": self.name, "settings": {k: prepared.options[k] for k in ("target", "threshold")},
                "interventions": tag_interventions(prepared.loaded, prepared.dataset, store,
                                                   threshold=prepared.options["threshold"], seed=int(run["seed"]),
                                                   batch_size=batch_size)}

    def findings(self, store, run: dict, *, n_boot: int, seed: int) -> dict:
        from analysis.report.tag_report import tag_findings

        return tag_findings(store, n_boot=n_boot, seed=seed)

    def compare(self, stores: list, names: list[str], **options) -> dict:
        from analysis.report.tag_report import tag_findings
        from analysis.report.target_compare import compare_target_runs

        return compare_target_runs(stores, names, tag_findings, "tag", **options)

    def summarise_comparison(self, result: dict) -> str:
        from analysis.report.target_compare import summarise

        return summarise(result)


TASK = MultilabelTask()
