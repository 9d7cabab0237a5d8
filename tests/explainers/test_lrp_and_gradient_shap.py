"""LRP equals zennit called directly (and conserves relevance); GradientSHAP equals Captum called directly."""
import numpy as np
import pytest
import torch
import torchvision
from captum.attr import GradientShap as CaptumGradientShap
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from analysis.evidence.sanity import model_randomisation
from explainers.errors import InputError
from explainers.loading.models import Normalize
from explainers.registry import make_explainer

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def bn_cnn(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=bias), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4, bias=bias))
    with torch.no_grad():  # non-trivial running statistics, so merging batch norm matters
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        if bias:  # else batch norm is a pure per-channel scale: the merged network has no bias at all
            net[1].running_mean.uniform_(-0.2, 0.2)
            net[1].bias.uniform_(-0.1, 0.1)
        else:
            net[1].bias.zero_()
    return net.eval()


def zennit_direct(net, composite, x, targets):
    """zennit on the bare network, fed normalised images, relevance started at the target logit."""
    normalised = ((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)).requires_grad_(True)
    with Gradient(net, composite) as attributor:
        out, relevance = attributor(normalised, lambda o: o.detach() * torch.eye(o.shape[1])[targets])
    return relevance.sum(1)


def test_lrp_equals_zennit_on_the_network_it_wraps():
    net = bn_cnn()
    model = nn.Sequential(Normalize(MEAN, STD), net).eval()
    x, t = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2, 3])
    ours = make_explainer("lrp", model).explain(x, t)
    expected = zennit_direct(net, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]), x, t)
    torch.testing.assert_close(ours.maps, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(ours.scores, model(x).gather(1, t[:, None])[:, 0])
    # The canonizer changed the network only during the call.
    torch.testing.assert_close(model(x), nn.Sequential(Normalize(MEAN, STD), bn_cnn())(x))


def test_lrp_on_a_torchvision_resnet_uses_zennits_resnet_canonizer():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    model = nn.Sequential(Normalize(MEAN, STD), net).eval()
    x, t = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 2])
    ours = make_explainer("lrp", model).explain(x, t).maps
    expected = zennit_direct(net, EpsilonPlusFlat(canonizers=[ResNetCanonizer()]), x, t)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * expected.abs().max())
    plain = make_explainer("lrp", model, canonizer="sequential_merge_batchnorm").explain(x, t).maps
    assert not torch.allclose(plain, ours, rtol=1e-3, atol=1e-6 * expected.abs().max())


def test_relevance_is_conserved_without_biases_and_not_with_them():
    x, t = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 3])
    for composite in ("epsilon_plus_flat", "epsilon_plus"):
        model = nn.Sequential(Normalize(MEAN, STD), bn_cnn(bias=False)).eval()
        result = make_explainer("lrp", model, composite=composite).explain(x, t)
        torch.testing.assert_close(result.maps.sum(dim=(1, 2)), result.scores, rtol=1e-4, atol=1e-6)
    biased = nn.Sequential(Normalize(MEAN, STD), bn_cnn(bias=True)).eval()
    result = make_explainer("lrp", biased).explain(x, t)
    assert not torch.allclose(result.maps.sum(dim=(1, 2)), result.scores, rtol=1e-2)


def test_lrp_epsilon_on_a_linear_model_is_input_times_weight():
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2, bias=False))
    model = nn.Sequential(Normalize(MEAN, STD), linear).eval()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    maps = make_explainer("lrp", model, composite="epsilon_plus").explain(x, torch.tensor([0, 1])).maps
    normalised = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    weights = linear[1].weight.detach().view(2, 3, 4, 4)
    expected = (normalised * weights[[0, 1]]).sum(1)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_lrp_refuses_layers_without_a_rule():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(InputError, match=r"layer 1 \(GroupNorm\) has no LRP rule.*integrated_gradients"):
        make_explainer("lrp", model)
    with pytest.raises(InputError, match="composite=epsilon_gamma: lrp takes composite as one of epsilon_plus_flat"):
        make_explainer("lrp", bn_cnn(), composite="epsilon_gamma")


def test_lrp_goes_through_the_sanity_check():
    model = nn.Sequential(Normalize(MEAN, STD), bn_cnn()).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    before = [p.detach().clone() for p in model.parameters()]
    result = model_randomisation(model, x, "lrp", seed=0)
    assert result["method"] == "lrp" and len(result["stages"]) >= 2
    assert 0 <= result["similarity"] < 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_gradient_shap_equals_captum_per_image_with_the_same_seed():
    torch.manual_seed(0)
    model = nn.Sequential(Normalize(MEAN, STD), bn_cnn()).eval()
    x, t = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(6)), torch.tensor([3, 0, 1])
    ours = make_explainer("gradient_shap", model, n_samples=8, stdevs=0.05, seed=7).explain(x, t)
    baselines = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, 3, 16, 16)
    for i in range(3):
        np.random.seed(7)
        torch.manual_seed(7)
        expected = CaptumGradientShap(model).attribute(x[i:i + 1], baselines=baselines, n_samples=8, stdevs=0.05,
                                                       target=int(t[i])).sum(1)[0]
        torch.testing.assert_close(ours.maps[i], expected, rtol=1e-5, atol=1e-7)


def test_gradient_shap_is_complete_on_a_linear_model():
    """f linear: each sample's (x - b) . w = f(x) - f(b) exactly, so one baseline gives f(x) - f(b)."""
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    result = make_explainer("gradient_shap", linear, baselines=[0.25], n_samples=5).explain(x, torch.tensor([0, 1]))
    with torch.no_grad():
        grey = linear(torch.full((1, 3, 8, 8), 0.25))[0, [0, 1]]
    torch.testing.assert_close(result.maps.sum(dim=(1, 2)), result.scores - grey, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match=r"baselines=\[2.0\]: gradient_shap takes baselines as a list of numbers, each >= 0"):
        make_explainer("gradient_shap", linear, baselines=[2.0])
