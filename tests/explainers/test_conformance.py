"""Every registered method honours the Explainer contract, and leaves the user's model as it found it."""
import json

import pytest
import torch
from torch import nn

from explainers.registry import METHODS, make_explainer
from tests.explainers.saliency_nets import (ALL_METHODS, FAST_PARAMS, TRANSFORMER_METHODS, SmallCNN, hooks_on, make,
                                            tiny_vits)


def test_the_registered_names_are_the_contract():
    expected = {"gradcam", "gradcam_pp", "layercam", "scorecam", "saliency", "integrated_gradients",
                "smoothgrad", "guided_backprop", "occlusion", "rise", "lrp", "gradient_shap", "attention_rollout",
                "transformer_attribution"}
    assert expected <= set(METHODS)
    assert set(TRANSFORMER_METHODS) == {"attention_rollout", "transformer_attribution"}
    assert {name for name, cls in METHODS.items() if cls.needs_layer} == {"gradcam", "gradcam_pp", "layercam",
                                                                         "scorecam"}


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.mark.parametrize("name", ALL_METHODS)
def test_contract(name, cnn):
    torch.manual_seed(1)
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 4])
    explainer = make(name, cnn, layer=cnn.features[3])
    result = explainer.explain(x, t)
    assert result.method == name
    assert result.maps.shape == (3, 32, 32) and result.maps.dtype == torch.float32
    assert torch.isfinite(result.maps).all()
    assert result.maps.abs().amax(dim=(1, 2)).min() > 0, "every image gets a non-zero map"
    assert result.scores.shape == (3,) and result.scores.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(result.scores, cnn(x).gather(1, t[:, None])[:, 0])
    # Deterministic, and each image's map does not depend on the rest of the batch.
    again = make(name, cnn, layer=cnn.features[3]).explain(x, t)
    torch.testing.assert_close(again.maps, result.maps, rtol=0, atol=0)
    alone = explainer.explain(x[1:2], t[1:2])
    assert alone.maps.shape == (1, 32, 32)
    torch.testing.assert_close(alone.maps[0], result.maps[1], rtol=1e-4, atol=1e-5 * result.maps.abs().max())
    assert hooks_on(cnn) == []
    assert all(p.requires_grad and p.grad is None for p in cnn.parameters())


@pytest.mark.parametrize("name", ALL_METHODS)
def test_works_inside_the_callers_no_grad(name, cnn):
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    expected = make(name, cnn, layer=cnn.features[3]).explain(x, t).maps
    with torch.no_grad():
        maps = make(name, cnn, layer=cnn.features[3]).explain(x, t).maps
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL_METHODS)
def test_runs_on_cuda(name, cnn):
    model = SmallCNN().eval()
    model.load_state_dict(cnn.state_dict())
    model.cuda()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    result = make(name, model, layer=model.features[3]).explain(x.cuda(), t.cuda())
    assert result.maps.device.type == "cuda" and torch.isfinite(result.maps).all()
    if name not in ("rise", "smoothgrad"):  # random draws differ between devices
        cpu = make(name, cnn, layer=cnn.features[3]).explain(x, t).maps
        torch.testing.assert_close(result.maps.cpu(), cpu, rtol=1e-3, atol=1e-5 * cpu.abs().max())


@pytest.mark.parametrize("name", ALL_METHODS)
def test_config_is_jsonable_and_names_the_method(name, cnn):
    import json

    config = make(name, cnn, layer=cnn.features[3]).config()
    assert config["method"] == name
    assert json.loads(json.dumps(config)) == config
    for key, value in FAST_PARAMS.get(name, {}).items():  # explicit params are all recorded
        assert config[key] == value
    assert "layer" not in config


class Exploding(nn.Module):
    """Raises inside the forward, after the CAM layer has run (hooks are already registered and fired)."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN()
        self.explode = True

    def forward(self, x):
        x = self.net.features(x)
        if self.explode:
            raise RuntimeError("boom inside forward")
        return self.net.head(x)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_no_hooks_and_flags_restored_after_an_exception(name):
    model = Exploding().eval()
    model.net.head[2].bias.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    explainer = make(name, model, layer=model.net.features[3])
    with pytest.raises(RuntimeError, match="boom inside forward"):
        explainer.explain(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert hooks_on(model) == []
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    # The same explainer works once the model behaves, and still leaves nothing behind.
    model.explode = False
    explainer.explain(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert hooks_on(model) == []
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_make_explainer_passes_parameters(cnn):
    rise = make_explainer("rise", cnn, n_masks=10, cells=4, p=0.3, seed=2, chunk=5)
    assert rise.config() == {"method": "rise", "n_masks": 10, "cells": 4, "p": 0.3, "seed": 2, "chunk": 5,
                             "min_masks": 250, "tolerance": 0.3, "control_variate": True}


@pytest.fixture(scope="module")
def vits():
    return tiny_vits()


@pytest.mark.parametrize("kind", ["timm", "torchvision"])
@pytest.mark.parametrize("name", TRANSFORMER_METHODS)
def test_transformer_method_contract(name, kind, vits):
    """The same contract on a ViT: shapes, scores, determinism, batch independence, no_grad, nothing left behind."""
    vit = vits[kind]
    flags = {n: p.requires_grad for n, p in vit.named_parameters()}
    torch.manual_seed(1)
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 4])
    explainer = make_explainer(name, vit)
    result = explainer.explain(x, t)
    assert result.method == name and result.maps.shape == (3, 32, 32) and result.maps.dtype == torch.float32
    assert torch.isfinite(result.maps).all() and result.maps.abs().amax(dim=(1, 2)).min() > 0
    assert result.artifact_tokens.shape == (3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(result.scores, vit(x).gather(1, t[:, None])[:, 0])
        inside_no_grad = make_explainer(name, vit).explain(x, t).maps
    torch.testing.assert_close(inside_no_grad, result.maps, rtol=0, atol=0)
    alone = explainer.explain(x[1:2], t[1:2])
    torch.testing.assert_close(alone.maps[0], result.maps[1], rtol=1e-4, atol=1e-5 * result.maps.abs().max())
    assert hooks_on(vit) == []
    assert {n: p.requires_grad for n, p in vit.named_parameters()} == flags
    assert all(p.grad is None for p in vit.parameters())
    assert all(m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn"))
    config = explainer.config()
    assert config == {"method": name} and json.loads(json.dumps(config)) == config


@pytest.mark.parametrize("name", TRANSFORMER_METHODS)
def test_transformer_method_leaves_nothing_behind_after_an_exception(name, vits):
    vit = vits["timm"]
    boom = vit.head.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom inside forward")))
    try:
        with pytest.raises(RuntimeError, match="boom inside forward"):
            make_explainer(name, vit).explain(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    finally:
        boom.remove()
    assert hooks_on(vit) == []
    assert all(m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn"))
    assert all(p.requires_grad for p in vit.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", TRANSFORMER_METHODS)
def test_transformer_methods_run_on_cuda(name, vits):
    import copy

    vit = copy.deepcopy(vits["timm"]).cuda()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    result = make_explainer(name, vit).explain(x.cuda(), t.cuda())
    cpu = make_explainer(name, vits["timm"]).explain(x, t).maps
    assert result.maps.device.type == "cuda"
    torch.testing.assert_close(result.maps.cpu(), cpu, rtol=1e-3, atol=1e-5 * cpu.abs().max())
