"""Dataset-level analysis: datasets, runs, aggregation, flags, reports, CLI. Never imports streamlit."""
