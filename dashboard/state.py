"""Every session-state key and URL parameter the dashboard uses, in one place.

The run being looked at lives in the URL (`?run=<id>`, `?runs=a,b,c` for a comparison) so a report can be
bookmarked and survives a reload; everything else is per-tab UI state.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.store.workspace import default_root

# URL parameters.
RUN_PARAM = "run"
RUNS_PARAM = "runs"

# Session-state keys (widgets use them as `key=` too).
OVERLAY_ON = "overlay_on"
OVERLAY_OPACITY = "overlay_opacity"
GALLERY_CLASS = "gallery_class"
GALLERY_CORRECT = "gallery_correct"
GALLERY_FLAGGED = "gallery_flagged_region"
GALLERY_CLUSTER = "gallery_cluster"
GALLERY_SORT_REGION = "gallery_sort_region"
GALLERY_DISCOVERED = "gallery_discovered_region"
SELECTED_IMAGE = "selected_image"
LAST_RUN = "last_run"
SUBMITTED_RUNS = "submitted_runs"
UPLOAD_ERRORS = "upload_errors"
UPLOAD_LAYERS = "upload_layers"
UPLOAD_PENDING_LAYER = "upload_pending_layer"
UPLOAD_INSPECTED = "upload_inspected"
UPLOADED_MODELS = "uploaded_models"  # ids registered from this tab's Upload page, oldest first
UPLOADED_DATASETS = "uploaded_datasets"


def workspace_root() -> Path:
    """`$SALIENCY_AUDIT_WORKSPACE`, else ./workspace: the CLI's default (`analysis.store.workspace.default_root`)."""
    return default_root().resolve()


def current_run() -> str | None:
    """The run in the URL; else the last one this tab looked at (the sidebar links drop the URL parameter)."""
    value = st.query_params.get(RUN_PARAM) or st.session_state.get(LAST_RUN)
    return value or None


def set_current_run(run_id: str | None) -> None:
    st.session_state[LAST_RUN] = run_id
    if run_id:
        st.query_params[RUN_PARAM] = run_id
    elif RUN_PARAM in st.query_params:
        del st.query_params[RUN_PARAM]


def open_report(run_id: str) -> None:
    st.session_state[LAST_RUN] = run_id
    st.switch_page("app_pages/report.py", query_params={RUN_PARAM: run_id})


def compared_runs() -> list[str]:
    value = st.query_params.get(RUNS_PARAM, "")
    return [run for run in value.split(",") if run]


def set_compared_runs(run_ids: list[str]) -> None:
    if run_ids:
        st.query_params[RUNS_PARAM] = ",".join(run_ids)
    elif RUNS_PARAM in st.query_params:
        del st.query_params[RUNS_PARAM]


def init_defaults() -> None:
    """Defaults for per-tab UI state; set once so widgets keep their value across pages."""
    defaults = {
        OVERLAY_ON: True,
        OVERLAY_OPACITY: 0.6,
        SELECTED_IMAGE: None,
        SUBMITTED_RUNS: [],
        UPLOAD_ERRORS: {},
        UPLOAD_LAYERS: None,
        UPLOADED_MODELS: [],
        UPLOADED_DATASETS: [],
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
