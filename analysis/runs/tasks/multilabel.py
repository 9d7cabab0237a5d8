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
McNemar test on the flips; the model-randomisation sanity check (`analysis.evidence.target_sanity`); a second
explainer of another family per (tag, region) (`analysis.evidence.target_second_explainer`); deletion /
insertion of the stored tag maps against a random order, on the tag's probability
(`analysis.evidence.target_faithfulness`). Findings and flags: `analysis.report.tag_report`; comparison across versions:
`analysis.report.target_compare`.
"""
from __future__ import annotations

from pathlib import Path

from analysis.runs.task import Decoded, Prepared, Tables, attribute_columns
from analysis.runs.tasks.per_target import PerTargetTask, TargetRows, TargetTables, prepare_targets
from explainers.errors import InputError

RUN_PARAMS = ("target", "layer", "threshold")  # the task's own parameters; the rest go to the explainer
TARGET_MODES = ("pred", "gt")
TABLES = TargetTables(image_columns=["image_id", "image", "label", "pred", "n_true", "n_pred", "n_targets", "correct"],
                      rows="tags", rows_columns=["image_id", "tag", "tag_idx", "prob", "truth", "predicted", "target",
                                                 "score"],
                      regions="tag_regions", maps="tag_maps", key="tag", idx="tag_idx")
EXTRA_TABLES = TABLES.names  # the task's own shard tables


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


class MultilabelTask(PerTargetTask):
    name = "multilabel"
    model_kind = "classifier"
    default_method = "gradcam"
    view = "multilabel"
    extra_tables = EXTRA_TABLES
    own_dataset_format = False  # a classifier's manifest (labels joined by "|"): never how a dataset is recognised
    tables = TABLES
    target_key = "tag"
    evidence_settings = ("target", "threshold")
    run_params = RUN_PARAMS

    def check_settings(self, method: str, params: dict) -> None:
        settings({"params": params})

    def takes_dataset(self, path: Path) -> bool:
        from analysis.data.detection_data import is_detection_dataset

        return not is_detection_dataset(Path(path))

    def prepare(self, workspace, run: dict, device: str) -> Prepared:
        from analysis.runs.methods import check_method_kind

        options = settings(run)
        check_method_kind(run["method"], self.model_kind)
        return prepare_targets(self.name, workspace, run, device, options, "tags", RUN_PARAMS)

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
        out = TargetRows(TABLES, regions, inputs.shape[-2:])
        for k, item in enumerate(batch.items):
            mine = (image_idx == k).nonzero().flatten().tolist()
            if out.refuse(item, logits[k], maps[mine], prepared.explainer.name):
                continue
            image_id = int(item.image_id)
            row = {"image_id": image_id, "image": str(item.image), "label": str(item.label),
                   "pred": "|".join(t for j, t in enumerate(tags) if predicted[k, j]),
                   "n_true": int(truth[k].sum()), "n_pred": int(predicted[k].sum()), "n_targets": len(mine),
                   "correct": bool((truth[k] == predicted[k]).all())}
            row.update(attribute_columns(item))
            out.images.append(row)
            for j, tag in enumerate(tags):
                out.targets.append({"image_id": image_id, "tag": tag, "tag_idx": j, "prob": float(probs[k, j]),
                                    "truth": bool(truth[k, j]), "predicted": bool(predicted[k, j]),
                                    "target": bool(chosen[k, j]), "score": score_of.get((k, j), float("nan"))})
            out.add_maps(image_id, batch.masks[k], maps[mine],
                         [(tags[int(target.indices[m])], int(target.indices[m])) for m in mine])
        return out.tables()

    def evidence(self, store, run: dict, prepared: Prepared, device: str, batch_size: int) -> dict:
        from analysis.evidence.tag_audit import MAX_IMAGES

        return self.checked_evidence(store, run, prepared, batch_size, MAX_IMAGES)

    def target_findings(self, store, *, n_boot: int, seed: int) -> dict:
        from analysis.report.tag_report import tag_findings

        return tag_findings(store, n_boot=n_boot, seed=seed)


TASK = MultilabelTask()
