"""Saliency Audit dashboard: the router. Run with `streamlit run dashboard/app.py`.

Pages live in `dashboard/app_pages/`; they read the workspace through `dashboard.data` and submit jobs to
worker processes. Nothing here loads a model or computes a statistic.
"""
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from dashboard import components, state  # noqa: E402

st.set_page_config(page_title="Saliency Audit", layout="wide")
state.init_defaults()

_PAGES = _REPO / "dashboard" / "app_pages"
pages = {
    "Audit": [
        st.Page(_PAGES / "overview.py", title="Overview", url_path="home", default=True),
        st.Page(_PAGES / "report.py", title="Bias report", url_path="report"),
        st.Page(_PAGES / "compare.py", title="Compare versions", url_path="compare"),
        st.Page(_PAGES / "trust.py", title="Explainer trust", url_path="trust"),
        # Streamlit serves the default page at "/" only; /overview opens it too (not "Page not found").
        st.Page(_PAGES / "overview.py", title="Overview", url_path="overview", visibility="hidden"),
    ],
    "Work": [
        st.Page(_PAGES / "new_audit.py", title="New audit", url_path="new-audit"),
        st.Page(_PAGES / "upload.py", title="Upload", url_path="upload"),
    ],
}
st.sidebar.caption(f"Workspace: {state.workspace_root()}")
components.demo_progress()  # while the demo builds in its worker: progress, and pages that fill in
st.navigation(pages).run()
