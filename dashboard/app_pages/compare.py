"""Compare versions: did retraining move attention off the shortcut, and at what cost in accuracy?"""
import os

import streamlit as st

from analysis.report.comparison_records import read_comparison
from dashboard import data, overlay, state, task_views, version_marks, views

st.title("Compare versions")
st.caption("Pick the audits of successive model versions on one dataset: they are shown in version order, oldest "
           "first (v1, v2, ..., v10), whatever order you pick them in.")
runs = data.runs()
done = runs[runs.status == "done"] if not runs.empty else runs
if len(done) < 2:
    st.info("Comparing needs at least two finished audits.")
    st.stop()

by_id = done.set_index("id")
preset = [r for r in state.compared_runs() if r in by_id.index] or views.default_series(done)
series_key = ""
if st.radio("Versions from", ["audits in this workspace", "an MLflow model registry"], horizontal=True,
            key="compare_source") == "an MLflow model registry":
    tracking_uri = st.text_input("MLflow tracking URI", value=os.environ.get("MLFLOW_TRACKING_URI", ""),
                                 key="compare_mlflow_uri", placeholder="http://127.0.0.1:5000")
    try:
        names = data.registered_models(tracking_uri) if tracking_uri else []
    except data.InputError as exc:
        st.error(str(exc))
        st.stop()
    if not names:
        st.info("Give the tracking URI of an MLflow server with registered models.")
        st.stop()
    registered = st.selectbox("Registered model", names, key="compare_registered")
    table = data.registered_versions(tracking_uri, registered)
    st.dataframe(table.assign(audited=["yes" if r else "no" for r in table["run_id"]])
                 [["version", "aliases", "flags", "audited"]], hide_index=True)
    missing = table[table["run_id"].isna()]["version"].tolist()
    if missing:
        st.info(f"{', '.join(missing)} not audited here yet: `saliency-audit compare --registered {registered} "
                "--data DATASET` audits every version and writes the results back to the registry.")
    preset = [r for r in table["run_id"].dropna() if r in by_id.index]
    if not preset:
        st.stop()
    series_key = f"_{registered}"
preset = data.in_version_order(preset)
dataset_ids = list(dict.fromkeys(done["dataset_id"]))
start = dataset_ids.index(by_id.loc[preset[0], "dataset_id"]) if preset else len(dataset_ids) - 1
dataset_id = st.selectbox("Dataset", dataset_ids, index=start, format_func=data.dataset_name, key="compare_dataset")
on_dataset = done[done["dataset_id"] == dataset_id]
ids = data.in_version_order(on_dataset["id"].tolist())
labels_of = {r["id"]: views.version_label(r) for r in on_dataset.to_dict("records")}
kept = [r for r in preset if r in ids] or data.same_series(preset, dataset_id)  # another dataset: the same series
chosen = st.multiselect("Versions", ids, default=kept, format_func=lambda r: labels_of.get(r, r),
                        key=f"compare_runs_{dataset_id}{series_key}", placeholder="choose two audits or more")
chosen = data.in_version_order(chosen)
state.set_compared_runs(chosen)
if len(chosen) < 2:
    st.info("Choose two audits or more of this dataset: the versions of one model.")
    st.stop()
for warning in views.series_warnings(by_id.loc[chosen].reset_index()):
    st.warning(warning)

tasks = {data.model_task(data.run_info(r)["model_id"]) for r in chosen}
if len(tasks) > 1:
    st.info("Choose audits of one kind: these mix detector and classifier audits.")
    st.stop()
(task,) = tasks

versions = tuple(data.version(r) for r in chosen)
labels = {r: labels_of[r] for r in chosen}
if len(set(labels.values())) < len(labels):  # two audits of one version: tell them apart by their names
    labels = {r: f"{labels[r]} · {data.run_info(r).get('name') or r}" for r in chosen}
comparison = data.comparison(tuple(chosen), versions, tuple(labels[r] for r in chosen), task)
if comparison is None:
    st.warning("This installation's engine has no version comparison (analysis.report.compare).")
    st.stop()

st.subheader("Summary")
compared = read_comparison(comparison)  # typed: this page reads attributes, never comparison keys
st.markdown(views.plain(compared.summary or "no summary"))
own_body = task_views.COMPARISON_BODIES.get(data.task_info(task)["view"])
if own_body is not None:
    own_body(comparison, chosen, versions, labels)
    st.stop()

names, flagged = [labels[r] for r in chosen], compared.flagged
regions = views.comparison_regions(comparison)
st.plotly_chart(version_marks.mark_flagged(
    views.version_lines_figure(regions, "region", "mass_mean", "mass_ci_low", "mass_ci_high",
                               "Share of saliency per region across versions", "share of saliency mass (95% CI)"),
    names, flagged), width="stretch", key="compare_regions_chart")
st.caption("Lines: mean share of saliency mass per region in each version, bands: 95% bootstrap intervals. "
           "A shortcut region whose line falls means retraining moved attention off it. Versions in red are "
           "flagged by their own audit, with the regions flagged.")

accuracy = views.comparison_accuracy(comparison)
if not accuracy.empty:
    st.plotly_chart(version_marks.mark_flagged(
        views.version_lines_figure(accuracy, "slice", "accuracy", "ci_low", "ci_high",
                                   "Accuracy per subgroup across versions", "accuracy (95% CI)"),
        names, flagged), width="stretch", key="compare_accuracy_chart")

by_version = data.discovered_by_version(tuple(chosen), versions, tuple(labels[r] for r in chosen))
discovered = views.comparison_discovered(by_version, data.discovered_tracks(by_version))
st.subheader("Discovered regions")
if discovered.empty:
    st.caption("No version's audit discovered a region from its maps (salient components away from the core "
               "that recur across images).")
else:
    st.caption("Regions discovered from each version's maps (numbered per audit), with their attention and what "
               "filling and swapping them did against an equal-area control. One cue keeps its number across "
               "versions (matched on the images that hold it and where it sits). A cue retraining removed is "
               "discovered in the earlier versions only, or no longer flagged.")
    st.dataframe(views.display_table(discovered), hide_index=True, width="stretch", key="compare_discovered_table")

st.subheader("The same image under every version")
tables = {r: data.store_images(r, v) for r, v in zip(chosen, versions)}
common = set(tables[chosen[0]]["image_id"].astype(int))
for r in chosen[1:]:
    common &= set(tables[r]["image_id"].astype(int))
if not common:
    st.info("These runs explained no image in common (different datasets or samples).")
    st.stop()
file_names = dict(zip(tables[chosen[0]]["image_id"].astype(int), tables[chosen[0]]["image"].astype(str)))
image_id = st.selectbox("Image", sorted(common), key="compare_image", format_func=file_names.get)
opacity = st.slider("Overlay opacity", 0.0, 1.0, key=state.OVERLAY_OPACITY, step=0.05)
columns = st.columns(len(chosen))
for column, r, v in zip(columns, chosen, versions):
    saliency = data.maps_of(r, v, (int(image_id),))[int(image_id)]
    picture, _ = data.picture(data.run_info(r)["dataset_id"], image_id)
    row = tables[r].set_index("image_id").loc[image_id]
    column.image(overlay.blend(picture, saliency, opacity, data.map_scale(r, v)), width="stretch",
                 caption=f"{labels[r]} · predicted {row['pred']} ({row['confidence']:.2f})")
