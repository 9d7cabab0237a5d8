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
