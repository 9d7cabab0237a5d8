"""Which layers of a network have a spatial output, and which one CAM methods should use by default.

One probe forward (zeros, batch 1) with a forward hook on every submodule records each output. A layer is
*spatial* when its output is a 4-D tensor (B, C, H, W) with H, W > 1. Hooks fire when a module finishes,
so a container (resnet's `layer4`) fires after the last leaf that produced the same tensor; the module
that finishes last with a spatial output is therefore the outermost block at the end of the feature
extractor, the layer pytorch-grad-cam recommends (resnet `layer4`, vgg `features`).

The default layer is also checked the way CAM methods use it (`explainers.hooks.capture_layer`, then a
gradient of the output w.r.t. the activation); a layer for which that fails is passed over for the previous
candidate. (The hook hands the network a clone of the activation, so even densenet's `features`, which
the network then modifies with `relu(inplace=True)`, works as a graph root.)

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

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 8
LIST_LAYERS_HINT = "list the spatial layers with `python -m explainers.list_layers MODEL_PATH`"


@dataclass(frozen=True)
class _Call:
    name: str
    output: Any


def spatial_layers(net: nn.Module, input_size: Sequence[int], device: str | torch.device = "cpu"
                   ) -> list[tuple[str, tuple[int, ...]]]:
    """[(name, output shape)] of the submodules with a spatial output, in the order they are entered."""
    calls, entered = _probe(net, input_size, device)
    last_shape = {call.name: tuple(call.output.shape) for call in calls if _is_spatial(call.output)}
    return [(name, last_shape[name]) for name in entered if name in last_shape]


def detect_target_layer(net: nn.Module, input_size: Sequence[int], device: str | torch.device = "cpu") -> str:
    """Name of the default CAM layer: the last-finishing spatial module that works as a graph root."""
    calls, _ = _probe(net, input_size, device)
    candidates: list[str] = []
    modules = dict(net.named_modules())
    for call in reversed(calls):
        if _is_spatial(call.output) and call.name not in candidates and not _is_resampler(modules[call.name]):
            candidates.append(call.name)
    if not candidates:
        raise InputError(
            f"no layer of the model has a spatial (B, C, H, W) output for input size {tuple(input_size)}; "
            "CAM methods need one: use a gradient or perturbation method instead"
        )
    failures = []
    for name in candidates[:MAX_CANDIDATES]:
        problem = _graph_root_problem(net, modules[name], input_size, device)
        if problem is None:
            logger.info("target layer detected: %s", name)
            return name
        failures.append(f"{name} ({problem})")
    raise InputError(
        "could not find a layer that CAM methods can hook: tried " + "; ".join(failures)
        + "; set \"target_layer\" in the model card (" + LIST_LAYERS_HINT + ")"
    )


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


def _graph_root_problem(net: nn.Module, layer: nn.Module, input_size, device) -> str | None:
    """None when a gradient of the output reaches `layer`'s captured activation, else what went wrong."""
    try:
        with frozen(net), capture_layer(layer) as captured:
            output = net(_probe_input(input_size, device))
            if captured.activation is None:
                return "never called"
            (grad,) = torch.autograd.grad(_output_sum(output), captured.activation)
    except (RuntimeError, TypeError) as exc:
        return str(exc).splitlines()[0][:120]
    return None if grad is not None else "no gradient"


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


def _is_spatial(output: Any) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[2] > 1 and output.shape[3] > 1
