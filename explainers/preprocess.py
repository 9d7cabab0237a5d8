"""PIL image -> the tensor every explainer takes: RGB, (3, H, W), float32 in [0, 1].

Squashed to the card's input size (bilinear, no crop) so a saliency map maps back onto the whole original
image by a plain resize. Normalisation is not done here: the loaded model owns it (`LoadedModel.module`).
"""
from __future__ import annotations

from typing import Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image

InputSize = Union[Sequence[int], "ModelCard"]  # noqa: F821  (a card is accepted for its input_size)


def to_input(image: Image.Image, input_size: InputSize) -> torch.Tensor:
    height, width = _size(input_size)
    rgb = image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_batch(images: Iterable[Image.Image], input_size: InputSize) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1]."""
    return torch.stack([to_input(image, input_size) for image in images])


def _size(input_size: InputSize) -> tuple[int, int]:
    size = getattr(input_size, "input_size", input_size)
    height, width = (int(v) for v in size)
    return height, width
