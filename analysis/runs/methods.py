"""Which explainers explain which kind of model (`Explainer.model_kind`): the check every task's `prepare`
makes before loading anything, and the list the CLI and dashboard offer."""
from __future__ import annotations

from explainers.errors import InputError


def methods_of_kind(model_kind: str | None) -> list[str]:
    """Explainer names for models of `model_kind` ("classifier", "detector"; None: every method)."""
    from explainers.registry import METHODS, load_builtin_methods

    load_builtin_methods()
    return sorted(name for name, cls in METHODS.items() if model_kind is None or cls.model_kind == model_kind)


def check_method_kind(method: str, model_kind: str | None) -> None:
    """InputError unless `method` explains models of `model_kind` (None: unless it is a known method)."""
    from explainers.registry import METHODS

    allowed = methods_of_kind(model_kind)
    if method not in allowed:
        why = (f"explains {METHODS[method].model_kind}s, not {model_kind}s; " if method in METHODS
               else "unknown method; ")
        raise InputError(f"method {method!r}: {why}choose one of: {', '.join(allowed)}")
