"""The depthwise separable blur equals the one-channel-batch convolution it replaced, bit for bit, for the
property moves' Gaussian blur and the fill's heavy blur (the interventions' numbers cannot move)."""
import pytest
import torch
import torch.nn.functional as F

from analysis.evidence.blur import separable_blur
from analysis.evidence.intervention import heavy_blur
from analysis.evidence.property_moves import gaussian_blur


def one_channel_passes(images, weights, pad):
    """The previous implementation: every (image, channel) plane a one-channel image of one batch."""
    b, c, h, w = images.shape
    k = len(weights)
    flat = F.pad(images.reshape(b * c, 1, h, w), [pad] * 4, mode="reflect")
    flat = F.conv2d(F.conv2d(flat, weights.view(1, 1, 1, k)), weights.view(1, 1, k, 1))
    return flat.reshape(b, c, h, w)


@pytest.mark.parametrize("shape,sigma", [((5, 3, 32, 32), 0.7), ((17, 3, 64, 48), 1.5), ((3, 3, 224, 224), 3.0)])
def test_gaussian_blur_is_the_same_numbers(shape, sigma):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    radius = max(1, min(int(round(3 * sigma)), min(shape[-2:]) // 2 - 1))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    assert torch.equal(gaussian_blur(images, sigma), one_channel_passes(images, kernel, radius))
    assert torch.equal(separable_blur(images, kernel, radius), one_channel_passes(images, kernel, radius))


def test_heavy_blur_is_the_same_numbers_and_keeps_colour():
    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    sigma = 224 / 8.0
    kernel = min(int(2 * round(3 * sigma) + 1), 2 * (224 // 2) - 1)  # 169: 3 sigma each side
    half = (kernel - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    blurred = heavy_blur(images)
    assert torch.equal(blurred, one_channel_passes(images, pdf / pdf.sum(), kernel // 2))
    assert torch.allclose(blurred.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=0.02)
