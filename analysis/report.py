"""The report dict of one run (DESIGN.md section 3 keys): run identity, accuracy, region table, skipped.

First version: overall and per-class region rows with point estimates (`mass_ci` is [mean, mean] until
the bootstrap lands), no flags, empty sanity. `lift` is mass_mean / area_mean: the ratio of averages, so
images with a tiny region do not dominate it.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.store import RunStore
from analysis.workspace import Workspace


def build_report(store_or_run: RunStore | str, workspace: Workspace | None = None) -> dict[str, Any]:
    store, workspace = _resolve(store_or_run, workspace)
    run = workspace.run(store.run_id) if workspace is not None and store.run_id else {}
    images, regions, skipped = store.images(), store.regions(), store.skipped()
    model = workspace.model(run["model_id"]) if run else None
    dataset = workspace.dataset(run["dataset_id"]) if run else None
    return {
        "run": {"id": run.get("id", store.run_dir.name), "name": run.get("name"), "method": run.get("method"),
                "params": run.get("params", {}), "n_images": int(len(images)), "seed": run.get("seed"),
                "status": run.get("status"), "target_layer": run.get("target_layer"),
                "model": {"name": model["name"], "sha256": model["sha256"]} if model else None,
                "dataset": {"name": dataset["name"], "sha256": dataset["sha256"]} if dataset else None},
        "metrics": {"accuracy": float(images["correct"].astype(bool).mean()) if len(images) else None,
                    "n_images": int(len(images)), "n_skipped": int(len(skipped))},
        "regions": region_table(images, regions),
        "flags": [],
        "sanity": {},
        "skipped": [{"image": str(r["image"]), "reason": str(r["reason"])} for r in skipped.to_dict("records")],
    }


def region_table(images: pd.DataFrame, regions: pd.DataFrame) -> list[dict[str, Any]]:
    """Overall rows (class null) then one row per (class, region); region order as first seen."""
    if regions.empty:
        return []
    order = list(dict.fromkeys(regions["region"]))
    merged = regions.merge(images[["image_id", "label"]], on="image_id", how="left")
    rows = _rows(merged, order, klass=None)
    for klass in sorted(merged["label"].dropna().unique()):
        rows.extend(_rows(merged[merged["label"] == klass], order, klass=str(klass)))
    return rows


def _rows(frame: pd.DataFrame, order: list[str], klass: str | None) -> list[dict[str, Any]]:
    out = []
    for region in order:
        part = frame[frame["region"] == region]
        if part.empty:
            continue
        mass, area = float(part["mass"].mean()), float(part["area"].mean())
        role = part["role"].dropna()
        out.append({"region": region, "role": str(role.iloc[0]) if len(role) else None, "class": klass,
                    "group": None, "mass_mean": mass, "mass_ci": [mass, mass], "area_mean": area,
                    "lift": mass / area if area > 0 else math.nan, "n": int(part["image_id"].nunique())})
    return out


def _resolve(store_or_run, workspace):
    if isinstance(store_or_run, RunStore):
        return store_or_run, workspace or store_or_run.workspace
    workspace = workspace or Workspace()
    workspace.run(str(store_or_run))  # InputError for an unknown id
    return workspace.store(str(store_or_run)), workspace
