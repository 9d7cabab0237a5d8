"""Which layers of a network CAM methods can use, and which one they should use by default.

One probe forward (zeros, batch 1) with a forward hook on every submodule records each output. A layer is
*spatial* when its output lies on the image's patch grid (`explainers.tokens`): a (B, C, H, W) map with
H, W > 1, Swin's channels-last (B, H, W, C) map, or ViT tokens (B, prefix + H*W, D).

The default layer:
- Transformers (a module with an attention child, e.g. timm `Block`, torchvision `EncoderBlock`,
  `SwinTransformerBlock`): the first norm of the last such block, pytorch-grad-cam's documented recipe
  (timm `blocks[-1].norm1`, torchvision `encoder.layers.encoder_layer_11.ln_1`, Swin
  `layers[-1].blocks[-1].norm1` / `features[-1][-1].norm1`). After the last attention block only the class
  token reaches the head, so any later layer gives the patch tokens zero gradient; the patch embedding
  (`conv_proj`, the only (B, C, H, W) output of a ViT) carries no decision at all.
- CNNs: hooks fire when a module finishes, so a container (resnet's `layer4`) fires after the last leaf
  that produced the same tensor; the module that finishes last with a spatial output is therefore the
  outermost block at the end of the feature extractor, the layer pytorch-grad-cam recommends (resnet
  `layer4`, vgg `features`).

The default layer is also checked the way CAM methods use it (`explainers.hooks.capture_layer`, then a
gradient of the output w.r.t. the activation, non-zero on the patch grid); a CNN layer for which that
fails is passed over for the previous candidate. (The hook hands the network a clone of the activation,
so even densenet's `features`, which the network then modifies with `relu(inplace=True)`, works as a
graph root.)

`python -m explainers.list_layers MODEL_PATH [--card model.json]` lists the spatial layers of a model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from explainers.errors import InputError
from explainers.hooks import capture_layer, frozen
from explainers.module_types import type_name
from explainers.tokens import GridLayout, grid_layout, prefix_token_count

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 8
LIST_LAYERS_HINT = "list the layers CAM methods can use with `python -m explainers.list_layers MODEL_PATH`"


@dataclass(frozen=True)
class _Call:
    name: str
    output: Any


def spatial_layers(net: nn.Module, input_size: Sequence[int], device: str | torch.device = "cpu"
                   ) -> list[tuple[str, tuple[int, ...]]]:
    """[(name, output shape)] of the submodules with a spatial output, in the order they are entered."""
    return [(name, shape) for name, shape, _ in layer_layouts(net, input_size, device)]


def layer_layouts(net: nn.Module, input_size: Sequence[int], device: str | torch.device = "cpu"
                  ) -> list[tuple[str, tuple[int, ...], GridLayout]]:
    """[(name, output shape, grid layout)] of the spatial submodules, in the order they are entered."""
    calls, entered = _probe(net, input_size, device)
    layouts = _layouts(net, calls, input_size)
    last = {call.name: (tuple(call.output.shape), layouts[id(call)]) for call in calls if id(call) in layouts}
    return [(name, *last[name]) for name in entered if name in last]


def detect_target_layer(net: nn.Module, input_size: Sequence[int], device: str | torch.device = "cpu") -> str:
    """Name of the default CAM layer: a transformer's last-block first norm, else the last-finishing spatial
    module that works as a graph root."""
    calls, entered = _probe(net, input_size, device)
    modules = dict(net.named_modules())
    layouts = _layouts(net, calls, input_size)
    recipe = _last_block_first_norm(modules, calls, entered, layouts)
    if recipe is not None:
        problem = _graph_root_problem(net, modules[recipe], input_size, device, _layout_of(recipe, calls, layouts))
        if problem is not None:
            raise InputError(
                f"the transformer's default CAM layer {recipe} cannot be used ({problem}); set \"target_layer\" "
                f"in the model card ({LIST_LAYERS_HINT})")
        logger.info("target layer detected: %s (the last transformer block's first norm)", recipe)
        return recipe
    candidates: list[str] = []
    for call in reversed(calls):
        if (id(call) in layouts and call.name not in candidates and not _is_resampler(modules[call.name])):
            candidates.append(call.name)
    if not candidates:
        raise InputError(
            f"no layer of the model has a spatial output (a (B, C, H, W) map or patch tokens) for input size "
            f"{tuple(input_size)}; CAM methods need one: use a gradient or perturbation method instead"
        )
    failures = []
    for name in candidates[:MAX_CANDIDATES]:
        problem = _graph_root_problem(net, modules[name], input_size, device, _layout_of(name, calls, layouts))
        if problem is None:
            logger.info("target layer detected: %s", name)
            return name
        failures.append(f"{name} ({problem})")
    raise InputError(
        f"no layer that CAM methods can hook was found ({len(failures)} tried from the output side; the first: "
        f"{failures[0]}); "
        f"set \"target_layer\" in the model card ({LIST_LAYERS_HINT})")


def _layouts(net: nn.Module, calls: list[_Call], input_size: Sequence[int]) -> dict[int, GridLayout]:
    """id(call) -> the call's grid layout, for the calls whose output lies on the patch grid."""
    modules = dict(net.named_modules())
    prefix = prefix_token_count(net)
    layouts = {}
    for call in calls:
        if isinstance(call.output, torch.Tensor) and call.output.dim() in (3, 4):
            layout = grid_layout(call.output.shape, input_size, prefix_tokens=prefix, layer=modules[call.name])
            if layout is not None:
                layouts[id(call)] = layout
    return layouts


def _layout_of(name: str, calls: list[_Call], layouts: dict[int, GridLayout]) -> GridLayout | None:
    return next((layouts[id(c)] for c in reversed(calls) if c.name == name and id(c) in layouts), None)


def _last_block_first_norm(modules: dict[str, nn.Module], calls: list[_Call], entered: list[str],
                           layouts: dict[int, GridLayout]) -> str | None:
    """The first-entered norm child of the last-finishing transformer block (a module with an attention
    child) whose output is laid out as tokens or channels last; None for models without attention blocks."""
    token_outputs = {c.name for c in calls if id(c) in layouts and layouts[id(c)].kind != "channels_first"}
    finished = [c.name for c in calls]
    blocks = [name for name, module in modules.items() if name in finished and _is_attention_block(module)]
    if not blocks:
        return None
    last = max(blocks, key=lambda name: len(finished) - 1 - finished[::-1].index(name))
    prefix = f"{last}." if last else ""
    children = {f"{prefix}{child}" for child, module in modules[last].named_children() if _is_norm(module)}
    return next((name for name in entered if name in children and name in token_outputs), None)


def _is_attention_block(module: nn.Module) -> bool:
    """A block with an attention child and a norm child (by the class each had before export, if exported)."""
    children = list(module.children())
    return any("Attention" in type_name(c) for c in children) and any(_is_norm(c) for c in children)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "Norm" in type_name(module)


def _probe(net: nn.Module, input_size: Sequence[int], device) -> tuple[list[_Call], list[str]]:
    """Every submodule call in finishing order, and the module names in the order they were first entered.

    Outputs are kept alive until the end of the probe, so tensor identities stay meaningful.
    """
    calls: list[_Call] = []
    entered: list[str] = []
    handles = []
    for name, module in net.named_modules():
        if not name:
            continue
        handles.append(module.register_forward_pre_hook(
            lambda _m, _i, name=name: entered.append(name) if name not in entered else None))
        handles.append(module.register_forward_hook(
            lambda _m, _i, output, name=name: calls.append(_Call(name, output))))
    try:
        with torch.no_grad():
            net(_probe_input(input_size, device))
    except Exception as exc:  # the user's network: any failure is a problem with their model or card
        raise InputError(f"the model failed on a probe input of size {tuple(input_size)}: {exc}") from exc
    finally:
        for handle in handles:
            handle.remove()
    return calls, entered


def _graph_root_problem(net: nn.Module, layer: nn.Module, input_size, device,
                        layout: GridLayout | None = None) -> str | None:
    """None when a gradient of the output reaches `layer`'s captured activation on the patch grid, else
    what went wrong."""
    try:
        with frozen(net), capture_layer(layer) as captured:
            output = net(_probe_input(input_size, device))
            if captured.activation is None:
                return "never called"
            (grad,) = torch.autograd.grad(_output_sum(output), captured.activation)
    except (RuntimeError, TypeError) as exc:
        return str(exc).splitlines()[0][:120]
    if grad is None:
        return "no gradient"
    if layout is not None and layout.kind == "tokens" and grad.any() and not layout.to_map(grad).any():
        return "the output depends on its prefix (class) token only: no gradient reaches its patch tokens"
    return None


def _output_sum(output: Any) -> torch.Tensor:
    """A scalar that depends on every tensor the model returns (logits, dicts of maps, tuples)."""
    if isinstance(output, torch.Tensor):
        return output.float().sum()
    values = output.values() if isinstance(output, dict) else output
    return sum(_output_sum(v) for v in values if isinstance(v, (torch.Tensor, dict, list, tuple)))


def _probe_input(input_size: Sequence[int], device) -> torch.Tensor:
    height, width = (int(v) for v in input_size)
    return torch.zeros(1, 3, height, width, device=device)


_RESAMPLERS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_RESAMPLER_OPS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_avg_pool2d"}


def _is_resampler(module: nn.Module) -> bool:
    """Adaptive pooling only resamples the features before it to a fixed size (vgg's `avgpool`): a CAM
    there is a resampled copy of the previous layer's, so it is never the default. An unflattened `.pt2`
    keeps no module types, so its submodule graph is read instead."""
    if isinstance(module, _RESAMPLERS):
        return True
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return False
    ops = [getattr(node.target, "__name__", str(node.target)).split(".")[0]
           for node in graph.nodes if node.op == "call_function"]
    return bool(ops) and all(op in _RESAMPLER_OPS for op in ops)


