"""Gradient methods: hand-computed gradients on a linear net, IG completeness, Captum equality, seeding."""
import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import Saliency as CaptumSaliency

from explainers.errors import InputError
from explainers.gradients import GuidedBackprop, IntegratedGradients, Saliency, SmoothGrad
from tests.explainers.saliency_nets import HandSetNet, SmallCNN

# HandSetNet is linear: score_c = sum_k FC[c, k] * mean(conv_k(x)), conv_0 = R, conv_1 = G - B, 16 pixels.
# d score / d (R, G, B) per pixel, for class 0 and class 1:
PIXEL_GRAD = torch.tensor([[2.0, -1.0, 1.0], [-1.0, 3.0, -3.0]]) / 16


@pytest.fixture
def hand():
    return HandSetNet().eval(), torch.rand(2, 3, 4, 4), torch.tensor([0, 1])


def test_saliency_is_max_abs_gradient(hand):
    model, x, t = hand
    result = Saliency(model).explain(x, t)
    expected = PIXEL_GRAD[t].abs().amax(dim=1)[:, None, None].expand(2, 4, 4)  # 2/16 and 3/16
    torch.testing.assert_close(result.maps, expected)
    torch.testing.assert_close(result.scores, model(x).gather(1, t[:, None])[:, 0])


def test_smoothgrad_of_a_linear_model_is_its_saliency(hand):
    model, x, t = hand
    expected = PIXEL_GRAD[t].abs().amax(dim=1)[:, None, None].expand(2, 4, 4)
    torch.testing.assert_close(SmoothGrad(model, nt_samples=5).explain(x, t).maps, expected)


def test_guided_backprop_without_relu_is_the_gradient_summed(hand):
    model, x, t = hand
    expected = PIXEL_GRAD[t].sum(dim=1)[:, None, None].expand(2, 4, 4)  # 2/16 and -1/16
    torch.testing.assert_close(GuidedBackprop(model).explain(x, t).maps, expected)


def test_integrated_gradients_of_a_linear_model_is_input_times_gradient(hand):
    model, x, t = hand
    expected = torch.einsum("bc,bchw->bhw", PIXEL_GRAD[t], x)
    torch.testing.assert_close(IntegratedGradients(model, n_steps=4).explain(x, t).maps, expected)
    # From a grey baseline the attribution is (x - 0.5) * gradient.
    grey = torch.einsum("bc,bchw->bhw", PIXEL_GRAD[t], x - 0.5)
    torch.testing.assert_close(IntegratedGradients(model, baseline=0.5, n_steps=4).explain(x, t).maps, grey)


def test_integrated_gradients_completeness_on_a_nonlinear_cnn():
    model = SmallCNN().eval()
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 4])
    maps = IntegratedGradients(model, n_steps=64).explain(x, t).maps
    with torch.no_grad():
        gain = model(x).gather(1, t[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    delta = (maps.sum(dim=(1, 2)) - gain).abs()
    assert gain.abs().min() > 1e-3  # the check is not trivial
    assert (delta <= 0.01 * gain.abs() + 1e-5).all(), (delta, gain)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
def test_saliency_and_guided_backprop_equal_captum_on_a_relu_cnn():
    model = SmallCNN().eval()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    saliency = CaptumSaliency(model).attribute(x.clone().requires_grad_(), target=t, abs=True)
    torch.testing.assert_close(Saliency(model).explain(x, t).maps, saliency.amax(dim=1))
    guided = CaptumGuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t)
    ours = GuidedBackprop(model).explain(x, t).maps
    torch.testing.assert_close(ours, guided.sum(dim=1))
    # Guided backprop differs from the plain gradient on a ReLU network.
    plain = CaptumSaliency(model).attribute(x.clone().requires_grad_(), target=t, abs=False).sum(dim=1)
    assert not torch.allclose(ours, plain)


def test_smoothgrad_is_seeded_and_leaves_global_rng_alone():
    model = SmallCNN().eval()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    state = torch.get_rng_state()
    a = SmoothGrad(model, nt_samples=4, seed=3).explain(x, t).maps
    assert torch.equal(torch.get_rng_state(), state)
    b = SmoothGrad(model, nt_samples=4, seed=3).explain(x, t).maps
    c = SmoothGrad(model, nt_samples=4, seed=4).explain(x, t).maps
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_inputs_left_untouched_and_weights_frozen():
    model = SmallCNN().eval()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    for cls in (Saliency, IntegratedGradients, SmoothGrad, GuidedBackprop):
        cls(model).explain(x, t)
        assert not x.requires_grad and x.grad is None
        assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_callable_targets_and_wrong_counts_are_input_errors():
    model = SmallCNN().eval()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(InputError, match="class-index targets"):
        Saliency(model).explain(x, lambda out: out[:, 0])
    with pytest.raises(InputError, match="3 targets for a batch of 2"):
        Saliency(model).explain(x, torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="baseline"):
        IntegratedGradients(model, baseline=2.0)


def test_smoothgrad_equals_captum_noise_tunnel_for_one_image_and_shares_noise_across_a_batch():
    from captum.attr import NoiseTunnel

    model = SmallCNN().eval()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([2, 4])
    ours = SmoothGrad(model, nt_samples=8, seed=3, nt_samples_batch_size=3).explain(x, t).maps
    for i in range(2):
        torch.manual_seed(3)  # NoiseTunnel draws from the global generator: same stream for one image
        theirs = NoiseTunnel(CaptumSaliency(model)).attribute(
            x[i:i + 1].clone().requires_grad_(), nt_type="smoothgrad", nt_samples=8, stdevs=0.15,
            target=t[i:i + 1], abs=True)
        torch.testing.assert_close(ours[i], theirs[0].amax(dim=0))


class CountingNet(torch.nn.Module):
    """SmallCNN that counts forward calls and the images they carried."""

    def __init__(self):
        super().__init__()
        self.net, self.calls, self.images = SmallCNN().eval(), 0, 0

    def forward(self, x):
        self.calls, self.images = self.calls + 1, self.images + x.shape[0]
        return self.net(x)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
@pytest.mark.parametrize("method, forwards", [(Saliency, 1), (GuidedBackprop, 1),
                                              (lambda m: IntegratedGradients(m, n_steps=4), 2)])
def test_scores_are_clean_logits_and_saliency_reuses_the_gradient_forward(method, forwards):
    model = CountingNet()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    result = method(model).explain(x, t)
    # Saliency / guided backprop: the scores come from the forward that gives the gradient (one call);
    # IG's steps never evaluate the clean input, so it runs one extra no-grad forward.
    assert model.calls == forwards
    with torch.no_grad():
        torch.testing.assert_close(result.scores, model.net(x).gather(1, t[:, None])[:, 0])
