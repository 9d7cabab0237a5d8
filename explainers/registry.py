"""Method name -> explainer class. The names are a contract (docs/FORMATS.md)."""
from __future__ import annotations

from typing import Any

from torch import nn

from explainers.base import Explainer
from explainers.errors import InputError

METHODS: dict[str, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    METHODS[cls.name] = cls
    return cls


def make_explainer(name: str, model: nn.Module, **params: Any) -> Explainer:
    _load_builtin_methods()
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name](model, **params)


def _load_builtin_methods() -> None:
    """Import the method modules so their `@register` runs (kept lazy to keep `import explainers` cheap)."""
    import importlib

    for module in ("cam", "gradients", "occlusion", "rise", "drise"):
        try:
            importlib.import_module(f"explainers.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"explainers.{module}":
                raise
