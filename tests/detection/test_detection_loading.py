"""Detection models load from a state dict + card: the sample grid detector and a torchvision detector,
wrapped in the D-RISE format; a card whose classes do not fit the head is a clear InputError."""
import json

import pytest
import torch
import torchvision

from analysis.runs.tasks import check_method
from explainers.detection import TorchvisionDetector
from explainers.errors import InputError
from explainers.loading.models import ModelCard, load_model
from sample_models.detection import WEIGHTS_DIR, GridDetector, load_detector


def test_tiny_grid_detector_loads_from_safetensors_and_matches_the_sample_loader():
    loaded = load_model(WEIGHTS_DIR / "biased" / "model.safetensors")
    assert isinstance(loaded.net, GridDetector) and loaded.format == "safetensors"
    assert loaded.card.name == "boats_and_cars biased" and loaded.card.task == "detection"
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ours, reference = loaded.module(images), load_detector("biased")(images)
    for a, b in zip(ours, reference):  # mean 0, std 1: the Normalize in front is the identity
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["probs"], b["probs"])
        assert a["probs"].shape[1] == 2


def _ssdlite(tmp_path, num_classes: int):
    torch.manual_seed(0)
    net = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None,
                                       num_classes=num_classes).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    return net


def test_torchvision_detector_loads_from_a_state_dict(tmp_path):
    net = _ssdlite(tmp_path, num_classes=3)  # background + 2 classes
    card = {"task": "detection", "classes": ["cat", "dog"], "input_size": [96, 96],
            "architecture": "ssdlite320_mobilenet_v3_large"}
    (tmp_path / "model.json").write_text(json.dumps(card))
    loaded = load_model(tmp_path / "model.pt")
    assert isinstance(loaded.net, TorchvisionDetector) and loaded.net.num_classes == 3
    assert "normalize" not in dict(loaded.module.named_children())  # torchvision normalises inside
    images = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ours, theirs = loaded.module(images)[0], net(list(images))[0]
    assert torch.equal(ours["boxes"], theirs["boxes"]) and torch.equal(ours["scores"], theirs["scores"])
    assert ours["probs"].shape == (len(theirs["scores"]), 3)
    assert torch.equal(ours["probs"].argmax(1), theirs["labels"])


def test_classes_that_do_not_fit_the_head_are_an_input_error(tmp_path):
    _ssdlite(tmp_path, num_classes=3)
    card = ModelCard.from_dict({"task": "detection", "classes": ["cat", "dog", "bird"], "input_size": [96, 96],
                                "architecture": "ssdlite320_mobilenet_v3_large"})
    with pytest.raises(InputError, match=r"model.pt: the detector's head does not fit the 3 classes plus background"):
        load_model(tmp_path / "model.pt", card)


def test_unknown_detection_architecture_and_pickled_models_are_refused(tmp_path):
    card = ModelCard.from_dict({"task": "detection", "classes": ["a"], "input_size": [64, 64],
                                "architecture": "yolo_v99"})
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(InputError, match="unknown detection architecture 'yolo_v99'.*tiny_grid_detector"):
        load_model(tmp_path / "model.pt", card)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a whole pickled module: never unpickled
    with pytest.raises(InputError, match="only state dicts are accepted"):
        load_model(tmp_path / "pickled.pt", card)


def test_methods_are_checked_against_the_task():
    check_method("drise", "detection")
    with pytest.raises(InputError, match="'gradcam': explains classifiers, not detectors; choose one of: drise"):
        check_method("gradcam", "detection")
    with pytest.raises(InputError, match="'drise': explains detectors, not classifiers"):
        check_method("drise", "classification")


@pytest.mark.slow  # builds five detectors (ResNet-50, MobileNetV3, VGG-16 backbones) (random weights) and runs each a few times
@pytest.mark.parametrize("architecture", ["fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
                                          "retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssd300_vgg16"])
def test_every_torchvision_detector_loads_and_goes_through_drise(tmp_path, architecture):
    """Each listed architecture: state dict + card -> the same detections as torchvision's own forward, in the
    D-RISE format, and a D-RISE map for one of them. Random weights detect little, so the score thresholds
    are lowered on both sides, and the inputs kept small (128 px) where the model resizes."""
    from explainers.drise import DRISE
    from explainers.detection import detections_above

    def small(net):
        transform = net.transform
        if hasattr(transform, "min_size") and architecture != "ssd300_vgg16":
            transform.min_size, transform.max_size = (128,), 128
        heads = getattr(net, "roi_heads", net)
        heads.score_thresh = 0.0
        return net

    torch.manual_seed(0)
    net = torchvision.models.get_model(architecture, weights=None, weights_backbone=None, num_classes=3).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps({"task": "detection", "classes": ["cat", "dog"],
                                                     "input_size": [96, 96], "architecture": architecture}))
    loaded = load_model(tmp_path / "model.pt")
    small(loaded.net.model), small(net)
    images = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ours, theirs = loaded.module(images)[0], net(list(images))[0]
    assert len(theirs["scores"]) > 0
    assert torch.equal(ours["boxes"], theirs["boxes"]) and torch.equal(ours["scores"], theirs["scores"])
    assert ours["probs"].shape == (len(theirs["scores"]), 3)
    assert torch.equal(ours["probs"].argmax(1), theirs["labels"])
    target = detections_above(ours, float(ours["scores"].max()))
    (maps,) = DRISE(loaded.module, n_masks=8, cells=4, chunk=8, batch_size=8).explain_detections(images, [target])
    assert maps.shape == (len(target), 96, 96) and bool(torch.isfinite(maps).all())
