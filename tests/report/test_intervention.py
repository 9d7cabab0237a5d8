import numpy as np
import pytest
import torch
from torch import nn

from analysis.evidence.intervention import control_masks, effects, fill_region, mcnemar_exact_greater


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
