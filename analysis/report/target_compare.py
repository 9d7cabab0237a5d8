"""Comparison of versions of a tagger or a segmenter, per target (tag / segment class), oldest first.

From each run's findings (`tag_report.tag_findings` / `segment_report.segment_findings`): per (target,
region) the per-run mass share (with its CI) and lift, and per (target, region, intervention: fill or swap)
the per-run effect (excess drop with its CI, p value, the (target, region) flagged or not). A shift between versions is a change in those numbers: the planted shortcut's
mass and excess drop fall and its flag goes away. `summarise` writes it as a few lines of text.
"""
from __future__ import annotations

from typing import Any, Callable


def compare_target_runs(stores: list, names: list[str], findings: Callable, key: str, *, section: str,
                        n_boot: int = 1000, seed: int = 0, **_ignored) -> dict[str, Any]:
    """`findings(store, n_boot=, seed=)` per run; `key` names the target ("tag" or "class"), `section` the
    findings' key that holds the interventions (the task's name)."""
    results = [findings(store, n_boot=n_boot, seed=seed) for store in stores]
    regions: dict[tuple, dict] = {}
    for k, found in enumerate(results):
        for row in found["regions"]:
            if row["class"] is None:
                continue
            entry = regions.setdefault((row["class"], row["region"]), {
                key: row["class"], "region": row["region"], "role": row["role"], "runs": [None] * len(stores)})
            entry["runs"][k] = {"mass_mean": row["mass_mean"], "mass_ci": row["mass_ci"], "lift": row["lift"],
                                "n": row["n"]}
    effects: dict[tuple, dict] = {}
    for k, found in enumerate(results):
        flagged = {(f["class"], f["region"]) for f in found["flags"]}
        for rec in found[section]["interventions"]:
            kind = rec.get("intervention") or "fill"
            entry = effects.setdefault((rec[key], rec["region"], kind), {
                key: rec[key], "region": rec["region"], "intervention": kind, "runs": [None] * len(stores)})
            entry["runs"][k] = {"excess_drop": rec.get("excess_drop"), "excess_drop_ci": rec.get("excess_drop_ci"),
                                "p_value": rec.get("p_value"), "n": rec.get("n"),
                                "flagged": (rec[key], rec["region"]) in flagged}
    result = {"runs": [{"name": n, "id": getattr(s, "run_id", None)} for n, s in zip(names, stores)],
              "target": key, "regions": list(regions.values()), "interventions": list(effects.values()),
              "flags": [[{"class": f["class"], "region": f["region"], "severity": f["severity"]}
                         for f in found["flags"]] for found in results],
              "metrics": [found["metrics"] for found in results]}
    result["summary"] = summarise(result)
    return result


def summarise(result: dict) -> str:
    """One line per (target, region) that is flagged in some run: excess drop per run, flagged marked *."""
    key, names = result["target"], [r["name"] for r in result["runs"]]
    lines = [f"{len(names)} runs: {', '.join(names)}"]
    for entry in result["interventions"]:
        runs = entry["runs"]
        if not any(r and r["flagged"] for r in runs):
            continue
        cells = ["-" if r is None or r["excess_drop"] is None else f"{r['excess_drop']:+.2f}{'*' if r['flagged'] else ''}"
                 for r in runs]
        lines.append(f"{key} {entry[key]!s} / region {entry['region']}: excess drop {' -> '.join(cells)} "
                     f"(* flagged; {entry.get('intervention') or 'fill'})")
    if len(lines) == 1:
        lines.append("no run is flagged")
    return "\n".join(lines)
