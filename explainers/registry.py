"""Method name -> explainer class. The names are a contract (docs/FORMATS.md).

A registered class declares its `family` (one of `explainers.base.FAMILIES`) and its parameters
(`schema`); `check_params` refuses a misspelt or mistyped parameter before anything is built.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from explainers.base import FAMILIES, Explainer
from explainers.errors import InputError
from explainers.params import check_against

METHODS: dict[str, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    if getattr(cls, "family", None) not in FAMILIES:
        raise TypeError(f"{cls.__name__}: set `family` to one of {', '.join(FAMILIES)} before registering it")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Explainer]:
    """The registered class of `name`; InputError listing the methods otherwise."""
    load_builtin_methods(until=name)
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def check_params(name: str, params: dict, *, also: tuple[str, ...] = ()) -> dict:
    """The method's parameters among `params` checked against its schema (values as it takes them); `also`
    names the run's own parameters, which pass through. One-line InputError naming the parameter and the
    accepted ones for a name the method does not take or a value of the wrong type or range."""
    return check_against(name, method_class(name).schema, params, also=also)


def make_explainer(name: str, model: nn.Module, **params: Any) -> Explainer:
    cls = method_class(name)
    layer = {"layer": params.pop("layer")} if "layer" in params and cls.needs_layer else {}
    return cls(model, **layer, **check_params(name, params))


def load_builtin_methods(until: str | None = None) -> None:
    """Import the method modules so their `@register` runs (kept lazy to keep `import explainers` cheap);
    with `until`, stop at the first module that registers that name: an audit with Grad-CAM does not import
    LRP's zennit, which imports torchvision and torch._dynamo (seconds of every CLI run's start-up)."""
    import importlib

    for module in ("cam", "gradients", "occlusion", "rise", "drise", "lrp", "shap", "attention"):
        if until is not None and until in METHODS:
            return
        try:
            importlib.import_module(f"explainers.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"explainers.{module}":
                raise
