"""Which explainers explain which kind of model (`Explainer.model_kind`): the check every task's `prepare`
makes before loading anything, and the list the CLI and dashboard offer.

The list is read from `BUILTIN_KINDS`, a copy of the built-in explainers' `model_kind` (a test keeps it equal
to the registry), so the dashboard can offer methods without importing torch; methods registered at run
time join it once the registry is loaded. The check loads the registry itself.
"""
from __future__ import annotations

import sys

from explainers.errors import InputError

BUILTIN_KINDS = {
    "attention_rollout": "classifier", "drise": "detector", "gradcam": "classifier", "gradcam_pp": "classifier",
    "gradient_shap": "classifier", "guided_backprop": "classifier", "integrated_gradients": "classifier",
    "layercam": "classifier", "lrp": "classifier", "occlusion": "classifier", "rise": "classifier",
    "saliency": "classifier", "scorecam": "classifier", "smoothgrad": "classifier",
    "transformer_attribution": "classifier",
}


def methods_of_kind(model_kind: str | None) -> list[str]:
    """Explainer names for models of `model_kind` ("classifier", "detector"; None: every method)."""
    kinds = dict(BUILTIN_KINDS)
    registry = sys.modules.get("explainers.registry")
    if registry is not None:  # loaded (a worker, the CLI): what is really registered, plug-ins included
        registry.load_builtin_methods()
        kinds = {name: cls.model_kind for name, cls in registry.METHODS.items()}
    return sorted(name for name, kind in kinds.items() if model_kind is None or kind == model_kind)


def check_method_kind(method: str, model_kind: str | None) -> None:
    """InputError unless `method` explains models of `model_kind` (None: unless it is a known method)."""
    if method in BUILTIN_KINDS and model_kind in (None, BUILTIN_KINDS[method]):
        return  # a built-in of that kind: no need to import every method module (LRP's torchvision) to say so
    from explainers.registry import METHODS, load_builtin_methods

    load_builtin_methods()
    allowed = methods_of_kind(model_kind)
    if method not in allowed:
        why = (f"explains {METHODS[method].model_kind}s, not {model_kind}s; " if method in METHODS
               else "unknown method; ")
        raise InputError(f"method {method!r}: {why}choose one of: {', '.join(allowed)}")
