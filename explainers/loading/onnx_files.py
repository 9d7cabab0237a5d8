"""ONNX files checked from their protobuf alone, before onnxruntime sees them (torch-free, nothing executed).

A file must parse and pass `onnx.checker`, stay under the node and weight limits, use only standard operator
domains (a custom domain needs a native custom-op library), and keep any external weight data inside its own
folder (no absolute paths, no `..`, no symlink out), present and long enough. `external_data_files` lists
those weight files so the workspace copies them with the model.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Iterator

from explainers.errors import InputError, first_line

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
MAX_NODES = 200_000
MAX_WEIGHT_BYTES = 16 << 30
PROTOBUF_LIMIT = 2 << 30  # a single .onnx file cannot be larger; bigger models keep their weights outside
EXPORT_HINT = ("export it with torch.onnx.export(model.eval(), (x,), 'model.onnx', dynamo=True, "
               "dynamic_shapes=({0: torch.export.Dim('batch')},))")


def check_onnx_file(path: Path):
    """The parsed `onnx.ModelProto` (weights not loaded) after the checks; InputError naming file and fix."""
    onnx = require("onnx")
    size = path.stat().st_size
    if size >= PROTOBUF_LIMIT:
        raise InputError(f"{path.name}: {size / 2**30:.1f} GB, over the 2 GB an ONNX protobuf can hold; save the "
                         "weights as external data beside it (onnx.save_model(m, path, save_as_external_data=True))")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: a damaged or foreign file
        raise InputError(f"{path.name}: not a valid ONNX model, damaged or truncated ({first_line(exc)}); "
                         f"{EXPORT_HINT}") from None
    graphs = list(_graphs(model.graph))
    n_nodes = sum(len(g.node) for g in graphs)
    if n_nodes > MAX_NODES:
        raise InputError(f"{path.name}: {n_nodes} graph nodes, over the limit of {MAX_NODES}; this tool audits "
                         "vision models, export the model without unrolled loops")
    domains = {n.domain for g in graphs for n in g.node} | {o.domain for o in model.opset_import}
    custom = sorted(domains - STANDARD_DOMAINS)
    if custom:
        raise InputError(f"{path.name}: uses operators from the custom domain {custom[0]!r}, which need a native "
                         "custom-op library; export the model with standard ONNX operators only")
    weight_bytes = _check_external_data(path, model, graphs)
    weight_bytes += sum(len(t.raw_data) for g in graphs for t in g.initializer)
    if weight_bytes > MAX_WEIGHT_BYTES:
        raise InputError(f"{path.name}: {weight_bytes / 2**30:.1f} GB of weights, over the limit of "
                         f"{MAX_WEIGHT_BYTES >> 30} GB")
    try:
        onnx.checker.check_model(str(path))  # by path: external data is resolved beside the model
    except Exception as exc:
        raise InputError(f"{path.name}: malformed ONNX graph ({first_line(exc)}); {EXPORT_HINT}") from None
    return model


def external_data_files(path: Path) -> list[Path]:
    """The files an ONNX model keeps its weights in, beside it (checked: inside its folder, present)."""
    model = check_onnx_file(path)
    return sorted({(path.parent / loc).resolve() for loc in _external_locations(model, list(_graphs(model.graph)))})


def ultralytics_card(path: Path) -> dict | None:
    """A model card from the metadata `yolo export format=onnx` writes (`names`, `imgsz`, `task`), read as
    literals (`ast.literal_eval`: no code); None for other files. Detection and instance-segmentation exports
    (`-seg` models: D-RISE with their masks) only."""
    onnx = require("onnx")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        if "ultralytics" not in meta.get("author", "").lower() or meta.get("task") not in ("detect", "segment"):
            return None
        names, size = ast.literal_eval(meta["names"]), ast.literal_eval(meta["imgsz"])
        classes = [str(names[i]) for i in sorted(names)]
        height, width = (size, size) if isinstance(size, int) else size
    except Exception:  # not parseable here: the loader reports it, with the file's name
        return None
    return {"name": path.stem, "task": "detection", "classes": classes, "input_size": [int(height), int(width)],
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def _check_external_data(path: Path, model, graphs) -> int:
    folder = path.parent.resolve()
    total = 0
    for tensor in _tensors(graphs):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise InputError(f"{path.name}: tensor {tensor.name!r} points to external data {location!r} outside "
                             "the model's folder, refused; keep the weight files beside the .onnx "
                             "(onnx.save_model(m, path, save_as_external_data=True, location='model.onnx.data'))")
        if not target.is_file():
            raise InputError(f"{path.name}: external data file {location!r} (tensor {tensor.name!r}) is missing; "
                             "put it beside the .onnx, or save a single file (onnx.save_model(m, path))")
        end = int(entries.get("offset", 0) or 0) + int(entries.get("length", 0) or 0)
        if end > target.stat().st_size:
            raise InputError(f"{path.name}: external data {location!r} is shorter than tensor {tensor.name!r} "
                             "needs (truncated); save the model again")
        total += int(entries.get("length", 0) or 0) or target.stat().st_size
    return total


def _external_locations(model, graphs) -> set[str]:
    return {e.value for t in _tensors(graphs) if t.data_location == 1 for e in t.external_data if e.key == "location"}


def _graphs(graph) -> Iterator:
    """The main graph and every subgraph (If / Loop / Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(graphs) -> Iterator:
    for g in graphs:
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


def require(module: str):
    """`onnx` or `onnxruntime`, or an InputError naming the extra that installs them."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise InputError("ONNX models need the onnx extra: pip install '.[onnx]'") from None
