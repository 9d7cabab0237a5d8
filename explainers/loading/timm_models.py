"""`"architecture": "timm:NAME"` in a model card: a timm model built with `pretrained=False` (nothing is
downloaded; the user's state dict or safetensors supplies the weights).

The card's `input_size` is passed as `img_size` to the models that take one (ViT, DeiT, Swin...: their
position embeddings and windows depend on it, so a model trained at 64 px has a 64 px state dict); CNNs
(ConvNeXt, EfficientNet...) take any size and are built without it. Needs the `[timm]` extra.
"""
from __future__ import annotations

import difflib

from torch import nn

from explainers.errors import InputError
from explainers.extras import require

PREFIX = "timm:"


def build_timm(name: str, num_classes: int, input_size: tuple[int, int] | None = None) -> nn.Module:
    timm = require("timm", "timm", f"architecture {PREFIX}{name}")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"architecture {PREFIX}{name}: timm has no model {name!r}{hint}; list names with "
                         "python -c \"import timm; print(timm.list_models('*vit*'))\"")
    if input_size is not None:
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=tuple(input_size))
        except TypeError as exc:  # the model has no img_size argument: a CNN, any input size works
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, pretrained=False, num_classes=num_classes)
