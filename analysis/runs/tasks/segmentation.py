"""The semantic segmentation task: a class's logits summed over its pixels as the target, evidence per class.

Card `"task": "segmentation"`: the model returns per-pixel logits (B, C, h, w), or torchvision's dict with
"out" (`explainers.targets.SegmentationLogits` unwraps it). The manifest's `target` column names each image's
class-index map (PNG, same size as the image, 255 = ignore; validated before any compute). Targets (run
param `target`): `pred` (default) explains every class the model predicts on the image, over its predicted
pixels; `gt` every class of the ground-truth map, over its true pixels (`explainers.targets.
SegmentationTarget`, pytorch-grad-cam's `SemanticSegmentationTarget`). One map per (image, class), all of a
batch in one explainer call. Methods: those that take a callable target (the CAM family).

Shard tables:
- `images`: `image_id, image, label, n_targets, pixel_accuracy` (over non-ignored pixels), `correct`
  (pixel accuracy >= 0.5), `attr.<name>`; `regions`, `maps`: the image's summed class maps;
- `segments.parquet`: one row per (image, class present in the prediction or the truth): `image_id, class,
  class_idx, pixels_pred, pixels_true, intersection, union, target, score`;
- `segment_regions.parquet`: region rows (`REGION_COLUMNS`) of each class map, with its `class`;
- `segment_maps.npz`: `image_ids, class_idx, maps` (float16, <= 64x64).

Evidence (`analysis.evidence.segment_audit`): per (class, non-core region), the class's pixel accuracy and
IoU under a fill of the region against an equal-area control, with an exact McNemar test on whether the
class keeps at least half its pixels; the sanity check (`analysis.evidence.target_sanity`); a second explainer
(plain gradients of the class's pixel-summed logits, `analysis.evidence.target_second_explainer`) per (class,
region); deletion / insertion of the stored class maps on the class's mean probability over those pixels (`analysis.evidence.target_faithfulness`).
Report: `analysis.report.segment_report`.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from analysis.runs.task import Decoded, Prepared, Tables, attribute_columns
from analysis.runs.tasks.per_target import PerTargetTask, TargetRows, TargetTables, prepare_targets
from explainers.errors import InputError

RUN_PARAMS = ("target", "layer")
TARGET_MODES = ("pred", "gt")
METHODS = ("gradcam", "gradcam_pp", "layercam")  # take a callable target on the model's raw output
TABLES = TargetTables(image_columns=["image_id", "image", "label", "n_targets", "pixel_accuracy", "correct"],
                      rows="segments", rows_columns=["image_id", "class", "class_idx", "pixels_pred", "pixels_true",
                                                     "intersection", "union", "target", "score"],
                      regions="segment_regions", maps="segment_maps", key="class", idx="class_idx")
EXTRA_TABLES = TABLES.names  # the task's own shard tables
IGNORE_INDEX = 255


def settings(run: dict) -> dict:
    target = (run.get("params") or {}).get("target", "pred")
    if target == "label":
        target = "gt"
    if target not in TARGET_MODES:
        raise InputError(f"parameter target={target!r}: use 'pred' (the predicted pixels of each class) or 'gt' "
                         "(the pixels of the manifest's target maps)")
    return {"target": target}


def check_segmentation_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"method {method!r} does not take a segmentation target (a class's logits summed over its "
                         f"pixels); use one of {', '.join(METHODS)}")


def class_maps_at(dataset, items, size):
    """(B, h, w) long ground-truth class maps of `items`, resized (nearest) to the logits' `size`."""
    import torch

    from analysis.evidence.intervention import resize_masks

    maps = [torch.as_tensor(np.asarray(dataset.load_target(item), dtype=np.int64))[None] for item in items]
    return torch.cat([resize_masks(m, size) for m in maps]) if maps else torch.zeros(0, *size, dtype=torch.long)


class SegmentationTask(PerTargetTask):
    name = "segmentation"
    model_kind = "classifier"
    default_method = "gradcam"
    view = "segmentation"
    extra_tables = EXTRA_TABLES
    own_dataset_format = True
    tables = TABLES
    target_key = "class"
    evidence_settings = ("target",)
    run_params = RUN_PARAMS

    def check_settings(self, method: str, params: dict) -> None:
        settings({"params": params})
        check_segmentation_method(method)

    def takes_dataset(self, path: Path) -> bool:
        """A manifest with a `target` column (read from the header line only)."""
        from analysis.data.datasets import MANIFEST

        path = Path(path)
        try:
            if path.is_dir():
                manifest = next(iter(sorted(path.glob(MANIFEST)) + sorted(path.glob(f"*/{MANIFEST}"))), None)
                header = manifest.open(encoding="utf-8-sig").readline() if manifest else ""
            else:
                with zipfile.ZipFile(path) as archive:
                    name = next((n for n in archive.namelist() if n.split("/")[-1] == MANIFEST), None)
                    header = archive.open(name).readline().decode("utf-8-sig") if name else ""
        except (OSError, UnicodeDecodeError, zipfile.BadZipFile):
            return False
        return "target" in [c.strip().lower() for c in header.split(",")]

    def prepare(self, workspace, run: dict, device: str) -> Prepared:
        from analysis.runs.methods import check_method_kind

        options = settings(run)
        check_method_kind(run["method"], self.model_kind)
        check_segmentation_method(run["method"])
        return prepare_targets(self.name, workspace, run, device, options, "classes", RUN_PARAMS)

    def explain_batch(self, prepared: Prepared, batch: Decoded, device: str) -> Tables:
        import torch

        from explainers.targets import SegmentationTarget

        classes, regions = prepared.options["classes"], prepared.options["regions"]
        inputs = batch.inputs.to(device, non_blocking=True)
        with torch.no_grad():
            logits = prepared.loaded.module(inputs).float()
        pred = logits.argmax(1).cpu()
        truth = class_maps_at(prepared.dataset, batch.items, tuple(pred.shape[-2:]))
        source = pred if prepared.options["target"] == "pred" else truth
        pairs = [(k, c) for k in range(len(batch.items)) for c in range(len(classes)) if bool((source[k] == c).any())]
        if pairs:
            rows_k = torch.tensor([k for k, _ in pairs])
            class_idx = torch.tensor([c for _, c in pairs])
            target = SegmentationTarget(class_idx, source[rows_k] == class_idx[:, None, None])
            result = prepared.explainer.explain(inputs[rows_k.to(inputs.device)], target)
            maps, scores = result.maps.detach().float().cpu(), result.scores.detach().float().cpu()
        else:
            maps, scores = torch.zeros(0, *inputs.shape[-2:]), torch.zeros(0)
        out = TargetRows(TABLES, regions, inputs.shape[-2:])
        for k, item in enumerate(batch.items):
            mine = [m for m, (kk, _) in enumerate(pairs) if kk == k]
            if out.refuse(item, logits[k], maps[mine], prepared.explainer.name):
                continue
            image_id, valid = int(item.image_id), truth[k] != IGNORE_INDEX
            accuracy = float((pred[k][valid] == truth[k][valid]).float().mean()) if valid.any() else float("nan")
            row = {"image_id": image_id, "image": str(item.image), "label": str(item.label), "n_targets": len(mine),
                   "pixel_accuracy": accuracy, "correct": bool(accuracy >= 0.5)}
            row.update(attribute_columns(item))
            out.images.append(row)
            score_of = {pairs[m][1]: float(scores[m]) for m in mine}
            for c, name in enumerate(classes):
                p, t = (pred[k] == c) & valid, (truth[k] == c)
                if not (p.any() or t.any()):
                    continue
                out.targets.append({"image_id": image_id, "class": name, "class_idx": c, "pixels_pred": int(p.sum()),
                                    "pixels_true": int(t.sum()), "intersection": int((p & t).sum()),
                                    "union": int((p | t).sum()), "target": c in score_of,
                                    "score": score_of.get(c, float("nan"))})
            out.add_maps(image_id, batch.masks[k], maps[mine], [(classes[pairs[m][1]], pairs[m][1]) for m in mine])
        return out.tables()

    def evidence(self, store, run: dict, prepared: Prepared, device: str, batch_size: int) -> dict:
        from analysis.evidence.segment_audit import MAX_IMAGES

        return self.checked_evidence(store, run, prepared, batch_size, MAX_IMAGES)

    def target_findings(self, store, *, n_boot: int, seed: int) -> dict:
        from analysis.report.segment_report import segment_findings

        return segment_findings(store, n_boot=n_boot, seed=seed)


TASK = SegmentationTask()
