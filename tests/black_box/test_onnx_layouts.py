"""The ONNX detector layouts other than the native contract, on hand-built graphs with known outputs: a
torchvision detector export (one unbatched image per call, labels 1..C, normalising inside) and a
classifier export with a fixed batch larger than one (chunked and padded)."""
import pytest
import torch

from explainers.errors import InputError
from explainers.loading.models import load_model
from explainers.loading.onnx_model import OnnxDetector
from tests.black_box.onnx_graphs import (CARD, WEIGHT, classifier_graph, end2end_layout_graph, save,
                                         torchvision_layout_graph)

DETECTOR_CARD = {"task": "detection", "classes": ["cat", "dog"], "input_size": [16, 16]}


def test_torchvision_layout_runs_image_by_image_with_one_hot_probs(tmp_path):
    loaded = load_model(save(torchvision_layout_graph(), tmp_path, DETECTOR_CARD))
    assert isinstance(loaded.net, OnnxDetector) and loaded.net.layout == "torchvision"
    assert "normalize" not in dict(loaded.module.named_children())  # the export normalises inside
    images = torch.rand(3, 3, 16, 16)
    out = loaded.module(images)
    assert len(out) == 3
    for image, det in zip(images, out):
        torch.testing.assert_close(det["boxes"], torch.tensor([[2.0, 3.0, 10.0, 12.0]]))
        assert det["labels"].tolist() == [1]  # label 2 is the card's second class (0 is background)
        torch.testing.assert_close(det["scores"], image.mean().reshape(1))
        torch.testing.assert_close(det["probs"], torch.stack([torch.zeros(()), image.mean()]).reshape(1, 2))


def test_torchvision_layout_with_a_label_beyond_the_card_is_refused(tmp_path):
    card = {**DETECTOR_CARD, "classes": ["cat"]}
    with pytest.raises(InputError, match=r"model\.onnx: the detector predicts label 2 .* lists 1 classes"):
        load_model(save(torchvision_layout_graph(), tmp_path, card))


def test_classifier_graph_as_a_detector_names_the_contract(tmp_path):
    with pytest.raises(InputError, match=r"model\.onnx: outputs logits \['N', 2\]: a detection ONNX model must"):
        load_model(save(classifier_graph(), tmp_path, DETECTOR_CARD))


def test_fixed_batch_of_three_is_chunked_and_padded(tmp_path):
    model = classifier_graph()
    for value_info in (model.graph.input[0], model.graph.output[0]):
        dim = value_info.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 3
    loaded = load_model(save(model, tmp_path, CARD))
    assert loaded.net.session.batch == 3
    x = torch.rand(7, 3, 16, 16)  # 3 + 3 + 1 (padded to 3)
    torch.testing.assert_close(loaded.module(x), x.mean(dim=(2, 3)) @ torch.from_numpy(WEIGHT))


def test_card_size_that_the_graph_does_not_take_is_refused(tmp_path):
    model = classifier_graph()
    with pytest.raises(InputError, match=r"takes 16x16 images but the model card says input_size \[32, 32\]"):
        load_model(save(model, tmp_path, {**CARD, "input_size": [32, 32]}))


def test_nms_free_yolo_layout_keeps_confident_rows_with_one_hot_probs(tmp_path):
    loaded = load_model(save(end2end_layout_graph(), tmp_path, DETECTOR_CARD))
    assert loaded.net.layout == "yolo_end2end"
    assert "normalize" not in dict(loaded.module.named_children())  # YOLO exports take [0, 1] images
    out = loaded.module(torch.rand(2, 3, 16, 16))
    for det in out:  # the 0.001 row is below the 0.01 proposal threshold
        torch.testing.assert_close(det["boxes"], torch.tensor([[2.0, 3.0, 10.0, 12.0]]))
        assert det["labels"].tolist() == [1]
        torch.testing.assert_close(det["probs"], torch.tensor([[0.0, 0.9]]))
