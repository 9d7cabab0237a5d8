"""Saliency methods and model loading. Never imports `analysis` or `streamlit`."""
from explainers.base import Explainer, SaliencyBatch
from explainers.errors import InputError
from explainers.registry import METHODS, make_explainer

__all__ = ["Explainer", "SaliencyBatch", "InputError", "METHODS", "make_explainer"]
