"""Optional heavy libraries (timm, transformers), imported only when a model card asks for them.

`pip install saliency-audit` stays light; a card naming `timm:...` or a Hugging Face folder needs the extra,
and the user is told which one instead of seeing a bare ModuleNotFoundError.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from explainers.errors import InputError


def require(module: str, extra: str, why: str) -> ModuleType:
    """`import module`, or an InputError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise
        raise InputError(f"{why} needs the {module.split('.')[0]} package: pip install 'saliency-audit[{extra}]'") from None
