"""The report of a tagger run (DESIGN.md keys, per tag), pure over the run store.

- `metrics`: `accuracy` (the predicted tag set equals the true one), per tag `tag_accuracy` (Wilson 95% CI),
  precision and recall of the predicted tags;
- `regions`: per tag (`class` = the tag) and overall (`class` null, the images' summed target maps): mean
  share of the map's positive mass per region with a bootstrap 95% CI, mean area, lift, n maps;
- `flags`: per (tag, non-core region) whose fill changes the tag more than its control: `kind: "shortcut"`
  when the exact McNemar test on the flips gives p < the policy's `alpha` after Holm's correction over the
  run's tests and the excess probability drop is at least its `min_effect` with its CI above 0 (severity from
  the net effect, `analysis.report.policy`), evidence = the intervention record. Each finding carries the
  classifier's trust checks (`analysis.report.flags.robustness_checks`) on its own target: the second
  explainer's lift on the (target, region) (`analysis.evidence.target_second_explainer`) and the run's
  model-randomisation check; when either failed or did not run, the finding stays, one severity level lower,
  with confidence "low" and the reason (the classifier's rule, `analysis.report.flags.robustness`);
- `second_explainer`, `faithfulness`: the evidence's (`analysis.evidence.target_second_explainer`,
  `analysis.evidence.target_faithfulness`: deletion / insertion AUCs of the stored tag maps, reported only);
- `multilabel`: the tags, the run's settings and the intervention table, for the HTML and dashboard views.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.report.flags import robustness, robustness_checks
from analysis.report.policy import policy_of
from analysis.report.records import SEVERITIES, Finding, Slice, TestResult
from analysis.stats.aggregate import region_matrix, slice_stats, wilson_interval

POLICY = policy_of("multilabel")  # taggers and segmenters share it (analysis/report/policy.py)
EVIDENCE_KEYS = ("drop", "drop_ci", "control_drop", "excess_drop", "excess_drop_ci", "flip_rate", "flip_rate_ci",
                 "control_flip_rate", "discordant", "p_value", "n", "control_kind")


def region_rows(frame: pd.DataFrame, image_ids, cls, *, n_boot: int, seed: int) -> list[dict]:
    """Report `regions` rows of one slice (one map per image in `frame`); shared with the segmenter report."""
    if frame.empty:
        return []
    matrix = region_matrix(frame, image_ids)
    stats = slice_stats(matrix.mass, matrix.area, n_boot=n_boot, seed=seed)
    return [{"region": name, "role": matrix.roles[j], "class": cls, "group": None,
             "mass_mean": float(stats["mass_mean"][j]),
             "mass_ci": [float(stats["mass_ci_low"][j]), float(stats["mass_ci_high"][j])],
             "area_mean": float(stats["area_mean"][j]),
             "lift": None if not np.isfinite(stats["lift"][j]) else float(stats["lift"][j]), "n": int(stats["n"])}
            for j, name in enumerate(matrix.regions)]


def shortcut_flags(interventions: list[dict], lifts: dict, key: str, evidence: dict | None = None) -> list[dict]:
    """Findings from per-(target, region) intervention records (`key`: "tag" or "class"), in report-JSON
    shape. The exact McNemar p-values are Holm-corrected over every record of the run (the family the
    classification audit uses too); a record is flagged when its corrected p < `POLICY.alpha`, its excess drop is
    at least `POLICY.min_effect` and the drop's interval lies above 0. `evidence`: the run's evidence.json
    (second explainer, sanity), whose checks qualify each finding."""
    from analysis.stats.sequential import holm

    tested = [rec for rec in interventions if rec.get("p_value") is not None]
    corrected = dict(zip(map(id, tested), holm([rec["p_value"] for rec in tested]))) if tested else {}
    flags = []
    for rec in tested:
        excess, ci, p = rec.get("excess_drop"), rec.get("excess_drop_ci") or [None, None], corrected[id(rec)]
        if excess is None or ci[0] is None or not (p < POLICY.alpha and excess >= POLICY.min_effect and ci[0] > 0):
            continue
        what = "tag" if key == "tag" else "class"
        view = target_view(evidence or {}, str(rec[key]))
        checks = robustness_checks(rec["region"], view)
        robust, reasons = robustness(rec["region"], view)
        severity = POLICY.severity(excess)
        if not robust:
            severity = SEVERITIES[max(0, SEVERITIES.index(severity) - 1)]
        test = TestResult(name="fill", description=rec.get("test") or "exact one-sided McNemar on flips, region "
                          "fill vs equal-area control fill", effect=float(excess), interval=(ci[0], ci[1]),
                          p_value=float(rec["p_value"]), p_value_corrected=float(p),
                          correction=f"Holm over the run's {len(tested)} tests", n=rec.get("n"),
                          slice=Slice(rec[key]), decision="shown", control=rec.get("control_kind"))
        finding = Finding(
            kind="shortcut", subject=rec["region"], slice=Slice(rec[key]),
            severity=severity, confidence="high" if robust else "low",
            headline=(f"The {what} {rec[key]} depends on {rec['region']}: filling it lowers the {what}'s "
                      f"{'probability' if key == 'tag' else 'pixels found'} by {excess:.0%} more than filling an "
                      f"equal area elsewhere (corrected p = {p:.2g}, n = {rec.get('n')})"),
            effect=float(excess), tests=(test,), checks=tuple(checks), reasons=tuple(reasons),
            lift=lifts.get((rec[key], rec["region"])),
            evidence={**{k: rec[k] for k in EVIDENCE_KEYS if k in rec}, "p_value_holm": float(p),
                      "second_explainer": (view["second_explainer"] or {}).get("method"),
                      "second_explainer_lift": checks[0].value,
                      "sanity_passed": ((view["sanity"].get("model_randomization") or {}).get("passed"))})
        flags.append(finding.to_json())
    return sorted(flags, key=lambda f: -f["evidence"]["excess_drop"])


def target_view(evidence: dict, target: str) -> dict:
    """The evidence as the classifier's robustness rule reads it (`analysis.report.flags.robustness_checks`,
    `robustness`): one target's second-explainer regions (`analysis.evidence.target_second_explainer`) and the
    run's sanity check."""
    second = evidence.get("second_explainer") or {}
    regions = (second.get("targets") or {}).get(target)
    return {"second_explainer": {"method": second.get("method"), "regions": regions} if regions else {},
            "sanity": evidence.get("sanity") or {}}


def tag_findings(store, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    images, tags, tag_regions = store.images(), store.table("tags"), store.table("tag_regions")
    evidence = store.evidence()
    metrics: dict[str, Any] = {"accuracy": float(images["correct"].astype(bool).mean()) if len(images) else None,
                               "tags": {}}
    names = list(dict.fromkeys(tags["tag"])) if len(tags) else []
    for tag in names:
        part = tags[tags["tag"] == tag]
        truth, pred = part["truth"].astype(bool).to_numpy(), part["predicted"].astype(bool).to_numpy()
        right = int((truth == pred).sum())
        metrics["tags"][tag] = {
            "tag_accuracy": right / len(part), "ci": list(wilson_interval(right, len(part))),
            "precision": float((truth & pred).sum() / pred.sum()) if pred.any() else None,
            "recall": float((truth & pred).sum() / truth.sum()) if truth.any() else None,
            "n_true": int(truth.sum()), "n_predicted": int(pred.sum())}
    rows = region_rows(store.regions(), images["image_id"].to_numpy(), None, n_boot=n_boot, seed=seed)
    for tag in names:
        part = tag_regions[tag_regions["tag"] == tag] if len(tag_regions) else tag_regions
        rows += region_rows(part, part["image_id"].unique() if len(part) else [], tag, n_boot=n_boot, seed=seed)
    interventions = evidence.get("interventions") or []
    lifts = {(r["class"], r["region"]): r["lift"] for r in rows if r["class"] is not None}
    return {"metrics": metrics, "regions": rows, "flags": shortcut_flags(interventions, lifts, "tag", evidence),
            "sanity": evidence.get("sanity") or {}, "second_explainer": evidence.get("second_explainer") or {},
            "faithfulness": evidence.get("faithfulness") or {},
            "multilabel": {"tags": names, "settings": evidence.get("settings") or {},
                           "interventions": interventions}}
