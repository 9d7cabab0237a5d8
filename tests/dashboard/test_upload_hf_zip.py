"""The upload page takes a zipped Hugging Face folder: no card to fill, the classes come from its config, the
CAM layer is the detected token layer."""
import pytest

from analysis.store.workspace import Workspace
from tests.dashboard.apptest import app_opener
from tests.explainers_models.sources import CLASSES, write_hf_vit, zip_folder


@pytest.mark.slow  # two subprocesses that import torch and transformers
def test_upload_registers_a_zipped_hugging_face_folder(tmp_path, monkeypatch):
    _, folder = write_hf_vit(tmp_path / "vit_hf")
    archive = zip_folder(folder, tmp_path / "vit_hf.zip")
    root = tmp_path / "workspace"
    Workspace(root).close()
    at = app_opener(root, monkeypatch, timeout=180)("app_pages/upload.py")
    at.file_uploader(key="upload_model").set_value((archive.name, archive.read_bytes(), "application/zip")).run()
    at.button(key="list_layers").click().run(timeout=180)
    assert not at.exception and not at.error, [e.value for e in at.error]
    # The detected layer is preselected: the token layer of pytorch-grad-cam's Hugging Face recipe (the last
    # layer's first norm), never the patch embedding, which is listed too but carries no decision.
    layer = "model.vit.layers.1.layernorm_before"
    assert "model.vit.embeddings.patch_embeddings.projection" in at.selectbox(key="card_layer").options
    assert at.selectbox(key="card_layer").value == layer
    at.button(key="register_model").click().run(timeout=180)
    assert any("Registered model" in s.value for s in at.success), [e.value for e in at.error]
    (model,) = Workspace(root).models()
    assert model["format"] == "hf_folder" and model["card"]["classes"] == CLASSES
    assert model["card"]["input_size"] == [32, 32] and model["card"]["target_layer"] == layer
