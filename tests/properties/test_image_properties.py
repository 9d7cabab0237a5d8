"""Per-image properties: each moves with the change it names, and only with it."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.evidence.property_moves import gaussian_blur
from analysis.evidence.property_screen import screen
from analysis.stats.image_properties import (PIXEL_PROPERTIES, attribute_properties, describe, file_properties,
                                             image_properties, pixel_properties)
from sample_models import property_shortcut as ps


@pytest.fixture(scope="module")
def images():
    return ps.to_tensor(ps.render(64, "clean", 0.5, seed=3, nuisance=False).images)


def test_each_property_moves_with_its_change(images):
    base = pixel_properties(images)
    assert set(base) == set(PIXEL_PROPERTIES) and all(v.shape == (64,) for v in base.values())
    blurred = pixel_properties(gaussian_blur(images, 1.2))
    assert (blurred["sharpness"] < 0.2 * base["sharpness"]).all()
    assert (blurred["noise"] < 0.5 * base["noise"]).all()
    brighter = pixel_properties((images + 0.1).clamp(0, 1))
    np.testing.assert_allclose(brighter["brightness"] - base["brightness"], 0.1, atol=2e-3)
    np.testing.assert_allclose(brighter["sharpness"], base["sharpness"], rtol=0.05)
    warm = torch.from_numpy(0.05 * ps.WARM_DIRECTION).view(1, 3, 1, 1)
    warmer = pixel_properties((images + warm).clamp(0, 1))
    np.testing.assert_allclose(warmer["warmth"] - base["warmth"], 0.1, atol=2e-3)
    np.testing.assert_allclose(warmer["brightness"], base["brightness"], atol=1e-3)  # a luma-neutral cast
    mean = images.mean(dim=(2, 3), keepdim=True)
    flatter = pixel_properties(mean + 0.5 * (images - mean))
    np.testing.assert_allclose(flatter["contrast"] / base["contrast"], 0.5, rtol=0.02)


def test_noise_estimate_reads_the_noise_sigma_not_the_content():
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = (0.3 + 0.4 * xx * yy).expand(4, 3, 64, 64)  # a smooth gradient: no noise
    for sigma in (0.02, 0.05):
        noisy = smooth + sigma * torch.randn(smooth.shape, generator=gen)
        assert pixel_properties(noisy, ("noise",))["noise"] == pytest.approx([sigma] * 4, rel=0.1)
    assert pixel_properties(smooth, ("noise",))["noise"].max() < 1e-3


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(tmp_path, quality):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    image.save(tmp_path / "a.jpg", quality=quality)
    image.save(tmp_path / "a.png")
    props = file_properties(tmp_path / "a.jpg")
    assert props["jpeg_quality"] == pytest.approx(quality, abs=1)
    assert (props["width"], props["height"], props["aspect_ratio"]) == (80.0, 48.0, pytest.approx(80 / 48))
    assert math.isnan(file_properties(tmp_path / "a.png")["jpeg_quality"])


def test_numeric_manifest_attributes_become_properties_and_categories_do_not():
    rows = [{"iso": "100", "site": "A", "exposure": ""}, {"iso": "800", "site": "B", "exposure": "0.5"}]
    out = attribute_properties(rows)
    assert set(out) == {"attr.iso", "attr.exposure"}
    np.testing.assert_array_equal(out["attr.iso"], [100.0, 800.0])
    assert math.isnan(out["attr.exposure"][0]) and out["attr.exposure"][1] == 0.5


def test_words():
    assert describe("sharpness", higher=False) == "blurrier"
    assert describe("attr.iso", higher=True) == "higher in attr.iso"


def test_a_sample_gets_pixel_file_and_attribute_properties_and_the_screen_reads_them(tmp_path):
    """Class b's files are JPEGs saved at quality 40, class a's at 95: the screen names the compression."""
    rng = np.random.default_rng(1)
    labels = np.arange(40) % 2
    paths, attributes = [], []
    for i, label in enumerate(labels):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path, quality=40 if label else 95)
        paths.append(path)
        attributes.append({"iso": str(100 * (1 + i % 3))})
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1) for p in paths])
    props = image_properties(x, paths, attributes)
    assert set(props) == set(PIXEL_PROPERTIES) | {"width", "height", "aspect_ratio", "jpeg_quality", "attr.iso"}
    result = screen(props, labels, ["a", "b"])
    assert "width" in result.not_tested  # every file is 24 px wide
    compressed = result.find("jpeg_quality", "b")
    assert compressed.flagged and compressed.separation == 1.0
    assert compressed.sentence.startswith("class b images are more compressed (lower JPEG quality)")
    assert not result.find("attr.iso", "b").flagged
