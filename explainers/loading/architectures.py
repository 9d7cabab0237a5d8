"""Architecture name -> a freshly built network, so a bare state dict has something to load into.

Names are plug-ins first, then torchvision's classification models (resnets, ViT, Swin, ConvNeXt, EfficientNet, MobileNet, ...) and timm
models as `timm:NAME` (`explainers.loading.timm_models`). Weights are never downloaded: the user's state dict
supplies them. torchvision's ViTs get the card's (square) input size as `image_size`: their position
embeddings depend on it.

Plug-ins are entry points of the installed distributions, so a team can name its own network in a card
without the loader importing its code by path (and without `explainers` importing the packages above it):
group `saliency_audit.architectures` (each entry point is a mapping name -> factory(num_classes) -> nn.Module;
the sample models register theirs in pyproject.toml) and `saliency_audit.detectors` (name -> factory(num_classes)
-> (net whose state dict the file holds, the net wrapped in the D-RISE detector format)).

Detectors (`build_detector`) come already wrapped in the D-RISE format (`explainers.detection`): the sample
`tiny_grid_detector` as a `GridDetector`, torchvision's detection models as a `TorchvisionDetector`. The
torchvision ones count background as class 0, so they are built with `len(classes) + 1` outputs.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from explainers.errors import InputError
from explainers.loading.timm_models import PREFIX as TIMM_PREFIX
from explainers.loading.timm_models import build_timm


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


def build_detector(name: str, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(network whose state dict the file holds, the same network wrapped to the D-RISE detector format).

    `num_classes` is the card's count, without background.
    """
    plugins = plugin_detectors()
    if name in plugins:
        return plugins[name](num_classes)
    if name in TORCHVISION_DETECTORS:
        import torchvision

        from explainers.detection import TorchvisionDetector

        net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes + 1)
        return net, TorchvisionDetector(net, num_classes=num_classes + 1)
    raise InputError(
        f"unknown detection architecture {name!r} in the model card; use one of "
        f"{', '.join(detector_names())}, or wrap your detector in "
        "explainers.detection.CallableDetector from Python"
    )


TORCHVISION_SEGMENTERS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                          "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")


def build_segmenter(name: str, num_classes: int) -> nn.Module:
    """A segmenter returning (B, C, H, W) logits or torchvision's {"out": ...} (read by
    `explainers.targets.segmentation_logits`): the sample segmenters, or torchvision's without aux heads."""
    sample = _sample_architectures()
    if name in sample:
        return sample[name](num_classes)
    if name in TORCHVISION_SEGMENTERS:
        import torchvision

        return torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes,
                                            aux_loss=False)
    raise InputError(f"unknown segmentation architecture {name!r} in the model card; use one of "
                     f"{', '.join(TORCHVISION_SEGMENTERS)} or a sample model, or export the model as .pt2")


def detector_class_names(architecture: str | None, classes) -> list[str]:
    """Names of a detector's class-probability columns: torchvision detectors put background first."""
    return ["__background__", *classes] if architecture in TORCHVISION_DETECTORS else list(classes)


def architecture_names() -> list[str]:
    return sorted(_sample_architectures()) + sorted(_torchvision_names())


def detector_names() -> list[str]:
    return sorted(plugin_detectors()) + list(TORCHVISION_DETECTORS)


def _sample_architectures() -> dict[str, Callable[[int], nn.Module]]:
    """Architectures registered under the `saliency_audit.architectures` entry point group."""
    return _plugins("saliency_audit.architectures")


def plugin_detectors() -> dict[str, Callable[[int], tuple[nn.Module, nn.Module]]]:
    """Detectors registered under the `saliency_audit.detectors` entry point group."""
    return _plugins("saliency_audit.detectors")


def _plugins(group: str) -> dict[str, Callable]:
    """Every mapping published under `group`, merged (read at each call: a test may patch a mapping)."""
    from importlib.metadata import entry_points

    found: dict[str, Callable] = {}
    for point in entry_points(group=group):
        found.update(point.load())
    return found


def _torchvision_names() -> set[str]:
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))
