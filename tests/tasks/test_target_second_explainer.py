"""A segmenter's second explainer (plain gradients) explains the same score as its Grad-CAM: the class's logits
summed over its pixels (`PixelSums` against `explainers.targets.SegmentationTarget`)."""
import torch

from analysis.evidence.target_second_explainer import PixelSums
from explainers.registry import make_explainer
from explainers.targets import SegmentationTarget, TagTarget
from sample_models import segmenting
from sample_models.architectures import ARCHITECTURES


def test_plain_gradients_of_pixel_sums_are_the_gradient_of_the_segmentation_target():
    net = ARCHITECTURES[segmenting.ARCHITECTURE](len(segmenting.CLASSES))
    net.load_state_dict(torch.load(segmenting.WEIGHTS_DIR / "v1" / "model.pt", weights_only=True))
    net.eval()
    x = torch.stack([s.image for s in segmenting.scenes_for(3, seed=5, p_context=1.0)])
    with torch.no_grad():
        pred = net(x).argmax(1)
    counts = torch.stack([(pred == c).flatten(1).sum(1) for c in (1, 2)], dim=1)
    classes = counts.argmax(1) + 1  # each image's most predicted object class
    masks = pred == classes[:, None, None]
    assert masks.flatten(1).any(1).all()  # each image has the pixels of its class
    maps = make_explainer("saliency", PixelSums(net, masks.float())).explain(x, TagTarget(classes)).maps
    leaf = x.clone().requires_grad_(True)
    SegmentationTarget(classes, masks)(net(leaf)).sum().backward()
    expected = leaf.grad.abs().amax(dim=1)
    assert torch.allclose(maps, expected, atol=1e-5) and expected.abs().sum() > 0
