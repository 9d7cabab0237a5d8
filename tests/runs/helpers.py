"""A tiny exported model whose Grad-CAM is known, and a dataset folder with masks, for the run tests.

The model's `features` layer is a 1x1 conv that copies the red channel (card mean 0, std 1), the head is
a global average with logits [mean + 10, -mean]: the prediction is always class 0 and its Grad-CAM is
mean-gradient (1/(h*w)) times the red channel. Region shares of Grad-CAM therefore equal region shares of
the red channel, which the tests compute independently from the PNG files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

SIZE = 16
CLASSES = ["cat", "dog"]
REGIONS = {"0": {"name": "background"}, "1": {"name": "animal", "role": "core"}, "2": {"name": "cage"}}


class RedChannelNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        a = self.pool(self.features(x)).flatten(1)
        return torch.cat([a + 10.0, -a], dim=1)


def write_model(folder: Path, *, torchscript: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    net = RedChannelNet().eval()
    example = torch.rand(2, 3, SIZE, SIZE)
    if torchscript:
        path = folder / "model.ts"
        torch.jit.save(torch.jit.trace(net, example), path)
    else:
        path = folder / "model.pt2"
        batch = torch.export.Dim.AUTO
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), path)
    card = {"task": "classification", "classes": CLASSES, "input_size": [SIZE, SIZE], "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0], "target_layer": "features"}
    (folder / "model.json").write_text(json.dumps(card))
    return path


def write_dataset(folder: Path, n: int = 12, *, seed: int = 0, corrupt: tuple[int, ...] = (),
                  bad_label: str | None = None) -> Path:
    """n images (labels alternate cat/dog), masks with regions 0/1/2; `corrupt` images are truncated PNGs."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    lines = ["image,label,mask,in_cage"]
    for i in range(n):
        pixels = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        top, left = rng.integers(0, SIZE - 6, size=2)
        mask[top:top + 6, left:left + 6] = 1
        mask[:, : 1 + i % 3] = 2
        Image.fromarray(pixels).save(folder / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i:03d}.png")
        if i in corrupt:
            data = (folder / "images" / f"{i:03d}.png").read_bytes()
            (folder / "images" / f"{i:03d}.png").write_bytes(data[: len(data) // 2])
        label = bad_label if bad_label and i == 0 else CLASSES[i % 2]
        lines.append(f"images/{i:03d}.png,{label},masks/{i:03d}.png,{'yes' if i % 3 == 0 else 'no'}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    (folder / "regions.json").write_text(json.dumps({"regions": REGIONS}))
    return folder


def expected_region_table(folder: Path, skip: tuple[int, ...] = ()) -> dict[str, dict[str, float]]:
    """Overall mass_mean / area_mean / lift per region from the files alone (red channel = the map)."""
    masses, areas = {r: [] for r in REGIONS}, {r: [] for r in REGIONS}
    for path in sorted((folder / "images").glob("*.png")):
        if int(path.stem) in skip:
            continue
        red = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)[..., 0]
        mask = np.asarray(Image.open(folder / "masks" / path.name))
        for rid in REGIONS:
            region = mask == int(rid)
            masses[rid].append((red * region).sum() / red.sum())
            areas[rid].append(region.mean())
    out = {}
    for rid, spec in REGIONS.items():
        mass, area = float(np.mean(masses[rid])), float(np.mean(areas[rid]))
        out[spec["name"]] = {"mass_mean": mass, "area_mean": area, "lift": mass / area}
    return out
