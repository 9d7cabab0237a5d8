"""Small architectures for the sample models: name -> factory(num_classes) -> nn.Module.

A leaf module (torch only), published as the `saliency_audit.architectures` entry point (pyproject.toml), which
`explainers.loading.architectures` reads to rebuild state dicts. The layer names are part of the model cards (`target_layer`), so keep them
stable.
"""
from __future__ import annotations

from typing import Callable

import torch
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


class TinySegNet(nn.Module):
    """A semantic segmenter: two strided convs (64 -> 16), two dilated convs at 16x16, a 1x1 classifier,
    bilinear upsampling to the input. Per-pixel logits (B, C, H, W).

    Why dilations: the receptive field (about 40 px) reaches well beyond an object, so context is learnable,
    which is what the segmentation sample audits. `block3` (16x16) is the Grad-CAM target.
    """

    def __init__(self, num_classes: int = 3, width: int = 16):
        super().__init__()
        self.block1 = nn.Sequential(*_conv(3, width, 4, stride=2))
        self.block2 = nn.Sequential(*_conv(width, 2 * width, 4, stride=2))
        self.block3 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2, bias=False),
                                    nn.BatchNorm2d(2 * width), nn.ReLU(),
                                    nn.Conv2d(2 * width, 2 * width, 3, padding=4, dilation=4, bias=False),
                                    nn.BatchNorm2d(2 * width), nn.ReLU())
        self.classifier = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x):
        logits = self.classifier(self.block3(self.block2(self.block1(x))))
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class TinyViT(nn.Module):
    """A Vision Transformer small enough to train on a CPU in a minute: a convolutional stem (64 -> 8x8 patch
    tokens of width 32; early convolutions, Xiao et al. 2021, make a tiny ViT learn in few epochs), a class
    token and learned position embeddings, two torchvision `EncoderBlock`s (pre-norm, 2 heads), and a linear
    head on the class token.

    Why torchvision's blocks: the same modules a torchvision ViT has, so layer detection (the last block's
    `ln_1`) and attention capture (`nn.MultiheadAttention`) are what a user's torchvision ViT gets.
    `num_prefix_tokens` follows timm's convention, so the token layout needs no guessing.
    """

    num_prefix_tokens = 1

    def __init__(self, num_classes: int = 2, width: int = 32, depth: int = 2, heads: int = 2):
        super().__init__()
        from torchvision.models.vision_transformer import EncoderBlock

        self.stem = nn.Sequential(*_conv(3, width, 4, stride=4), *_conv(width, width, 4, stride=2))
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embedding = nn.Parameter(torch.randn(1, 1 + 8 * 8, width) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(heads, width, 2 * width, 0.0, 0.0) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # (B, 64, width), row-major patches
        tokens = torch.cat([self.class_token.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos_embedding
        return self.head(self.norm(self.blocks(tokens))[:, 0])


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
    "tiny_segnet": lambda num_classes: TinySegNet(num_classes),
    "tiny_vit": lambda num_classes: TinyViT(num_classes),
    "patch_net": lambda num_classes: PatchNet(num_classes),
}

TARGET_LAYERS = {"tiny_cnn": "block3", "tiny_segnet": "block3", "patch_net": "block3"}
