"""The model sources users bring: timm by name, Hugging Face folders (and their zips), torchvision families."""
import json
import sys

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from analysis.store.workspace import Workspace
from explainers.errors import InputError
from explainers.loading.models import CARD_KEYS, ModelCard, load_model
from tests.explainers_models.sources import CLASSES, write_hf_vit, write_timm, zip_folder


def normalised(x, mean, std):
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", ["convnext_atto", "vit_tiny_patch16_224"])
def test_timm_by_name_loads_the_state_dict_and_matches(tmp_path, name):
    net, path = write_timm(tmp_path, name, size=32)
    loaded = load_model(path)
    assert loaded.format == "safetensors" and loaded.card.architecture == f"timm:{name}"
    x = torch.rand(2, 3, 32, 32)
    mean, std = loaded.card.mean, loaded.card.std
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), net(normalised(x, mean, std)))
    # A .pt state dict of the same network loads the same way.
    torch.save(net.state_dict(), tmp_path / f"{name}.pt")
    again = load_model(tmp_path / f"{name}.pt", card=loaded.card)
    with torch.no_grad():
        torch.testing.assert_close(again.module(x), loaded.module(x))


def test_timm_unknown_name_and_missing_package(tmp_path, monkeypatch):
    net, path = write_timm(tmp_path, "convnext_atto", size=32)
    card = ModelCard.from_json(path.with_suffix(".json"))
    with pytest.raises(InputError, match=r"timm has no model 'convnext_ato' \(did you mean convnext_atto"):
        load_model(path, card=ModelCard.from_dict({**card.to_dict(), "architecture": "timm:convnext_ato"}))
    monkeypatch.setitem(sys.modules, "timm", None)  # as if the extra were not installed
    with pytest.raises(InputError, match=r"pip install 'saliency-audit\[timm\]'"):
        load_model(path, card=card)


def test_hugging_face_folder_card_comes_from_its_config(tmp_path):
    model, folder = write_hf_vit(tmp_path / "vit_hf", size=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    loaded = load_model(folder)
    assert loaded.format == "hf_folder" and loaded.card.classes == tuple(CLASSES)
    assert loaded.card.input_size == (32, 32)
    torch.testing.assert_close(torch.tensor(loaded.card.mean), torch.tensor([0.4, 0.5, 0.6]))
    torch.testing.assert_close(torch.tensor(loaded.card.std), torch.tensor([0.2, 0.25, 0.3]))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():  # .logits unwrapped; the card's normalisation in front
        expected = model(pixel_values=normalised(x, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))).logits
        torch.testing.assert_close(loaded.module(x), expected)
    assert "model.vit.layers.1.layernorm_before" in dict(loaded.net.named_modules())
    assert len(loaded.sha256) == 64


def test_model_json_in_the_folder_overrides(tmp_path):
    _, folder = write_hf_vit(tmp_path / "vit_hf")
    (folder / "model.json").write_text(json.dumps({"classes": ["kitten", "puppy", "chick"], "name": "pets"}))
    loaded = load_model(folder)
    assert loaded.card.classes == ("kitten", "puppy", "chick") and loaded.card.name == "pets"
    assert loaded.card.input_size == (32, 32)
    (folder / "model.json").write_text(json.dumps({"clases": ["x"]}))  # a typo: warned about, not an error
    assert load_model(folder).card.classes == tuple(CLASSES)  # config.json's id2label stands
    heard = []
    Workspace(tmp_path / "ws").register_model(folder, on_warning=heard.append)
    assert heard == [f"model.json: unknown field 'clases' (did you mean 'classes'?) is ignored; known fields: "
                     f"{', '.join(CARD_KEYS)}"]


def test_pickled_hugging_face_weights_are_refused_with_the_fix(tmp_path):
    model, folder = write_hf_vit(tmp_path / "vit_hf")
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"only pytorch_model.bin \(a pickle, refused.*safe_serialization=True"):
        load_model(folder)


def test_a_folder_and_its_zip_register_as_one_model(tmp_path):
    _, folder = write_hf_vit(tmp_path / "vit_hf")
    workspace = Workspace(tmp_path / "ws")
    model_id = workspace.register_model(folder)
    row = workspace.model(model_id)
    assert row["format"] == "hf_folder" and row["card"]["classes"] == CLASSES and row["name"] == "vit_hf"
    assert workspace.register_model(zip_folder(folder, tmp_path / "vit_hf.zip")) == model_id
    assert workspace.register_model(zip_folder(folder, tmp_path / "flat.zip", top=False)) == model_id
    assert not list((tmp_path / "ws" / "models").glob(".unpack-*")), "unpacked zips are cleaned up"
    loaded = load_model(row["abspath"])  # the registered copy loads on its own
    assert loaded.card.classes == tuple(CLASSES)
    # A card given at registration overrides the config, and makes another model.
    card = tmp_path / "override.json"
    card.write_text(json.dumps({"classes": ["x", "y", "z"]}))
    other = workspace.register_model(tmp_path / "vit_hf.zip", card)
    assert other != model_id and workspace.model(other)["card"]["classes"] == ["x", "y", "z"]
    assert load_model(workspace.model(other)["abspath"]).card.classes == ("x", "y", "z")


def test_inspect_model_reads_a_zipped_folder(tmp_path):
    from analysis.inspect_model import inspect

    _, folder = write_hf_vit(tmp_path / "vit_hf")
    result = inspect(str(zip_folder(folder, tmp_path / "vit_hf.zip")))
    assert result["format"] == "hf_folder" and result["classes"] == CLASSES


@pytest.mark.parametrize("name,size", [("vit_b_16", 32), ("swin_t", 64), ("convnext_tiny", 32),
                                       ("efficientnet_b0", 32), ("mobilenet_v3_small", 32)])
def test_torchvision_families_load_from_state_dicts(tmp_path, name, size):
    torch.manual_seed(0)
    extra = {"image_size": size} if name.startswith("vit_") else {}
    net = torchvision.models.get_model(name, weights=None, num_classes=3, **extra).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    card = ModelCard.from_dict({"task": "classification", "classes": CLASSES, "input_size": [size, size],
                                "architecture": name})
    loaded = load_model(path, card=card)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), net(normalised(x, card.mean, card.std)))


@pytest.mark.parametrize("names,folder", [(["vit/config.json", "vit/model.safetensors"], "vit"),
                                          (["config.json", "model.safetensors"], ""),
                                          (["model/data/weights_config.json", "model/sample_config.json"], None),
                                          (["a/b/config.json"], None)])
def test_which_zips_hold_a_hugging_face_folder(tmp_path, names, folder):
    import zipfile

    from explainers.loading.model_files import hf_folder_in_zip

    with zipfile.ZipFile(tmp_path / "m.zip", "w") as archive:
        for name in names:
            archive.writestr(name, "{}")
    assert hf_folder_in_zip(tmp_path / "m.zip") == folder
