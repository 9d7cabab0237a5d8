"""Spatial layers, default CAM layer choice, and hooks + gradients on loaded `.pt2` modules."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from explainers.errors import InputError
from explainers.hooks import capture_layer, frozen
from explainers.layers import detect_target_layer, spatial_layers
from explainers.loading.models import ModelCard, load_model

from .conftest import TinyCNN, export_pt2


def test_tiny_cnn_spatial_layers_in_order_with_shapes():
    net = TinyCNN(3).eval()
    assert spatial_layers(net, (16, 16)) == [
        ("stem", (1, 4, 16, 16)),
        ("act", (1, 4, 16, 16)),
        ("block", (1, 8, 8, 8)),
        ("block.0", (1, 8, 8, 8)),
        ("block.1", (1, 8, 8, 8)),
    ]  # pool (1x1) and head (2-D) are not spatial
    assert detect_target_layer(net, (16, 16)) == "block"  # the container, not its last ReLU


def test_layers_with_1x1_output_are_not_spatial():
    net = TinyCNN(3).eval()
    assert [name for name, _ in spatial_layers(net, (2, 2))] == ["stem", "act"]
    assert detect_target_layer(net, (2, 2)) == "act"


@pytest.mark.parametrize("name, expected", [
    ("resnet18", "layer4"),
    ("vgg11", "features"),  # not `avgpool`: adaptive pooling only resamples `features`
    ("mobilenet_v3_small", "features"),
])
def test_torchvision_default_layers(name, expected):
    net = torchvision.models.get_model(name, weights=None, num_classes=5).eval()
    assert detect_target_layer(net, (64, 64)) == expected


@pytest.mark.slow
def test_densenet_layer_modified_in_place_is_still_a_graph_root():
    net = torchvision.models.densenet121(weights=None, num_classes=5).eval()
    # `features` feeds relu(inplace=True); the hook hands the network a clone, so the leaf survives
    with capture_layer(net.features) as captured:
        score = net(torch.rand(1, 3, 64, 64))[0, 1]
    (grad,) = torch.autograd.grad(score, captured.activation)
    assert grad.shape == captured.activation.shape and grad.abs().sum() > 0
    assert detect_target_layer(net, (64, 64)) == "features"


def test_pt2_resnet18_default_layer(resnet18_pt2):
    original, path = resnet18_pt2
    loaded = load_model(path, card=ModelCard.from_dict({"classes": list("wxyz"), "input_size": [64, 64]}))
    assert loaded.target_layer_name() == "layer4"
    # unflattening keeps every spatial module of the original, under the same name, with the same shape
    assert spatial_layers(loaded.net, (64, 64)) == spatial_layers(original, (64, 64))


class TinyVGG(nn.Module):
    """vgg's shape: features, then an adaptive pool that resamples them to a fixed 4x4, then a head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Linear(4 * 16, 3)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def test_adaptive_pool_is_skipped_in_pt2_too(tmp_path):
    net = TinyVGG().eval()
    assert detect_target_layer(net, (16, 16)) == "features"
    card = ModelCard.from_dict({"classes": list("abc"), "input_size": [16, 16]})
    loaded = load_model(export_pt2(net, tmp_path / "vgg.pt2"), card=card)
    assert [n for n, _ in spatial_layers(loaded.net, (16, 16))][-2:] == ["features.2", "avgpool"]
    assert loaded.target_layer_name() == "features"


def test_no_spatial_layer_is_a_clear_error():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(InputError, match="no layer of the model has a spatial"):
        detect_target_layer(mlp, (8, 8))


def _gradcam(module, layer, x, class_idx):
    """Grad-CAM the way CAM methods do it: the layer's output is the graph root of one backward."""
    with frozen(module), capture_layer(layer) as captured:
        scores = module(x)[torch.arange(x.shape[0]), class_idx]
        (grads,) = torch.autograd.grad(scores.sum(), captured.activation)
    activation = captured.activation.detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activation).sum(1)), activation, grads


def test_pt2_hooks_fire_and_gradcam_matches_original(resnet18_pt2):
    original, path = resnet18_pt2
    loaded = load_model(path, card=ModelCard.from_dict({"classes": list("wxyz"), "input_size": [64, 64]}))
    layer = loaded.layer(loaded.target_layer_name())

    calls = []
    handle = layer.register_forward_hook(lambda _m, _i, out: calls.append(tuple(out.shape)))
    try:
        x = torch.rand(3, 3, 64, 64)
        loaded.module(x)
    finally:
        handle.remove()
    assert calls == [(3, 512, 2, 2)]

    reference = nn.Sequential(loaded.module[0], original)
    class_idx = torch.tensor([0, 2, 3])
    cam, activation, grads = _gradcam(loaded.module, layer, x, class_idx)
    ref_cam, ref_activation, ref_grads = _gradcam(reference, original.layer4, x, class_idx)
    assert grads.abs().sum() > 0 and cam.shape == (3, 2, 2)
    torch.testing.assert_close(activation, ref_activation, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(cam, ref_cam, rtol=1e-4, atol=1e-5)
    # gradients really stop at the layer: no parameter received one
    assert all(p.grad is None for p in loaded.module.parameters())


def test_pt2_gradcam_agrees_with_pytorch_grad_cam(tmp_path):
    """pytorch-grad-cam on the original network vs an inline Grad-CAM on the loaded `.pt2` layer."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    original = TinyCNN(3).eval()
    card = ModelCard.from_dict({"classes": list("abc"), "input_size": [16, 16], "mean": [0, 0, 0], "std": [1, 1, 1]})
    loaded = load_model(export_pt2(original, tmp_path / "tiny.pt2"), card=card)
    x = torch.rand(2, 3, 16, 16)
    cam, _, _ = _gradcam(loaded.module, loaded.layer("block"), x, torch.tensor([1, 2]))

    with GradCAM(model=original, target_layers=[original.block]) as reference:
        expected = reference(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    upsampled = nn.functional.interpolate(cam[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    lo = upsampled.amin(dim=(1, 2), keepdim=True)
    hi = upsampled.amax(dim=(1, 2), keepdim=True)
    ours = ((upsampled - lo) / (hi - lo + 1e-7)).numpy()  # pytorch-grad-cam min-max scales each map
    assert abs(ours - expected).max() < 0.02
