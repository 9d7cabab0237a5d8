"""The contract between the run engine and one kind of model (a `Task`): classification, detection, ...

The engine (`analysis.runs.engine`) owns everything that is the same for every task: the atomic claim,
SIGTERM / cancel, resume (images already in a recorded shard are not redone), sampling, decoding in a
prefetch thread, the shard writer, the failure guard (one bad image is skipped, a model that fails on
everything stops the run), the per-image retry of a batch that raised, progress with stage names, the
evidence stage written once, and the final report. Both backends (local and Ray) drive it. A task says only
what is specific to its models; it is registered by name in `analysis.runs.tasks` (the card's `task`).

Conventions a task follows:
- `explain_batch` receives a `Decoded` batch whose images all decoded (the engine records decode failures)
  and returns `Tables` for exactly those images. It may raise: the engine then retries the batch image by
  image (`Decoded.subset`) and skips, with the reason, the images that still raise. It never raises
  `InputError` for one image (that is the user's to fix and stops the run).
- `Tables.images` has one row per explained image with at least `image_id:int, image:str, label:str`;
  `Tables.regions` is long (`analysis.store.run_store.REGION_COLUMNS`), possibly empty; `Tables.maps` is
  float16 `(N, h, w)`, h, w <= 64 (`analysis.store.run_store.pool_maps`), aligned with `images` rows;
  `Tables.skipped` rows (`image_id, image, reason`) are images the task itself refuses (a non-finite map).
  `Tables.extra` holds the task's own tables by name (a DataFrame -> `<name>.parquet`, a dict of arrays ->
  `<name>.npz` whose arrays are concatenated along axis 0 when tables are joined); their names are listed in
  `Task.extra_tables` so every shard of the task has them.
- All of a batch's tables go into one atomic shard (`RunStore.write_shard`); nothing is kept across batches.
- `evidence` runs once every shard is in, and returns the JSON-able dict stored as `evidence.json`; it
  should read the explained images from the store (`store.images()`), not from memory (a resumed run has
  only part of them in memory).
- `findings` is pure over the run store (no model): the report's keys below `metrics`.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

SKIPPED_COLUMNS = ["image_id", "image", "reason"]


def skip_row(item, reason: str) -> dict:
    """A `skipped` row: the image and why it was not explained."""
    return {"image_id": int(item.image_id), "image": str(item.image), "reason": reason}


def attribute_columns(item) -> dict:
    """The item's manifest attributes as `attr.<name>` columns of its image row (strings, None when empty)."""
    return {f"attr.{name}": None if value is None else str(value)
            for name, value in (getattr(item, "attributes", None) or {}).items()}


@dataclass
class Decoded:
    """One batch after decoding: the items that decoded, their input tensor (B, 3, H, W) in [0, 1] at the card's
    input size (None when nothing decoded), the second value of `dataset.load(item)` per item (a region mask,
    a context label map, a class map: whatever the task's dataset annotates, at the image's own size, or None),
    and `(item, reason)` for the items that did not decode."""
    items: list
    inputs: Any  # torch.Tensor | None
    masks: list
    skipped: list[tuple[Any, str]] = field(default_factory=list)

    def subset(self, k: int) -> "Decoded":
        """Image `k` alone (the engine's per-image retry)."""
        return Decoded([self.items[k]], self.inputs[k:k + 1], [self.masks[k]], [])


@dataclass
class Prepared:
    """What `Task.prepare` loads once per worker: the model, the dataset, the explainer, and the task's own
    settings. `target_layer` is recorded in the catalog (None for methods without a layer)."""
    loaded: Any  # explainers.loading.models.LoadedModel
    dataset: Any
    explainer: Any  # explainers.base.Explainer
    target_layer: str | None = None
    options: dict = field(default_factory=dict)


@dataclass
class Tables:
    """One batch's (or one image's) rows: see the module docstring for the columns."""
    images: pd.DataFrame
    regions: pd.DataFrame
    maps: np.ndarray
    skipped: pd.DataFrame
    extra: dict = field(default_factory=dict)

    @classmethod
    def join(cls, parts: list["Tables"], empty: "Tables") -> "Tables":
        """Concatenate the tables of several parts (e.g. images retried one by one); `empty` when none."""
        if not parts:
            return empty
        frames = lambda attr: pd.concat([getattr(p, attr) for p in parts], ignore_index=True)  # noqa: E731
        extra = {}
        for name, value in parts[0].extra.items():
            if isinstance(value, dict):
                extra[name] = {key: np.concatenate([p.extra[name][key] for p in parts]) for key in value}
            else:
                extra[name] = pd.concat([p.extra[name] for p in parts], ignore_index=True)
        return cls(frames("images"), frames("regions"), np.concatenate([p.maps for p in parts]), frames("skipped"),
                   extra)


@runtime_checkable
class Task(Protocol):
    """One kind of model. Attributes are plain class attributes; methods receive what their docstrings say."""

    name: str  # the card's `task` value, e.g. "classification"
    model_kind: str  # which explainers apply: `Explainer.model_kind` ("classifier", "detector")
    default_method: str  # the CLI's method when none is given
    view: str  # the dashboard view that shows this task's report ("classification", "detection", ...)
    extra_tables: tuple[str, ...]  # names of the task's own shard tables (Tables.extra)
    own_dataset_format: bool  # False when the task reads another task's format (a tagger: a classifier's manifest),
    #                           so `task_of_dataset` never names it for a dataset (its `takes_dataset` still offers it)
    dataset_hint: str  # how to register a dataset this task reads, where it is not the default manifest ("" otherwise)
    run_params: tuple[str, ...]  # the task's own run parameters; every other `--param` is the method's

    def check_settings(self, method: str, params: dict) -> None:
        """InputError for a bad value of the task's own parameters (`run_params`), before a run is created; the
        method's parameters are checked against its declared schema (`explainers.registry.check_params`)."""

    def takes_dataset(self, path: Path) -> bool:
        """Whether the dataset at `path` (a folder or zip, as registered) is in this task's format. Cheap: it
        looks at file names, never decodes images (the dashboard calls it for every dataset)."""

    def prepare(self, workspace, run: dict, device: str) -> Prepared:
        """Load and check everything the run needs (model, dataset, explainer, options): every mistake the user
        can make (a label not among the card's classes, an unknown layer or method parameter) raises
        `InputError` here, before any image is explained. `run` is the catalog row (`id, model_id, dataset_id,
        method, params, n, seed`). Called once per worker (the local process, each Ray actor, the Ray driver)."""

    def compute_scope(self, prepared: Prepared, device: str) -> AbstractContextManager:
        """A context the main pass and the evidence run inside (e.g. one CPU thread for tiny detectors);
        `contextlib.nullcontext()` when none is needed."""

    def explain_batch(self, prepared: Prepared, batch: Decoded, device: str) -> Tables:
        """Explain the batch's images (all decoded) into their tables; may raise (the engine retries per image)."""

    def empty_tables(self) -> Tables:
        """Tables with no rows and the task's columns (a batch whose images all failed)."""

    def evidence(self, store, run: dict, prepared: Prepared, device: str, batch_size: int) -> dict:
        """The run's evidence (interventions, sanity, faithfulness, ...) over the images in `store`, once all
        shards are in; the engine writes it as `evidence.json` (a resumed run that has it does not recompute)."""

    def findings(self, store, run: dict, *, n_boot: int, seed: int) -> dict:
        """The report's task-specific keys, pure over `store` (never loads a model): merged into the report; a
        `metrics` or `run` key in it is merged into the report's own `metrics` / `run`."""

    def new_run_params(self, params: dict) -> dict:
        """The parameters to store for a new run from the CLI's / dashboard's (drop what the task ignores, e.g.
        `target` for detection, which explains every detection)."""

    def compare(self, stores: list, names: list[str], **options) -> dict:
        """The comparison of several runs of this task (versions of a model on one dataset), oldest first;
        `options`: `n_boot`, `n_perm`, `seed` where the task's statistics take them, `maps=False` to skip
        comparing the maps image by image (a task that does not compare them ignores it)."""
