"""Hostile ONNX files: each is refused with an InputError naming the file and the fix, before onnxruntime
creates a session (nothing is read from outside the model's folder), and the CLI exits 2 with one line."""
import os

import numpy as np
import onnxruntime
import pytest
import torch
from onnx import helper

from analysis.cli import main
from analysis.store.workspace import Workspace
from explainers.loading import onnx_files
from explainers.errors import InputError
from explainers.loading.models import load_model
from tests.black_box.onnx_graphs import WEIGHT, classifier_graph, save, with_external_weight


@pytest.fixture
def no_session(monkeypatch):
    """Any onnxruntime session creation fails the test: refusals must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime.InferenceSession was created for a hostile file")
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def _refused(path, match):
    with pytest.raises(InputError, match=match) as info:
        load_model(path)
    assert path.name in str(info.value)
    return str(info.value)


def test_the_valid_graph_loads_and_computes_known_logits(tmp_path):
    loaded = load_model(save(classifier_graph(), tmp_path))
    x = torch.rand(3, 3, 16, 16)
    expected = x.mean(dim=(2, 3)) @ torch.from_numpy(WEIGHT)
    torch.testing.assert_close(loaded.module(x), expected, rtol=1e-5, atol=1e-6)


def test_external_data_inside_the_folder_loads_and_registers_with_its_weights(tmp_path):
    folder = tmp_path / "model"
    path = save(with_external_weight(classifier_graph(), "weights/w.bin"), folder)
    (folder / "weights").mkdir()
    (folder / "weights" / "w.bin").write_bytes(WEIGHT.tobytes())
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(load_model(path).module(x), x.mean(dim=(2, 3)) @ torch.from_numpy(WEIGHT))
    ws = Workspace(tmp_path / "ws")
    model_id = ws.register_model(path)
    copied = load_model(ws.model(model_id)["abspath"])  # the weight file travelled with the model
    torch.testing.assert_close(copied.module(x), x.mean(dim=(2, 3)) @ torch.from_numpy(WEIGHT))
    (folder / "weights" / "w.bin").write_bytes((2 * WEIGHT).tobytes())
    assert ws.register_model(path) != model_id  # other weights, another model


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "weights/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, no_session, location):
    (tmp_path / "secret.bin").write_bytes(np.zeros(6, np.float32).tobytes())
    path = save(with_external_weight(classifier_graph(), location), tmp_path / "model")
    message = _refused(path, "outside the model's folder")
    assert "save_as_external_data" in message


def test_external_data_through_a_symlink_out_is_refused(tmp_path, no_session):
    (tmp_path / "secret.bin").write_bytes(WEIGHT.tobytes())
    path = save(with_external_weight(classifier_graph(), "w.bin"), tmp_path / "model")
    os.symlink(tmp_path / "secret.bin", tmp_path / "model" / "w.bin")
    _refused(path, "outside the model's folder")


def test_missing_or_short_external_data_is_refused(tmp_path, no_session):
    path = save(with_external_weight(classifier_graph(), "w.bin"), tmp_path / "model")
    _refused(path, "external data file 'w.bin' .* is missing")
    (tmp_path / "model" / "w.bin").write_bytes(b"\0" * 8)
    _refused(path, "shorter than tensor 'w' needs")


@pytest.mark.parametrize("data", [b"\x08\x07" + bytes(range(256)) * 4, b"\x08"])
def test_malformed_protobuf_is_refused(tmp_path, no_session, data):
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    (tmp_path / "model.json").write_text('{"task": "classification", "classes": ["a", "b"], "input_size": [16, 16]}')
    _refused(path, "not a valid ONNX model|malformed ONNX graph")


def test_truncated_model_is_refused(tmp_path, no_session):
    path = save(classifier_graph(), tmp_path)
    path.write_bytes(path.read_bytes()[:-40])
    _refused(path, "not a valid ONNX model|malformed ONNX graph")


def test_graph_using_an_undefined_tensor_is_refused(tmp_path, no_session):
    model = classifier_graph(nodes_extra=[helper.make_node("Relu", ["nowhere"], ["unused"])])
    _refused(save(model, tmp_path), "malformed ONNX graph")


def test_custom_operator_domain_is_refused(tmp_path, no_session):
    model = classifier_graph(nodes_extra=[helper.make_node("Payload", ["logits"], ["unused"], domain="com.evil")],
                             domain_ops=["com.evil"])
    _refused(save(model, tmp_path), "custom domain 'com.evil'")


def test_huge_graph_is_refused(tmp_path, no_session, monkeypatch):
    monkeypatch.setattr(onnx_files, "MAX_NODES", 5)
    chain = [helper.make_node("Identity", ["logits" if i == 0 else f"i{i - 1}"], [f"i{i}"]) for i in range(3)]
    _refused(save(classifier_graph(nodes_extra=chain), tmp_path), "6 graph nodes, over the limit of 5")


def test_onnx_suffix_on_other_bytes_is_refused(tmp_path, no_session):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"PK\x03\x04 not onnx")
    (tmp_path / "model.json").write_text('{"task": "classification", "classes": ["a", "b"], "input_size": [16, 16]}')
    _refused(path, "not an ONNX model")


def test_cli_refuses_a_hostile_onnx_in_one_line_and_registers_nothing(tmp_path, capsys, no_session):
    path = save(with_external_weight(classifier_graph(), "../secret.bin"), tmp_path / "model")
    (tmp_path / "secret.bin").write_bytes(WEIGHT.tobytes())
    data = tmp_path / "data"
    data.mkdir()
    code = main(["run", "--model", str(path), "--data", str(data), "--workspace", str(tmp_path / "ws"),
                 "--method", "rise", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "model.onnx" in err and "outside" in err
    assert Workspace(tmp_path / "ws").models() == []
