"""A damaged .safetensors file is refused in one line that names the tensor, the byte offset and the fix
(re-save with safetensors.torch.save_file), whether it arrives as a state dict, in a Hugging Face folder or
through registration."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from analysis.store.workspace import Workspace
from explainers.errors import InputError
from explainers.loading.models import ModelCard, load_model
from explainers.safetensors_check import FIX, damage
from sample_models.architectures import ARCHITECTURES

CARD = {"task": "classification", "classes": ["a", "b"], "input_size": [32, 32], "architecture": "tiny_cnn"}


def _header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path, header, data):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    net = ARCHITECTURES["tiny_cnn"](2)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def _second_tensor(header):
    spans = sorted((info["data_offsets"], name) for name, info in header.items() if name != "__metadata__")
    return spans[1][1], spans[1][0]


def test_a_shifted_offset_names_the_tensor_and_its_file_byte(weights):
    header, data = _header(weights)
    name, (begin, end) = _second_tensor(header)
    header[name]["data_offsets"] = [begin + 4, end + 4]  # "invalid offset for tensor" in the library's words
    _write(weights, header, data + b"\0" * 4)
    start = 8 + len(json.dumps(header).encode())
    with pytest.raises(InputError) as refused:
        load_model(weights, card=ModelCard.from_dict(CARD))
    message = str(refused.value)
    assert message.startswith("model.safetensors: damaged safetensors file: ")
    assert f"tensor `{name}` starts at data offset {begin + 4} (file byte {start + begin + 4})" in message
    assert "leaves a gap" in message and message.endswith(FIX) and "\n" not in message


def test_a_truncated_file_says_where_the_last_tensor_ends(weights):
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-10])
    header, _ = _header(weights)
    last = max((info["data_offsets"][1], name) for name, info in header.items() if name != "__metadata__")[1]
    assert damage(weights) == (f"the file is truncated: tensor `{last}` ends at file byte {len(raw):,} but the "
                               f"file has {len(raw) - 10:,} bytes")
    with pytest.raises(InputError, match="re-save it from the original weights with safetensors.torch.save_file"):
        load_model(weights, card=ModelCard.from_dict(CARD))


def test_a_size_that_does_not_fit_the_shape(weights):
    header, data = _header(weights)
    name, (begin, end) = _second_tensor(header)
    header[name]["shape"] = [*header[name]["shape"], 2]
    _write(weights, header, data)
    assert (f"tensor `{name}` ({header[name]['dtype']}, shape {header[name]['shape']}) needs {2 * (end - begin):,} "
            f"bytes but its data_offsets [{begin}, {end}] hold {end - begin:,}") in damage(weights)


def test_a_header_length_past_the_end_is_refused_when_registered(weights, tmp_path):
    raw = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", len(raw) * 2) + raw[8:])
    (tmp_path / "model.json").write_text(json.dumps(CARD))
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError) as refused:
        ws.register_model(weights)
    assert f"the header length at byte 0 says {len(raw) * 2:,} bytes, but only {len(raw) - 8:,}" in str(refused.value)
    assert FIX in str(refused.value) and ws.models() == []


def test_an_intact_file_has_no_damage(weights):
    assert damage(weights) is None
