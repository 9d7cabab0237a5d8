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
- `power`: per (tag, region) tested and not flagged, the upper bounds of what its interventions could still
  change (`power_lines`); `multiple_testing`: the Holm family (every test of the run);
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
from analysis.stats.p_values import p_equals

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
    """Findings from per-(target, region, intervention) records (`key`: "tag" or "class"), in report-JSON
    shape, one per (target, region). The exact McNemar p-values are Holm-corrected over every record of the run
    (fills and swaps: the family the classification audit uses too); a record passes when its corrected p <
    `POLICY.alpha`, its excess drop is at least `POLICY.min_effect` and the drop's interval lies above 0. The
    finding's deciding test is its surest passing record, the (target, region)'s other tests follow it.
    `evidence`: the run's evidence.json (second explainer, sanity), whose checks qualify each finding."""
    tested = [rec for rec in interventions if rec.get("p_value") is not None]
    corrected = dict(zip(map(id, tested), holm_values([rec["p_value"] for rec in tested])))
    groups: dict[tuple, list[dict]] = {}
    for rec in tested:
        groups.setdefault((str(rec[key]), rec["region"]), []).append(rec)
    flags = []
    for (target, region), recs in groups.items():
        passing = [rec for rec in recs if _passes(rec, corrected[id(rec)])]
        if not passing:
            continue
        best = min(passing, key=lambda rec: (corrected[id(rec)], -rec["excess_drop"]))
        p, excess = corrected[id(best)], best["excess_drop"]
        what = "tag" if key == "tag" else "class"
        view = target_view(evidence or {}, target)
        checks = robustness_checks(region, view)
        robust, reasons = robustness(region, view)
        severity = POLICY.severity(excess)
        if not robust:
            severity = SEVERITIES[max(0, SEVERITIES.index(severity) - 1)]
        tests = tuple(_test(rec, corrected[id(rec)], len(tested), key, rec in passing)
                      for rec in [best] + [r for r in recs if r is not best])
        kind = best.get("intervention") or "fill"
        action = ("giving it the look of another class's surroundings" if kind == "swap" else "filling it")
        finding = Finding(
            kind="shortcut", subject=region, slice=Slice(target),
            severity=severity, confidence="high" if robust else "low",
            headline=(f"The {what} {target} depends on {region}: {action} lowers the {what}'s "
                      f"{'probability' if key == 'tag' else 'pixels found'} by {excess:.0%} more than doing the same "
                      f"to an equal area elsewhere (corrected p {p_equals(p)}, n = {best.get('n')})"),
            effect=float(excess), tests=tests, checks=tuple(checks), reasons=tuple(reasons),
            lift=lifts.get((target, region)),
            evidence={**{k: best[k] for k in EVIDENCE_KEYS if k in best}, "intervention": kind,
                      "p_value_holm": float(p), "second_explainer": (view["second_explainer"] or {}).get("method"),
                      "second_explainer_lift": checks[0].value,
                      "sanity_passed": ((view["sanity"].get("model_randomization") or {}).get("passed"))})
        flags.append(finding.to_json())
    return sorted(flags, key=lambda f: -f["evidence"]["excess_drop"])


def holm_values(p_values: list[float]) -> list[float]:
    from analysis.stats.sequential import holm

    return [float(p) for p in holm(p_values)] if p_values else []


def _passes(rec: dict, p: float) -> bool:
    excess, ci = rec.get("excess_drop"), rec.get("excess_drop_ci") or [None, None]
    return excess is not None and ci[0] is not None and p < POLICY.alpha and excess >= POLICY.min_effect and ci[0] > 0


def _decision(rec: dict, passes: bool) -> str:
    high = (rec.get("excess_drop_ci") or [None, None])[1]
    return "shown" if passes else "excluded" if high is not None and high < POLICY.exclude else "undecided"


def _test(rec: dict, p: float, family: int, key: str, passes: bool) -> TestResult:
    kind = rec.get("intervention") or "fill"
    ci = rec.get("excess_drop_ci") or [None, None]
    return TestResult(name=kind, description=rec.get("test") or f"exact one-sided McNemar on flips, region {kind} "
                      f"vs equal-area control {kind}", effect=rec.get("excess_drop"), interval=(ci[0], ci[1]),
                      p_value=float(rec["p_value"]), p_value_corrected=float(p),
                      correction=f"Holm over the run's {family} tests", n=rec.get("n"), slice=Slice(rec[key]),
                      decision=_decision(rec, passes), control=rec.get("control_kind") or "equal-area")


def power_lines(interventions: list[dict], flags: list[dict], key: str) -> list[dict]:
    """Per (target, region) tested and not flagged: what its interventions could still have done (the upper
    bounds of their excess drops' 95% intervals), the largest first."""
    flagged = {(str(f.get("class")), f.get("region")) for f in flags}
    groups: dict[tuple, list[dict]] = {}
    for rec in interventions:
        if rec.get("p_value") is not None and (rec.get("excess_drop_ci") or [None, None])[1] is not None:
            groups.setdefault((str(rec[key]), rec["region"]), []).append(rec)
    what, unit = ("tag", "probability") if key == "tag" else ("class", "share of pixels found")
    out = []
    for (target, region), recs in groups.items():
        if (target, region) in flagged:
            continue
        parts = [f"{'swapping' if rec.get('intervention') == 'swap' else 'filling'} it, "
                 + (f"by at most {rec['excess_drop_ci'][1]:.0%}" if rec["excess_drop_ci"][1] > 0 else
                    "no more than the control") for rec in recs]
        upper = max(rec["excess_drop_ci"][1] for rec in recs)
        text = (f"`{region}` could still lower the {what} {target}'s {unit} beyond an equal-area control: "
                f"{'; '.join(parts)} (95% upper bounds, n = {max(int(rec.get('n') or 0) for rec in recs)})")
        out.append({"class": target, "region": region, "n": max(int(rec.get("n") or 0) for rec in recs),
                    "level": 0.95, "excess_drop_upper": float(upper), "text": text})
    return out


def target_view(evidence: dict, target: str) -> dict:
    """The evidence as the classifier's robustness rule reads it (`analysis.report.flags.robustness_checks`,
    `robustness`): one target's second-explainer regions (`analysis.evidence.target_second_explainer`) and the
    run's sanity check, with the checks the registry did not judge (a black box's sanity: why not)."""
    second = evidence.get("second_explainer") or {}
    regions = (second.get("targets") or {}).get(target)
    return {"second_explainer": {"method": second.get("method"), "regions": regions} if regions else {},
            "sanity": evidence.get("sanity") or {}, "not_judged": evidence.get("not_judged") or []}


def multiple_testing(interventions: list[dict]) -> dict:
    return {"method": "Holm", "alpha": POLICY.alpha, "family": "targets x regions x interventions (exact McNemar)",
            "n_tests": sum(rec.get("p_value") is not None for rec in interventions)}


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
    flags = shortcut_flags(interventions, lifts, "tag", evidence)
    return {"metrics": metrics, "regions": rows, "flags": flags, "power": power_lines(interventions, flags, "tag"),
            "multiple_testing": multiple_testing(interventions), "sanity": evidence.get("sanity") or {}, "second_explainer": evidence.get("second_explainer") or {},
            "faithfulness": evidence.get("faithfulness") or {},
            "multilabel": {"tags": names, "settings": evidence.get("settings") or {},
                           "interventions": interventions}}
