"""What the tasks that explain several targets per image share (the tagger: each tag; the segmenter: each class):
loading the run (model, dataset, CAM-or-plain explainer) and the layout of their own tables.

Each such task writes, besides the engine's `images` / `regions` / `maps` (one summed map per image), three tables
of its own: one row per (image, target), the targets' region rows, and the targets' maps. `TargetTables` names
them and builds them, so the two tasks differ only in what a target is and what its rows say.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.runs.task import SKIPPED_COLUMNS, Prepared, Tables, skip_row
from analysis.runs.tasks.classification import region_rows, region_spec
from analysis.store.run_store import REGION_COLUMNS, pool_maps
from explainers.errors import InputError


def explainer_params(run: dict, run_params: tuple[str, ...]) -> dict:
    """The run's parameters that are the explainer's (all but the task's own `run_params`)."""
    return {k: v for k, v in (run.get("params") or {}).items() if k not in run_params}


def make_cam_or_plain_explainer(run: dict, loaded, model_row: dict, run_params: tuple[str, ...]):
    """(explainer, layer name) for the run's method on `loaded.module`."""
    from explainers.loading.models import hooks_fix
    from explainers.registry import make_explainer, method_class

    params = run.get("params") or {}
    if not method_class(run["method"]).needs_layer:
        return make_explainer(run["method"], loaded.module, **explainer_params(run, run_params)), None
    if not loaded.supports_hooks:
        raise InputError(f"{model_row['path']}: method {run['method']!r} hooks an internal layer, which a "
                         f"{loaded.format} model does not expose; {hooks_fix(loaded.format)}, or use a "
                         "gradient/perturbation method (e.g. --method saliency)")
    layer_name = params.get("layer") or loaded.target_layer_name()
    layer = loaded.layer(layer_name)
    print(f"target layer: {layer_name}", file=sys.stderr)
    return make_explainer(run["method"], loaded.module, layer=layer, **explainer_params(run, run_params)), layer_name


def prepare_targets(task_name: str, workspace, run: dict, device: str, options: dict, classes_key: str,
                    run_params: tuple[str, ...]) -> Prepared:
    """Load the run's model and dataset (validated for `task_name`) and its explainer, once the task has checked
    its own parameters (`options`) and the method; the card's classes go into the options as `classes_key`."""
    from explainers.loading.models import load_model

    model_row = workspace.model(run["model_id"])
    loaded = load_model(model_row["abspath"], device=device)
    dataset = workspace.open_dataset(run["dataset_id"])
    dataset.validate(list(loaded.card.classes), task=task_name)
    explainer, layer_name = make_cam_or_plain_explainer(run, loaded, model_row, run_params)
    return Prepared(loaded, dataset, explainer, layer_name,
                    {**options, classes_key: list(loaded.card.classes), "regions": region_spec(dataset)})


@dataclass(frozen=True)
class TargetTables:
    """The names and columns of a per-target task's tables, e.g. ("tags", "tag_regions", "tag_maps"), targets
    keyed by "tag" (regions) and "tag_idx" (maps)."""

    image_columns: list[str]
    rows: str
    rows_columns: list[str]
    regions: str
    maps: str
    key: str
    idx: str

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.rows, self.regions, self.maps)

    def empty(self) -> Tables:
        return Tables(pd.DataFrame(columns=self.image_columns), pd.DataFrame(columns=REGION_COLUMNS),
                      np.zeros((0, 1, 1), np.float16), pd.DataFrame(columns=SKIPPED_COLUMNS),
                      {self.rows: pd.DataFrame(columns=self.rows_columns),
                       self.regions: pd.DataFrame(columns=[*REGION_COLUMNS, self.key]),
                       self.maps: {"image_ids": np.zeros(0, np.int64), self.idx: np.zeros(0, np.int64),
                                   "maps": np.zeros((0, 1, 1), np.float16)}})

    def tables(self, *, image_rows: list, region_rows: list, kept: list, skipped: list, target_rows: list,
               target_region_rows: list, target_maps: list, map_ids: list, map_idx: list, size) -> Tables:
        """A batch's tables: `kept` the images' summed maps, `target_maps` (with their image ids and target indices)
        the targets' maps, `size` the input's (H, W)."""
        import torch

        empty = self.empty()
        return Tables(
            pd.DataFrame(image_rows) if image_rows else empty.images,
            pd.DataFrame(region_rows, columns=REGION_COLUMNS),
            pool_maps(torch.stack(kept)) if kept else empty.maps,
            pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
            {self.rows: pd.DataFrame(target_rows, columns=self.rows_columns),
             self.regions: pd.DataFrame(target_region_rows, columns=[*REGION_COLUMNS, self.key]),
             self.maps: {"image_ids": np.asarray(map_ids, np.int64), self.idx: np.asarray(map_idx, np.int64),
                         "maps": pool_maps(torch.stack(target_maps)) if target_maps
                         else pool_maps(torch.zeros(1, *size))[:0]}})


class TargetRows:
    """One batch's rows as a per-target task collects them, image by image: `refuse` an image whose outputs are
    not finite, `add_maps` the maps of an image's targets (their region rows, and the image's summed map), then
    `tables()`. The task adds its own image rows (`images`) and target rows (`targets`)."""

    def __init__(self, spec: TargetTables, regions, size):
        self.spec, self.regions, self.size = spec, regions, tuple(size)
        self.images, self.region_rows, self.kept, self.skipped = [], [], [], []
        self.targets, self.target_regions, self.maps, self.map_ids, self.map_idx = [], [], [], [], []

    def refuse(self, item, logits, maps, explainer_name: str) -> bool:
        """Record `item` as skipped (True) when its logits or its targets' `maps` hold NaN or inf."""
        import torch

        if not bool(torch.isfinite(logits).all()):
            self.skipped.append(skip_row(item, "model returned non-finite outputs (NaN/inf)"))
            return True
        if len(maps) and not bool(torch.isfinite(maps).all()):
            self.skipped.append(skip_row(item, f"{explainer_name} returned a non-finite map (NaN/inf)"))
            return True
        return False

    def add_maps(self, image_id: int, mask, maps, targets: list[tuple[str, int]]) -> None:
        """The image's target maps (T, H, W) with each target's (name, index); their sum is the image's map."""
        import torch

        for target_map, (name, idx) in zip(maps, targets):
            self.target_regions.extend({**r, self.spec.key: name}
                                       for r in region_rows(image_id, target_map, mask, self.regions))
            self.maps.append(target_map)
            self.map_ids.append(image_id)
            self.map_idx.append(idx)
        summed = maps.sum(0) if len(targets) else torch.zeros(self.size)
        self.region_rows.extend(region_rows(image_id, summed, mask, self.regions))
        self.kept.append(summed)

    def tables(self) -> Tables:
        return self.spec.tables(image_rows=self.images, region_rows=self.region_rows, kept=self.kept,
                                skipped=self.skipped, target_rows=self.targets, target_region_rows=self.target_regions,
                                target_maps=self.maps, map_ids=self.map_ids, map_idx=self.map_idx, size=self.size)


class PerTargetTask:
    """What a per-target task's plug-in (`analysis.runs.task.Task`) does the same way: a subclass sets `name`,
    `tables` (its `TargetTables`), `target_key`, `evidence_settings`, and writes `prepare`, `explain_batch` and
    `target_findings` (the report's findings of one store, which the comparison reads per run); its evidence is
    `checked_evidence`, the checks the registry applies."""

    name: str
    tables: TargetTables
    target_key: str  # what the comparison names a target by ("tag", "class")
    evidence_settings: tuple[str, ...]  # the task's options its evidence records under `settings`
    dataset_hint = ""

    def new_run_params(self, params: dict) -> dict:
        return dict(params)

    def compute_scope(self, prepared: Prepared, device: str):
        return nullcontext()

    def empty_tables(self) -> Tables:
        return self.tables.empty()

    def checked_evidence(self, store, run: dict, prepared: Prepared, batch_size: int, max_images: int) -> dict:
        """The evidence of every check the registry (`analysis.evidence.checks`) applies to this task and model
        (interventions, model randomisation, a second explainer of another family, faithfulness of the stored
        maps), with the checks that do not apply under `not_judged`, each with its reason."""
        from analysis.evidence.checks import EvidenceContext, Subject, has_weights, run_checks
        from explainers.base import is_black_box

        loaded = prepared.loaded
        subject = Subject(self.name, model_format=loaded.format,
                          black_box=is_black_box(loaded.module) or not has_weights(loaded.module),
                          region_masks=prepared.options["regions"] is not None)
        context = EvidenceContext(subject, loaded, prepared.dataset, store, run["method"],
                                  explainer_params(run, self.run_params), int(run["seed"]), batch_size,
                                  prepared.target_layer,
                                  options={**prepared.options, "max_images": max_images,
                                           "explainer_params": explainer_params(run, self.run_params),
                                           "layer": (run.get("params") or {}).get("layer")})
        settings = {k: prepared.options[k] for k in self.evidence_settings}
        return run_checks(context, {"task": self.name, "settings": settings, "interventions": [], "sanity": {},
                                    "second_explainer": {}, "faithfulness": {}})

    def target_findings(self, store, *, n_boot: int, seed: int) -> dict:
        raise NotImplementedError

    def findings(self, store, run: dict, *, n_boot: int, seed: int) -> dict:
        return self.target_findings(store, n_boot=n_boot, seed=seed)

    def compare(self, stores: list, names: list[str], **options) -> dict:
        from analysis.report.target_compare import compare_target_runs

        return compare_target_runs(stores, names, self.target_findings, self.target_key, section=self.name, **options)
