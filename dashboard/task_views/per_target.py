"""The report and comparison bodies shared by taggers and segmenters: everything is per target (a tag, a
segment class). Pure helpers (frames, sentences) first; the Streamlit bodies hold no computation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import components, data, overlay, version_marks, views


@dataclass(frozen=True)
class Wording:
    key: str  # "tag" or "class": the target's column in interventions
    section: str  # "multilabel" / "segmentation": the report's task section
    noun: str  # "tag" / "class"
    score: str  # what the intervention measures, in words
    maps: str  # the run's per-target maps table
    index: str  # its target index array


def intervention_rows(report: dict, words: Wording) -> pd.DataFrame:
    rows = (report.get(words.section) or {}).get("interventions") or []
    columns = [words.key, "region", "n", "drop", "control_drop", "excess_drop", "excess_drop_ci", "flip_rate",
               "control_flip_rate", "p_value"] + (["iou_before", "iou_after", "iou_control"] if words.key == "class" else [])
    frame = pd.DataFrame(rows)
    return frame[[c for c in columns if c in frame]] if len(frame) else pd.DataFrame(columns=columns)


def comparison_rows(comparison: dict) -> pd.DataFrame:
    """One row per (target, region, run): excess drop with its CI, p, flagged."""
    key, names = comparison["target"], [r["name"] for r in comparison["runs"]]
    rows = []
    for entry in comparison.get("interventions") or []:
        for version, (name, run) in enumerate(zip(names, entry["runs"])):
            if run is not None:
                low, high = run.get("excess_drop_ci") or (None, None)
                rows.append({key: entry[key], "region": entry["region"], "run": name, "version": version,
                             "excess_drop": run["excess_drop"],
                             "ci_low": low, "ci_high": high, "p_value": run["p_value"], "flagged": run["flagged"]})
    return pd.DataFrame(rows)


def target_maps(arrays: dict, index_key: str, target_idx: int) -> dict[int, np.ndarray]:
    """image id -> the map of one target on it, from a run's per-target maps."""
    if not arrays or not len(arrays.get("image_ids", [])):
        return {}
    keep = arrays[index_key] == target_idx
    return {int(i): m.astype(np.float32) for i, m in zip(arrays["image_ids"][keep], arrays["maps"][keep])}


def _interval(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def render(report: dict, run_id: str, version: str, info: dict, words: Wording, headline: tuple[str, str]) -> None:
    meta, flags = report.get("run") or {}, report.get("flags") or []
    cols = st.columns(4)
    cols[0].metric("Images explained", meta.get("n_images", info.get("n_done")))
    cols[1].metric(headline[0], headline[1])
    cols[2].metric("Shortcut flags", len(flags))
    cols[3].metric("Method", str(meta.get("method", info["method"])))
    tab_flags, tab_attention, tab_evidence, tab_gallery = st.tabs(
        ["Flags", f"Attention per {words.noun}", "Interventions", "Gallery"])
    with tab_flags:
        if not flags:
            st.success(f"No shortcut flagged: no {words.noun} changes under a region fill more than under an "
                       "equal-area control.")
        for flag in flags:
            components.finding_panel(flag)
    with tab_attention:
        rows = views.region_rows(report, "class")
        if rows.empty:
            st.info("No maps recorded.")
        else:
            st.plotly_chart(views.region_bar_figure(rows, "class", f"Share of saliency per region, per {words.noun}"),
                            width="stretch", key=f"{words.section}_region_chart")
            st.dataframe(views.readable_intervals(rows), hide_index=True, width="stretch")
    with tab_evidence:
        st.dataframe(intervention_rows(report, words), hide_index=True, width="stretch")
    with tab_gallery:
        names = (report.get(words.section) or {}).get("tags" if words.key == "tag" else "classes") or []
        if not names:
            st.info("No targets recorded.")
            return
        chosen = st.selectbox(words.noun.capitalize(), names, key=f"{words.section}_gallery_target")
        classes = list(data.model_card(info["model_id"]).get("classes") or names)
        maps = target_maps(data.run_arrays(run_id, version, words.maps), words.index,
                           classes.index(chosen) if chosen in classes else -1)
        scale = data.map_scale(run_id, version)
        st.caption(f"{len(maps)} images with a map for {words.noun} {views.plain(chosen)}; showing the first 12.")
        grid = st.columns(6)
        for k, (image_id, saliency) in enumerate(list(maps.items())[:12]):
            picture, _mask = data.picture(info["dataset_id"], image_id)
            grid[k % 6].image(overlay.blend(picture, saliency, 0.6, scale), width="stretch", caption=f"image {image_id}")


def render_comparison(comparison: dict, words: Wording) -> None:
    rows = comparison_rows(comparison)
    if rows.empty:
        st.info("No interventions recorded in these runs.")
        return
    rows["series"] = rows[words.key].astype(str) + " / " + rows["region"].astype(str)
    names = [r["name"] if isinstance(r, dict) else r for r in comparison.get("runs") or []]
    st.plotly_chart(version_marks.mark_flagged(views.version_lines_figure(
        rows, "series", "excess_drop", "ci_low", "ci_high", f"Excess {words.score} drop under a region fill",
        "region fill minus equal-area fill (95% CI)"), names, comparison.get("flagged") or {}),
        width="stretch", key=f"{words.section}_compare_chart")
    st.dataframe(rows.drop(columns=["series"]), hide_index=True, width="stretch")
