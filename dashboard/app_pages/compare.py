"""Compare versions: did retraining move attention off the shortcut, and at what cost in accuracy?"""
import streamlit as st

from dashboard import data, detection_views, overlay, state, views

st.title("Compare versions")
st.caption("Pick the runs of successive model versions on the same dataset, oldest first.")
runs = data.runs()
done = runs[runs.status == "done"] if not runs.empty else runs
if len(done) < 2:
    st.info("Comparing needs at least two finished audits.")
    st.stop()

ids = done["id"].tolist()
preset = [r for r in state.compared_runs() if r in ids] or views.default_series(done)
chosen = st.multiselect("Runs, in version order", ids, default=preset, format_func=data.run_label,
                        key="compare_runs")
state.set_compared_runs(chosen)
if len(chosen) < 2:
    st.info("Choose two runs or more.")
    st.stop()
for warning in views.series_warnings(done.set_index("id").loc[chosen].reset_index()):
    st.warning(warning)

tasks = {data.model_task(data.run_info(r)["model_id"]) for r in chosen}
if len(tasks) > 1:
    st.info("Choose audits of one kind: these mix detector and classifier audits.")
    st.stop()
detection = tasks == {"detection"}

versions = tuple(data.version(r) for r in chosen)
labels = {r: f"v{k + 1}: {data.run_info(r).get('name') or r}" for k, r in enumerate(chosen)}
comparison = data.comparison(tuple(chosen), versions, tuple(labels[r] for r in chosen), detection)
if comparison is None:
    st.warning("This installation's engine has no version comparison (analysis.report.compare).")
    st.stop()

st.subheader("Summary")
st.markdown(views.plain(comparison.get("summary") or "no summary"))
if detection:
    detection_views.render_comparison(comparison, chosen, versions, labels)
    st.stop()

regions = views.comparison_regions(comparison)
st.plotly_chart(views.version_lines_figure(regions, "region", "mass_mean", "mass_ci_low", "mass_ci_high",
                                           "Share of saliency per region across versions",
                                           "share of saliency mass (95% CI)"),
                width="stretch", key="compare_regions_chart")
st.caption("Lines: mean share of saliency mass per region in each version, bands: 95% bootstrap intervals. "
           "A shortcut region whose line falls means retraining moved attention off it.")

accuracy = views.comparison_accuracy(comparison)
if not accuracy.empty:
    st.plotly_chart(views.version_lines_figure(accuracy, "slice", "accuracy", "ci_low", "ci_high",
                                               "Accuracy per subgroup across versions", "accuracy (95% CI)"),
                    width="stretch", key="compare_accuracy_chart")

st.subheader("The same image under every version")
tables = {r: data.gallery_table(r, v) for r, v in zip(chosen, versions)}
common = set(tables[chosen[0]]["image_id"].astype(int))
for r in chosen[1:]:
    common &= set(tables[r]["image_id"].astype(int))
if not common:
    st.info("These runs explained no image in common (different datasets or samples).")
    st.stop()
image_id = st.selectbox("Image", sorted(common), key="compare_image",
                        format_func=lambda i: str(tables[chosen[0]].set_index("image_id").loc[i, "image"]))
opacity = st.slider("Overlay opacity", 0.0, 1.0, key=state.OVERLAY_OPACITY, step=0.05)
columns = st.columns(len(chosen))
for column, r, v in zip(columns, chosen, versions):
    ids_, maps = data.saliency_maps(r, v)
    position = {int(i): k for k, i in enumerate(ids_)}
    picture, _ = data.picture(data.run_info(r)["dataset_id"], image_id)
    row = tables[r].set_index("image_id").loc[image_id]
    column.image(overlay.blend(picture, maps[position[image_id]], opacity, data.map_scale(r, v)), width="stretch",
                 caption=f"{labels[r]} · predicted {row['pred']} ({row['confidence']:.2f})")
