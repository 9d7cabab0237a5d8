"""Widgets shared by several pages."""
from __future__ import annotations

import streamlit as st

from dashboard import data, state


def run_picker(key: str, current: str | None, statuses: tuple[str, ...] | None = None) -> str | None:
    """A run selectbox that starts at the URL's run and writes the choice back to the URL."""
    runs = data.runs()
    if runs.empty:
        st.info("No audit yet: start one under **New audit**.")
        return None
    if statuses is not None:
        runs = runs[runs.status.isin(statuses)]
    ids = runs["id"].tolist()
    index = ids.index(current) if current in ids else (len(ids) - 1 if ids else None)
    chosen = st.selectbox("Audit", ids, index=index, format_func=data.run_label, key=key)
    if chosen and chosen != st.query_params.get(state.RUN_PARAM):
        state.set_current_run(chosen)
    return chosen


def export_buttons(run_id: str, version: str, key: str = "export") -> None:
    """Download buttons for the run's HTML / JSON / CSV reports (files built by the engine on click)."""
    exporters = data.exporters(run_id, version)
    for fmt, label, mime, suffix in [("html", "Report as HTML", "text/html", ".html"),
                                     ("json", "Report as JSON", "application/json", ".json"),
                                     ("csv", "Region table as CSV", "text/csv", "-regions.csv")]:
        make = exporters[fmt]
        st.download_button(label, data=make or "", file_name=f"{run_id}{suffix}", mime=mime, key=f"{key}_{fmt}",
                           disabled=make is None, on_click="ignore",
                           help=None if make else "This installation's engine cannot write this format yet.")
