"""The report page of a detection run: context flags with their evidence, where each class's D-RISE mass
goes (box vs each context region), and a gallery with boxes drawn and the D-RISE overlay.

The shaping helpers are plain functions (testable without Streamlit); `render` is the one entry point the
report page calls. Every number comes from the report (`analysis.report.detection_report`) or the run store via
`dashboard.data`; nothing is computed here and no model is loaded.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from analysis.report.comparison_records import Comparison, read_comparison
from analysis.report.records import lower, upper
from analysis.report.sections import ReportView, read_report
from dashboard import overlay

BOX_COLORS = [(255, 64, 64), (255, 220, 0), (64, 200, 255), (200, 100, 255), (80, 255, 120)]
GALLERY_SIZE = 24


def class_mass_rows(report: dict | ReportView) -> pd.DataFrame:
    """Per-class region rows (box and each context region) with CI bounds as columns."""
    return pd.DataFrame([{"class": r.slice.target, "region": r.region, "mass_mean": r.mass_mean,
                          "mass_ci_low": lower(r.mass_ci), "mass_ci_high": upper(r.mass_ci),
                          "area_mean": r.area_mean, "lift": r.lift, "n": r.n}
                         for r in read_report(report).regions if r.slice.target is not None])


def class_mass_figure(rows: pd.DataFrame) -> go.Figure:
    """One bar group per class: share of D-RISE mass in the box and in each context region, with 95% CIs."""
    figure = go.Figure()
    for region, part in rows.groupby("region", sort=False):
        figure.add_bar(x=part["class"], y=part["mass_mean"], name=str(region),
                       error_y=dict(type="data", array=part["mass_ci_high"] - part["mass_mean"],
                                    arrayminus=part["mass_mean"] - part["mass_ci_low"], visible=True),
                       customdata=part[["area_mean", "lift"]].to_numpy(),
                       hovertemplate="%{x}, " + str(region) + ": %{y:.3f} of D-RISE mass<br>area "
                                     "%{customdata[0]:.3f}, lift %{customdata[1]:.2f}<extra></extra>")
    figure.update_layout(title="Where each class's detections look (share of D-RISE mass, 95% CI)",
                         barmode="group", yaxis_title="share of positive D-RISE mass", xaxis_title="detected class",
                         height=380, margin=dict(t=50, b=40))
    return figure


def recall_rows(report: dict | ReportView) -> pd.DataFrame:
    return pd.DataFrame([{"class": r.target, "recall": r.recall, "ci_low": lower(r.ci),
                          "ci_high": upper(r.ci), "objects": r.n_objects, "detections": r.n_detections}
                         for r in read_report(report).metrics.recall])


def intervention_rows(report: dict | ReportView) -> pd.DataFrame:
    """Every context fill: score drop, its control, the excess with its interval, recall before and after."""
    return pd.DataFrame([{"class": c.target, "region": c.region, "score_drop": c.score_drop,
                          "control_drop": c.control_drop, "excess_drop": c.excess_drop,
                          "excess_ci_low": lower(c.excess_drop_ci),
                          "excess_ci_high": upper(c.excess_drop_ci), "recall_before": c.recall_before,
                          "recall_after": c.recall_after, "n": c.n}
                         for c in read_report(report).detection.interventions])


def draw_boxes(image: Image.Image, boxes: list[dict], classes: list[str], scale: float = 1.0) -> Image.Image:
    """Detections drawn on the picture: `boxes` rows with x0, y0, x1, y1 (image pixels), class, score."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for row in boxes:
        color = BOX_COLORS[classes.index(row["class"]) % len(BOX_COLORS)] if row["class"] in classes else (255,) * 3
        xy = [row["x0"] * scale, row["y0"] * scale, row["x1"] * scale - 1, row["y1"] * scale - 1]
        draw.rectangle(xy, outline=color, width=max(1, int(scale // 2)))
        draw.text((xy[0] + 2, max(xy[1] - 11, 0)), f"{row['class']} {row['score']:.2f}", fill=color)
    return out


def boxes_on(image_id: int, detections: pd.DataFrame) -> list[dict]:
    """The detections (rows with box, class, score) of one image."""
    return detections[detections["image_id"] == image_id].to_dict("records") if len(detections) else []


def boxed_picture(picture: Image.Image, saliency, opacity: float, scale: float, boxes: list[dict],
                  classes: list[str]) -> Image.Image:
    """The picture under its D-RISE overlay (when `saliency` is a map), enlarged, with the detector's boxes."""
    if saliency is not None:
        picture = overlay.blend(picture, saliency, opacity, scale)
    big = overlay.enlarged(picture, min_side=256)
    return draw_boxes(big, boxes, classes, scale=big.width / picture.width)


def gallery_rows(detections: pd.DataFrame, images: pd.DataFrame, class_filter: str | None,
                 sort_region: str | None) -> pd.DataFrame:
    """Images to show: those with a detection of `class_filter` (all when None), sorted by the highest share
    of a detection's mass on `sort_region` (most context-reliant first)."""
    if "class" not in detections:  # no detection at all (the store has no columns to give)
        return images if class_filter is None else images.iloc[:0]
    dets = detections if class_filter is None else detections[detections["class"] == class_filter]
    column = f"mass.{sort_region}" if sort_region else "mass_outside"
    if column not in dets:
        column = "mass_outside"
    order = dets.groupby("image_id")[column].max().sort_values(ascending=False) if len(dets) else pd.Series(dtype=float)
    ids = list(order.index)
    if class_filter is None:
        ids += [i for i in images["image_id"].astype(int) if i not in set(ids)]
    return images.set_index("image_id").loc[ids].reset_index() if ids else images.iloc[:0]


def render(report: dict, run_id: str, version: str, info: dict) -> None:
    """The whole detection report page body (the page has drawn the title and the run picker)."""
    import streamlit as st

    from dashboard import components, data, views

    view = read_report(report)
    meta, metrics, flags = view.meta, view.metrics, view.findings
    cols = st.columns(4)
    cols[0].metric("Images explained", meta.n_images if meta.n_images is not None else info.get("n_done"))
    cols[1].metric("Detections", metrics.n_detections_total)
    recall = metrics.recall_overall
    cols[2].metric("Recall (IoU ≥ 0.5)", "n/a" if recall is None else f"{recall:.1%}")
    cols[3].metric("Context flags", len(flags))
    st.caption("Detection audit (D-RISE) · model " + views.plain(meta.model.name or "?") +
               " · dataset " + views.plain(meta.dataset.name or "?") + f" · seed {meta.seed}")
    tab_flags, tab_classes, tab_gallery, tab_export = st.tabs(["Flags", "Attention per class", "Gallery", "Export"])

    with tab_flags:
        if not flags:
            st.success("No context shortcut flagged: no class loses score when a context region is filled, "
                       "beyond what filling an equal area elsewhere costs.")
        for finding in flags:
            components.finding_panel(finding)
        components.power_section(view)
        table = intervention_rows(view)
        st.subheader("Context fill per class and region")
        st.caption("Score drop when the region is filled with the rest of the scene's colour, when an equal "
                   "area elsewhere is filled instead (control), and their paired excess with its 95% bootstrap CI.")
        if table.empty:
            st.caption("No intervention recorded (the dataset has no context.json).")
        else:
            st.dataframe(views.display_table(table), hide_index=True, width="stretch")
        st.subheader("Explainer sanity")
        sanity = views.sanity_verdicts(view)
        if sanity.empty:
            st.caption("No sanity check recorded for this run.")
        else:
            st.caption("D-RISE recomputed for the same detections while the detector's layers are re-initialised "
                       "from the output side: maps that stay similar would not be reading the detector.")
            st.dataframe(views.display_table(sanity), hide_index=True, width="stretch",
                         column_config={"criterion": st.column_config.TextColumn("criterion", width=620)})

    with tab_classes:
        rows = class_mass_rows(view)
        if rows.empty:
            st.info("No detections above the score threshold.")
        else:
            st.plotly_chart(class_mass_figure(rows), width="stretch", key="det_mass_chart")
            st.dataframe(views.display_table(rows), hide_index=True, width="stretch")
        st.subheader("Recall per class")
        st.dataframe(views.display_table(recall_rows(view)), hide_index=True, width="stretch")

    with tab_gallery:
        detections, images = data.detections(run_id, version), data.store_images(run_id, version)
        classes, regions = list(view.detection.classes), list(view.detection.regions)
        flagged = [f.subject for f in flags]
        c1, c2, c3, c4 = st.columns([1, 1, 1, 2])
        class_filter = c1.selectbox("Class", [None] + classes, key="det_gallery_class",
                                    format_func=lambda v: "all classes" if v is None else v)
        sort_region = c2.selectbox("Sort by mass on", regions, key="det_gallery_sort",
                                   index=regions.index(flagged[0]) if flagged and flagged[0] in regions else 0) \
            if regions else None
        overlay_on = c3.toggle("D-RISE overlay", value=True, key="det_overlay_on")
        opacity = c4.slider("Overlay opacity", 0.0, 1.0, 0.6, step=0.05, key="det_overlay_opacity",
                            disabled=not overlay_on)
        shown = gallery_rows(detections, images, class_filter, sort_region)
        st.caption(f"{len(shown)} images; showing the first {min(len(shown), GALLERY_SIZE)}. Boxes: the detector's "
                   "own detections (score ≥ threshold) with class and score.")
        image_ids, maps = data.saliency_maps(run_id, version)
        position = {int(i): k for k, i in enumerate(image_ids)}
        scale = data.map_scale(run_id, version)
        for k, row in enumerate(shown.head(GALLERY_SIZE).to_dict("records")):
            if k % 6 == 0:
                grid = st.columns(6)
            image_id = int(row["image_id"])
            picture, _mask = data.picture(info["dataset_id"], image_id)
            mine = boxes_on(image_id, detections)
            saliency = maps[position[image_id]] if overlay_on and image_id in position else None
            boxed = boxed_picture(picture, saliency, opacity, scale, mine, classes)
            best = max((detection_row.get(f"mass.{sort_region}", 0.0) for detection_row in mine),
                       default=0.0) if sort_region else 0.0
            with grid[k % 6]:
                st.image(boxed, width="stretch",
                         caption=f"{len(mine)} detection(s) · {sort_region or 'context'} {best:.2f}")

    with tab_export:
        components.export_buttons(run_id, version, key="det_export")


def comparison_context_rows(comparison: dict | Comparison) -> pd.DataFrame:
    """`compare_detection_runs(...)["context"]`: one row per version, class and region, flagged or not."""
    return pd.DataFrame([{"run": c.run, "class": c.target, "region": c.region, "excess_drop": c.excess_drop,
                          "excess_drop_ci": list(c.excess_drop_ci) if c.excess_drop_ci else None,
                          "score_drop": c.score_drop, "control_drop": c.control_drop, "flagged": c.severity or "no"}
                         for c in read_comparison(comparison).context])


def comparison_recall_rows(comparison: dict | Comparison) -> pd.DataFrame:
    """Recall rows of a detection comparison with the run's `version` position, for `version_lines_figure`."""
    typed = read_comparison(comparison)
    order = {name: k for k, name in enumerate(typed.runs)}
    return pd.DataFrame([{"run": r.run, "class": r.target, "recall": r.recall, "ci_low": r.ci_low,
                          "ci_high": r.ci_high, "n_objects": r.n_objects, "version": order.get(r.run)}
                         for r in typed.recall])


def render_comparison(comparison: dict, run_ids: list[str], versions: tuple[str, ...], labels: dict) -> None:
    """The Compare page body for detection runs (the page has drawn the picker and the summary)."""
    import streamlit as st

    from dashboard import data, version_marks, views

    typed = read_comparison(comparison)
    names, flags = list(typed.runs), typed.flagged
    st.subheader("Context dependence per version")
    st.caption("Excess score drop: what filling the region with the rest of the scene's colour costs a class's "
               "detections beyond an equal-area control fill elsewhere (95% bootstrap CI). A flag that goes away "
               "means retraining took the detector off that context.")
    st.dataframe(views.readable_intervals(comparison_context_rows(typed)), hide_index=True, width="stretch")

    classes = [name for name, _ in typed.classes]
    if classes:
        flagged = [c.target for c in typed.context if c.flagged]
        cls = st.selectbox("Class", classes, key="det_compare_class",
                           index=classes.index(flagged[0]) if flagged and flagged[0] in classes else 0)
        rows = views.comparison_regions(typed, typed.class_regions(cls))
        st.plotly_chart(version_marks.mark_flagged(views.version_lines_figure(
            rows, "region", "mass_mean", "mass_ci_low", "mass_ci_high", f"Where {cls} detections look, across versions",
            "share of D-RISE mass (95% CI)"), names, flags), width="stretch", key="det_compare_regions_chart")
    recall = comparison_recall_rows(typed)
    if not recall.empty:
        st.plotly_chart(version_marks.mark_flagged(views.version_lines_figure(
            recall, "class", "recall", "ci_low", "ci_high", "Recall per class across versions",
            "recall (95% Wilson CI)"), names, flags), width="stretch", key="det_compare_recall_chart")

    st.subheader("The same image under every version")
    first = run_ids[0]
    images = data.store_images(first, versions[0])
    common = set(images["image_id"].astype(int))
    for r, v in zip(run_ids[1:], versions[1:]):
        common &= set(data.store_images(r, v)["image_id"].astype(int))
    if not common:
        st.info("These runs explained no image in common (different datasets or samples).")
        return
    context = [c for c in typed.context if c.flagged]
    ordered = gallery_rows(data.detections(first, versions[0]), images, context[0].target if context else None,
                           context[0].region if context else None)  # most context-reliant first
    choices = [i for i in ordered["image_id"].astype(int) if i in common] or sorted(common)
    names = images.set_index("image_id")["image"]
    image_id = st.selectbox("Image", choices, key="det_compare_image", format_func=lambda i: str(names.loc[i]))
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.6, step=0.05, key="det_compare_opacity")
    for column, r, v in zip(st.columns(len(run_ids)), run_ids, versions):
        ids, maps = data.saliency_maps(r, v)
        position = {int(i): k for k, i in enumerate(ids)}
        picture, _ = data.picture(data.run_info(r)["dataset_id"], image_id)
        mine = boxes_on(image_id, data.detections(r, v))
        saliency = maps[position[image_id]] if image_id in position else None
        column.image(boxed_picture(picture, saliency, opacity, data.map_scale(r, v), mine, classes),  # one colour
                     width="stretch", caption=f"{labels[r]} · {len(mine)} detection(s)")  # per class, every column
