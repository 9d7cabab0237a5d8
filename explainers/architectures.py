"""Architecture name -> a freshly built network, so a bare state dict has something to load into.

Names are the project's sample models (`sample_models.architectures.ARCHITECTURES`, checked first),
torchvision's classification models (resnets, ViT, Swin, ConvNeXt, EfficientNet, MobileNet, ...) and timm
models as `timm:NAME` (`explainers.timm_models`). Weights are never downloaded: the user's state dict
supplies them. torchvision's ViTs get the card's (square) input size as `image_size`: their position
embeddings depend on it.

Detectors (`build_detector`) come already wrapped in the D-RISE format (`explainers.detection`): the sample
`tiny_grid_detector` as a `GridDetector`, torchvision's detection models as a `TorchvisionDetector`. The
torchvision ones count background as class 0, so they are built with `len(classes) + 1` outputs.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from explainers.errors import InputError
from explainers.timm_models import PREFIX as TIMM_PREFIX
from explainers.timm_models import build_timm


def build_architecture(name: str, num_classes: int, input_size: tuple[int, int] | None = None) -> nn.Module:
    """A randomly initialised `name` network with a `num_classes`-way head, for inputs of `input_size`."""
    if name.startswith(TIMM_PREFIX):
        return build_timm(name[len(TIMM_PREFIX):], num_classes, input_size)
    sample = _sample_architectures()
    if name in sample:
        return sample[name](num_classes)
    torchvision_names = _torchvision_names()
    if name in torchvision_names:
        import torchvision

        extra = {}
        if name.startswith("vit_") and input_size is not None:
            if input_size[0] != input_size[1]:
                raise InputError(f"architecture {name!r}: torchvision ViTs take square inputs; set 'input_size' "
                                 f"to [{input_size[0]}, {input_size[0]}] or export the model as .pt2")
            extra["image_size"] = int(input_size[0])
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)
    raise InputError(
        f"unknown architecture {name!r} in the model card; use one of the sample models "
        f"({', '.join(sorted(sample)) or 'none installed'}), a torchvision classification model "
        f"({', '.join(sorted(torchvision_names)[:8])}, ...) or a timm model as 'timm:NAME', or export the model "
        "as .pt2 (no architecture needed)"
    )


TORCHVISION_DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn",
                         "fcos_resnet50_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large")
SAMPLE_DETECTORS = ("tiny_grid_detector",)


def build_detector(name: str, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(network whose state dict the file holds, the same network wrapped to the D-RISE detector format).

    `num_classes` is the card's count, without background.
    """
    if name == "tiny_grid_detector":
        from sample_models.detection import GridDetector, TinyGridNet

        net = TinyGridNet(num_classes)
        return net, GridDetector(net)
    if name in TORCHVISION_DETECTORS:
        import torchvision

        from explainers.detection import TorchvisionDetector

        net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes + 1)
        return net, TorchvisionDetector(net, num_classes=num_classes + 1)
    raise InputError(
        f"unknown detection architecture {name!r} in the model card; use one of "
        f"{', '.join(SAMPLE_DETECTORS + TORCHVISION_DETECTORS)}, or wrap your detector in "
        "explainers.detection.CallableDetector from Python"
    )


def detector_class_names(architecture: str | None, classes) -> list[str]:
    """Names of a detector's class-probability columns: torchvision detectors put background first."""
    return ["__background__", *classes] if architecture in TORCHVISION_DETECTORS else list(classes)


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
