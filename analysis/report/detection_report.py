"""The report of a detection run: the docs/FORMATS.md report keys, filled with detection content.

Pure over the run store (`analysis.runs.tasks.detection` writes the tables and the evidence), like the
classification report. What differs:
- `run.task` is "detection" (readers branch on it) and `run.settings` holds the runner's thresholds;
- `metrics`: per class the recall of the ground-truth objects (IoU >= 0.5, right class, score >= threshold)
  with a Wilson 95% interval, the number of detections, and overall recall; no accuracy;
- `regions`: per class (`class` = the detected class) and overall (`class` null), for `box` (role "core")
  and each context region: mean share of the detection's D-RISE mass (bootstrap 95% CI over detections),
  mean area share, lift = mass / area, n detections;
- `flags`: `analysis.evidence.detection_audit.table_flags` (rule in that module's docstring) as
  `{"region", "class", "kind": "context", "severity", "lift", "evidence": {...}}`;
- `detection`: the per-(class, region) intervention table and the classes and regions, for the HTML and
  dashboard sections.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.report.records import Finding, Slice, TestResult
from analysis.stats.aggregate import wilson_interval
from analysis.evidence.detection_audit import MIN_DROP, OUTSIDE_THRESHOLD, bootstrap_ci, class_summary, table_flags


def detection_findings(store, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`metrics`, `regions`, `flags`, `sanity` and `detection` of a detection run's report."""
    detections = store.table("detections")
    truth = store.table("ground_truth", ["image_id", "object", "class", "found"])
    evidence = store.evidence()
    options = evidence.get("settings") or {}
    regions = sorted(c[len("mass."):] for c in detections.columns if c.startswith("mass."))
    # a detector that found nothing has a detections table without columns
    classes = sorted((set(detections["class"]) if len(detections) else set()) | set(truth["class"]))
    metrics = {"recall": {}, "n_detections": {}}
    for cls in classes:
        found = truth[truth["class"] == cls]["found"].astype(bool) if len(truth) else pd.Series([], dtype=bool)
        low, high = wilson_interval(int(found.sum()), len(found)) if len(found) else (None, None)
        metrics["recall"][cls] = {"recall": float(found.mean()) if len(found) else None, "ci": [low, high],
                                  "n_objects": int(len(found))}
        metrics["n_detections"][cls] = int((detections["class"] == cls).sum()) if len(detections) else 0
    if len(truth):
        metrics["recall_overall"] = float(truth["found"].astype(bool).mean())
    metrics["n_detections_total"] = int(len(detections))

    rows = []
    for cls in [None, *classes]:
        part = detections if cls is None else detections[detections["class"] == cls] if len(detections) else detections
        if not len(part):
            continue
        for region, mass_col, area_col, role in [("box", "mass_box", "area_box", "core")] + [
                (r, f"mass.{r}", f"area.{r}", None) for r in regions]:
            mass, area = part[mass_col].to_numpy(float), part[area_col].to_numpy(float)
            mass_mean, area_mean = float(mass.mean()), float(area.mean())
            rows.append({"region": region, "role": role, "class": cls, "group": None, "mass_mean": mass_mean,
                         "mass_ci": bootstrap_ci(mass, seed, n_boot), "area_mean": area_mean,
                         "lift": mass_mean / area_mean if area_mean > 0 else None, "n": int(len(part)),
                         "mass_outside": float(part["mass_outside"].mean())})

    interventions = pd.DataFrame(evidence.get("interventions") or [])
    flags = []
    if len(interventions) and len(detections):
        summary = class_summary(detections, regions)
        lifts = {(r["class"], r["region"]): r["lift"] for r in rows if r["class"] is not None}
        for f in table_flags(summary, interventions,
                               outside_threshold=float(options.get("outside_threshold", OUTSIDE_THRESHOLD)),
                               min_drop=float(options.get("min_drop", MIN_DROP))):
            ci = f["excess_drop_ci"]
            test = TestResult(name="context fill", description="the class's detection score with the region "
                              "filled vs an equal-area control fill, paired bootstrap interval",
                              effect=float(f["excess_drop"]), interval=(ci[0], ci[1]), n=int(f["n"]),
                              slice=Slice(f["class"]), decision="shown")
            finding = Finding(
                kind="context", subject=f["region"], slice=Slice(f["class"]), severity=f["severity"],
                confidence="high", effect=float(f["excess_drop"]), tests=(test,),
                headline=(f"Detections of {f['class']} depend on {f['region']}: filling it lowers their score by "
                          f"{f['excess_drop']:.0%} more than an equal-area fill (interval [{ci[0]:.0%}, "
                          f"{ci[1]:.0%}], n = {f['n']} detections)"),
                lift=lifts.get((f["class"], f["region"])),
                evidence={k: f[k] for k in ("score_drop", "score_drop_ci", "control_drop", "excess_drop",
                                            "excess_drop_ci", "recall_before", "recall_after", "mass_outside",
                                            "mass_region", "n")})
            flags.append(finding.to_json())
    flags.sort(key=lambda f: -f["evidence"]["excess_drop"])
    return {"metrics": metrics, "regions": rows, "flags": flags, "sanity": evidence.get("sanity") or {},
            "faithfulness": evidence.get("faithfulness") or {},
            "detection": {"classes": classes, "regions": regions, "settings": options,
                          "interventions": [_plain(r) for r in interventions.to_dict("records")]}}


def _plain(record: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in record.items()}
