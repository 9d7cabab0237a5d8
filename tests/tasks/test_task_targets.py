"""Segmenter and tagger targets: agreement with pytorch-grad-cam's SemanticSegmentationTarget, tag targets,
and torchvision segmenters loaded by name from a state dict and a card."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM as TheirGradCAM
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from explainers.cam import GradCAM
from explainers.errors import InputError
from explainers.loading.models import load_model
from explainers.targets import MultiLabelTargets, SegmentationTarget, TagTarget, segmentation_logits
from sample_models.architectures import TinySegNet
from sample_models.segmenting import WEIGHTS_DIR, scenes_for


def minmax(maps):
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low)).reshape(maps.shape)


class FullResSegmenter(torch.nn.Module):
    """Conv layers at the input's resolution, a 1x1 classifier: both Grad-CAMs' resizes are the identity."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.classifier = torch.nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return self.classifier(self.features(x))


def test_gradcam_with_segmentation_target_agrees_with_pytorch_grad_cam():
    """Their Grad-CAM is relu(cam), min-max normalised per image; ours is the raw map. Per image one class and
    its pixels (any pixel set: here random blobs), as SemanticSegmentationTarget takes them."""
    torch.manual_seed(3)
    net = FullResSegmenter().eval()
    x = torch.rand(4, 3, 16, 16)
    classes = torch.tensor([0, 1, 2, 1])
    masks = F.interpolate(torch.rand(4, 1, 4, 4), size=(16, 16), mode="nearest")[:, 0] > 0.5
    ours = GradCAM(net, layer=net.features[2]).explain(x, SegmentationTarget(classes, masks)).maps
    with TheirGradCAM(model=net, target_layers=[net.features[2]]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[
            SemanticSegmentationTarget(int(c), m.numpy().astype(np.float32)) for c, m in zip(classes, masks)]))
    ours_normalised = minmax(ours.clamp(min=0))
    assert F.cosine_similarity(ours_normalised.flatten(1), theirs.flatten(1), dim=1).min() >= 0.999
    torch.testing.assert_close(ours_normalised, theirs, rtol=0, atol=1e-4)


def test_segmenter_sample_map_follows_the_class_pixels():
    """On the committed segmenter, a boat's Grad-CAM mass lies mostly on the boat's predicted pixels."""
    net = TinySegNet(3)
    net.load_state_dict(torch.load(WEIGHTS_DIR / "v5" / "model.pt", weights_only=True))
    net.eval()
    x = torch.stack([s.image for s in scenes_for(8, seed=5, p_context=0.5)])
    with torch.no_grad():
        pred = net(x).argmax(1)
    keep = (pred == 1).flatten(1).any(1)
    target = SegmentationTarget.from_prediction(net(x[keep]).detach(), 1)
    maps = GradCAM(net, layer=net.block3).explain(x[keep], target).maps.clamp(min=0)
    share = (maps * target.mask).flatten(1).sum(1) / maps.flatten(1).sum(1)
    area = target.mask.flatten(1).float().mean(1)
    assert (share > 3 * area).all()


def test_segmentation_target_scores_per_image_classes_and_reads_torchvision_dicts():
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    mask = torch.tensor([[[True, False], [False, False]], [[True, True], [False, True]]])
    target = SegmentationTarget(torch.tensor([2, 0]), mask)
    expected = torch.stack([logits[0, 2][mask[0]].sum(), logits[1, 0][mask[1]].sum()])
    torch.testing.assert_close(target(logits), expected)
    torch.testing.assert_close(target({"out": logits, "aux": logits * 0}), expected)
    torch.testing.assert_close(target.repeat(2)(logits.repeat(2, 1, 1, 1)), expected.repeat(2))
    with pytest.raises(InputError, match="without 'out'"):
        segmentation_logits({"aux": logits})


def test_multilabel_targets_from_given_tags_match_a_gather():
    logits = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]])
    image_idx, target = MultiLabelTargets.from_tags(torch.tensor([[True, False, True], [False, True, False]]))
    assert isinstance(target, TagTarget)
    assert image_idx.tolist() == [0, 0, 1] and target.indices.tolist() == [0, 2, 1]
    torch.testing.assert_close(target(logits[image_idx]), torch.tensor([1.0, 3.0, 0.25]))


@pytest.mark.parametrize("architecture", ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"])
def test_torchvision_segmenter_loads_by_name_from_a_state_dict(tmp_path, architecture):
    from explainers.loading.architectures import build_segmenter

    torch.manual_seed(0)
    net = build_segmenter(architecture, 4).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    card = {"task": "segmentation", "classes": ["bg", "a", "b", "c"], "input_size": [64, 64],
            "architecture": architecture}
    (tmp_path / "model.json").write_text(json.dumps(card))
    loaded = load_model(tmp_path / "model.pt")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = loaded.module(x)
        expected = net(loaded.module.normalize(x))["out"]
    assert out.shape == (2, 4, 64, 64)  # the dict's "out", at input size
    torch.testing.assert_close(out, expected)


def test_segmenter_card_with_the_wrong_class_count_is_refused(tmp_path):
    torch.save(TinySegNet(3).state_dict(), tmp_path / "model.pt")
    card = {"task": "segmentation", "classes": ["bg", "a"], "input_size": [64, 64], "architecture": "tiny_segnet"}
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="does not fit architecture 'tiny_segnet' with 2 classes"):
        load_model(tmp_path / "model.pt")
