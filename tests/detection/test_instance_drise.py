"""D-RISE for instance segmentation: overlap by mask IoU (the issue's "instance segmentation through D-RISE").

A toy segmenter sees an L-shaped object and returns one detection whose mask is the object pixels still
visible under the D-RISE mask, with the object's bounding box. Its box never changes under masking, so
box-IoU D-RISE has nothing to say (equal weights: the centred map is exactly zero), while mask IoU is the
visible fraction of the object and the map must equal the formula computed here on the same masks.
"""
import pytest
import torch

from explainers.detection import CallableDetector, DetectionTarget, detection_similarity, detections_above
from explainers.drise import DRISE
from explainers.errors import InputError

SIZE = 12


def _scene():
    obj = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    obj[2:10, 2:5] = True  # vertical bar of the L
    obj[7:10, 5:9] = True  # foot of the L
    image = torch.full((1, 3, SIZE, SIZE), 0.2)
    image[0][:, obj] = 1.0
    return image, obj


def _segmenter(obj):
    box = torch.tensor([[2.0, 2.0, 9.0, 10.0]])

    def run(images):
        visible = images.mean(1) > 0.5  # (B, H, W): the object pixels the mask left
        return [{"boxes": box, "scores": torch.ones(1), "probs": torch.ones(1, 1), "masks": v[None] & obj[None]}
                for v in visible]
    return CallableDetector(run)


def test_mask_iou_replaces_box_iou_when_the_target_has_masks():
    image, obj = _scene()
    complement = torch.zeros_like(obj)
    complement[2:10, 2:9] = True
    complement &= ~obj  # same bounding box, none of the object's pixels
    det = {"boxes": torch.tensor([[2.0, 2.0, 9.0, 10.0]]), "scores": torch.ones(1), "probs": torch.ones(1, 1),
           "masks": complement[None]}
    assert detection_similarity(DetectionTarget(det["boxes"], det["probs"]), det).item() == pytest.approx(1.0)
    with_masks = DetectionTarget(det["boxes"], det["probs"], obj[None])
    assert detection_similarity(with_masks, det).item() == 0.0
    half = obj.clone()
    half[7:10, 5:9] = False  # 24 of the 36 object pixels
    assert detection_similarity(with_masks, dict(det, masks=half[None].float())).item() == pytest.approx(24 / 36)


def test_instance_drise_equals_the_formula_and_box_drise_sees_nothing():
    image, obj = _scene()
    detector = _segmenter(obj)
    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(2000, SIZE, SIZE, generator=generator) < 0.5).float()  # binary: visibility is exact
    target = detections_above(detector(image)[0], 0.5)
    assert target.masks is not None and target.masks[0].equal(obj)
    explainer = DRISE(detector, n_masks=2000, p=0.5, batch_size=64)

    (mask_map,) = explainer.explain_detections(image, [target], masks=masks)
    weights = (masks[:, obj].sum(1) / obj.sum()).double()  # mask IoU = visible fraction of the object
    expected = ((weights - weights.mean())[:, None, None] * masks.double()).sum(0) / (2000 * 0.5)
    torch.testing.assert_close(mask_map[0].double(), expected, rtol=1e-5, atol=1e-6)
    assert mask_map[0][obj].mean() > 5 * mask_map[0][~obj].abs().mean()  # the object's own pixels

    (box_map,) = explainer.explain_detections(image, [DetectionTarget(target.boxes, target.probs)], masks=masks)
    assert box_map.abs().max().item() < 1e-6  # the box never moves: every mask weighs the same


def test_mask_targets_need_a_detector_that_returns_masks():
    image, obj = _scene()
    no_masks = CallableDetector(lambda images: [{"boxes": torch.tensor([[2.0, 2.0, 9.0, 10.0]]),
                                                "scores": torch.ones(1), "probs": torch.ones(1, 1)}] * len(images))
    target = DetectionTarget(torch.tensor([[2.0, 2.0, 9.0, 10.0]]), torch.ones(1, 1), obj[None])
    with pytest.raises(InputError, match="returns none"):
        DRISE(no_masks, n_masks=8).explain_detections(image, [target])
