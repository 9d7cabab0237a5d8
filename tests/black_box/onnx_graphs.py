"""Hand-built ONNX graphs (onnx.helper): a tiny classifier whose logits are known, the torchvision detector
export layout, and the hostile variants the security tests feed the loader."""
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 16
CARD = {"task": "classification", "classes": ["a", "b"], "input_size": [SIZE, SIZE], "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0]}
WEIGHT = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]], np.float32)  # logits = channel means @ WEIGHT


def classifier_graph(nodes_extra=(), domain_ops=()) -> onnx.ModelProto:
    """x (N, 3, 16, 16) -> GlobalAveragePool -> Flatten -> MatMul(WEIGHT): logits (N, 2)."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]), *nodes_extra]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(WEIGHT, "w")])
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domain_ops)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def torchvision_layout_graph() -> onnx.ModelProto:
    """The torchvision export layout: one (3, H, W) image -> boxes (1, 4), labels (1,) int64 = [2], scores (1,)
    = the image's mean pixel."""
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
             helper.make_node("Reshape", ["mean", "one"], ["scores"]),
             helper.make_node("Identity", ["box"], ["boxes"]),
             helper.make_node("Identity", ["label"], ["labels"])]
    graph = helper.make_graph(
        nodes, "tv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, SIZE, SIZE])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["K"]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"])],
        [numpy_helper.from_array(np.array([1], np.int64), "one"),
         numpy_helper.from_array(np.array([[2.0, 3.0, 10.0, 12.0]], np.float32), "box"),
         numpy_helper.from_array(np.array([2], np.int64), "label")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save(model: onnx.ModelProto, folder: Path, card: dict | None = None, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    (folder / "model.json").write_text(json.dumps(card or CARD))
    return path


def with_external_weight(model: onnx.ModelProto, location: str, length: int | None = None) -> onnx.ModelProto:
    """The weight `w` moved to external data at `location` (relative to the model's folder, or absolute)."""
    tensor = model.graph.initializer[0]
    size = len(tensor.raw_data) if tensor.raw_data else WEIGHT.nbytes
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length or size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


END2END = np.array([[[2.0, 3.0, 10.0, 12.0, 0.9, 1.0], [0.0, 0.0, 4.0, 4.0, 0.001, 0.0]]], np.float32)


def end2end_layout_graph() -> onnx.ModelProto:
    """An NMS-free YOLO export's layout: x (N, 3, 16, 16) -> (N, 2, 6) rows [x0, y0, x1, y1, score, class]
    = END2END for every image (0 x mean(x) + END2END, so the batch dimension follows the input)."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean4"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Reshape", ["mean4", "shape"], ["mean"]),  # (N, 1, 1)
             helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
             helper.make_node("Add", ["zeros", "rows"], ["output0"])]
    graph = helper.make_graph(
        nodes, "e2e", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 2, 6])],
        [numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "zero"),
         numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
         numpy_helper.from_array(END2END.reshape(1, 2, 6), "rows")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
