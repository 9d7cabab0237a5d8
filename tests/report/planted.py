"""A hand-built exported model that reads only a bottom-right "tag", and a dataset where the tag is a shortcut.

`features` is a 1x1 conv copying the red channel, then zeroed outside the tag (a fixed spatial mask), so
every gradient and every Grad-CAM map lies inside the tag. Logits: [10 (t - 0.5), -10 (t - 0.5)] with t the
mean red inside the tag: class "cat" exactly when the tag is bright red. Dataset: cats carry a bright tag
(region 2, "tag"), dogs a dark one; the animal (region 1, core) is a square at a random place.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

SIZE = 32
TAG = 8  # the tag is the bottom-right TAG x TAG square
CLASSES = ["cat", "dog"]
REGIONS = {"0": {"name": "background"}, "1": {"name": "animal", "role": "core"}, "2": {"name": "tag"}}


class TagFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        window = torch.zeros(1, 1, SIZE, SIZE)
        window[..., SIZE - TAG:, SIZE - TAG:] = 1.0
        self.register_buffer("window", window)

    def forward(self, x):
        return self.conv(x) * self.window


class TagNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = TagFeatures()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            scale = SIZE * SIZE / (TAG * TAG)
            self.head.weight.copy_(torch.tensor([[10.0 * scale], [-10.0 * scale]]))
            self.head.bias.copy_(torch.tensor([-5.0, 5.0]))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def write_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt2"
    example = torch.rand(2, 3, SIZE, SIZE)
    exported = torch.export.export(TagNet().eval(), (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(exported, path)
    card = {"task": "classification", "classes": CLASSES, "input_size": [SIZE, SIZE], "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0], "target_layer": "features"}
    (folder / "model.json").write_text(json.dumps(card))
    return path


def write_dataset(folder: Path, n: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    lines = ["image,label,mask,light"]
    for i in range(n):
        label = CLASSES[i % 2]
        pixels = (rng.random((SIZE, SIZE, 3)) * 90).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        top, left = rng.integers(2, SIZE - TAG - 10, size=2)
        pixels[top:top + 10, left:left + 10] = (40, 200, 40)
        mask[top:top + 10, left:left + 10] = 1
        pixels[SIZE - TAG:, SIZE - TAG:, 0] = 250 if label == "cat" else 30
        mask[SIZE - TAG:, SIZE - TAG:] = 2
        Image.fromarray(pixels).save(folder / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i:03d}.png")
        lines.append(f"images/{i:03d}.png,{label},masks/{i:03d}.png,{'yes' if i % 4 < 2 else 'no'}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    (folder / "regions.json").write_text(json.dumps({"regions": REGIONS}))
    return folder
