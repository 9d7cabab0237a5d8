"""Streamlit dashboard: reads the workspace and submits jobs; no computation here."""
