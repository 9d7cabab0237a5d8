"""The type a module had before export: what layer detection asks of a network, on every format.

Why: `torch.export.unflatten` rebuilds a `.pt2`'s module tree, but every module is an `InterpreterModule`
running a graph; the original class survives only as its `_ty` string ("torch.nn.modules.normalization.
LayerNorm", "torchvision.models.vision_transformer.EncoderBlock"). Checks written as `isinstance(m,
nn.LayerNorm)` or `type(m).__name__` found no transformer block, no norm and no attention in an exported ViT.
"""
from __future__ import annotations

from torch import nn


def type_name(module: nn.Module) -> str:
    """The class name of `module`, or of the module it was exported from (`InterpreterModule._ty`)."""
    exported = getattr(module, "_ty", None)
    if isinstance(exported, str) and exported:
        return exported.rsplit(".", 1)[-1]
    return type(module).__name__


def is_layer_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type_name(module) == "LayerNorm"


def normalized_shape(module: nn.Module) -> tuple[int, ...] | None:
    """A LayerNorm's `normalized_shape`, read from its graph's `layer_norm` call once exported."""
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape)
    for node in getattr(getattr(module, "graph", None), "nodes", ()):
        if node.op == "call_function" and "layer_norm" in str(node.target) and len(node.args) > 1:
            return tuple(int(v) for v in node.args[1])
    return None
