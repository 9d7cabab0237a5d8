"""Capture a layer's activation and make it the start of the autograd graph, for one call only.

The hook keeps a detached leaf that requires grad (`activation`) and hands the network a clone of it, so an
in-place op after the layer (ReLU(inplace=True)) cannot modify the leaf. Everything before the layer
then runs without building a graph, and `torch.autograd.grad(score, activation)` stops at the layer: the
cheapest possible Grad-CAM (one forward, a backward through the head only). Hooks are removed in
`finally`, so an exception inside the block never leaves a hook on the user's model.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class LayerCapture:
    activation: torch.Tensor | None = None
    input: torch.Tensor | None = None  # the layer's first input (a detached copy), with `keep_input=True`


@contextmanager
def capture_layer(layer: nn.Module, *, graph_root: bool = True, keep_input: bool = False) -> Iterator[LayerCapture]:
    captured = LayerCapture()

    def hook(_module, _inputs, output):
        if keep_input and _inputs and isinstance(_inputs[0], torch.Tensor):
            captured.input = _inputs[0].detach().clone()
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {type(_module).__name__} returns {type(output).__name__}, not a tensor")
        # We keep our own copy: an in-place op after the layer (ReLU(inplace=True)) must not change it.
        if not graph_root:
            captured.activation = output.detach().clone()
            return output
        captured.activation = output.detach().requires_grad_(True)
        return captured.activation.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters stop requiring grad for the call (no weight gradients are ever computed), then restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
