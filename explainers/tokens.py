"""A layer's output as a feature map on the image's patch grid: CNN maps, ViT tokens, Swin's channels-last maps.

CAM methods weight the channels of a (B, C, h, w) map. Vision Transformers do not output one:
- ViT / DeiT blocks output tokens (B, N, D): `prefix` tokens first (class, distillation, registers), then
  the h*w patch tokens in row-major order;
- Swin (timm and torchvision) keeps (B, h, w, C), channels last.
pytorch-grad-cam asks the user for a `reshape_transform` with the grid written into it; here the layout is
read from the output's shape and the input size, so the grid follows the image (non-square too):

- 3-D (B, N, D): the smallest prefix `k` (the model's own count when it declares one, timm's
  `num_prefix_tokens`, torchvision's class token) for which N - k patch tokens tile the input with one integer
  patch size `s`: h = H / s, w = W / s (rounded down, or up for padded patch embeddings).
- 4-D: channels first (B, C, h, w) when (h, w) is a plausible map of the input (no larger, about one stride
  in both directions), unless the first two dimensions tile the input and the last two do not, or the
  layer is a LayerNorm over the last dimension (Swin's `norm1`, ConvNeXt's block norm): channels last.

A layer whose tokens tile nothing (a pooled feature, a sequence of another length) has no layout (`None`),
and the CAM refuses it with the fix instead of explaining something else.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import nn

from explainers.module_types import is_layer_norm, normalized_shape, type_name

MAX_PREFIX_TOKENS = 32  # class + distillation + registers; Darcet et al. use at most 16 registers


@dataclass(frozen=True)
class GridLayout:
    kind: str  # "channels_first" | "channels_last" | "tokens"
    grid: tuple[int, int]  # (h, w) positions of the patch grid
    prefix: int = 0  # tokens before the patch grid ("tokens" only)

    def to_map(self, tensor: torch.Tensor) -> torch.Tensor:
        """The layer's output (or its gradient) as a (B, C, h, w) map; prefix tokens dropped."""
        if self.kind == "channels_first":
            return tensor
        if self.kind == "channels_last":
            return tensor.permute(0, 3, 1, 2)
        height, width = self.grid
        patches = tensor[:, self.prefix:]
        return patches.reshape(tensor.shape[0], height, width, tensor.shape[-1]).permute(0, 3, 1, 2)

    def describe(self) -> str:
        height, width = self.grid
        if self.kind == "tokens":
            return f"tokens: {self.prefix} prefix + {height}x{width} patches"
        return f"{height}x{width} map" + (", channels last" if self.kind == "channels_last" else "")


def grid_layout(shape: Sequence[int], input_size: Sequence[int], *, prefix_tokens: int | None = None,
                layer: nn.Module | None = None) -> GridLayout | None:
    """How an output of `shape` (batch first) lies on the grid of an `input_size` (H, W) image, or None."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 4:
        first, second = shape[2:], shape[1:3]
        last_normalised = layer is not None and is_layer_norm(layer) and normalized_shape(layer) == shape[3:]
        if _tiles(second, input_size) and (not _tiles(first, input_size) or last_normalised):
            return GridLayout("channels_last", second)
        if _plausible_map(first, input_size):
            return GridLayout("channels_first", first)
        return None
    if len(shape) != 3:
        return None
    tokens = shape[1]
    candidates = [prefix_tokens] if prefix_tokens is not None else []
    candidates += [k for k in range(min(tokens - 1, MAX_PREFIX_TOKENS) + 1) if k != prefix_tokens]
    for prefix in candidates:
        if 0 <= prefix < tokens:
            grid = _patch_grid(tokens - prefix, input_size)
            if grid is not None:
                return GridLayout("tokens", grid, prefix)
    return None


def prefix_token_count(model: nn.Module) -> int | None:
    """The number of tokens before the patch grid, where the model declares it (timm, torchvision)."""
    for module in model.modules():
        count = getattr(module, "num_prefix_tokens", None)
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        if type_name(module) == "VisionTransformer" and hasattr(module, "class_token"):
            return 1  # torchvision: one class token
    return None


def _patch_grid(patches: int, input_size: Sequence[int]) -> tuple[int, int] | None:
    """(h, w) with h * w == patches that one integer patch size cuts (H, W) into, smallest patch first."""
    for rows, cols in _grids(input_size):
        if rows * cols == patches:
            return rows, cols
    return None


def _plausible_map(grid: Sequence[int], input_size: Sequence[int]) -> bool:
    """A CNN map need not tile the input exactly (unpadded convolutions: 28x28 of 32x32), but it is no larger
    than the input and has about one stride in both directions (attention's (heads, N, head_dim) has not)."""
    (rows, cols), (height, width) = grid, input_size
    if not (1 < rows <= height and 1 < cols <= width):
        return False
    ratio = (height / rows) / (width / cols)
    return 2 / 3 <= ratio <= 3 / 2


def _tiles(grid: Sequence[int], input_size: Sequence[int]) -> bool:
    rows, cols = (int(v) for v in grid)
    return rows > 1 and cols > 1 and (rows, cols) in _grids(input_size)


def _grids(input_size: Sequence[int]) -> dict[tuple[int, int], None]:
    """Every (h, w) a patch size s makes of an (H, W) input (H / s and W / s, each rounded down or up), in
    order of increasing s."""
    return _grids_of(*(int(v) for v in input_size))


@lru_cache(maxsize=64)
def _grids_of(height: int, width: int) -> dict[tuple[int, int], None]:
    grids: dict[tuple[int, int], None] = {}
    for size in range(1, max(height, width) + 1):
        for rows in sorted({height // size, -(-height // size)}):
            for cols in sorted({width // size, -(-width // size)}):
                if rows >= 1 and cols >= 1:
                    grids.setdefault((rows, cols))
    return grids
