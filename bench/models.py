"""The benchmark models: torchvision resnet18 / resnet50 (random weights) at 224 and the sample tiny_cnn at 64.

Random weights are enough: throughput does not depend on the values, and the correctness gate compares
implementations on the same weights. The tiny_cnn comes from `sample_models.architectures` when that branch
is installed; until then an identically shaped stand-in is built here (same layers, same target layer name).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BenchModel:
    name: str
    net: nn.Module
    layer_name: str
    size: int
    num_classes: int

    @property
    def layer(self) -> nn.Module:
        return self.net.get_submodule(self.layer_name)


def build(name: str, seed: int = 0) -> BenchModel:
    torch.manual_seed(seed)
    if name in ("resnet18", "resnet50"):
        import torchvision

        net = torchvision.models.get_model(name, weights=None, num_classes=1000)
        return BenchModel(name, net.eval(), "layer4", 224, 1000)
    if name == "tiny_cnn":
        return BenchModel(name, tiny_cnn(num_classes=2).eval(), "block3", 64, 2)
    raise ValueError(f"unknown benchmark model {name!r}; use resnet18, resnet50 or tiny_cnn")


def tiny_cnn(num_classes: int = 2) -> nn.Module:
    from sample_models.architectures import ARCHITECTURES

    return ARCHITECTURES["tiny_cnn"](num_classes)


def images_and_targets(model: BenchModel, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images in [0, 1] (blurred noise, so maps have structure) and the predicted classes."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, model.size // 8, model.size // 8, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(model.size, model.size), mode="bilinear",
                                             align_corners=False)
    images = (images + 0.1 * torch.rand(images.shape, generator=generator)).clamp(0, 1)
    with torch.no_grad():
        targets = torch.cat([model.net(images[i:i + 16]).argmax(1) for i in range(0, n, 16)])
    return images.contiguous(), targets

