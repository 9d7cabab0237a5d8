"""The upload page accepts an ONNX model, says that ONNX runs no Python, and registers it after the check in
a subprocess (the dashboard process never opens the file)."""
from analysis.store.workspace import Workspace
from tests.black_box.onnx_graphs import classifier_graph
from tests.dashboard.apptest import app_opener


def test_upload_page_registers_an_onnx_classifier(tmp_path, monkeypatch):
    root = tmp_path / "workspace"
    Workspace(root)
    at = app_opener(root, monkeypatch)("app_pages/upload.py")
    onnx_bytes = classifier_graph().SerializeToString()
    at.file_uploader(key="upload_model").set_value(("classifier.onnx", onnx_bytes, "application/octet-stream"))
    at.text_area(key="card_classes").set_value("a\nb")
    at.number_input(key="card_h").set_value(16)
    at.number_input(key="card_w").set_value(16).run()
    assert any("ONNX runs no Python" in i.value for i in at.info)
    at.button(key="register_model").click().run(timeout=120)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Registered model" in s.value and "onnx" in s.value for s in at.success)
    (model,) = Workspace(root).models()
    assert model["format"] == "onnx" and model["card"]["classes"] == ["a", "b"]
