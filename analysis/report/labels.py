"""Human labels on a dataset's regions, re-checked against every audit of that dataset.

A person who has looked at a region decides what it is: a *shortcut* (the model must not use it) or
*legitimate* (attending to it is fine, whatever its role in regions.json says). The verdict belongs to the
dataset, not to the run it was made on, so it follows every later model version: each report carries the
labels with what this version does with the region ("labelled shortcut on v1: still 2.1x attention on v3").
Pure over a report dict and the workspace's label rows; the report's cached statistics are not touched.
"""
from __future__ import annotations

import math

STILL_ATTENDED = 1.0  # lift CI above this: more attention than the region's area explains


def model_label(name: str | None, version: str | None) -> str:
    """"cage-net v2" (also for version 2), or the bare name when no version was given."""
    name = str(name or "unnamed model")
    if version in (None, ""):
        return name
    version = f"v{version}" if str(version).isdigit() else str(version)  # a card's `"version": 2` reads v2
    return name if name.endswith(version) else f"{name} {version}"


def label_checks(labels: list[dict], report: dict) -> list[dict]:
    """One row per label: the verdict, where it was set, and the region's attention in this report."""
    rows = {r["region"]: r for r in report.get("regions") or []
            if r.get("class") is None and r.get("group") is None}
    flagged = {f["region"] for f in report.get("flags") or []}
    model = (report.get("run") or {}).get("model") or {}
    here = model_label(model.get("name"), model.get("version"))
    out = []
    for label in labels:
        region, verdict = label["region"], label["verdict"]
        origin = model_label(label.get("model_name"), label.get("model_version")) if label.get("model_id") else None
        row = rows.get(region)
        lift = _number(row.get("lift")) if row else None
        low = _number((row.get("lift_ci") or [None])[0]) if row else None
        attended = low is not None and low > STILL_ATTENDED
        on = f" on {origin}" if origin else ""
        if row is None or lift is None:
            text = f"labelled {verdict}{on}: this audit has no region {region} to check"
        elif verdict == "legitimate":
            text = (f"labelled legitimate{on}: {lift:.1f}x attention on {here}, not counted as a shortcut")
        elif attended:
            text = f"labelled shortcut{on}: still {lift:.1f}x attention on {here}"
        else:
            text = (f"labelled shortcut{on}: no more attention than its size explains on {here} "
                    f"({lift:.1f}x)")
        out.append({"region": region, "verdict": verdict, "note": label.get("note") or "",
                    "labelled_on": origin, "labelled_run": label.get("run_id"), "lift": lift,
                    "still_attended": bool(attended) if row is not None else None,
                    "flagged": region in flagged, "text": text})
    return out


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
