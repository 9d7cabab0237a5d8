"""Functional relus of an exported graph as `nn.ReLU` modules, for the length of a `with` block.

Why: methods that change the backward pass of one module type (guided backprop: Captum hooks `nn.ReLU`
modules only; LRP rules: zennit maps rules by module type) find nothing to hook in a `.pt2`, whose
`torch.export.unflatten` graph keeps the module tree but not the module types: every activation is a
`call_function` node (`aten.relu` / `aten.relu_`) inside an `InterpreterModule`. Captum would then
silently return the plain gradient under the method's name. `relu_modules(model)` rewrites each such graph
so that its relu nodes call an `nn.ReLU` child (`inplace` kept: `relu_` -> `nn.ReLU(inplace=True)`, as
torchvision's eager modules), and puts the original graphs back on exit, in the spirit of zennit's
canonizers. The forward computes the same values; only module hooks see more.

TorchScript has no graph we can rewrite this way from Python: `refuse_torchscript` names the fix.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from explainers.errors import InputError

RELU_TARGETS = {torch.ops.aten.relu.default: False, torch.ops.aten.relu_.default: True,
                torch.relu: False, torch.relu_: True, nn.functional.relu: None}
CHILD_PREFIX = "_relu_module_"


def graph_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` that run an fx graph (unflattened `.pt2` submodules, fx GraphModules),
    including each call's module behind a `torch.export` dispatcher (a module called more than once)."""
    found, seen = [], set()
    for module in model.modules():
        for candidate in [module, *getattr(module, "_call_modules", ())]:
            if id(candidate) not in seen and isinstance(getattr(candidate, "graph", None), torch.fx.Graph):
                seen.add(id(candidate))
                found.append(candidate)
    return found


def is_exported_graph(model: nn.Module) -> bool:
    """True when some part of `model` runs an fx graph instead of typed modules (a loaded `.pt2`)."""
    return bool(graph_modules(model))


def is_torchscript(model: nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def refuse_torchscript(model: nn.Module, method: str, why: str) -> None:
    """InputError for a method that needs module types on a TorchScript model, with the fix."""
    if is_torchscript(model):
        raise InputError(
            f"method {method!r} {why}, which a TorchScript model does not expose (its layers are compiled "
            "code, so the method would silently return something else); export the model with torch.export "
            "as a .pt2: torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes={'x': {0: "
            "torch.export.Dim('batch')}}), 'model.pt2'), or use saliency / integrated_gradients")


@contextmanager
def relu_modules(model: nn.Module) -> Iterator[int]:
    """Inside the block, every functional relu of `model`'s fx graphs is a call of an `nn.ReLU` child;
    yields how many were rewritten. Eager modules are left alone (their relus are modules or functional
    calls that no graph records)."""
    saved = []
    count = 0
    try:
        for module in graph_modules(model):
            rewritten, added = _with_relu_modules(module.graph)
            if not added:
                continue
            saved.append((module, module.graph, module.__dict__.get("graph_module"), list(added)))
            for name, inplace in added.items():
                module.add_module(name, nn.ReLU(inplace=inplace))
            module.graph = rewritten
            if module.__dict__.get("graph_module") is not None:  # the codegen path (dynamo, no interpreter)
                module.__dict__["graph_module"] = torch.fx.GraphModule(module, rewritten)
            count += len(added)
        yield count
    finally:
        for module, graph, graph_module, names in reversed(saved):
            module.graph = graph
            if graph_module is not None:
                module.__dict__["graph_module"] = graph_module
            for name in names:
                delattr(module, name)


def _with_relu_modules(graph: torch.fx.Graph) -> tuple[torch.fx.Graph, dict[str, bool]]:
    """A copy of `graph` whose relu calls are `call_module` nodes, and {child name: inplace} to add."""
    if all(_relu_inplace(node) is None for node in graph.nodes):
        return graph, {}
    rewritten = copy.deepcopy(graph)
    added: dict[str, bool] = {}
    for node in list(rewritten.nodes):
        inplace = _relu_inplace(node)
        if inplace is None:
            continue
        name = f"{CHILD_PREFIX}{len(added)}"
        with rewritten.inserting_after(node):
            call = rewritten.call_module(name, (node.args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        rewritten.erase_node(node)
        added[name] = inplace
    rewritten.lint()
    return rewritten, added


def _relu_inplace(node: torch.fx.Node) -> bool | None:
    """None when `node` is not a relu call, else whether it works in place."""
    if node.op != "call_function" or node.target not in RELU_TARGETS:
        return None
    if RELU_TARGETS[node.target] is None:  # F.relu(x, inplace=...) in a symbolically traced graph
        return bool(node.kwargs.get("inplace", node.args[1] if len(node.args) > 1 else False))
    return RELU_TARGETS[node.target]
