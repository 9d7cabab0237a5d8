"""The report and comparison bodies shared by taggers and segmenters: everything is per target (a tag, a
segment class). Pure helpers (frames, sentences) first; the Streamlit bodies hold no computation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from analysis.report.comparison_records import Comparison, read_comparison
from analysis.report.records import lower, upper
from analysis.report.sections import ReportView, read_report
from dashboard import components, data, overlay, version_marks, views


@dataclass(frozen=True)
class Wording:
    key: str  # "tag" or "class": the target's column in interventions
    section: str  # "multilabel" / "segmentation": the report's task section
    noun: str  # "tag" / "class"
    score: str  # what the intervention measures, in words
    maps: str  # the run's per-target maps table
    index: str  # its target index array


def intervention_rows(report: dict | ReportView, words: Wording) -> pd.DataFrame:
    """Every fill of the task's section: per (target, region) the drop, its control, the excess with its
    interval, flips and p (segmenters also IoU before, after and under the control)."""
    columns = [words.key, "region", "n", "drop", "control_drop", "excess_drop", "excess_drop_ci", "flip_rate",
               "control_flip_rate", "p_value"] + (["iou_before", "iou_after", "iou_control"] if words.key == "class" else [])
    section = read_report(report).targets
    rows = [{**row.to_json(), words.key: row.target} for row in (section.interventions if section else ())]
    return pd.DataFrame([{c: row[c] for c in columns} for row in rows], columns=columns)


def comparison_rows(comparison: dict | Comparison) -> pd.DataFrame:
    """One row per (target, region, run): excess drop with its CI, p, flagged."""
    typed = read_comparison(comparison)
    return pd.DataFrame([{typed.target_key: series.target, "region": series.region, "run": name, "version": version,
                          "excess_drop": effect.excess_drop, "ci_low": lower(effect.excess_drop_ci),
                          "ci_high": upper(effect.excess_drop_ci), "p_value": effect.p_value,
                          "flagged": effect.flagged}
                         for series in typed.effects
                         for version, (name, effect) in enumerate(zip(typed.runs, series.effects))
                         if effect is not None])


def target_maps(arrays: dict, index_key: str, target_idx: int) -> dict[int, np.ndarray]:
    """image id -> the map of one target on it, from a run's per-target maps."""
    if not arrays or not len(arrays.get("image_ids", [])):
        return {}
    keep = arrays[index_key] == target_idx
    return {int(i): m.astype(np.float32) for i, m in zip(arrays["image_ids"][keep], arrays["maps"][keep])}


def _interval(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def render(report: dict, run_id: str, version: str, info: dict, words: Wording, headline: tuple[str, str]) -> None:
    view = read_report(report)
    meta, flags = view.meta, view.findings
    cols = st.columns(4)
    cols[0].metric("Images explained", meta.n_images if meta.n_images is not None else info.get("n_done"))
    cols[1].metric(headline[0], headline[1])
    cols[2].metric("Shortcut flags", len(flags))
    cols[3].metric("Method", str(meta.method or info["method"]))
    tab_flags, tab_attention, tab_evidence, tab_gallery = st.tabs(
        ["Flags", f"Attention per {words.noun}", "Interventions", "Gallery"])
    with tab_flags:
        if not flags:
            st.success(f"No shortcut flagged: no {words.noun} changes under a region fill more than under an "
                       "equal-area control.")
        for finding in flags:
            components.finding_panel(finding)
        components.power_section(view)
    with tab_attention:
        rows = views.region_rows(view, "class")
        if rows.empty:
            st.info("No maps recorded.")
        else:
            st.plotly_chart(views.region_bar_figure(rows, "class", f"Share of saliency per region, per {words.noun}"),
                            width="stretch", key=f"{words.section}_region_chart")
            st.dataframe(views.display_table(rows), hide_index=True, width="stretch")
    with tab_evidence:
        st.dataframe(views.display_table(intervention_rows(view, words)), hide_index=True, width="stretch")
    with tab_gallery:
        names = list(view.targets.names) if view.targets else []
        if not names:
            st.info("No targets recorded.")
            return
        chosen = st.selectbox(words.noun.capitalize(), names, key=f"{words.section}_gallery_target")
        card = data.model_card(info["model_id"])
        classes = list(card.get("classes") or names)
        maps = target_maps(data.run_arrays(run_id, version, words.maps), words.index,
                           classes.index(chosen) if chosen in classes else -1)
        scale = data.map_scale(run_id, version)
        st.caption(f"{len(maps)} images with a map for {words.noun} {views.plain(chosen)}; showing the first 12.")
        grid = st.columns(6)
        for k, (image_id, saliency) in enumerate(list(maps.items())[:12]):
            picture, _mask = data.picture(info["dataset_id"], image_id)
            grid[k % 6].image(overlay.blend(picture, saliency, 0.6, scale), width="stretch", caption=f"image {image_id}")


def render_comparison(comparison: dict | Comparison, words: Wording) -> None:
    typed = read_comparison(comparison)
    rows = comparison_rows(typed)
    if rows.empty:
        st.info("No interventions recorded in these runs.")
        return
    rows["series"] = rows[words.key].astype(str) + " / " + rows["region"].astype(str)
    st.plotly_chart(version_marks.mark_flagged(views.version_lines_figure(
        rows, "series", "excess_drop", "ci_low", "ci_high", f"Excess {words.score} drop under a region fill",
        "region fill minus equal-area fill (95% CI)"), list(typed.runs), typed.flagged),
        width="stretch", key=f"{words.section}_compare_chart")
    st.dataframe(rows.drop(columns=["series"]), hide_index=True, width="stretch")
