"""Human labels on a dataset's regions, re-checked against every audit of that dataset.

A person who has looked at a region decides what it is: a *shortcut* (the model must not use it) or
*legitimate* (attending to it is fine, whatever its role in regions.json says). The verdict belongs to the
dataset, not to the run it was made on, so it follows every later model version: each report carries the
labels with what this version does with the region ("labelled shortcut on v1: still 2.1x attention on v3").
Pure over a report dict and the workspace's label rows; the report's cached statistics are not touched.

A region discovered from the maps has no fixed name: each audit numbers its discoveries (the corner cue is
`discovered-2` on v1 and `discovered-1` on v2, and v2's `discovered-2` may be another cue). So a label on a
discovered region is carried by what the region holds, not by its name: the region of the audit it was set
on (`origin_discoveries`) is matched to this audit's discoveries as the compare page matches them
(`analysis.report.compare.discovered_tracks`: the images that hold them and where they sit), and the label
applies to the match under its name here ("labelled legitimate on v1 as discovered-2 (small uniform patch,
in one of 4 corners)"). No match: the label says so and applies to nothing.
"""
from __future__ import annotations

import math

STILL_ATTENDED = 1.0  # lift CI above this: more attention than the region's area explains
DISCOVERED = "discovered-"  # the prefix of a region discovered from the maps (`analysis.stats.discovered_regions`)


def model_label(name: str | None, version: str | None) -> str:
    """"cage-net v2" (also for version 2), or the bare name when no version was given."""
    name = str(name or "unnamed model")
    if version in (None, ""):
        return name
    version = f"v{version}" if str(version).isdigit() else str(version)  # a card's `"version": 2` reads v2
    return name if name.endswith(version) else f"{name} {version}"


def label_checks(labels: list[dict], report: dict, origins: dict[str, list[dict]] | None = None) -> list[dict]:
    """One row per label: the verdict, where it was set, and the region's attention in this report.

    `origins`: run id -> the discovered regions of that audit (`origin_discoveries`), for the labels set on a
    discovered region; a row's `region` is then the matched region's name in this report (None: no match),
    `labelled_region` the name it was given where it was set."""
    rows = {r["region"]: r for r in report.get("regions") or []
            if r.get("class") is None and r.get("group") is None}
    rows.update({d["name"]: d.get("attention") or {} for d in report.get("discovered_regions") or []})
    flagged = {f["region"] for f in report.get("flags") or []}
    model = (report.get("run") or {}).get("model") or {}
    here = model_label(model.get("name"), model.get("version"))
    out = []
    for label in labels:
        labelled, verdict = label["region"], label["verdict"]
        region, unmatched = carried_region(label, report, origins or {})
        origin = model_label(label.get("model_name"), label.get("model_version")) if label.get("model_id") else None
        row = rows.get(region) if region is not None else None
        lift = _number(row.get("lift")) if row else None
        low = _number((row.get("lift_ci") or [None])[0]) if row else None
        attended = low is not None and low > STILL_ATTENDED
        on = f" on {origin}" if origin else ""
        if region is not None and region != labelled:
            on += f" as {labelled}"
        if unmatched:
            text = f"labelled {verdict}{on}: {unmatched}"
        elif row is None or lift is None:
            text = f"labelled {verdict}{on}: this audit has no region {region} to check"
        elif verdict == "legitimate":
            text = (f"labelled legitimate{on}: {lift:.1f}x attention on {here}, not counted as a shortcut")
        elif attended:
            text = f"labelled shortcut{on}: still {lift:.1f}x attention on {here}"
        else:
            text = (f"labelled shortcut{on}: no more attention than its size explains on {here} "
                    f"({lift:.1f}x)")
        out.append({"region": region, "labelled_region": labelled, "verdict": verdict, "note": label.get("note") or "",
                    "labelled_on": origin, "labelled_run": label.get("run_id"), "lift": lift,
                    "still_attended": bool(attended) if row is not None else None,
                    "flagged": region in flagged, "text": text})
    return out


def carried_region(label: dict, report: dict, origins: dict[str, list[dict]]) -> tuple[str | None, str | None]:
    """(the region of `report` the label is about, why there is none). A fixed region (annotated, grid cell)
    by its name; a discovered one by what it holds, matched from the audit the label was set on."""
    from analysis.report.compare import discovered_tracks

    name, run_id = str(label["region"]), label.get("run_id")
    if not name.startswith(DISCOVERED) or run_id == (report.get("run") or {}).get("id"):
        return name, None
    found = [d for d in origins.get(run_id) or [] if d.get("name") == name]
    if not found:
        return None, (f"the audit it was set on ({run_id or 'unknown'}) no longer holds {name}, so it cannot be "
                      f"matched to this audit's discovered regions")
    tracks = discovered_tracks([{"discovered_regions": found}, report])
    match = next((t[1] for t in tracks if t[0] == name and t[1] is not None), None)
    if match is None:
        return None, (f"{name} ({found[0].get('description') or 'a discovered region'}) was not discovered in this "
                      f"audit (no region here holds the same images at the same places)")
    return match, None


def origin_discoveries(workspace, labels: list[dict]) -> dict[str, list[dict]]:
    """Run id -> the discovered regions of each audit a label on a discovered region was set on (read from that
    audit's evidence; an audit deleted since gives none)."""
    out: dict[str, list[dict]] = {}
    for label in labels:
        run_id = label.get("run_id")
        if run_id and str(label["region"]).startswith(DISCOVERED) and run_id not in out:
            try:
                out[run_id] = list((workspace.store(run_id).evidence() or {}).get("discovered_regions") or [])
            except (OSError, ValueError, KeyError):
                out[run_id] = []
    return out


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
