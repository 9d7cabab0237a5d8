"""Overview: what is in the workspace, and the open shortcut flags, most severe first."""
import streamlit as st

from dashboard import data, state, views

st.title("Saliency Audit")
st.caption("What your model looks at across a whole dataset, and which shortcuts it learned.")

runs = data.runs()
models = data.models()
datasets = data.datasets()

col_models, col_data, col_runs = st.columns(3)
col_models.metric("Models", len(models))
col_data.metric("Datasets", len(datasets))
col_runs.metric("Audits", len(runs))

st.subheader("Open shortcut flags")
flags = views.open_flags(runs, lambda run_id: data.report(run_id, data.version(run_id)))
if flags.empty:
    st.info("No shortcut flagged in any finished audit.")
else:
    st.dataframe(flags, hide_index=True, width="stretch")

st.subheader("Audits")
if runs.empty:
    st.info("No audit yet. Upload a model and a dataset, then start one under **New audit**.")
else:
    shown = views.run_table(runs)
    st.dataframe(shown, hide_index=True, width="stretch")
    choice = st.selectbox("Open the report of", runs["id"].tolist(), format_func=data.run_label,
                          index=None, placeholder="choose an audit", key="overview_open_run")
    if choice:
        state.open_report(choice)

for heading, table in (("Models", views.model_table(models)), ("Datasets", views.dataset_table(datasets))):
    st.subheader(heading)
    if table.empty:
        st.caption("none registered yet")
    else:
        st.dataframe(table, hide_index=True, width="stretch")
