"""Version comparison of detection runs: did retraining take the detector off its context shortcut?

The same question as `analysis.report.compare` asks of classifiers, with detection evidence. Per class and per
region (`box`, each context region), the mean share of the detections' D-RISE mass per version with its
bootstrap CI, and between consecutive versions the change with `analysis.report.compare.mass_change`. Detections
are not the same objects across versions (a retrained detector finds other boxes), so a class's masses are
first averaged per image: the test is paired on the images where both versions detected the class (on
(image, class) for the all-class `regions`; `mass_change` falls back to an unpaired permutation, `paired`
false, when fewer than two are shared). Next to
attention, what the flag rests on: each version's context-fill intervention (excess score drop and CI,
flagged or not) and the recall per class with Wilson CIs. `regions` (all detections, whatever their class)
keeps the `compare --format json` contract: per region the per-run `mass_mean`, `mass_ci` and `lift`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.report.compare import mass_change, mass_shift, rate_shifts
from analysis.report.detection_report import detection_findings
from analysis.report.policy import policy_of

POLICY = policy_of("detection")


def compare_detection_runs(stores, names, *, n_boot: int = 1000, n_perm: int = 4000, seed: int = 0,
                           alpha: float = POLICY.alpha, **_ignored) -> dict:
    stores, names = list(stores), [str(n) for n in names]
    if len(set(names)) < len(names):
        raise ValueError(f"run names must be unique, got {names}")
    findings = [detection_findings(store, n_boot=n_boot, seed=seed) for store in stores]
    detections = [store.table("detections") for store in stores]
    region_names = sorted({r for f in findings for r in f["detection"]["regions"]})
    classes = sorted({c for f in findings for c in f["detection"]["classes"]})

    def entries(cls):
        out = {}
        for region in ["box", *region_names]:
            runs = [_run_row(name, f["regions"], cls, region) for name, f in zip(names, findings)]
            if all(r is None for r in runs):
                continue
            masses = [_per_image_mass(table, cls, region) for table in detections]
            changes = [{"from": names[k - 1], "to": names[k],
                        **mass_change(*masses[k - 1], *masses[k], n_perm=n_perm, n_boot=n_boot, seed=seed)}
                       for k in range(1, len(stores)) if len(masses[k - 1][0]) and len(masses[k][0])]
            out[region] = {"role": "core" if region == "box" else None, "runs": runs, "changes": changes}
        return out

    ids = [getattr(store, "run_id", None) for store in stores]  # names can collide; scripts key on ids
    result = {"task": "detection", "runs": names, "run_ids": ids, "regions": entries(None),
              "classes": {cls: e for cls in classes if (e := entries(cls))},  # a class no version detected: none
              "context": [_context_row(name, f, row) for name, f in zip(names, findings)
                          for row in f["detection"]["interventions"]],
              "recall": [{"run": name, "class": cls, "recall": value["recall"], "ci_low": value["ci"][0],
                          "ci_high": value["ci"][1], "n_objects": value["n_objects"]}
                         for name, f in zip(names, findings) for cls, value in f["metrics"]["recall"].items()],
              "map_similarity": [], "accuracy": []}
    result["summary"] = summarise(result, alpha=alpha)
    return result


def summarise(result: dict, *, alpha: float = POLICY.alpha) -> str:
    """Plain lines: context flags that appeared or went, context attention that moved, recall that moved."""
    names, lines = result["runs"], []
    if len(names) < 2:
        return ""
    first, last = names[0], names[-1]
    context = pd.DataFrame(result["context"])
    if len(context):
        for (cls, region), part in context.groupby(["class", "region"], sort=True):
            by_run = part.set_index("run")
            if first not in by_run.index or last not in by_run.index:
                continue
            a, b = by_run.loc[first], by_run.loc[last]
            if bool(a["flagged"]) != bool(b["flagged"]):
                state = "no longer depends" if a["flagged"] else "now depends"
                lines.append(f"{cls} {state} on {region}: filling it costs {a['excess_drop']:.2f} of the score "
                             f"in {first}, {b['excess_drop']:.2f} in {last} (beyond an equal-area control fill)")
    for cls, regions in result["classes"].items():
        for region, entry in regions.items():
            shift = mass_shift(entry, alpha)
            if shift is None:
                continue
            verb, a, b = shift
            lines.append(f"the share of {cls} detections' saliency on {region} {verb} from "
                         f"{a['mass_mean']:.0%} to {b['mass_mean']:.0%} between {a['run']} and {b['run']}")
    recall = pd.DataFrame(result["recall"])
    if len(recall):
        for row in rate_shifts(recall, first, last, "class", "recall").to_dict("records"):
            verb = "rose" if row["recall_b"] > row["recall_a"] else "fell"
            lines.append(f"recall on {row['class']} {verb} from {row['recall_a']:.0%} to {row['recall_b']:.0%}")
    if not lines:
        return f"no significant change in context dependence between {first} and {last}"
    return "; ".join(lines)


def _run_row(name: str, rows: list[dict], cls, region: str) -> dict | None:
    row = next((r for r in rows if r["class"] == cls and r["region"] == region), None)
    if row is None:
        return None
    return {"run": name, **{k: row[k] for k in ("mass_mean", "mass_ci", "area_mean", "lift", "n")}}


def _per_image_mass(detections: pd.DataFrame, cls, region: str) -> tuple[np.ndarray, np.ndarray]:
    """(keys, mean mass): per image for one class; per (image, class) over all classes."""
    column = "mass_box" if region == "box" else f"mass.{region}"
    if not len(detections) or column not in detections:
        return np.zeros(0, dtype=str), np.zeros(0)
    part = detections if cls is None else detections[detections["class"] == cls]
    means = part.groupby(["image_id", "class"], sort=True)[column].mean()
    keys = np.array([f"{i}/{c}" for i, c in means.index], dtype=str)
    return keys, means.to_numpy(float)


def _context_row(name: str, findings: dict, intervention: dict) -> dict:
    flagged = {(f["class"], f["region"]): f["severity"] for f in findings["flags"]}
    key = (intervention["class"], intervention["region"])
    return {"run": name, "class": key[0], "region": key[1], "excess_drop": intervention["excess_drop"],
            "excess_drop_ci": intervention["excess_drop_ci"], "score_drop": intervention["score_drop"],
            "control_drop": intervention["control_drop"], "p_value": intervention.get("p_value"),
            "lost_excess": intervention.get("lost_excess"), "flagged": key in flagged,
            "severity": flagged.get(key)}
