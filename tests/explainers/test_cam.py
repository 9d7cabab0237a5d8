"""CAM family: hand-computed maps, equality with Captum's LayerGradCam, agreement with pytorch-grad-cam."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import GradCAM as TheirGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as TheirGradCAMPlusPlus
from pytorch_grad_cam import LayerCAM as TheirLayerCAM
from pytorch_grad_cam import ScoreCAM as TheirScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explainers.cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from explainers.errors import InputError
from explainers.registry import make_explainer
from tests.explainers.saliency_nets import FullResCNN, HandSetNet, SmallCNN

FC = torch.tensor([[2.0, -1.0], [-1.0, 3.0]])  # HandSetNet's linear layer


def hand_activations(x):
    """HandSetNet's conv output: channel 0 = R, channel 1 = G - B."""
    return torch.stack([x[:, 0], x[:, 1] - x[:, 2]], dim=1)


@pytest.fixture
def hand():
    x = torch.rand(2, 3, 4, 4)
    return HandSetNet().eval(), x, torch.tensor([0, 1])


def test_gradcam_matches_hand_computation(hand):
    model, x, t = hand
    acts = hand_activations(x)
    # d score_c / d A_k(i, j) = FC[c, k] / 16, constant, so the channel weight is FC[c, k] / 16.
    expected = torch.einsum("bk,bkhw->bhw", FC[t] / 16, acts)
    result = GradCAM(model, layer=model.conv).explain(x, t)
    torch.testing.assert_close(result.maps, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(result.scores, model(x).gather(1, t[:, None])[:, 0])
    assert (result.maps < 0).any(), "the map must stay signed (no ReLU inside the method)"


def test_gradcam_pp_matches_hand_computation(hand):
    model, x, t = hand
    acts = hand_activations(x)
    g = FC[t] / 16  # (B, K) constant gradients
    s = acts.sum(dim=(2, 3))
    alpha = g**2 / (2 * g**2 + s * g**3 + 1e-6)
    weights = 16 * g.clamp(min=0) * alpha  # sum over the 16 positions of relu(g) * alpha
    expected = torch.einsum("bk,bkhw->bhw", weights, acts)
    result = GradCAMPlusPlus(model, layer=model.conv).explain(x, t)
    torch.testing.assert_close(result.maps, expected, rtol=1e-5, atol=1e-7)


def test_layercam_matches_hand_computation(hand):
    model, x, t = hand
    expected = torch.einsum("bk,bkhw->bhw", (FC[t] / 16).clamp(min=0), hand_activations(x))
    torch.testing.assert_close(LayerCAM(model, layer=model.conv).explain(x, t).maps, expected)


def test_scorecam_matches_hand_computation(hand):
    model, x, t = hand
    acts = hand_activations(x)
    low, high = acts.amin(dim=(2, 3), keepdim=True), acts.amax(dim=(2, 3), keepdim=True)
    masks = (acts - low) / (high - low + 1e-8)  # (B, K, H, W)
    scores = torch.zeros(2, 2)
    for k in range(2):
        masked = x * masks[:, k:k + 1]
        pooled = hand_activations(masked).mean(dim=(2, 3))  # (B, K)
        scores[:, k] = (pooled * FC[t]).sum(dim=1)
    expected = torch.einsum("bk,bkhw->bhw", scores.softmax(dim=1), acts)
    for batch_size in (1, 64):  # chunking must not change the result
        result = ScoreCAM(model, layer=model.conv, batch_size=batch_size).explain(x, t)
        torch.testing.assert_close(result.maps, expected, rtol=1e-5, atol=1e-6)


def captum_gradcam(model, layer, x, t):
    attr = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=False)
    return LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), "bilinear")[:, 0]


def test_gradcam_equals_captum_on_small_cnn():
    model = SmallCNN().eval()
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 4])
    ours = GradCAM(model, layer=model.features[3]).explain(x, t).maps
    theirs = captum_gradcam(model, model.features[3], x, t)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours.abs().max() > 1e-4


@pytest.mark.parametrize("layer_name", ["layer3", "layer4"])
def test_gradcam_equals_captum_on_resnet18(layer_name):
    model = torchvision.models.resnet18(num_classes=10).eval()
    layer = getattr(model, layer_name)
    x, t = torch.rand(2, 3, 64, 64), torch.tensor([3, 7])
    ours = GradCAM(model, layer=layer).explain(x, t).maps
    theirs = captum_gradcam(model, layer, x, t)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    assert ours.abs().max() > 1e-5


def minmax(maps):
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low)).reshape(maps.shape)


def cosine(a, b):
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


@pytest.mark.parametrize(
    "ours_cls, theirs_cls",
    [(GradCAM, TheirGradCAM), (GradCAMPlusPlus, TheirGradCAMPlusPlus), (LayerCAM, TheirLayerCAM),
     (ScoreCAM, TheirScoreCAM)],
)
def test_agrees_with_pytorch_grad_cam(ours_cls, theirs_cls):
    """pytorch-grad-cam returns relu(cam), min-max normalised per image, resized by cv2. The layer here keeps
    the 16x16 input resolution, so both resizes are the identity and we compare min-max(relu(ours)) with
    theirs pixel for pixel."""
    torch.manual_seed(1)
    model = FullResCNN().eval()
    x, t = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 3])
    ours = ours_cls(model, layer=model.features[2]).explain(x, t).maps
    with theirs_cls(model=model, target_layers=[model.features[2]]) as cam:
        cam.batch_size = 16  # Score-CAM's chunk; ignored by the others
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))
    ours_normalised = minmax(ours.clamp(min=0))
    assert cosine(ours_normalised, theirs).min() >= 0.999
    torch.testing.assert_close(ours_normalised, theirs, rtol=0, atol=1e-4)


def test_inplace_relu_after_the_layer_gives_the_same_map():
    torch.manual_seed(2)
    plain = SmallCNN(inplace=False).eval()
    inplace = SmallCNN(inplace=True).eval()
    inplace.load_state_dict(plain.state_dict())
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    for cls in (GradCAM, ScoreCAM):
        # features[2] is a conv followed by an in-place ReLU: the activation must be the pre-ReLU output.
        a = cls(plain, layer=plain.features[2]).explain(x, t).maps
        b = cls(inplace, layer=inplace.features[2]).explain(x, t).maps
        torch.testing.assert_close(a, b)
        assert (a < 0).any()


def test_no_weight_gradients_and_flags_restored():
    model = SmallCNN().eval()
    model.head[2].weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    GradCAM(model, layer=model.features[3]).explain(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_callable_target_is_differentiated():
    model = SmallCNN().eval()
    x = torch.rand(2, 3, 32, 32)
    difference = GradCAM(model, layer=model.features[3]).explain(x, lambda out: out[:, 1] - out[:, 0]).maps
    one = GradCAM(model, layer=model.features[3]).explain(x, torch.tensor([1, 1])).maps
    zero = GradCAM(model, layer=model.features[3]).explain(x, torch.tensor([0, 0])).maps
    torch.testing.assert_close(difference, one - zero, rtol=1e-4, atol=1e-6)


def test_layer_not_in_forward_and_non_spatial_layer_are_input_errors():
    model = SmallCNN().eval()
    x, t = torch.rand(1, 3, 32, 32), torch.tensor([0])
    with pytest.raises(InputError, match="not run by the model"):
        GradCAM(model, layer=torch.nn.Conv2d(3, 3, 1)).explain(x, t)
    with pytest.raises(InputError, match="pick a convolutional block"):
        GradCAM(model, layer=model.head[2]).explain(x, t)
    with pytest.raises(InputError, match="float image batch"):
        GradCAM(model, layer=model.features[3]).explain(torch.rand(3, 32, 32), t)


def test_config_is_json_and_leaves_the_layer_out():
    model = SmallCNN().eval()
    assert make_explainer("gradcam", model, layer=model.features[3]).config() == {"method": "gradcam"}
    assert make_explainer("scorecam", model, layer=model.features[3], batch_size=8).config() == {
        "method": "scorecam", "batch_size": 8}
