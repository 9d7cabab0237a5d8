"""Small architectures for the sample models: name -> factory(num_classes) -> nn.Module.

A leaf module (torch only): `explainers.architectures` imports it to rebuild state dicts. The layer names
are part of the model cards (`target_layer`), so keep them stable.
"""
from __future__ import annotations

from typing import Callable

from torch import nn


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - stride) // 2, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU()]


class TinyCNN(nn.Module):
    """A 4x4 patch stem (64 -> 16), a conv block with pooling (16 -> 8), a conv block at 8x8, then global
    average pooling and a linear head.

    Why this shape: a strided patch stem keeps CPU training of twenty models within minutes, and `block3`
    is an 8x8 spatial layer right before the pooling (the Grad-CAM target). Global average pooling keeps the
    head position-free, so whatever the map highlights is what the features detected.
    """

    def __init__(self, num_classes: int = 2, width: int = 16):
        super().__init__()
        self.block1 = nn.Sequential(*_conv(3, width, 4, stride=4))
        self.block2 = nn.Sequential(*_conv(width, 2 * width, 3), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(*_conv(2 * width, 2 * width, 3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(self.pool(x).flatten(1))


class PatchNet(nn.Module):
    """For 32x32 inputs (`sample_models.moving_patch`): stride-2 stem (32 -> 16), a conv block with pooling
    (16 -> 8), `block3` at 8x8 (the Grad-CAM layer), global average pooling, linear head. An 8x8 map at
    32 px (TinyCNN gives 4x4 there) keeps a 5-pixel corner patch in its own map cells."""

    def __init__(self, num_classes: int = 2, width: int = 16):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU())
        self.block2 = nn.Sequential(*_conv(width, 2 * width, 3), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(*_conv(2 * width, 2 * width, 3))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.block3(self.block2(self.block1(x))).mean(dim=(2, 3)))


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "tiny_cnn": lambda num_classes: TinyCNN(num_classes),
    "patch_net": lambda num_classes: PatchNet(num_classes),
}

TARGET_LAYERS = {"tiny_cnn": "block3", "patch_net": "block3"}
