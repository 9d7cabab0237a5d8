"""Guided backprop (and LRP) on exported models: a `.pt2` gets real guided backprop (its functional relus made
`nn.ReLU` modules for the call), equal to Captum's on the eager model; TorchScript is refused with the fix."""
import json

import pytest
import torch
import torchvision
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from explainers.errors import InputError
from explainers.loading.models import Normalize, load_model
from explainers.registry import make_explainer
from explainers.relu_modules import relu_modules

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


class SmallReluCNN(nn.Module):
    """nn.ReLU modules, one in place and one reused: what an eager model hands Captum."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.head(self.act(self.conv3(x)).mean(dim=(2, 3)))


def saved(net: nn.Module, folder, size: int, fmt: str = "pt2"):
    example = torch.rand(2, 3, size, size)
    path = folder / f"model.{fmt}"
    if fmt == "pt2":
        program = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(path))
    else:
        torch.jit.save(torch.jit.trace(net.eval(), example), str(path))
    (folder / "model.json").write_text(json.dumps({"task": "classification", "classes": list("abcd"),
                                                   "input_size": [size, size], "mean": MEAN, "std": STD}))
    return load_model(path)


def captum_maps(net, x, t, method=CaptumGuidedBackprop):
    eager = nn.Sequential(Normalize(MEAN, STD), net).eval()
    return method(eager).attribute(x.clone().requires_grad_(True), target=t).sum(dim=1)


@pytest.mark.parametrize("build, size", [(SmallReluCNN, 16),
                                         (lambda: torchvision.models.resnet18(weights=None, num_classes=4), 64)],
                         ids=["small_cnn", "resnet18"])
def test_guided_backprop_on_a_pt2_equals_captum_on_the_eager_model(tmp_path, build, size):
    torch.manual_seed(0)
    net = build().eval()
    loaded = saved(net, tmp_path, size)
    x, t = torch.rand(3, 3, size, size), torch.tensor([0, 3, 1])
    ours = make_explainer("guided_backprop", loaded.module).explain(x, t).maps
    expected = captum_maps(net, x, t)
    assert float((ours - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max()))
    # not the plain gradient (what the exported graph gave before its relus were modules)
    plain = captum_maps(net, x, t, method=lambda m: _SignedSaliency(m))
    assert float((ours - plain).abs().max()) > 0.1 * float(plain.abs().max())


class _SignedSaliency:
    def __init__(self, model):
        self.saliency = CaptumSaliency(model)

    def attribute(self, x, target):
        return self.saliency.attribute(x, target=target, abs=False)


def test_relu_rewrite_is_undone_and_keeps_the_forward(tmp_path):
    torch.manual_seed(0)
    loaded = saved(SmallReluCNN(), tmp_path, 16)
    before = {name: str(m.graph) for name, m in loaded.net.named_modules() if hasattr(m, "graph")}
    modules_before = [name for name, _ in loaded.module.named_modules()]
    x = torch.rand(2, 3, 16, 16)
    expected = loaded.module(x)
    with relu_modules(loaded.module) as rewritten:
        assert rewritten == 2  # two relu graph modules (the reused in-place one, act): one call each
        assert sum(isinstance(m, nn.ReLU) for m in loaded.module.modules()) == 2
        torch.testing.assert_close(loaded.module(x), expected, rtol=0, atol=0)
    assert {name: str(m.graph) for name, m in loaded.net.named_modules() if hasattr(m, "graph")} == before
    assert [name for name, _ in loaded.module.named_modules()] == modules_before


def test_guided_backprop_and_lrp_refuse_torchscript_with_the_fix(tmp_path):
    loaded = saved(SmallReluCNN(), tmp_path, 16, fmt="ts")
    assert loaded.format == "torchscript"
    with pytest.raises(InputError, match=r"'guided_backprop' .*TorchScript.*export the model with torch.export as a "
                                         r"\.pt2") as info:
        make_explainer("guided_backprop", loaded.module)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"'lrp' .*TorchScript.*\.pt2"):
        make_explainer("lrp", loaded.module)
    make_explainer("saliency", loaded.module)  # plain gradients need no module types


def test_lrp_on_a_pt2_is_refused_with_the_reason(tmp_path):
    loaded = saved(SmallReluCNN(), tmp_path, 16)
    with pytest.raises(InputError, match=r"'lrp' assigns its rules by layer type .*\.pt2 export keeps the layer tree "
                                         r"but not the types.*state dict.*architecture"):
        make_explainer("lrp", loaded.module)


class FunctionalRelus(nn.Module):
    """The same network as SmallReluCNN with functional relus (one in place), as a user's fx-traced model has."""

    def __init__(self, twin: SmallReluCNN):
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.head = twin.conv1, twin.conv2, twin.conv3, twin.head

    def forward(self, x):
        x = torch.nn.functional.relu(self.conv2(torch.nn.functional.relu(self.conv1(x), inplace=True)))
        return self.head(torch.relu(self.conv3(x)).mean(dim=(2, 3)))


def test_guided_backprop_on_an_fx_graph_module_with_functional_relus():
    torch.manual_seed(0)
    twin = SmallReluCNN().eval()
    traced = torch.fx.symbolic_trace(FunctionalRelus(twin))
    code = traced.code
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    ours = make_explainer("guided_backprop", traced).explain(x, t).maps
    expected = CaptumGuidedBackprop(twin).attribute(x.clone().requires_grad_(True), target=t).sum(dim=1)
    assert float((ours - expected).abs().max()) <= 1e-6 * float(expected.abs().max())
    assert traced.code == code and not any(isinstance(m, nn.ReLU) for m in traced.modules())  # put back
