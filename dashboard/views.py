"""Display shaping: engine results -> the tables, figures and sentences the pages show.

Selecting, renaming, ordering and plotting only; every statistic comes from `analysis` (via
`dashboard.data`). Kept free of `st.*` calls so it is testable as plain functions.
"""
from __future__ import annotations

import math
from typing import Callable

import pandas as pd
import plotly.graph_objects as go

from analysis.report.comparison_records import Comparison, RegionSeries, read_comparison
from analysis.report.records import Finding, RegionStat, Slice, lower, upper
from analysis.report.sections import RegionIntervention, ReportView, read_report
from analysis.report.verdict import explainer_agreement
from analysis.report.version_order import series_of, version_key

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}
STAGE_TEXT = {"explaining": "explaining images", "interventions": "testing regions (interventions)",
              "second explainer": "cross-checking with a second explainer", "sanity": "sanity check",
              "faithfulness": "faithfulness check", "report": "writing the report"}


def _pick(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The listed columns that exist; catalog timestamps (epoch seconds) shown as dates."""
    picked = frame[[c for c in columns if c in frame.columns]].copy()
    for column in ("created", "updated"):
        if column in picked:
            picked[column] = pd.to_datetime(picked[column], unit="s").dt.strftime("%Y-%m-%d %H:%M")
    return picked


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    return _pick(runs, ["name", "model_label", "dataset_name", "method", "n_done", "n_skipped", "seed", "status",
                        "created", "id", "model_id", "dataset_id"])


def model_table(models: pd.DataFrame) -> pd.DataFrame:
    return _pick(models, ["name", "version", "format", "created", "id", "sha256"])


def dataset_table(datasets: pd.DataFrame) -> pd.DataFrame:
    return _pick(datasets, ["name", "n_items", "task", "created", "id", "sha256"])


def readable_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Interval columns (two-number lists) as "[0.93, 1.12]", not two floats at full precision."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, (list, tuple)) and len(v) == 2).any():
            frame[column] = frame[column].map(_interval_text)
    return frame


def _interval_text(value) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        low, high = f"{value[0]:.2f}", f"{value[1]:.2f}"
        return low if low == high else f"[{low}, {high}]"  # one image gives no interval: show the value
    return None if isinstance(value, (list, tuple)) or pd.isna(value) else str(value)


def region_rows(report: dict | ReportView, scope: str) -> pd.DataFrame:
    """The report's region rows for one scope: "overall", "class" or "group", in the JSON's columns (`lift_ci`
    only where the report has it: taggers' and segmenters' rows do not)."""
    keep = {"overall": lambda s: s.target is None and s.group is None,
            "class": lambda s: s.target is not None and s.group is None,
            "group": lambda s: s.group is not None}[scope]
    regions = read_report(report).regions
    rows = [r.to_json() for r in regions if keep(r.slice)]
    columns = [c for c in RegionStat("", None, Slice(), None, None, None, None, None).to_json()
               if c != "lift_ci" or any(r.lift_ci for r in regions)]
    return pd.DataFrame([{c: row[c] for c in columns} for row in rows], columns=columns)


def region_bar_figure(rows: pd.DataFrame, split_by: str | None, title: str) -> go.Figure:
    """Mean attention share per region with its confidence interval as error bars; one bar series per split."""
    figure = go.Figure()
    groups = [(None, rows)] if split_by is None else list(rows.groupby(split_by, sort=True))
    for name, part in groups:
        low = [m - ci[0] for m, ci in zip(part["mass_mean"], part["mass_ci"])]
        high = [ci[1] - m for m, ci in zip(part["mass_mean"], part["mass_ci"])]
        figure.add_bar(x=part["region"], y=part["mass_mean"], name=str(name) if name is not None else "all",
                       error_y=dict(type="data", array=high, arrayminus=low, visible=True),
                       customdata=part[["area_mean", "lift"]].to_numpy() if "lift" in part else None,
                       hovertemplate="%{x}: %{y:.3f} of attention<br>area %{customdata[0]:.3f}, "
                                     "lift %{customdata[1]:.2f}<extra>%{fullData.name}</extra>")
    if "area_mean" in rows and split_by is None:
        figure.add_scatter(x=rows["region"], y=rows["area_mean"], mode="markers", name="share of area",
                           marker=dict(symbol="line-ew-open", size=28, color="black"))
    figure.update_layout(title=title, barmode="group", yaxis_title="share of saliency mass (95% CI)",
                         xaxis_title="region", height=380, margin=dict(t=50, b=40))
    return figure


def filter_gallery(table: pd.DataFrame, label: str | None = None, correct: str = "all",
                   flagged_region: str | None = None, cluster=None, sort_region: str | None = None,
                   flagged_min_lift: float = 1.0) -> pd.DataFrame:
    """The gallery rows after the filters, sorted by attention on `sort_region` (highest first).

    `flagged_region` keeps images whose share of attention on that region exceeds its share of area x
    `flagged_min_lift` (the per-image lift stored by the run), i.e. images where the shortcut shows.
    """
    rows = table
    if label is not None:
        rows = rows[rows["label"] == label]
    if correct == "correct":
        rows = rows[rows["correct"].astype(bool)]
    elif correct == "incorrect":
        rows = rows[~rows["correct"].astype(bool)]
    if flagged_region is not None and f"lift.{flagged_region}" in rows:
        rows = rows[rows[f"lift.{flagged_region}"] > flagged_min_lift]
    if cluster is not None and "cluster" in rows:
        rows = rows[rows["cluster"] == cluster]
    if sort_region is not None and f"mass.{sort_region}" in rows:
        rows = rows.sort_values(f"mass.{sort_region}", ascending=False, kind="stable")
    return rows


_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~$:")


def plain(text) -> str:
    """User-supplied text (class, region, file names) escaped so markdown shows it literally, never as markup."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in str(text))


def sanity_verdicts(report: dict | ReportView) -> pd.DataFrame:
    """One row per sanity check: check (in words), its numbers, passed, and the criterion."""
    return pd.DataFrame([{"check": humanize(c.name), "method": c.method, "n": c.n, "threshold": c.threshold,
                          "similarity": c.similarity, "final_similarity": c.final_similarity, "ssim": c.ssim,
                          "passed": c.passed, "criterion": c.criterion} for c in read_report(report).sanity])


def accuracy_slice(cls, group) -> str:
    """"all images", "class cat" or "in_cage=yes": missing values arrive as None or NaN."""
    if cls is not None and not (isinstance(cls, float) and math.isnan(cls)):
        return f"class {cls}"
    if group is not None and not (isinstance(group, float) and math.isnan(group)):
        return str(group)
    return "all images"


def accuracy_figure(table: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy per slice with its Wilson interval: one bar per slice (all images, classes, subgroups)."""
    labels = [accuracy_slice(c, g) for c, g in zip(table["class"], table["group"])]
    kinds = ["all" if label == "all images" else "class" if label.startswith("class ") else "subgroup"
             for label in labels]
    colors = {"all": "#444444", "class": "#1f77b4", "subgroup": "#ff7f0e"}
    figure = go.Figure(go.Bar(
        x=labels, y=table["accuracy"], marker_color=[colors[k] for k in kinds],
        error_y=dict(type="data", array=table["ci_high"] - table["accuracy"],
                     arrayminus=table["accuracy"] - table["ci_low"]),
        customdata=table[["n"]].to_numpy(), hovertemplate="%{x}: %{y:.1%} of %{customdata[0]} images<extra></extra>"))
    figure.update_layout(title=title, yaxis=dict(title="accuracy (95% CI)", range=[0, 1.05]), height=340,
                         margin=dict(t=50, b=40), xaxis=dict(type="category"))
    return figure


def accuracy_display(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy table in words: slice, images, correct, accuracy, 95% interval."""
    return pd.DataFrame({
        "slice": [accuracy_slice(c, g) for c, g in zip(table["class"], table["group"])],
        "images": table["n"].astype(int), "correct": table["correct"].astype(int),
        "accuracy": [percent(a) for a in table["accuracy"]],
        "95% interval": [value_text([lo, hi], percent=True) or "" for lo, hi in zip(table["ci_low"], table["ci_high"])]})


def version_lines_figure(table: pd.DataFrame, series: str, value: str, low: str, high: str, title: str,
                         yaxis: str) -> go.Figure:
    """One line per `series` value across versions, with its interval as a shaded band."""
    figure = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for k, (name, part) in enumerate(table.groupby(series, sort=True)):
        part = part.sort_values("version")
        color = palette[k % len(palette)]
        x = part["run"].tolist()
        figure.add_scatter(x=x + x[::-1], y=part[high].tolist() + part[low].tolist()[::-1], fill="toself",
                           fillcolor=color, opacity=0.18, line=dict(width=0), hoverinfo="skip",
                           showlegend=False, name=str(name))
        figure.add_scatter(x=x, y=part[value], mode="lines+markers", name=str(name), line=dict(color=color))
    figure.update_layout(title=title, yaxis_title=yaxis, xaxis_title="version (run)", height=380,
                         margin=dict(t=50, b=40))
    return figure


def duration(seconds: float) -> str:
    """'40 s', '3 min', '1.5 h': the precision an estimate deserves."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def datasets_for_task(datasets: pd.DataFrame, task: str) -> pd.DataFrame:
    """The datasets `task` takes (the `tasks` column: `Task.takes_dataset`), e.g. COCO folders for detectors."""
    takers = datasets["tasks"] if "tasks" in datasets else datasets["task"]
    return datasets[[task in str(t).split(",") for t in takers]]


def default_series(runs: pd.DataFrame) -> list[str]:
    """The runs a comparison opens on: the versions of the newest finished audit's model series, on its
    dataset with its explainer, oldest first (one run per version); empty when that series has one version."""
    if runs.empty:
        return []
    catalog_rows = runs.to_dict("records")
    newest = catalog_rows[-1]
    key = _series_key(newest)
    same = [r for r in catalog_rows if r["dataset_id"] == newest["dataset_id"] and r["method"] == newest["method"]
            and _series_key(r) == key]
    latest = {}
    for catalog_row in reversed(same):  # a model's latest run, where it stands in the catalog
        latest.setdefault(catalog_row["model_id"], catalog_row["id"])
    series = list(latest.values())[::-1]
    return series if len(series) >= 2 else []


def _series_key(catalog_row: dict) -> str:
    return series_of(catalog_row.get("model_name"), catalog_row.get("model_version"))[0]


def version_label(catalog_row: dict) -> str:
    """A run (a catalog row) as a version in a comparison: its model's name and version, and the explainer."""
    series, version = series_of(catalog_row.get("model_name"), catalog_row.get("model_version"))
    name = version if version != series else series
    return f"{name} ({catalog_row.get('method')})"


def series_warnings(runs: pd.DataFrame) -> list[str]:
    """What makes a chosen series something other than versions of one model on one dataset."""
    warnings = []
    if runs["method"].nunique() > 1:
        warnings.append("These audits use different explainers (" + ", ".join(sorted(runs["method"].unique())) +
                        "): differences below mix the explainers with the versions.")
    if runs["dataset_id"].nunique() > 1:
        warnings.append("These audits ran on different datasets: attention and accuracy are not paired image by "
                        "image.")
    if runs["model_id"].duplicated().any():
        warnings.append("Some of these audits are of the same model: they are not successive versions.")
    return warnings


def comparison_regions(comparison: dict | Comparison, regions: tuple[RegionSeries, ...] | None = None) -> pd.DataFrame:
    """A comparison's region series (or `regions`, e.g. one detected class's) as long rows: region, role, run,
    version (its position), mass_mean, mass_ci_low/high, lift."""
    typed = read_comparison(comparison)
    order = {name: k for k, name in enumerate(typed.runs)}
    rows = [{"region": series.region, "role": series.role, "run": point.run, "version": order.get(point.run, 0),
             "mass_mean": point.mass_mean, "mass_ci_low": lower(point.mass_ci),
             "mass_ci_high": upper(point.mass_ci), "lift": point.lift}
            for series in (typed.regions if regions is None else regions) for point in series.points
            if point is not None]
    return pd.DataFrame(rows)


def comparison_accuracy(comparison: dict | Comparison) -> pd.DataFrame:
    """Overall and per-subgroup accuracy rows of a comparison, with a display `slice` name and `version`."""
    typed = read_comparison(comparison)
    order = {name: k for k, name in enumerate(typed.runs)}
    return pd.DataFrame([{"run": a.run, "class": a.target, "group": a.group, "n": a.n, "correct": a.correct,
                          "accuracy": a.accuracy, "ci_low": a.ci_low, "ci_high": a.ci_high,
                          "slice": a.group or "all images", "version": order.get(a.run)}
                         for a in typed.accuracy if a.target is None])


# --- readable text: no None, nan, raw JSON or one-value intervals ------------------------------------
def value_text(value, *, percent: bool = False) -> str | None:
    """A value as a person reads it; None for nothing to show (None, NaN, empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if percent:
            return f"{100 * value:.0f}%"
        return f"{value:.3g}" if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            low, high = (value_text(v, percent=percent) for v in value)
            return low if low == high else f"{low} to {high}"  # a collapsed interval is one number
        parts = [value_text(v, percent=percent) for v in value]
        return ", ".join(p for p in parts if p) or None
    if isinstance(value, dict):
        parts = [f"{humanize(k)} {value_text(v)}" for k, v in value.items() if value_text(v) is not None]
        return "; ".join(parts) or None
    return str(value) or None


def humanize(key: str) -> str:
    return str(key).replace("_", " ").replace(".", " ").strip()


def display_table(frame: pd.DataFrame, rename: dict[str, str] | None = None) -> pd.DataFrame:
    """A table for the eye: every cell text (intervals "0.93 to 1.12", one value when collapsed), blanks for
    missing values, column names in words."""
    shown = frame.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v: value_text(v) or "")
    if len(shown):  # a column with nothing in it (no class in the overall rows) says nothing
        shown = shown[[c for c in shown.columns if (shown[c] != "").any()]]
    return shown.rename(columns=rename or {c: humanize(c) for c in shown.columns})


def percent(value) -> str:
    return value_text(value, percent=True) or "–"


# --- model series, findings as sentences -------------------------------------------------------------
def open_findings(report: dict | ReportView) -> list[Finding]:
    """The report's findings minus those on regions a person labelled legitimate."""
    return read_report(report).open_findings()


def overall_lift(report: dict | ReportView, region: str) -> float | None:
    return read_report(report).overall_lift(region)


GLOSSARY = """
- **Flagged**: an intervention showed that the model uses a region or an image property that is not what the
  label is about: hiding or swapping it changed the predictions more than an equal change elsewhere.
- **Clear**: every candidate was tested and an effect of the stated size ruled out, with a model and an
  explainer that could be judged. It says nothing about what the audit could not see (listed in the report).
- **Cannot judge**: the audit cannot answer, and says why: the model's answers do not depend on the image or
  are at chance, the saliency maps are empty or the same for every image, the explainer failed its sanity
  check, or too few images to rule anything out.
- **Severity**: how much the predictions moved when the cue was removed or swapped, net of the control
  (high: 20 points or more, medium: 10 or more).
- **Attention relative to size** (lift): the share of the saliency a region gets divided by the share of the
  image it covers; 1 means "as much as its size explains".
"""


def model_series(runs: pd.DataFrame, report_of: Callable[[str], dict]) -> list[dict]:
    """Finished audits grouped by (model series, dataset), one entry per version across explainers.

    Each entry: series, dataset, methods (most versions first: the first is the one the box speaks for),
    versions [{version, run, runs {method: run id}, report, verdict}] in version order
    (`analysis.report.version_order`), verdict (the latest version's), agreement (one line on whether the
    explainers' verdicts agree), findings (the latest version's open findings as sentences with their effect),
    labels, trend [{region, points [(version, lift)]}].
    """
    if runs.empty or "status" not in runs:
        return []
    done = runs[runs.status == "done"]
    groups: dict[tuple, dict] = {}
    for catalog_row in done.to_dict("records"):
        series, version = series_of(catalog_row.get("model_name"), catalog_row.get("model_version"))
        entry = groups.setdefault((series, catalog_row.get("dataset_id")), {
            "series": series, "dataset": catalog_row.get("dataset_name") or "deleted dataset",
            "dataset_id": catalog_row.get("dataset_id"), "versions": {}})
        slot = entry["versions"].setdefault(catalog_row["model_id"], {
            "version": version, "runs": {}, "order": version_key(catalog_row)})
        slot["runs"][catalog_row.get("method")] = catalog_row["id"]  # later runs of a method replace earlier ones
    out = []
    for entry in groups.values():
        # v1..v5 whatever order they ran in (version_order.version_key)
        versions = sorted(entry["versions"].values(), key=lambda v: v.pop("order"))
        counts: dict[str, int] = {}
        for v in versions:
            for method in v["runs"]:
                counts[method] = counts[method] + 1 if method in counts else 1
        methods = sorted(counts, key=lambda m: (-counts[m], m != "gradcam", str(m)))
        for v in versions:
            primary = next(m for m in methods if m in v["runs"])
            v["run"], v["method"] = v["runs"][primary], primary
            v["reports"] = {m: report_of(r) for m, r in v["runs"].items()}
            v["report"] = v["reports"][primary]
            v["verdict"] = read_report(v["report"]).verdict
        latest = versions[-1]
        typed = read_report(latest["report"])
        findings = [{"text": f"{latest['version']}: {f.headline}", "severity": f.severity, "region": f.region,
                     "effect": f.effect} for f in typed.open_findings() if f.effect is not None]
        regions = list(dict.fromkeys(f.region for v in versions for f in read_report(v["report"]).open_findings()
                                     if f.region is not None))
        regions += [label.region for label in typed.labels
                    if label.verdict == "shortcut" and label.region not in regions]
        trend = [{"region": region, "points": [(v["version"], overall_lift(v["report"], region)) for v in versions]}
                 for region in regions]
        verdicts = {m: read_report(r).verdict for m, r in latest["reports"].items()}
        out.append({**entry, "methods": methods, "method": latest["method"], "versions": versions,
                    "verdict": latest["verdict"], "agreement": explainer_agreement(verdicts),
                    "findings": findings, "trend": trend, "labels": [label.to_json() for label in typed.labels]})
    order = {"flagged": 0, "cannot_judge": 1, "clear": 2}
    return sorted(out, key=lambda e: (order[e["verdict"].status] if e["verdict"] else 3,
                                      -len(e["findings"]), e["series"]))


def trend_text(trend: dict) -> str:
    points = [f"{version} {lift:.1f}x" for version, lift in trend["points"] if isinstance(lift, (int, float))]
    return f"{trend['region']}: " + " → ".join(points) if points else f"{trend['region']}: not measured"


def exemplar_image(table: pd.DataFrame, region: str) -> int | None:
    """The image whose saliency puts the largest share on `region`: the picture that shows the finding."""
    column = f"mass.{region}"
    if table.empty or column not in table or table[column].isna().all():
        return None
    return int(table.loc[table[column].idxmax(), "image_id"])


# --- flag evidence as a panel ---------------------------------------------------------------------------

def power_lines(report: dict | ReportView) -> tuple[list[str], str | None]:
    """(what each unflagged region's test could have detected, the multiple-testing sentence) from the report."""
    view = read_report(report)
    return [p.text for p in view.power], view.multiple_testing.sentence() if view.multiple_testing else None


def skipped_summary(report: dict | ReportView) -> str | None:
    """"2 images were skipped: 1 truncated PNG, 1 not an image" (None when none was)."""
    skipped = read_report(report).skipped
    if not skipped:
        return None
    reasons = pd.Series([s.reason for s in skipped]).value_counts()
    words = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    return f"{len(skipped)} image{'s were' if len(skipped) > 1 else ' was'} skipped: {words}"


def default_model_name(file_name: str | None) -> str | None:
    """An uploaded file's own name without its suffix ("cage_net_v2.pt2" -> "cage_net_v2"): never the staging
    folder it waits in."""
    if not file_name:
        return None
    from pathlib import PurePath

    return PurePath(file_name).name.split(".")[0] or None


def share_text(value) -> str:
    """A share of attention to two decimals, or "absent" where the image has no such region."""
    return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "absent"


def discovered_rows(report: dict | ReportView) -> pd.DataFrame:
    """One row per region discovered from the maps (`analysis.stats.discovered_regions`): what it is, where the
    maps put attention on it, what filling and swapping it did (each against its control), and the verdict:
    flagged (by which test, Holm-corrected) or what its test could have detected."""
    view = read_report(report)
    rows = []
    for d in view.discovered:
        iv = view.intervention(d.name) or RegionIntervention(region=d.name)
        flagged, verdict = view.discovered_verdict(d.name)
        rows.append({
            "region": d.name, "description": d.description,
            "images": f"{percent(d.share)} ({len(d.image_ids)} of {d.n_images if d.n_images is not None else '?'})",
            "lift": _lift_text(d.lift, d.lift_ci or (None, None)),
            "fill: flips (control)": _pair(iv.flip_rate, iv.control_flip_rate), "fill p": _p_text(iv.p_value),
            "swap: towards donor (control)": _pair(iv.swap_towards_donor, iv.swap_control_towards_donor),
            "swap p": _p_text(iv.swap_p_value), "verdict": verdict, "flagged": flagged,
            "exemplars": list(d.exemplars),
        })
    return pd.DataFrame(rows, columns=["region", "description", "images", "lift", "fill: flips (control)", "fill p",
                                       "swap: towards donor (control)", "swap p", "verdict", "flagged", "exemplars"])


def comparison_discovered(reports: dict[str, dict], tracks: list[list[str | None]] | None = None) -> pd.DataFrame:
    """Per version (label -> its report), the regions discovered in it with their attention, evidence and verdict.
    Discovered regions are numbered per audit (the same cue can be `discovered-2` in one version, `discovered-1`
    in the next); `tracks` (`analysis.report.compare.discovered_tracks`, in the order of `reports`) gives each
    cue one number across versions ("cue 1"), and the rows are grouped by cue, versions in order."""
    columns = ["cue", "version", "region", "flagged", "swap: towards donor (control)", "fill: flips (control)",
               "lift", "images", "description"]
    labels = list(reports)
    cue_of = {(labels[k], name): f"cue {t + 1}" for t, track in enumerate(tracks or [])
              for k, name in enumerate(track) if name is not None and k < len(labels)}
    frames = []
    for k, (label, report) in enumerate(reports.items()):
        rows = discovered_rows(report).assign(version=label, order=k)
        rows["cue"] = [cue_of.get((label, name), "") for name in rows["region"]]
        frames.append(rows)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    table["first"] = table.groupby("cue")["order"].transform("min") if tracks else table["order"]
    return table.sort_values(["first", "cue", "order"], kind="stable")[columns].reset_index(drop=True)


def gallery_of_images(table: pd.DataFrame, image_ids: list[int]) -> pd.DataFrame:
    """The gallery rows of `image_ids`, in that order (a discovered region's exemplars first)."""
    order = {int(i): k for k, i in enumerate(image_ids)}
    rows = table[table["image_id"].astype(int).isin(order)]
    return rows.sort_values("image_id", key=lambda ids: ids.astype(int).map(order), kind="stable")


def _pair(value, control) -> str:
    if not isinstance(value, (int, float)):
        return "not tested"
    return percent(value) + (f" ({percent(control)})" if isinstance(control, (int, float)) else "")


def _p_text(value) -> str:
    return f"{value:.2g}" if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _lift_text(lift, ci) -> str:
    if not isinstance(lift, (int, float)):
        return ""
    low, high = (list(ci) + [None, None])[:2]
    interval = f" [{low:.2f}, {high:.2f}]" if isinstance(low, (int, float)) and isinstance(high, (int, float)) else ""
    return f"{lift:.2f}{interval} (by construction)"
