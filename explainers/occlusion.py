"""Occlusion (Zeiler & Fergus 2014) by Captum: slide a grey square, record how much the target logit drops.

Positive where hiding the pixels lowers the score. The window spans all colour channels, so every channel
gets the same attribution; the map is their mean (equal to any one channel). Pixels that no window position
covers (when (side - window) is not a multiple of the stride) get 0. Captum's first forward is on the clean
input; the scores are read from it rather than from a forward of our own.
"""
from __future__ import annotations

import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.gradients import KeepsFirstOutput, indices_for
from explainers.registry import register


@register
class Occlusion(Explainer):
    """`window`/`stride` in pixels; None means 1/8 of each side and half the window (sensible at 64 and 224)."""

    name = "occlusion"
    black_box = True

    def __init__(self, model: nn.Module, *, window: int | None = None, stride: int | None = None,
                 fill: float = 0.5, perturbations_per_eval: int = 16):
        if window is not None and window < 1 or stride is not None and stride < 1:
            raise InputError(f"occlusion window and stride must be >= 1 pixel, got {window} and {stride}")
        if not 0.0 <= fill <= 1.0:
            raise InputError(f"occlusion fill is a pixel value in [0, 1], got {fill}")
        if perturbations_per_eval < 1:
            raise InputError(f"occlusion perturbations_per_eval must be >= 1, got {perturbations_per_eval}")
        super().__init__(model, window=window, stride=stride, fill=float(fill),
                         perturbations_per_eval=perturbations_per_eval)

    def window_and_stride(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        window = self.params["window"]
        windows = (window, window) if window else (max(1, height // 8), max(1, width // 8))
        windows = (min(windows[0], height), min(windows[1], width))
        stride = self.params["stride"]
        strides = (stride, stride) if stride else (max(1, windows[0] // 2), max(1, windows[1] // 2))
        return windows, strides

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        check_images(inputs)
        indices = indices_for(self.name, targets, inputs)
        channels, height, width = inputs.shape[1:]
        windows, strides = self.window_and_stride(height, width)
        model = KeepsFirstOutput(self.model)
        with torch.no_grad():
            attributions = CaptumOcclusion(model).attribute(
                inputs, sliding_window_shapes=(channels, *windows), strides=(channels, *strides),
                baselines=self.params["fill"], target=indices,
                perturbations_per_eval=self.params["perturbations_per_eval"],
            )
        scores = model.first_output.gather(1, indices[:, None])[:, 0]
        return SaliencyBatch(attributions.mean(dim=1).float(), scores.float(), self.name)
