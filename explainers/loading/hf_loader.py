"""Load a Hugging Face image classifier folder (`explainers.loading.hf_card` says what it is) with no pickle.

Only safetensors weights are read (`use_safetensors=True`, `local_files_only`, no remote code), in float32.
The network is wrapped so that it returns `.logits`, a plain (B, classes) tensor like every other classifier
here; layer names are those of the transformers model under `model.` (e.g. `model.vit.layers.11.layernorm_before`).
Needs the `[hf]` extra (transformers), imported only when such a folder is loaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from explainers.errors import InputError
from explainers.extras import require
from explainers.loading.hf_card import refuse_pickled_weights


class LogitsOf(nn.Module):
    """A transformers model called on pixel values, returning its `.logits` tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def load_hf_classifier(folder: Path, device: torch.device) -> nn.Module:
    """The folder's image classifier, float32, eval mode, returning logits."""
    refuse_pickled_weights(folder)
    _refuse_damaged_weights(folder)
    transformers = require("transformers", "hf", f"{folder.name} (a Hugging Face folder)")
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder), use_safetensors=True, local_files_only=True, trust_remote_code=False,
            dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(f"{folder.name}: transformers cannot load it as an image classifier ({first}); "
                         f"the folder must come from AutoModelForImageClassification.save_pretrained") from exc
    return LogitsOf(model).to(device).eval()



def _refuse_damaged_weights(folder: Path) -> None:
    """A damaged model.safetensors (or shard) named with its tensor and offset, before transformers reads it."""
    from explainers.safetensors_check import damage, message

    for weights in sorted(folder.glob("*.safetensors")):
        if damage(weights) is not None:
            raise InputError(f"{folder.name}/{message(weights)}")
