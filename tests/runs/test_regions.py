"""Region shares on planted maps: exact numbers worked out by hand."""
import numpy as np
import pytest
import torch

from analysis.stats.regions import grid_regions, grid_shares, masked_shares, region_shares


def test_map_on_a_square_puts_all_mass_on_that_region():
    saliency = torch.zeros(8, 8)
    saliency[2:4, 2:4] = 1.0
    mask = np.zeros((8, 8), np.int32)
    mask[2:4, 2:4] = 1
    mass, area = region_shares(saliency, mask, [0, 1])
    np.testing.assert_allclose(mass, [0.0, 1.0])
    np.testing.assert_allclose(area, [60 / 64, 4 / 64])


def test_uniform_map_on_half_half_mask():
    mask = np.zeros((6, 10), np.int32)
    mask[:, 5:] = 7
    mass, area = region_shares(np.ones((6, 10)), mask, [7, 0])
    np.testing.assert_allclose(mass, [0.5, 0.5])
    np.testing.assert_allclose(area, [0.5, 0.5])


def test_map_is_resized_bilinearly_to_a_larger_mask():
    # 4x4 map, left two columns 1. Bilinear (align_corners=False) to 8 columns gives per row
    # [1, 1, 1, 0.75, 0.25, 0, 0, 0]: left half 3.75, right half 0.25.
    saliency = torch.zeros(4, 4)
    saliency[:, :2] = 1.0
    mask = np.zeros((8, 8), np.int32)
    mask[:, 4:] = 1
    mass, area = region_shares(saliency, mask, [0, 1])
    np.testing.assert_allclose(mass, [3.75 / 4, 0.25 / 4], atol=1e-12)
    np.testing.assert_allclose(area, [0.5, 0.5])


def test_negative_saliency_is_ignored_and_absent_regions_have_zero_area():
    saliency = np.full((4, 4), -5.0)
    saliency[0, 0] = 2.0
    saliency[3, 3] = 6.0
    mask = np.zeros((4, 4), np.int32)
    mask[3, 3] = 2
    mass, area = region_shares(saliency, mask, [0, 2, 9])
    np.testing.assert_allclose(mass, [0.25, 0.75, 0.0])
    np.testing.assert_allclose(area, [15 / 16, 1 / 16, 0.0])


def test_map_without_positive_mass_gives_zero_mass_not_nan():
    mass, area = region_shares(-np.ones((4, 4)), np.zeros((4, 4), np.int32), [0])
    assert mass.tolist() == [0.0]
    assert area.tolist() == [1.0]


def test_region_shares_match_a_loop_over_regions_on_random_input():
    rng = np.random.default_rng(1)
    saliency = rng.normal(size=(16, 16))
    mask = rng.integers(0, 5, size=(16, 16)).astype(np.int32)
    mass, area = region_shares(saliency, mask, [4, 0, 2])
    positive = np.clip(saliency, 0, None)
    expected = [positive[mask == r].sum() / positive.sum() for r in (4, 0, 2)]
    np.testing.assert_allclose(mass, expected, rtol=1e-6)
    np.testing.assert_allclose(area, [(mask == r).mean() for r in (4, 0, 2)])


def test_grid_regions_cells_border_and_centre():
    regions = dict(grid_regions(6, 9))
    assert list(regions)[:3] == ["top-left", "top-centre", "top-right"]
    assert list(regions)[-3:] == ["bottom-right", "border", "centre"]
    cells = np.stack([regions[name] for name in list(regions)[:9]])
    assert (cells.sum(axis=0) == 1).all()  # the 3x3 cells partition the image
    assert regions["top-left"][:2, :3].all() and regions["top-left"].sum() == 6
    assert regions["bottom-right"][4:, 6:].all() and regions["bottom-right"].sum() == 6
    # border ring: 1 row (6/6) and round(9/6)=2 columns on each side
    assert regions["border"].sum() == 6 * 9 - 4 * 5
    assert (regions["border"] ^ regions["centre"]).all()


def test_grid_shares_locate_a_corner_peak():
    saliency = torch.zeros(6, 6)
    saliency[0, 0] = 3.0
    saliency[2:4, 2:4] = 1.0  # middle-centre cell, inside the centre region
    names, mass, area = grid_shares(saliency, 6, 6)
    shares = dict(zip(names, mass))
    assert shares["top-left"] == pytest.approx(3 / 7)
    assert shares["middle-centre"] == pytest.approx(4 / 7)
    assert shares["border"] == pytest.approx(3 / 7)
    assert shares["centre"] == pytest.approx(4 / 7)
    assert dict(zip(names, area))["centre"] == pytest.approx(16 / 36)


def test_masked_shares_allow_overlap():
    masks = np.zeros((2, 2, 2), bool)
    masks[0, 0] = True
    masks[1] = True
    mass, area = masked_shares(np.array([[1.0, 1.0], [2.0, 0.0]]), masks)
    np.testing.assert_allclose(mass, [0.5, 1.0])
    np.testing.assert_allclose(area, [0.5, 1.0])
