"""Images to [0, 1] tensors; architecture names to networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from explainers.loading.architectures import build_architecture
from explainers.errors import InputError
from explainers.loading.models import ModelCard
from explainers.preprocess import to_batch, to_input


def test_to_input_exact_values_rgb_channels_first():
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [51, 102, 204]]], dtype=np.uint8)
    x = to_input(Image.fromarray(pixels), (2, 2))
    assert x.dtype == torch.float32 and x.shape == (3, 2, 2)
    torch.testing.assert_close(x[:, 1, 1], torch.tensor([0.2, 0.4, 0.8]))
    torch.testing.assert_close(x[0], torch.tensor([[1.0, 0.0], [0.0, 0.2]]))


def test_to_input_squashes_without_crop_and_converts_modes():
    wide = Image.new("L", (40, 10), color=128)  # grayscale, 4:1
    wide.paste(255, (0, 0, 20, 10))  # left half white
    x = to_input(wide, (8, 8))
    assert x.shape == (3, 8, 8)
    torch.testing.assert_close(x[0], x[2])  # gray -> equal RGB channels
    assert x[0, :, 0].eq(1.0).all() and torch.allclose(x[0, :, -1], torch.full((8,), 128 / 255))  # no crop
    rgba = Image.new("RGBA", (5, 7), color=(10, 20, 30, 0))
    assert to_input(rgba, ModelCard.from_dict({"classes": ["a"], "input_size": [14, 10]})).shape == (3, 14, 10)


def test_to_batch_stacks():
    images = [Image.new("RGB", (9, 9), color=(255, 255, 255)), Image.new("RGB", (3, 4))]
    batch = to_batch(images, (4, 6))
    assert batch.shape == (2, 3, 4, 6) and batch[0].eq(1).all() and batch[1].eq(0).all()


def test_build_torchvision_and_sample_architectures():
    net = build_architecture("resnet18", num_classes=7)
    assert net.fc.out_features == 7
    assert build_architecture("tiny_cnn", num_classes=5).head.out_features == 5  # sample model (conftest)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(InputError) as info:
        build_architecture("resnet_18", num_classes=2)
    message = str(info.value)
    assert "unknown architecture 'resnet_18'" in message and "tiny_cnn" in message and "alexnet" in message
