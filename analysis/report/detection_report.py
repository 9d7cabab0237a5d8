"""The report of a detection run: the docs/FORMATS.md report keys, filled with detection content.

Pure over the run store (`analysis.runs.tasks.detection` writes the tables and the evidence), like the
classification report. What differs:
- `run.task` is "detection" (readers branch on it) and `run.settings` holds the runner's thresholds;
- `metrics`: per class the recall of the ground-truth objects (IoU >= 0.5, right class, score >= threshold)
  with a Wilson 95% interval, the number of detections, and overall recall; no accuracy;
- `regions`: per class (`class` = the detected class) and overall (`class` null), for `box` (role "core")
  and each context region: mean share of the detection's D-RISE mass (bootstrap 95% CI over detections),
  mean area share, lift = mass / area, n detections;
- `flags`: `analysis.evidence.detection_audit.table_flags` (rule in that module's docstring: the exact McNemar
  on lost detections, Holm over the run's (class, region) tests, the policy's alpha and minimum excess score
  drop) as typed findings (`analysis.report.records.Finding`, deciding test first) with the trust checks the
  other tasks' findings carry (`analysis.report.flags.robustness_checks`: the second explainer's lift on the
  (class, region), the run's model-randomisation check; either failed or not run: one severity level lower,
  confidence "low", the reason given);
- `power`: per (class, region) tested and not flagged, what its fill could still have done
  (`analysis.evidence.detection_audit.power_lines`); `multiple_testing`: the Holm family;
- `second_explainer`: the evidence's (`analysis.evidence.detection_second_explainer`), or why it was not run;
- `detection`: the per-(class, region) intervention table and the classes and regions, for the HTML and
  dashboard sections.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.evidence.detection_audit import (MIN_DROP, OUTSIDE_THRESHOLD, POLICY, bootstrap_ci, class_summary,
                                               holm_corrected, power_lines, table_flags)
from analysis.report.flags import robustness, robustness_checks
from analysis.report.records import SEVERITIES, Finding, Slice, TestResult
from analysis.report.tag_report import target_view
from analysis.stats.aggregate import wilson_interval
from analysis.stats.p_values import p_equals


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
    raw_flags = []
    if len(interventions) and len(detections):
        summary = class_summary(detections, regions)
        lifts = {(r["class"], r["region"]): r["lift"] for r in rows if r["class"] is not None}
        raw_flags = table_flags(summary, interventions,
                                outside_threshold=float(options.get("outside_threshold", OUTSIDE_THRESHOLD)),
                                min_drop=float(options.get("min_drop", MIN_DROP)))
        flags = [context_finding(f, lifts.get((f["class"], f["region"])), evidence) for f in raw_flags]
    flags.sort(key=lambda f: -f["evidence"]["excess_drop"])
    n_tests = sum(p is not None for p in holm_corrected(interventions))
    return {"metrics": metrics, "regions": rows, "flags": flags, "sanity": evidence.get("sanity") or {},
            "faithfulness": evidence.get("faithfulness") or {},
            "second_explainer": evidence.get("second_explainer") or {},
            "power": power_lines(interventions, raw_flags) if len(interventions) else [],
            "multiple_testing": {"method": "Holm", "alpha": POLICY.alpha, "family": "classes x context regions "
                                 "(the fill's exact McNemar on lost detections)", "n_tests": n_tests},
            "detection": {"classes": classes, "regions": regions, "settings": options,
                          "interventions": [_plain(r) for r in interventions.to_dict("records")]}}


def context_finding(f: dict, lift: float | None, evidence: dict) -> dict:
    """One flag of `table_flags` as a typed finding (JSON), qualified by the run's trust checks."""
    ci = f["excess_drop_ci"]
    view = target_view(evidence, str(f["class"]))
    checks = robustness_checks(f["region"], view)
    robust, reasons = robustness(f["region"], view)
    severity = f["severity"] if robust else SEVERITIES[max(0, SEVERITIES.index(f["severity"]) - 1)]
    test = TestResult(name="context fill", description="exact one-sided McNemar on lost detections, region fill "
                      "vs equal-area control fill; effect: the excess D-RISE score drop, paired bootstrap interval",
                      effect=float(f["excess_drop"]), interval=(ci[0], ci[1]), p_value=float(f["p_value"]),
                      p_value_corrected=float(f["p_value_holm"]), correction=f"Holm over the run's {f['n_tests']} tests",
                      n=int(f["n"]), slice=Slice(f["class"]), decision="shown", control="equal-area")
    lost = f["lost_rate"] - f["control_lost_rate"]
    finding = Finding(
        kind="context", subject=f["region"], slice=Slice(f["class"]), severity=severity,
        confidence="high" if robust else "low", effect=float(f["excess_drop"]), tests=(test,),
        checks=tuple(checks), reasons=tuple(reasons),
        headline=(f"Detections of {f['class']} depend on {f['region']}: filling it loses {lost:.0%} more of them "
                  f"than an equal-area fill and lowers their score by {f['excess_drop']:.2f} more (interval "
                  f"[{ci[0]:.2f}, {ci[1]:.2f}]; corrected p {p_equals(f['p_value_holm'])}, n = {f['n']} detections)"),
        lift=lift,
        evidence={**{k: f[k] for k in ("score_drop", "score_drop_ci", "control_drop", "excess_drop",
                                       "excess_drop_ci", "lost_rate", "control_lost_rate", "discordant", "p_value",
                                       "p_value_holm", "recall_before", "recall_after", "mass_outside",
                                       "attention_outside", "mass_region", "n")},
                  "second_explainer": (view["second_explainer"] or {}).get("method"),
                  "second_explainer_lift": checks[0].value,
                  "sanity_passed": (view["sanity"].get("model_randomization") or {}).get("passed")})
    return finding.to_json()


def _plain(record: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in record.items()}
