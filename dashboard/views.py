"""Display shaping: engine results -> the tables, figures and sentences the pages show.

Selecting, renaming, ordering and plotting only; every statistic comes from `analysis` (via
`dashboard.data`). Kept free of `st.*` calls so it is testable as plain functions.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd
import plotly.graph_objects as go

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


def _pick(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The listed columns that exist; catalog timestamps (epoch seconds) shown as dates."""
    picked = frame[[c for c in columns if c in frame.columns]].copy()
    for column in ("created", "updated"):
        if column in picked:
            picked[column] = pd.to_datetime(picked[column], unit="s").dt.strftime("%Y-%m-%d %H:%M")
    return picked


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    return _pick(runs, ["id", "name", "model_name", "model_id", "dataset_name", "dataset_id", "method",
                        "n_images", "n_done", "seed", "status", "created"])


def model_table(models: pd.DataFrame) -> pd.DataFrame:
    return _pick(models, ["id", "name", "version", "format", "task", "architecture", "sha256", "created"])


def dataset_table(datasets: pd.DataFrame) -> pd.DataFrame:
    return _pick(datasets, ["id", "name", "n_images", "classes", "sha256", "created"])


def flags_frame(report: dict) -> pd.DataFrame:
    """A report's flags, most severe first, with evidence spread into columns."""
    rows = []
    for flag in report.get("flags", []):
        row = {k: v for k, v in flag.items() if k != "evidence"}
        row.update({f"evidence.{k}": v for k, v in (flag.get("evidence") or {}).items()
                    if not isinstance(v, (dict, list))})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = frame["severity"].map(SEVERITY_ORDER).fillna(len(SEVERITY_ORDER))
    return frame.assign(_order=order).sort_values(["_order", "lift"], ascending=[True, False]).drop(columns="_order")


def open_flags(runs: pd.DataFrame, report_of: Callable[[str], dict]) -> pd.DataFrame:
    """Flags of every finished run, most severe first, with the run they came from."""
    if runs.empty or "status" not in runs.columns:
        return pd.DataFrame()
    frames = []
    for run in runs[runs.status == "done"].itertuples():
        flags = flags_frame(report_of(run.id))
        if not flags.empty:
            frames.append(flags.assign(run=run.id, run_name=getattr(run, "name", None)))
    if not frames:
        return pd.DataFrame()
    flags = pd.concat(frames, ignore_index=True)
    order = flags["severity"].map(SEVERITY_ORDER).fillna(len(SEVERITY_ORDER))
    flags = flags.assign(_order=order).sort_values(["_order", "lift"], ascending=[True, False])
    flags = readable_intervals(flags)
    first = ["run_name", "run", "severity", "region", "class", "lift"]
    return flags[[c for c in first if c in flags] + [c for c in flags if c not in first and c != "_order"]]


def readable_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Interval columns (two-number lists) as "[0.93, 1.12]", not two floats at full precision."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, (list, tuple)) and len(v) == 2).any():
            frame[column] = frame[column].map(_interval_text)
    return frame


def _interval_text(value) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{value[0]:.2f}, {value[1]:.2f}]"
    return None if isinstance(value, (list, tuple)) or pd.isna(value) else str(value)


def region_rows(report: dict, scope: str) -> pd.DataFrame:
    """Rows of `report["regions"]` for one scope: "overall", "class" or "group"."""
    frame = pd.DataFrame(report.get("regions", []))
    if frame.empty:
        return frame
    has_class = frame["class"].notna() if "class" in frame else pd.Series(False, index=frame.index)
    has_group = frame["group"].notna() if "group" in frame else pd.Series(False, index=frame.index)
    mask = {"overall": ~has_class & ~has_group, "class": has_class & ~has_group, "group": has_group}[scope]
    return frame[mask].reset_index(drop=True)


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


def evidence_sentence(flag: dict) -> str:
    """One plain sentence per kind of evidence the flag carries."""
    evidence = flag.get("evidence") or {}
    parts = [f"The model puts {flag.get('lift', float('nan')):.1f}x more attention on **{flag['region']}** "
             f"than its area would suggest"]
    if "accuracy_drop" in evidence:
        parts.append(f"hiding it lowers accuracy by {100 * evidence['accuracy_drop']:.0f} points")
    if "flip_rate" in evidence:
        parts.append(f"changes {100 * evidence['flip_rate']:.0f}% of predictions")
    if "p_value" in evidence:
        parts.append(f"p = {evidence['p_value']:.2g}")
    if "second_explainer_agrees" in evidence:
        parts.append("a second explainer " + ("agrees" if evidence["second_explainer_agrees"] else "disagrees"))
    return "; ".join(parts) + "."


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


def sanity_verdicts(report: dict) -> pd.DataFrame:
    """One row per sanity check: check, passed, and its numbers."""
    rows = []
    for check, result in (report.get("sanity") or {}).items():
        if isinstance(result, dict):
            rows.append({"check": check, **{k: v for k, v in result.items() if not isinstance(v, (dict, list))}})
    return pd.DataFrame(rows)


def accuracy_figure(table: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy per slice with its Wilson interval."""
    labels = [("all" if c is None and g is None else (f"class {c}" if c is not None else g))
              for c, g in zip(table["class"], table["group"])]
    figure = go.Figure(go.Bar(
        x=labels, y=table["accuracy"],
        error_y=dict(type="data", array=table["ci_high"] - table["accuracy"],
                     arrayminus=table["accuracy"] - table["ci_low"]),
        customdata=table[["n"]].to_numpy(), hovertemplate="%{x}: %{y:.1%} of %{customdata[0]} images<extra></extra>"))
    figure.update_layout(title=title, yaxis=dict(title="accuracy (95% CI)", range=[0, 1.05]), height=340,
                         margin=dict(t=50, b=40))
    return figure


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


def faithfulness_rows(report: dict) -> pd.DataFrame:
    """`report["faithfulness"]` (one dict per explainer, or one dict of metrics) as rows."""
    value = report.get("faithfulness") or {}
    if isinstance(value, list):
        return pd.DataFrame(value)
    if value and all(isinstance(v, dict) for v in value.values()):
        return pd.DataFrame([{"explainer": k, **{m: x for m, x in v.items() if not isinstance(x, (dict, list))}}
                             for k, v in value.items()])
    return pd.DataFrame([{k: v for k, v in value.items() if not isinstance(v, (dict, list))}]) if value else pd.DataFrame()


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


def default_series(runs: pd.DataFrame, limit: int = 5) -> list[str]:
    """The runs a comparison should open on: the first finished run and the later runs of *other* models on
    the same dataset with the same explainer (a retraining series: cage v1..v5 with Grad-CAM), in the
    catalog's order. Two runs of one model with two explainers are not versions."""
    if runs.empty:
        return []
    first = runs.iloc[0]
    same = runs[(runs["dataset_id"] == first["dataset_id"]) & (runs["method"] == first["method"])]
    series = same.drop_duplicates("model_id")["id"].tolist()[:limit]
    return series if len(series) >= 2 else runs["id"].tolist()[:2]


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


def comparison_regions(comparison: dict) -> pd.DataFrame:
    """`compare_runs(...)["regions"]` as long rows: region, run, version, mass_mean, mass_ci_low/high, lift."""
    order = {name: k for k, name in enumerate(comparison.get("runs", []))}
    rows = []
    for region, entry in (comparison.get("regions") or {}).items():
        for run in entry.get("runs", []):
            if run is None:
                continue
            low, high = run.get("mass_ci") or (None, None)
            rows.append({"region": region, "role": entry.get("role"), "run": run["run"],
                         "version": order.get(run["run"], 0), "mass_mean": run["mass_mean"],
                         "mass_ci_low": low, "mass_ci_high": high, "lift": run.get("lift")})
    return pd.DataFrame(rows)


def comparison_accuracy(comparison: dict) -> pd.DataFrame:
    """Overall and per-subgroup accuracy rows of a comparison, with a display `slice` name and `version`."""
    order = {name: k for k, name in enumerate(comparison.get("runs", []))}
    table = pd.DataFrame(comparison.get("accuracy") or [])
    if table.empty:
        return table
    table = table[table["class"].isna()].copy()
    table["slice"] = table["group"].fillna("all images")
    table["version"] = table["run"].map(order)
    return table
