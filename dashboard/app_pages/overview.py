"""Overview, a manager's page: per model series, the latest version's verdict first (flagged, clear, cannot
judge), whether the explainers agree, each open finding as one sentence with its effect, a picture that
shows it, and the trend across versions. Words of the trade sit behind "What does this mean?"; ids, hashes
and every table in the details below."""
import streamlit as st

from dashboard import data, overlay, state, views

st.title("Saliency Audit")
st.caption("What your models look at across a whole dataset, and which shortcuts they learned.")

runs = data.runs()
models = data.models()
datasets = data.datasets()

col_models, col_data, col_runs = st.columns(3)
col_models.metric("Models", len(models))
col_data.metric("Datasets", len(datasets))
col_runs.metric("Audits", len(runs))

st.subheader("Findings")
series = views.model_series(runs, lambda run_id: data.report(run_id, data.version(run_id)))
if not series and (data.demo_status() or {}).get("state") == "building":
    st.info("The demo is being built: its audits appear here as they finish.")
elif runs.empty:
    st.info("No audit yet. Upload a model and a dataset, then start one under **New audit**.")
elif not series:
    st.info("No audit has finished yet: follow them under **New audit**.")
VERDICT_BOX = {"flagged": st.error, "cannot_judge": st.warning, "clear": st.success}
for k, entry in enumerate(series):
    latest = entry["versions"][-1]
    verdict = entry["verdict"]
    with st.container(border=True):
        st.markdown(f"#### {views.plain(entry['series'])} on {views.plain(entry['dataset'])}")
        if verdict is not None:  # the verdict first: what a manager reads before anything else
            reasons = "" if verdict.status == "flagged" else "".join(
                f"\n- {views.plain(reason)}" for reason in verdict.reasons[:3])
            VERDICT_BOX[verdict.status](f"**{latest['version']}: {verdict.label}.** {verdict.summary}{reasons}")
        text, picture = st.columns([3, 1])
        versions = ", ".join(v["version"] for v in entry["versions"])
        text.caption(f"{len(entry['versions'])} version(s) audited with {', '.join(entry['methods'])}: "
                     f"{views.plain(versions)}" + (f". {views.plain(entry['agreement'])}." if entry["agreement"] else ""))
        for finding in entry["findings"]:
            text.markdown(f"- **{views.plain(str(finding['severity'] or '').upper())}** {views.plain(finding['text'])}.")
        for label in entry["labels"]:
            text.markdown(f"- *Your label:* {views.plain(label['text'])}" +
                          (f" ({views.plain(label['note'])})" if label["note"] else ""))
        if len(entry["versions"]) > 1 and entry["trend"]:
            text.markdown("**Across versions** (attention relative to size): " +
                          "; ".join(views.plain(views.trend_text(t)) for t in entry["trend"]))
        text.page_link("app_pages/report.py", label=f"Open the report of {latest['version']}",
                       query_params={state.RUN_PARAM: latest["run"]})
        # the picture of the first finding that sits in a region (a property finding has none), else of the trend
        shown_region = next((f["region"] for f in [*entry["findings"], *entry["trend"]] if f["region"]), None)
        if shown_region is not None:  # the latest version's picture of its finding, else of the past one
            run_id, region = latest["run"], shown_region
            version = data.version(run_id)
            image_id = views.exemplar_image(data.region_masses(run_id, version), region)
            if image_id is not None:
                saliency = data.maps_of(run_id, version, (image_id,)).get(image_id)
                image, _ = data.picture(entry["dataset_id"], image_id)
                if saliency is not None:
                    image = overlay.blend(image, saliency, 0.6, data.map_scale(run_id, version))
                picture.image(image, width="stretch", caption=f"{latest['version']}: the image with the most "
                                                              f"attention on {region}")

with st.expander("What does this mean?"):
    st.markdown(views.GLOSSARY)

with st.expander("Details: every audit, model and dataset, with ids and hashes"):
    for heading, table in (("Audits", views.run_table(runs)), ("Models", views.model_table(models)),
                           ("Datasets", views.dataset_table(datasets))):
        st.markdown(f"**{heading}**")
        if table.empty:
            st.caption("none registered yet")
        else:
            st.dataframe(views.display_table(table), hide_index=True, width="stretch")
    if not runs.empty:
        choice = st.selectbox("Open the report of", runs["id"].tolist(), format_func=data.run_label,
                              index=None, placeholder="choose an audit", key="overview_open_run")
        if choice:
            state.open_report(choice)
