"""The report of one run: its identity, accuracy, region table with CIs, flags with evidence, sanity.

Pure over the run store (maps, shares and the evidence the worker computed): building a report never
loads a model, so the dashboard can render it in its own process. The keys are a contract (docs/FORMATS.md
section 3); `analysis.report.flags.report_findings` supplies everything below `metrics`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from analysis.evidence.region_shapley import shapley_table
from analysis.report.records import Finding
from analysis.report.verdict import prediction_summary, run_verdict
from analysis.runs.tasks import DEFAULT_TASK, task_of_store
from analysis.store.run_store import RunStore
from analysis.store.workspace import Workspace

CSV_TABLES = ("regions", "accuracy", "flags")
VERDICT_MAPS = 256  # the maps check reads this many stored maps, not the whole run
REPORT_FORMAT = 4  # bump when build_report's output changes: cached reports are rebuilt


def cached_report(store_or_run: RunStore | str, workspace: Workspace | None = None) -> dict[str, Any]:
    """`build_report`, kept in the run folder as report.json while the run's inputs are unchanged.

    A report is a pure function of the recorded shards, the evidence and the catalog row, so those are its
    key. The worker writes it when a run finishes; readers (dashboard overview over dozens of runs, the CLI)
    then pay a file read instead of the bootstrap and the clustering.
    """
    store, workspace = _resolve(store_or_run, workspace)
    key = _report_key(store, workspace)
    path = store.run_dir / "report.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return with_catalog(cached["report"], store, workspace)
    except (OSError, ValueError):
        pass
    report = build_report(store, workspace)
    tmp = path.with_name(f".report.json.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"key": key, "report": report}, default=_json_default, allow_nan=False))
        os.replace(tmp, path)
    except (OSError, ValueError):  # a read-only workspace or a value JSON cannot hold: serve it uncached
        tmp.unlink(missing_ok=True)
    return with_catalog(report, store, workspace)


def with_catalog(report: dict[str, Any], store: RunStore, workspace: Workspace | None) -> dict[str, Any]:
    """The report with what the catalog says now, not when it was cached: the run's, model's and dataset's
    current names (a rename shows in every export) and the dataset's human labels checked on this run."""
    if workspace is None or not store.run_id:
        return report
    from analysis.report.labels import label_checks, origin_discoveries

    run = workspace.run(store.run_id)
    report = {**report, "run": dict(report.get("run") or {}, name=run.get("name"))}
    for key, row in (("model", workspace.model(run["model_id"])), ("dataset", workspace.dataset(run["dataset_id"]))):
        if row is not None and report["run"].get(key) is not None:
            report["run"][key] = {**report["run"][key], "name": row["name"],
                                  **({"version": row.get("version")} if key == "model" else {})}
    labels = workspace.labels(run["dataset_id"])
    report["labels"] = label_checks(labels, report, origin_discoveries(workspace, labels))
    return report


def _report_key(store: RunStore, workspace: Workspace | None) -> list:
    run = workspace.run(store.run_id) if workspace is not None and store.run_id else {}
    evidence = store.run_dir / "evidence.json"
    stamp = [evidence.stat().st_mtime_ns, evidence.stat().st_size] if evidence.exists() else None
    shards = [d.name for d in store.shard_dirs()]  # a snapshot's pinned shards, else the catalog's
    return [REPORT_FORMAT, shards, stamp, run.get("status"), run.get("name")]


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def build_report(store_or_run: RunStore | str, workspace: Workspace | None = None, *,
                 n_boot: int = 1000) -> dict[str, Any]:
    store, workspace = _resolve(store_or_run, workspace)
    run = workspace.run(store.run_id) if workspace is not None and store.run_id else {}
    images, skipped = store.images(), store.skipped()
    model = workspace.model(run["model_id"]) if run else None
    dataset = workspace.dataset(run["dataset_id"]) if run else None
    task = task_of_store(store, model)
    report = {
        "run": {"id": run.get("id", store.run_dir.name), "name": run.get("name"), "method": run.get("method"),
                "params": run.get("params", {}), "n_images": int(len(images)), "seed": run.get("seed"),
                "status": run.get("status"), "target_layer": run.get("target_layer"),
                "model": {"name": model["name"], "version": model.get("version"), "sha256": model["sha256"]}
                if model else None,
                "dataset": {"name": dataset["name"], "sha256": dataset["sha256"]} if dataset else None},
        "metrics": {"accuracy": None,
                    "n_images": int(len(images)), "n_skipped": int(len(skipped))},
        "regions": [], "flags": [], "sanity": {},
    }
    # the card's own word for a classifier (None when it says nothing), the task's name otherwise
    report["run"]["task"] = (((model or {}).get("card") or {}).get("task") if task.name == DEFAULT_TASK
                             else task.name)
    findings = task.findings(store, run, n_boot=n_boot, seed=int(run.get("seed") or 0))
    report["run"].update(findings.pop("run", {}))
    report["metrics"].update(findings.pop("metrics", {}))
    report.update(findings)
    shapley = (store.evidence() or {}).get("region_shapley")
    if shapley:  # opt-in: run parameter region_shapley=N
        report["region_shapley"] = {"score": shapley["score"], "n": shapley["n"],
                                    "rows": shapley_table(shapley, n_boot=n_boot, seed=int(run.get("seed") or 0))}
    # the checks the registry did not run on this audit, with why (`analysis.evidence.checks`)
    report["not_judged"] = list((store.evidence() or {}).get("not_judged") or [])
    report["skipped"] = [{"image": str(r["image"]), "reason": str(r["reason"])} for r in skipped.to_dict("records")]
    if "pred" in images:  # one predicted class / tag set per image: what the verdict's prediction check reads
        report["predictions"] = prediction_summary(images, "label", "pred")
    report["verdict"] = run_verdict(report, task.name, store.maps_sample(VERDICT_MAPS)).to_json()
    return report


def to_csv(report: dict[str, Any], table: str = "regions") -> str:
    """One of the report's tidy tables as CSV (list-valued cells such as CIs become two columns)."""
    if table not in CSV_TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(CSV_TABLES)}")
    rows = [_flat(_finding_row(Finding.from_json(row)) if table == "flags" else row)
            for row in report.get(table) or []]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _finding_row(finding: Finding) -> dict[str, Any]:
    """A finding as one CSV row: what it is, its deciding test, then the task's evidence numbers."""
    test = finding.deciding_test
    return {"region": finding.region, "class": finding.slice.target, "kind": finding.kind,
            "severity": finding.severity, "confidence": finding.confidence, "group": finding.slice.group,
            "property": finding.subject if finding.kind == "property" else None, "lift": finding.lift,
            "effect": finding.effect, "headline": finding.headline, "test": test.name if test else None,
            "test_slice": test.slice.words() if test else None,
            "interval": list(test.interval) if test and test.interval else [None, None],
            "p_value": test.p_value if test else None,
            "p_value_corrected": test.p_value_corrected if test else None, "n": test.n if test else None,
            "evidence": finding.evidence}


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
                v is None or isinstance(v, (int, float)) for v in value):
            flat[f"{name}_low"], flat[f"{name}_high"] = value
        elif isinstance(value, (list, tuple)):
            flat[name] = "; ".join(map(str, value))
        else:
            flat[name] = value
    return flat


def _resolve(store_or_run, workspace):
    if isinstance(store_or_run, RunStore):
        return store_or_run, workspace or store_or_run.workspace
    workspace = workspace or Workspace()
    workspace.run(str(store_or_run))  # InputError for an unknown id
    return workspace.store(str(store_or_run)), workspace
