"""What the New audit page starts on: the model the user brought, and a dataset that goes with it.

In a workspace the demo fills in the background, "the last registered model" is often a demo model; the
user's own upload is the obvious choice. In order: what this tab uploaded (newest first), else what no audit
has used yet (the demo audits every model and dataset it registers), else the newest. Pure over the
catalog frames of `dashboard.data`.
"""
from __future__ import annotations

import pandas as pd


def _newest_first(frame: pd.DataFrame) -> list[str]:
    ordered = frame.sort_values("created", kind="stable") if "created" in frame else frame
    return ordered["id"].tolist()[::-1]


def default_model(models: pd.DataFrame, runs: pd.DataFrame, uploaded: list[str]) -> list[str]:
    """[model id] to preselect (empty for an empty catalog)."""
    if models.empty:
        return []
    ids = _newest_first(models)
    audited = set(runs["model_id"]) if not runs.empty else set()
    for choice in ([m for m in reversed(uploaded) if m in ids], [m for m in ids if m not in audited], ids):
        if choice:
            return [choice[0]]
    return []


def default_dataset(datasets: pd.DataFrame, runs: pd.DataFrame, model_ids: list[str], uploaded: list[str],
                    models: pd.DataFrame | None = None, task: str | None = None) -> int:
    """The index in `datasets` (the ones the chosen models' task takes, in catalog order) to preselect: what
    this tab uploaded, else where the chosen models or other versions of them (same name) were audited, else
    a dataset no audit has used yet, else the newest; these last two among the datasets made for `task` when
    there are any (a classifier takes a COCO folder too, its boxes as the object, but its own folders first)."""
    if datasets.empty:
        return 0
    ids = datasets["id"].tolist()
    newest = _newest_first(datasets)
    audited = set(runs["dataset_id"]) if not runs.empty else set()

    def audited_with(model_set) -> list[str]:
        if runs.empty:
            return []
        mine = runs[runs["model_id"].isin(model_set)].sort_values("created", kind="stable")
        return [d for d in mine["dataset_id"].tolist()[::-1] if d in ids]

    names = set(models[models["id"].isin(model_ids)]["name"]) if models is not None and not models.empty else set()
    siblings = models[models["name"].isin(names)]["id"].tolist() if names else []
    own_task = dict(zip(datasets["id"], datasets["task"])) if task is not None and "task" in datasets else {}
    made_for = [d for d in newest if own_task.get(d, task) == task] or newest
    for choice in ([d for d in reversed(uploaded) if d in ids], audited_with(model_ids), audited_with(siblings),
                   [d for d in made_for if d not in audited], made_for):
        if choice:
            return ids.index(choice[0])
    return 0
