import numpy as np
import pytest
import torch
from torch import nn

from analysis.evidence.intervention import control_masks, effects, fill_region, intervene, mcnemar_exact_greater


class CornerModel(nn.Module):
    """Predicts class 0 when the top-left 8x8 patch is bright red, else class 1; sees nothing else."""

    def forward(self, x):
        red = x[:, 0, :8, :8].mean(dim=(1, 2))
        return torch.stack([(red - 0.7) * 10, (0.7 - red) * 10], dim=1)


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=g) * 0.6
    labels = torch.arange(n) % 2
    images[labels == 0, 0, :8, :8] = 0.95
    corner = torch.zeros(n, 32, 32, dtype=torch.bool)
    corner[:, :8, :8] = True
    return images, corner, labels


def test_filling_the_looked_at_region_flips_and_control_does_not():
    images, corner, labels = _batch()
    out = intervene(CornerModel(), images, corner, labels, fill="mean", n_boot=200)
    assert out["accuracy_before"] == 1.0
    # every class-0 image loses its bright patch -> predicted 1; class-1 images stay 1
    assert out["flip_rate"] == pytest.approx(0.5)
    assert out["accuracy_drop"] == pytest.approx(0.5)
    assert out["control"]["flip_rate"] == 0.0 and out["control"]["accuracy_drop"] == 0.0
    assert out["discordant"] == [32, 0]
    assert out["p_value"] == pytest.approx(0.5 ** 32)
    assert out["control_overlap"] == 0.0
    assert out["accuracy_drop_ci"][0] > 0.3


def test_blur_keeps_a_coloured_corner_patch_mean_fill_removes_it():
    """Why "mean" is the default: a blur keeps low frequencies (a colour), so a colour shortcut survives."""
    images, corner, labels = _batch()
    blurred = intervene(CornerModel(), images, corner, labels, fill="blur", n_boot=20)
    assert blurred["flip_rate"] == 0.0
    assert intervene(CornerModel(), images, corner, labels, fill="mean", n_boot=20)["flip_rate"] == 0.5


def test_region_the_model_ignores_is_not_significant():
    images, corner, labels = _batch()
    elsewhere = corner.roll((16, 16), dims=(1, 2))
    out = intervene(CornerModel(), images, elsewhere, labels, n_boot=100)
    assert out["flip_rate"] == 0.0 and out["p_value"] == 1.0


def test_masks_at_lower_resolution_are_resized_and_shuffle_fill_uses_other_images():
    images, corner, labels = _batch()
    small = corner[:, ::2, ::2]  # 16x16 mask for 32x32 images
    out = intervene(CornerModel(), images, small, labels, fill="shuffle", n_boot=50)
    # neighbours alternate class, so every image gets the other class's patch: all flip
    assert out["flip_rate"] == 1.0


def test_control_masks_have_equal_area_and_avoid_region():
    region = torch.zeros(3, 20, 20, dtype=torch.bool)
    region[:, 2:7, 3:9] = True
    controls, overlap = control_masks(region, seed=1)
    assert torch.equal(controls.flatten(1).sum(1), region.flatten(1).sum(1))
    assert (controls & region).sum() == 0 and overlap.max() == 0


def test_fill_region_values():
    images = torch.rand(2, 3, 4, 4)
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[:, 0, 0] = True
    out = fill_region(images, region, "mean", mean_colour=torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]).expand(2, 3))
    assert torch.equal(out[:, :, 1:], images[:, :, 1:])


def test_mcnemar_exact_and_effects_counts():
    assert mcnemar_exact_greater(0, 0) == 1.0
    assert mcnemar_exact_greater(5, 0) == pytest.approx(1 / 32)
    assert mcnemar_exact_greater(3, 3) == pytest.approx(42 / 64)  # P(X>=3 | 6, 1/2)
    base = np.array([0, 0, 1, 1]); labels = base.copy()
    out = effects(base, np.array([1, 0, 0, 1]), np.array([0, 0, 1, 0]), labels, n_boot=10)
    assert out["flip_rate"] == 0.5 and out["control"]["flip_rate"] == 0.25 and out["discordant"] == [2, 1]


class BackgroundModel(nn.Module):
    """Class 0 when the background (everything outside the central 12x12 object) is green, else class 1."""

    def forward(self, x):
        outside = torch.ones(x.shape[-2:], dtype=torch.bool)
        outside[10:22, 10:22] = False
        green = x[:, 1][:, outside].mean(dim=1) - x[:, 0][:, outside].mean(dim=1)
        return torch.stack([green * 10, -green * 10], dim=1)


def test_a_background_too_large_for_an_equal_area_control_is_tested_against_the_core():
    n = 40
    labels = torch.arange(n) % 2
    images = torch.full((n, 3, 32, 32), 0.3)
    images[labels == 0, 1] = 0.8  # green background for class 0
    images[labels == 1, 0] = 0.8  # red background for class 1
    images[:, :, 10:22, 10:22] = 0.5  # a grey object (the core) in the middle
    core = torch.zeros(n, 32, 32, dtype=torch.bool)
    core[:, 10:22, 10:22] = True
    background = ~core  # 86% of the image: every shift overlaps it

    without_core = intervene(BackgroundModel(), images, background, labels, n_boot=100)
    assert without_core["control_kind"] == "equal-area" and without_core["control_overlap"] > 0.5

    out = intervene(BackgroundModel(), images, background, labels, n_boot=100, core=core)
    assert out["control_kind"] == "core"
    assert out["flip_rate"] == pytest.approx(0.5)  # the mean fill is neither green nor red: class 0 flips
    assert out["control"]["flip_rate"] == 0.0  # filling the object changes nothing for this model
    assert out["discordant"] == [20, 0] and out["p_value"] == pytest.approx(0.5 ** 20)


def test_heavy_blur_is_torchvisions_gaussian_blur_in_two_passes():
    """The separable blur gives torchvision's 2-D kernel result (square, non-square, tiny images)."""
    from torchvision.transforms.functional import gaussian_blur

    from analysis.evidence.intervention import heavy_blur

    gen = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 64, 64), (1, 3, 48, 80), (3, 3, 7, 5)):
        images = torch.rand(shape, generator=gen)
        sigma = max(shape[-2:]) / 8.0
        kernel = min(int(2 * round(3 * sigma) + 1), 2 * (min(shape[-2:]) // 2) - 1)
        expected = gaussian_blur(images, [kernel, kernel], [sigma, sigma])
        assert torch.allclose(heavy_blur(images), expected, atol=1e-5), shape
