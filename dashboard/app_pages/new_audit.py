"""New audit: choose model version(s), dataset, explainer(s); the work runs in a worker process.

The page only writes the run into the catalog and starts the worker (`analysis.store.jobs.start_job`); progress
is read back from the catalog every two seconds, so reloading or closing the tab never stops a job.
"""
import streamlit as st

from dashboard import audit_defaults, data, state, views

st.title("New audit")
models = data.models()
datasets = data.datasets()
if models.empty or datasets.empty:
    st.info("Register a model and a dataset first (page **Upload**).")
    st.stop()

model_names = dict(zip(models["id"], models["label"]))
all_runs = data.runs()
chosen_models = st.multiselect("Model version(s)", list(model_names), format_func=lambda m: model_names[m],
                               default=audit_defaults.default_model(models, all_runs,
                                                                    st.session_state[state.UPLOADED_MODELS]),
                               key="audit_models")
tasks = sorted({data.model_task(m) for m in chosen_models}) or ["classification"]
if len(tasks) > 1:
    st.error("Choose detection models or classifiers, not both: they take different explainers.")
    st.stop()
task = data.task_info(tasks[0])
if not task["supported"]:
    st.error(f"This version does not audit {tasks[0]} models yet; choose a model whose card names another task.")
    st.stop()
fitting = views.datasets_for_task(datasets, tasks[0])
if fitting.empty:
    st.info(f"No registered dataset fits a {task['model_kind']}"
            + (f": {task['dataset_hint']}" if task["dataset_hint"] else "")
            + " on page **Upload**.")
    st.stop()
dataset_names = dict(zip(fitting["id"], fitting["name"]))
dataset_id = st.selectbox("Dataset", list(dataset_names), format_func=lambda d: dataset_names[d],
                          index=audit_defaults.default_dataset(fitting, all_runs, chosen_models,
                                                               st.session_state[state.UPLOADED_DATASETS], models,
                                                               task=tasks[0]),
                          key="audit_dataset")
offered = data.methods(tasks[0])
methods = st.multiselect("Explainer(s)", offered, default=[m for m in [task["default_method"]] if m in offered],
                         key=f"audit_methods_{tasks[0]}")  # per task: switching model kind keeps a valid default
c1, c2 = st.columns(2)
n_images = c1.number_input("Images to sample", min_value=1, max_value=100_000, value=200, step=50,
                           key="audit_n")
seed = c2.number_input("Seed", min_value=0, value=0, step=1, key="audit_seed")
name = st.text_input("Name (optional)", key="audit_name")
estimates = [data.estimate_seconds(m, int(n_images)) for m in methods]
estimate = sum(seconds for seconds, _ in estimates) * max(len(chosen_models), 1)
st.caption(f"Estimated time: about {views.duration(estimate)} (" +
           "; ".join(basis for _, basis in estimates) + ")." if estimates else "Choose an explainer.")
submitted = st.button("Start audit", type="primary", key="audit_start")


if submitted:
    if not chosen_models or not methods:
        st.error("Choose at least one model version and one explainer.")
    else:
        started = []
        for model_id in chosen_models:
            for method in methods:
                started.append(data.submit_run(model_id, dataset_id, method, int(n_images), int(seed), name or None))
        st.session_state[state.SUBMITTED_RUNS] = list(dict.fromkeys(st.session_state[state.SUBMITTED_RUNS] + started))
        state.set_current_run(started[-1])
        st.success(f"Started {len(started)} audit(s). You can close this tab: the work goes on.")


@st.fragment(run_every=2)
def job_progress():
    """Runs not yet finished (any tab may have started them) and this tab's, polled from the catalog.

    The last submitted run is also in the URL, so after a reload its bar (and its end) is still shown.
    """
    runs = data.runs()
    if runs.empty:
        return
    mine = set(st.session_state[state.SUBMITTED_RUNS]) | {state.current_run()}
    active = runs[runs.status.isin(["pending", "running", "interrupted"]) | runs.id.isin(mine)]
    st.subheader("Audits in progress")
    if active.empty:
        st.caption("Nothing running.")
        return
    for run in active.to_dict("records"):
        done, total, status, stage = data.progress(run["id"])
        with st.container(border=True):
            st.text(f"{run.get('name') or run['method']} · {run.get('model_label')} · {run['method']} · {status}")
            fraction = min(done / total, 1.0) if total else 0.0
            now = f" · {views.STAGE_TEXT.get(stage, stage)}" if stage and (status == "running" or stage == "report") else ""
            st.progress(fraction, text=f"{done} / {total or '?'} images{now}")
            if run.get("error"):
                st.error(run["error"])
            b1, b2, b3 = st.columns(3)
            if status in ("pending", "running") and b1.button("Cancel", key=f"cancel_{run['id']}"):
                data.cancel_run(run["id"])
                st.rerun(scope="fragment")
            if status in ("cancelled", "failed", "interrupted") and b2.button("Resume", key=f"resume_{run['id']}"):
                data.resume_run(run["id"])
                st.rerun(scope="fragment")
            if status == "done":
                b3.page_link("app_pages/report.py", label="Open report", query_params={state.RUN_PARAM: run["id"]})


job_progress()
