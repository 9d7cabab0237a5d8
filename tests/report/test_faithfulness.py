import pytest
import torch

from analysis.evidence.faithfulness import auc, curves, deletion_insertion, pixel_order_masks
from tests.report.test_intervention import CornerModel, _batch


def test_pixel_order_masks_take_top_fraction():
    maps = torch.arange(16.0).view(1, 4, 4)
    masks = pixel_order_masks(maps, (4, 4), steps=4)
    assert masks.shape == (5, 1, 4, 4)
    assert masks[0].sum() == 0 and masks[4].all()
    assert torch.equal(masks[1, 0].flatten(), torch.arange(16) >= 12)  # the 4 highest pixels first


def test_deletion_curve_matches_hand_computation_on_planted_model():
    images, corner, labels = _batch(n=8)
    cls0 = labels == 0
    images, corner = images[cls0], corner[cls0]
    targets = torch.zeros(len(images), dtype=torch.long)
    right = corner.float()  # the map points at the patch the model reads
    c = curves(CornerModel(), images, right, targets, steps=16, mode="deletion")
    # step 0: red 0.95 -> p0 = sigmoid(2 * 10 * 0.25); step 1 removes exactly the 64 patch pixels -> red 0
    assert c[:, 0] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item(), rel=1e-5)
    assert c[:, 1:] == pytest.approx(torch.sigmoid(torch.tensor(-14.0)).item(), rel=1e-4)
    assert auc(c) == pytest.approx((c[0, 0] + c[0, 1]) / 32 + c[0, 1] * 15 / 16, rel=1e-5)


def test_right_map_beats_wrong_map_and_random_order():
    images, corner, labels = _batch(n=16)
    keep = labels == 0
    images, corner = images[keep], corner[keep]
    targets = torch.zeros(len(images), dtype=torch.long)
    good = deletion_insertion(CornerModel(), images, corner.float(), targets, steps=16)
    bad = deletion_insertion(CornerModel(), images, 1 - corner.float(), targets, steps=16)
    assert good["deletion_auc"] < 0.05 < good["random_deletion_auc"]
    assert bad["deletion_auc"] > 0.9
    assert good["insertion_auc"] > 0.9 > bad["insertion_auc"]
    assert len(good["deletion_curve"]) == 17
