"""Register artifacts: patch tokens with an outlier norm (Darcet et al. 2024, "Vision Transformers Need Registers").

Large ViTs repurpose a few low-information patches, mostly background, as global scratch space: those
tokens carry a norm many times their neighbours' and draw the attention and the gradients, so a saliency
map lights up on background patches that hold no evidence. An audit must not flag a background region on
the strength of such tokens alone, so the explainers report them per image (`SaliencyBatch.artifact_tokens`).

A token is an artifact when its norm is above `median + MAD_FACTOR * MAD` of the image's patch-token norms
and at least `MIN_RATIO` times the median (the ratio keeps near-constant norms, MAD ~ 0, from flagging
noise). The norms are read from the residual stream: the input of the explained layer when it is a
normalisation (a block's `norm1`, whose output has every token's norm equalised), else its output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAD_FACTOR = 10.0
MIN_RATIO = 2.0


def artifact_tokens(token_map: torch.Tensor) -> torch.Tensor:
    """(B, h, w) bool from a (B, C, h, w) token map: True where a patch token's norm is an outlier."""
    norms = token_map.float().norm(dim=1)
    flat = norms.flatten(1)
    median = flat.median(dim=1).values
    mad = (flat - median[:, None]).abs().median(dim=1).values
    threshold = torch.maximum(median + MAD_FACTOR * mad, MIN_RATIO * median)
    return norms > threshold[:, None, None]


def reads_residual_input(layer: nn.Module) -> bool:
    """Whether the residual stream is the layer's input (a normalisation) rather than its output."""
    return isinstance(layer, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or "Norm" in type(layer).__name__


def artifact_pixels(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool at map resolution: every pixel an artifact token's value reaches when a grid map is
    upsampled bilinearly (its patch and half a patch around it), for region statistics (how much of a
    region's saliency mass lies on artifact tokens). Its patch alone would leave the artifact's large value,
    interpolated into the neighbouring half patch, counted as the neighbours' own."""
    return F.interpolate(tokens[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0] > 0
