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
    assert len(good["deletion_curve"]) == good["steps_per_curve"]["deletion"] + 1
    assert good["steps"] in (4, 8, 16)


def _smooth_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.AvgPool2d(4),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(32, 3)).eval()


def test_adaptive_steps_match_the_step_by_step_reference_within_the_stated_error():
    model = _smooth_cnn()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, 32, 32, generator=gen)
    maps = torch.nn.functional.avg_pool2d(torch.rand(6, 1, 32, 32, generator=gen), 5, 1, 2)[:, 0]
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    reference = deletion_insertion(model, images, maps, targets, steps=64, min_steps=None)  # every 1/64
    for tolerance, min_steps in ((0.02, 4), (0.005, 4), (0.02, 2), (0.005, 2)):  # 2: the default
        fast = deletion_insertion(model, images, maps, targets, steps=64, min_steps=min_steps, tolerance=tolerance)
        assert fast["auc_error"] <= tolerance or fast["steps"] == 64
        for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
            assert abs(fast[key] - reference[key]) <= fast["auc_error"] + 1e-9, (key, fast, reference)
        assert fast["n_scored"] < reference["n_scored"]
    assert reference["auc_error"] is None and reference["steps"] == 64


def test_points_shared_by_every_curve_are_scored_once():
    images, corner, labels = _batch(n=4)
    targets = labels.clone()
    out = deletion_insertion(CornerModel(), images, corner.float(), targets, steps=16, min_steps=None)
    # 4 curves x 15 inner points, plus the clean image and the two fills (black, blur), per image
    assert out["n_scored"] == (4 * 15 + 3) * len(images)


def test_image_sample_grows_only_while_a_verdict_is_undecided():
    images, corner, labels = _batch(n=32)
    keep = labels == 0
    images, corner = images[keep], corner[keep]
    targets = torch.zeros(len(images), dtype=torch.long)
    clear = deletion_insertion(CornerModel(), images, corner.float(), targets, steps=8, min_images=4)
    # the right map wins by far: 8 of the 16 images settle it, at the level that holds over the 3 possible looks
    # (4, 8, 16 images: 1 - 0.05 / 3); on 4 the interval (3 degrees of freedom) is still too wide
    assert clear["n"] == 8 and clear["n_available"] == len(images) == 16
    assert clear["gain_level"] == pytest.approx(1 - 0.05 / 3) and clear["gain_ci"]["deletion"][0] > 0.05
    full = deletion_insertion(CornerModel(), images, corner.float(), targets, steps=8)
    margin = full["random_deletion_auc"] - full["deletion_auc"]  # a margin the gain's interval always holds
    grown = deletion_insertion(CornerModel(), images, corner.float(), targets, steps=8, min_images=4, margin=margin)
    assert grown["n"] == len(images) and grown["deletion_auc"] == pytest.approx(full["deletion_auc"])


def test_a_grown_sample_scores_every_image_against_its_own_target():
    """The sample grows in chunks; each chunk's images must be scored with their own targets (a chunk once
    looked up the first chunk's): grown or not, the AUCs are those of the whole set."""
    model = _smooth_cnn()
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(12, 3, 32, 32, generator=gen)
    maps = torch.nn.functional.avg_pool2d(torch.rand(12, 1, 32, 32, generator=gen), 5, 1, 2)[:, 0]
    targets = torch.tensor([0, 0, 1, 2, 2, 1, 0, 2, 1, 1, 2, 0])  # no chunk repeats the first chunk's targets
    whole = deletion_insertion(model, images, maps, targets, steps=8)
    # a NaN margin: no interval lies above or below it, so the sample doubles to every image (3, 6, 12)
    grown = deletion_insertion(model, images, maps, targets, steps=8, min_images=3, margin=float("nan"))
    assert grown["n"] == 12
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert grown[key] == pytest.approx(whole[key], abs=1e-6), key
