"""Model cards, and every model format loaded back to a module that computes what the original did."""
from __future__ import annotations

import hashlib
import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from explainers.errors import InputError
from explainers.loading.models import CARD_KEYS, IMAGENET_MEAN, IMAGENET_STD, ModelCard, find_card, load_model
from explainers.registry import make_explainer

from .conftest import TinyCNN, export_pt2, write_card

CARD = {"task": "classification", "classes": ["a", "b", "c"], "input_size": [16, 16], "architecture": "tiny_cnn"}


def normalized(model, card, x):
    mean = torch.tensor(card.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(card.std).reshape(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()((x - mean) / std)


# ---- model card -------------------------------------------------------------------------------------

def test_card_defaults_and_round_trip():
    card = ModelCard.from_dict(CARD, source="model.json")
    assert card.classes == ("a", "b", "c") and card.input_size == (16, 16)
    assert card.mean == IMAGENET_MEAN and card.std == IMAGENET_STD and card.target_layer is None
    assert ModelCard.from_dict(card.to_dict()) == card
    assert json.loads(json.dumps(card.to_dict()))["input_size"] == [16, 16]


@pytest.mark.parametrize("change, message", [
    ({"classes": []}, "model.json: 'classes' must be a non-empty list of names"),
    ({"classes": "cat,dog"}, "'classes' must be a non-empty list of names"),
    ({"classes": ["cat", "cat"]}, "'cat' more than once"),
    ({"task": "regression"}, "'task' must be one of classification, multilabel, segmentation, detection"),
    ({"input_size": [224]}, "'input_size' must be [height, width]"),
    ({"mean": [0.5, 0.5]}, "'mean' must be a list of 3 numbers"),
    ({"std": [0.2, 0.0, 0.2]}, "'std' values must be positive"),
    ({"architecture": 18}, "'architecture' must be a non-empty string"),
])
def test_card_validation_names_file_and_field(change, message):
    with pytest.raises(InputError) as info:
        ModelCard.from_dict({**CARD, **change}, source="/some/dir/model.json")
    assert message in str(info.value)
    assert str(info.value).startswith("model.json: ")


def test_an_unknown_card_field_is_a_warning_naming_the_file_given():
    from explainers.loading.card import card_warnings

    data = {**CARD, "target-layer": "layer4", "version": "v2", "owner": "vision team"}
    card = ModelCard.from_dict(data, source="/some/dir/tagnet-card.json")  # no error: a card that works elsewhere
    assert card.version == "v2" and card.target_layer is None
    assert card_warnings(data, "/some/dir/tagnet-card.json") == [
        f"tagnet-card.json: unknown field 'target-layer' (did you mean 'target_layer'?) is ignored; known fields: "
        f"{', '.join(CARD_KEYS)}",
        f"tagnet-card.json: unknown field 'owner' is ignored; known fields: {', '.join(CARD_KEYS)}"]
    with pytest.raises(InputError, match="tagnet-card.json: 'version' must be a version"):
        ModelCard.from_dict({**CARD, "version": ["v2"]}, source="/some/dir/tagnet-card.json")


def test_card_missing_input_size_and_invalid_json(tmp_path):
    with pytest.raises(InputError, match="'input_size' is missing"):
        ModelCard.from_dict({"classes": ["a"]}, source="card.json")
    bad = tmp_path / "model.json"
    bad.write_text('{"classes": ["a",]}')
    with pytest.raises(InputError, match=r"model.json: not valid JSON \(line 1, column 18"):
        ModelCard.from_json(bad)


def test_find_card_prefers_stem_json_then_model_json(tmp_path):
    model = tmp_path / "v2.pt"
    model.write_bytes(b"")
    with pytest.raises(InputError) as info:
        find_card(model)
    assert "write v2.json or model.json" in str(info.value) and '"classes"' in str(info.value)
    write_card(tmp_path, "model.json")
    assert find_card(model) == tmp_path / "model.json"
    write_card(tmp_path, "v2.json")
    assert find_card(model) == tmp_path / "v2.json"


# ---- formats: round trips ---------------------------------------------------------------------------

def _save_state_dict(model, path, wrap=None):
    state = model.state_dict()
    if wrap == "checkpoint":
        state = {"state_dict": state, "epoch": 3, "lr": 0.1}
    elif wrap == "model":
        state = {"model": state}
    elif wrap == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, path)


@pytest.mark.parametrize("filename, wrap, fmt", [
    ("model.pt", None, "state_dict"),
    ("model.pth", "checkpoint", "state_dict"),
    ("model.pth", "model", "state_dict"),
    ("model.pt", "dataparallel", "state_dict"),
    ("model.safetensors", None, "safetensors"),
    ("model.pt2", None, "pt2"),
    ("model.ts", None, "torchscript"),
    ("scripted.pt", None, "torchscript"),
])
def test_tiny_cnn_round_trip(tmp_path, filename, wrap, fmt):
    original = TinyCNN(3).eval()
    path = tmp_path / filename
    if fmt == "state_dict":
        _save_state_dict(original, path, wrap)
    elif fmt == "safetensors":
        save_file(original.state_dict(), str(path))
    elif fmt == "pt2":
        export_pt2(original, path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(original, torch.rand(1, 3, 16, 16)), str(path))
    card = ModelCard.from_dict({**CARD, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]})

    loaded = load_model(path, card=card)

    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        got = loaded.module(x)
    expected = normalized(original, card, x)
    assert got.shape == (5, 3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert loaded.format == fmt and loaded.supports_hooks == (fmt != "torchscript")
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not loaded.module.training and not loaded.net.training
    assert loaded.module[1] is loaded.net
    # CNNs we own the weights of run channels-last (explainers.loading.models.channels_last): same outputs, same gradients
    kernels = [p for p in loaded.net.parameters() if p.dim() == 4]
    if fmt != "torchscript":
        assert len(kernels) == 2 and all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels), fmt
        assert not kernels[0].is_contiguous()
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loaded.module(xg)[:, 1].sum(), xg)
    xr = x.clone().requires_grad_(True)
    mean, std = torch.tensor(card.mean).reshape(1, 3, 1, 1), torch.tensor(card.std).reshape(1, 3, 1, 1)
    (reference,) = torch.autograd.grad(original((xr - mean) / std)[:, 1].sum(), xr)
    torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-6)


def test_card_found_beside_model(tmp_path):
    original = TinyCNN(3)
    torch.save(original.state_dict(), tmp_path / "model.pt")
    write_card(tmp_path, target_layer="block")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.card.target_layer == "block" and loaded.target_layer_name() == "block"
    assert loaded.layer("block") is loaded.net.block


@pytest.mark.parametrize("fmt", ["state_dict", "safetensors", "pt2"])
def test_resnet18_round_trip(tmp_path, resnet18_pt2, fmt):
    original, path = resnet18_pt2
    if fmt == "state_dict":
        path = tmp_path / "r18.pt"
        torch.save(original.state_dict(), path)
    elif fmt == "safetensors":
        path = tmp_path / "r18.safetensors"
        save_file(original.state_dict(), str(path))
    card = ModelCard.from_dict({"classes": list("wxyz"), "input_size": [64, 64], "architecture": "resnet18"})
    loaded = load_model(path, card=card)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        got = loaded.module(x)
    torch.testing.assert_close(got, normalized(original, card, x), rtol=1e-4, atol=1e-4)
    assert loaded.target_layer_name() == "layer4"


# ---- refusals ---------------------------------------------------------------------------------------

class _OpenPayload:
    """Unpickling this calls open(marker, 'w'): the file appears only if the loader executed the pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_OpenPayload, _SystemPayload])
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_payload_is_refused_without_running(tmp_path, payload, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2), "extra": payload(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    card = ModelCard.from_dict(CARD)

    with pytest.raises(InputError) as info:
        load_model(path, card=card)

    assert "only state dicts are accepted" in str(info.value)
    assert "torch.save(model.state_dict()" in str(info.value) and ".pt2" in str(info.value)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it (so the assertion above can fail).
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pickled_full_model_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(TinyCNN(3), path)
    with pytest.raises(InputError, match="only state dicts are accepted"):
        load_model(path, card=ModelCard.from_dict(CARD))


@pytest.mark.parametrize("filename", ["model.pt", "model.pth", "model.pt2", "model.ts", "model.safetensors",
                                      "model.onnx", "model.bin"])
def test_random_bytes_are_refused(tmp_path, filename):
    path = tmp_path / filename
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.uint8).numpy().tobytes())
    # random bytes named .safetensors read as a header length no file has: the damaged-safetensors refusal, with the fix
    expected = ("not an ONNX model" if filename.endswith(".onnx") else
                "damaged safetensors file: the header length .* re-save" if filename.endswith(".safetensors")
                else "not a model file")
    with pytest.raises(InputError, match=f"{filename}: {expected}"):
        load_model(path, card=ModelCard.from_dict(CARD))


def test_truncated_pt2_is_refused(tmp_path):
    path = export_pt2(TinyCNN(3), tmp_path / "model.pt2")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="model.pt2"):
        load_model(path, card=ModelCard.from_dict(CARD))


def test_state_dict_for_wrong_architecture_names_keys(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(TinyCNN(3).state_dict(), path)
    card = ModelCard.from_dict({**CARD, "architecture": "resnet18"})
    with pytest.raises(InputError) as info:
        load_model(path, card=card)
    message = str(info.value)
    assert "does not fit architecture 'resnet18'" in message
    assert "missing keys (conv1.weight, bn1.weight" in message
    assert "6 unexpected keys (stem.weight, stem.bias, block.0.weight, block.0.bias and 2 more)" in message


def test_state_dict_with_other_class_count_names_shapes(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(TinyCNN(10).state_dict(), path)
    with pytest.raises(InputError) as info:
        load_model(path, card=ModelCard.from_dict(CARD))
    assert "head.weight (10, 8) vs (3, 8)" in str(info.value)


def test_state_dict_without_architecture(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(TinyCNN(3).state_dict(), path)
    card = ModelCard.from_dict({k: v for k, v in CARD.items() if k != "architecture"})
    with pytest.raises(InputError, match="bare state dict: set \"architecture\""):
        load_model(path, card=card)


def test_non_tensor_state_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(InputError, match="expected a state dict"):
        load_model(path, card=ModelCard.from_dict(CARD))


def test_unknown_architecture_lists_names(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(TinyCNN(3).state_dict(), path)
    with pytest.raises(InputError) as info:
        load_model(path, card=ModelCard.from_dict({**CARD, "architecture": "resnet_18"}))
    assert "unknown architecture 'resnet_18'" in str(info.value) and "tiny_cnn" in str(info.value)


def test_classes_vs_output_mismatch(tmp_path):
    path = export_pt2(TinyCNN(10), tmp_path / "model.pt2")
    with pytest.raises(InputError, match="model.json lists 3 classes but the model outputs 10 logits"):
        load_model(path, card=ModelCard.from_dict(CARD))


def test_wrong_input_size_is_reported(tmp_path):
    path = export_pt2(TinyCNN(3), tmp_path / "model.pt2")
    with pytest.raises(InputError, match="fails on a 1x3x32x32 input.*'input_size'"):
        load_model(path, card=ModelCard.from_dict({**CARD, "input_size": [32, 32]}))


def test_static_batch_export_is_refused_with_fix(tmp_path):
    path = export_pt2(TinyCNN(3), tmp_path / "model.pt2", dynamic=False)
    with pytest.raises(InputError, match="fixed batch size of 2; re-export with a dynamic batch dimension"):
        load_model(path, card=ModelCard.from_dict(CARD))


def test_batch_one_export_runs_image_by_image_with_a_note(tmp_path, caplog):
    """mlflow.pytorch.log_model's default input example is one image: its .pt2 has a fixed batch of 1."""
    torch.manual_seed(0)
    original = TinyCNN(3).eval()
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(original, (torch.rand(1, 3, 16, 16),)), str(path))
    card = ModelCard.from_dict(CARD)
    with caplog.at_level("WARNING", logger="explainers.loading.models"):
        loaded = load_model(path, card=card)
    assert "image by image" in caplog.text and "serialization_format='pt2'" in caplog.text
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), normalized(original, card, x), atol=1e-5, rtol=1e-5)
    saliency = make_explainer("saliency", loaded.module).explain(x, [0, 1, 2, 0, 1]).maps
    inputs = x.clone().requires_grad_(True)
    mean, std = torch.tensor(card.mean).reshape(1, 3, 1, 1), torch.tensor(card.std).reshape(1, 3, 1, 1)
    original((inputs - mean) / std)[torch.arange(5), torch.tensor([0, 1, 2, 0, 1])].sum().backward()
    torch.testing.assert_close(saliency, inputs.grad.abs().amax(1), atol=1e-5, rtol=1e-4)
    assert not loaded.supports_hooks
    with pytest.raises(InputError, match=r"batch-1 \.pt2.*input_example=x\) with x a batch of 2"):
        loaded.layer("block")


def test_unknown_target_layer_suggests_close_name(tmp_path):
    path = export_pt2(TinyCNN(3), tmp_path / "model.pt2")
    with pytest.raises(InputError) as info:
        load_model(path, card=ModelCard.from_dict({**CARD, "target_layer": "blocks"}))
    assert "no layer 'blocks'; did you mean 'block'" in str(info.value)
    assert "python -m explainers.list_layers" in str(info.value)
    loaded = load_model(path, card=ModelCard.from_dict(CARD))
    with pytest.raises(InputError, match="did you mean .*'block.0'"):
        loaded.layer("block.O")


def test_torchscript_has_no_layers(tmp_path):
    path = tmp_path / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(TinyCNN(3).eval(), torch.rand(1, 3, 16, 16)), str(path))
    loaded = load_model(path, card=ModelCard.from_dict(CARD))
    with pytest.raises(InputError, match="TorchScript models have no hookable layers"):
        loaded.layer("block")
    with pytest.raises(InputError, match="export"):
        loaded.target_layer_name()


def test_nan_output_is_not_fatal(tmp_path):
    model = TinyCNN(3)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", card=ModelCard.from_dict(CARD))
    assert torch.isnan(loaded.module(torch.rand(1, 3, 16, 16))).all()


def _replace_member(path, suffix, data):
    import zipfile

    with zipfile.ZipFile(path) as src:
        items = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for info, content in items:
            dst.writestr(info, data if info.filename.endswith(suffix) else content)


def test_pt2_with_pickled_sample_inputs_is_refused_without_running(tmp_path):
    import io

    marker = tmp_path / "pwned"
    path = export_pt2(TinyCNN(3), tmp_path / "model.pt2")
    blob = io.BytesIO()
    torch.save((_OpenPayload(marker),), blob)
    _replace_member(path, "data/sample_inputs/model.pt", blob.getvalue())

    with pytest.raises(InputError, match="sample_inputs/model.pt holds pickled objects"):
        load_model(path, card=ModelCard.from_dict(CARD))
    assert not marker.exists()
    # The threat is real: plain torch.export.load falls back to an unrestricted unpickler and runs it.
    try:
        torch.export.load(str(path))
    except Exception:
        pass
    assert marker.exists()


def test_pt2_with_pickled_weights_is_refused(tmp_path):
    path = export_pt2(TinyCNN(3), tmp_path / "model.pt2")
    import zipfile

    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(archive.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    _replace_member(path, "model_weights_config.json", json.dumps(config).encode())
    with pytest.raises(InputError, match="model_weights_config.json holds pickled objects"):
        load_model(path, card=ModelCard.from_dict(CARD))
