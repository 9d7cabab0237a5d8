"""Architecture name -> a freshly built network, so a bare state dict has something to load into.

Names are the project's sample models (`sample_models.architectures.ARCHITECTURES`, checked first) and
torchvision's classification models. Weights are never downloaded: the user's state dict supplies them.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from explainers.errors import InputError


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised `name` network with a `num_classes`-way head."""
    sample = _sample_architectures()
    if name in sample:
        return sample[name](num_classes)
    torchvision_names = _torchvision_names()
    if name in torchvision_names:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    raise InputError(
        f"unknown architecture {name!r} in the model card; use one of the sample models "
        f"({', '.join(sorted(sample)) or 'none installed'}) or a torchvision classification model "
        f"({', '.join(sorted(torchvision_names)[:8])}, ...), or export the model as .pt2 (no architecture needed)"
    )


def architecture_names() -> list[str]:
    return sorted(_sample_architectures()) + sorted(_torchvision_names())


def _sample_architectures() -> dict[str, Callable[[int], nn.Module]]:
    """Imported lazily: `sample_models` is optional at runtime (a leaf package, torch only)."""
    try:
        from sample_models.architectures import ARCHITECTURES
    except ImportError:
        return {}
    return dict(ARCHITECTURES)


def _torchvision_names() -> set[str]:
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))
