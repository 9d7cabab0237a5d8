"""Synthetic shortcut scenarios, small architectures, and the deterministic model-version series."""
