"""Saliency methods and model loading. Never imports `analysis` or `streamlit`.

The re-exports are lazy (PEP 562): `explainers.errors` and `explainers.loading.model_files` are imported by the
dashboard's process, which reads results and must not pay for importing torch to do so.
"""
from importlib import import_module

_EXPORTS = {"Explainer": "explainers.base", "SaliencyBatch": "explainers.base", "InputError": "explainers.errors",
            "METHODS": "explainers.registry", "make_explainer": "explainers.registry"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'explainers' has no attribute {name!r}")
