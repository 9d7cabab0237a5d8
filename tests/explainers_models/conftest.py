"""Tiny hand-built networks and model-file writers shared by the model-loading tests."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import explainers.loading.architectures as architectures


class TinyCNN(nn.Module):
    """conv(3->4) 16x16 -> relu -> block(conv 4->8 stride 2, relu) 8x8 -> pool -> linear."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.block(self.act(self.stem(x)))
        return self.head(self.pool(x).flatten(1))


@pytest.fixture(autouse=True)
def tiny_architecture(monkeypatch):
    """Registers `tiny_cnn` as if it were a sample model (sample_models is written elsewhere)."""
    monkeypatch.setattr(architectures, "_sample_architectures", lambda: {"tiny_cnn": TinyCNN})


def write_card(folder: Path, name: str = "model.json", **fields) -> Path:
    card = {"task": "classification", "classes": ["a", "b", "c"], "input_size": [16, 16],
            "architecture": "tiny_cnn", **fields}
    path = folder / name
    path.write_text(json.dumps(card))
    return path


def export_pt2(model: nn.Module, path: Path, size=(16, 16), dynamic: bool = True) -> Path:
    example = (torch.rand(2, 3, *size),)
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(model.eval(), example, dynamic_shapes=shapes), str(path))
    return path


@pytest.fixture(scope="session")
def resnet18_pt2(tmp_path_factory):
    """One random resnet18 (4 classes) and its `.pt2` export at 64x64, shared: exporting costs seconds."""
    torch.manual_seed(0)
    original = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    path = export_pt2(original, tmp_path_factory.mktemp("r18") / "r18.pt2", size=(64, 64))
    return original, path
