"""Bias report: where one run's attention goes across the dataset, the shortcut flags, and the images."""
import pandas as pd
import streamlit as st

from analysis.report.sections import read_report
from dashboard import components, data, overlay, state, task_views, views

st.title("Bias report")
run_id = components.run_picker("report_run", state.current_run())
if run_id is None:
    st.stop()

info = data.run_info(run_id)
version = data.version(run_id)
if info["status"] != "done":
    done, total, status, _ = data.progress(run_id)
    st.warning(f"This audit is {status}: {done} of {total or '?'} images explained. "
               "The report appears when it has finished (see **New audit** to follow it).")
    st.stop()

report = data.report(run_id, version)
view = read_report(report)  # the typed sections: this page reads attributes, never report keys
meta = view.meta
components.verdict_box(report)
own_body = task_views.REPORT_BODIES.get(data.report_view(report))  # a task view's own body
if own_body is not None:  # detection: boxes, context regions, D-RISE
    own_body(report, run_id, version, info)
    st.stop()
cols = st.columns(4)
cols[0].metric("Images explained", meta.n_images if meta.n_images is not None else info.get("n_done"))
accuracy = view.metrics.accuracy
cols[1].metric("Accuracy", "n/a" if accuracy is None else f"{accuracy:.1%}")
cols[2].metric("Open shortcut flags", len(views.open_findings(report)))
cols[3].metric("Method", str(meta.method or info["method"]))
st.caption("Model " + views.plain(data.model_name(info["model_id"])) +
           " · dataset " + views.plain(data.dataset_name(info["dataset_id"])) +
           f" · seed {meta.seed if meta.seed is not None else info['seed']}")
skipped = views.skipped_summary(report)
if skipped:
    st.warning(views.plain(skipped) + ". They are left out of every number below.")
    with st.expander(f"Which images were skipped ({len(view.skipped)})"):
        st.dataframe(views.display_table(pd.DataFrame([s.to_json() for s in view.skipped])), hide_index=True,
                     width="stretch")

tab_attention, tab_flags, tab_accuracy, tab_gallery, tab_export = st.tabs(
    ["Attention by region", "Flags", "Accuracy", "Gallery", "Export"])

with tab_attention:
    scope = st.radio("Split", ["overall", "per class", "per subgroup"], horizontal=True, key="report_scope")
    key = {"overall": "overall", "per class": "class", "per subgroup": "group"}[scope]
    rows = views.region_rows(report, key)
    if rows.empty:
        st.info("No rows for this split (the dataset has no subgroup columns, or no images).")
    else:
        split_by = {"overall": None, "class": "class", "group": "group"}[key]
        st.plotly_chart(views.region_bar_figure(rows, split_by, f"Share of saliency per region ({scope})"),
                        width="stretch", key="report_region_chart")
        st.caption("Bars: mean share of the positive saliency mass that falls in the region, with a 95% "
                   "bootstrap interval over images. Black ticks: the region's mean share of the picture's "
                   "area. A bar far above its tick means more attention than the region's size explains.")
    if view.artifacts:  # a ViT's outlier-norm tokens: attention on them alone is never a flag
        st.info(views.plain(view.artifacts) + ". A region's attention must hold without them to count "
                "toward a flag.")
        st.dataframe(views.display_table(views.readable_intervals(rows)), hide_index=True, width="stretch")

with tab_flags:
    findings = list(view.findings)
    label_of = {label.region: label for label in view.labels}
    if not findings:
        st.success("No shortcut flagged: no non-core region draws more attention than its area explains "
                   "with supporting evidence.")
    for finding in sorted(findings, key=lambda f: (views.SEVERITY_ORDER[f.severity], -(f.lift or 0))):
        components.finding_panel(finding, label_of.get(finding.region))

    components.power_section(view)

    discovered = views.discovered_rows(report)
    open_exemplar = None
    if not discovered.empty:
        st.subheader("Discovered regions")
        st.caption("Salient components away from the core (and, with masks, outside the annotated regions a cue "
                   "could be named by), grouped across images by where they sit and what they look like. Their "
                   "lift is high by construction; only the fill and swap tests, Holm-corrected with every other "
                   "test, can flag one.")
        st.dataframe(views.display_table(discovered.drop(columns=["exemplars", "flagged"])), hide_index=True, width="stretch",
                     key="report_discovered_table")
        for row in discovered.to_dict("records"):
            st.markdown(f"**{views.plain(row['region'])}**: {views.plain(row['description'])}; "
                        f"{views.plain(row['verdict'])}. Exemplars (open one in the gallery):")
            tiles = st.columns(max(6, len(row["exemplars"])))
            for tile, image_id in zip(tiles, row["exemplars"]):
                tile.image(data.picture(info["dataset_id"], int(image_id))[0], width="stretch",
                           caption=f"image {image_id}")
                if tile.button("Open", key=f"exemplar_{row['region']}_{image_id}"):
                    st.session_state[state.GALLERY_DISCOVERED] = row["region"]  # the gallery shows its images
                    st.session_state[state.SELECTED_IMAGE] = open_exemplar = int(image_id)

    st.subheader("Your labels")
    st.caption("Mark a region as a shortcut (the model must not use it) or as legitimate. Labels belong to the "
               "dataset: every later audit of it shows them and re-checks them on its model version.")
    for label in view.labels:
        st.markdown("- " + views.plain(label.text) + (f" ({views.plain(label.note)})" if label.note else ""))
    candidates = list(dict.fromkeys([f.region for f in findings if f.region] + [r.region for r in view.regions]))
    if candidates:
        l1, l2 = st.columns([1, 1])
        region = l1.selectbox("Region", candidates, key="label_region")
        verdict = l2.radio("It is", ["shortcut", "legitimate"], horizontal=True, key="label_verdict")
        note = st.text_input("Note (optional)", key="label_note")
        b1, b2 = st.columns([1, 4])
        if b1.button("Save label", key="label_save", type="primary"):
            data.set_label(info["dataset_id"], region, verdict, note, run_id)
            st.rerun()
        if region in label_of and b2.button(f"Remove the label on {region}", key="label_remove"):
            data.remove_label(info["dataset_id"], region)
            st.rerun()

    st.subheader("Explainer sanity")
    sanity = views.sanity_verdicts(report)
    if sanity.empty:
        st.caption("No sanity check recorded for this run.")
    else:
        st.dataframe(views.display_table(sanity), hide_index=True, width="stretch",
                     column_config={"criterion": st.column_config.TextColumn("criterion", width=620)})

with tab_accuracy:
    table = data.accuracy(run_id, version)
    if table.empty:
        st.info("No predictions recorded.")
    else:
        st.plotly_chart(views.accuracy_figure(table, "Accuracy per class and subgroup"), width="stretch",
                        key="report_accuracy_chart")
        st.dataframe(views.accuracy_display(table), hide_index=True, width="stretch")

with tab_gallery:
    table = data.gallery_table(run_id, version)
    regions = sorted(c[len("mass."):] for c in table.columns if c.startswith("mass."))
    flagged = sorted({f.region for f in view.findings if f.region})
    discovered_ids = {d.name: [*d.exemplars, *d.image_ids] for d in view.discovered}
    f1, f2, f3, f4, f5 = st.columns(5)
    label = f1.selectbox("Class", [None] + sorted(table["label"].astype(str).unique()), key=state.GALLERY_CLASS,
                         format_func=lambda v: "all classes" if v is None else v)
    correct = f2.selectbox("Prediction", ["all", "correct", "incorrect"], key=state.GALLERY_CORRECT)
    flagged_region = f3.selectbox("Shortcut visible on", [None] + flagged, key=state.GALLERY_FLAGGED,
                                  format_func=lambda v: "any image" if v is None else v)
    clusters = sorted(table["cluster"].dropna().unique()) if "cluster" in table else []
    cluster = f4.selectbox("Cluster", [None] + clusters, key=state.GALLERY_CLUSTER,
                           format_func=lambda v: "all clusters" if v is None else str(v))
    default_sort = regions.index(flagged[0]) if flagged and flagged[0] in regions else 0
    sort_region = f5.selectbox("Sort by attention on", regions, index=default_sort, key=state.GALLERY_SORT_REGION)
    if discovered_ids:
        chosen_region = st.selectbox("Images of a discovered region", [None, *discovered_ids],
                                     key=state.GALLERY_DISCOVERED,
                                     format_func=lambda v: "every image" if v is None else v)
    else:
        chosen_region = None
    o1, o2 = st.columns([1, 3])
    overlay_on = o1.toggle("Saliency overlay", key=state.OVERLAY_ON)
    opacity = o2.slider("Overlay opacity", 0.0, 1.0, step=0.05, key=state.OVERLAY_OPACITY,
                        disabled=not overlay_on)

    shown = views.filter_gallery(table, label=label, correct=correct, flagged_region=flagged_region,
                                 cluster=cluster, sort_region=sort_region)
    if chosen_region is not None:  # its exemplars first, then every other image that holds it
        shown = views.gallery_of_images(shown, list(dict.fromkeys(discovered_ids[chosen_region])))
    st.caption(f"{len(shown)} of {len(table)} images match; showing the first {min(len(shown), 24)}.")
    page = shown.head(24)
    maps = data.maps_of(run_id, version, tuple(page["image_id"].astype(int))) if overlay_on else {}
    scale = data.map_scale(run_id, version) if overlay_on else 1.0
    dataset_id = info["dataset_id"]

    def rendered(image_id: int, outline: bool = False):
        picture, mask = data.picture(dataset_id, image_id)
        if outline:
            picture = overlay.enlarged(picture)
        if overlay_on:  # an image opened from outside this page of the gallery reads its own map
            saliency = maps[image_id] if image_id in maps else data.maps_of(run_id, version, (image_id,)).get(image_id)
            if saliency is not None:
                picture = overlay.blend(picture, saliency, opacity, scale)
        if outline and mask is not None:
            picture = overlay.outline_regions(picture, mask)
        return picture

    enlarged = None
    for k, row in enumerate(page.to_dict("records")):
        if k % 6 == 0:
            grid = st.columns(6)  # one row of columns per six images keeps tiles aligned and in order
        with grid[k % 6]:
            mark = "right" if row["correct"] else "WRONG"
            st.image(rendered(int(row["image_id"])), width="stretch",
                     caption=f"{row['label']} → {row['pred']} ({mark}) · {sort_region} "
                             f"{views.share_text(row.get('mass.' + sort_region))}")
            if st.button("Enlarge", key=f"enlarge_{row['image_id']}"):
                st.session_state[state.SELECTED_IMAGE] = int(row["image_id"])
                enlarged = int(row["image_id"])

    @st.dialog("Enlarged image", width="large")
    def enlarge(selected: int) -> None:
        """A modal above the gallery: the image at full width with region outlines, where the eye already is."""
        row = table[table["image_id"] == selected].iloc[0]
        st.markdown("**" + views.plain(row["image"]) + "**")
        left, right = st.columns([2, 1])
        left.image(rendered(selected, outline=True), width="stretch")
        names = data.region_names(dataset_id)
        right.markdown("**Region outlines**")
        for region_id, name in sorted(names.items()):
            right.markdown(f"- {overlay.REGION_COLOR_NAMES[region_id % len(overlay.REGION_COLOR_NAMES)]}: "
                           f"{views.plain(name)} (share of attention {views.share_text(row.get('mass.' + name))})")
        right.markdown(f"Label **{views.plain(row['label'])}**, predicted **{views.plain(row['pred'])}** "
                       f"(confidence {row['confidence']:.2f})")

    enlarged = enlarged if enlarged is not None else open_exemplar
    if enlarged is not None and enlarged in set(table["image_id"].astype(int)):
        enlarge(enlarged)

with tab_export:
    components.export_buttons(run_id, version)
