"""Moves shift their property; controls change the image as much and leave the property put."""
import numpy as np
import pytest
import torch

from analysis.evidence import property_moves as moves
from sample_models import property_shortcut as ps


@pytest.fixture(scope="module")
def images():
    return ps.to_tensor(ps.render(96, "clean", 0.5, seed=5, nuisance=False).images)


@pytest.mark.parametrize("prop", moves.MOVED_PROPERTIES)
@pytest.mark.parametrize("direction", ["higher", "lower"])
def test_the_move_shifts_the_property_and_its_control_does_not(images, prop, direction):
    amount = moves.DEFAULT_STEP[prop]
    moved = moves.move(images, prop, amount, direction)
    controlled = moves.control(images, prop, amount, direction, seeds=np.arange(len(images)))
    shift = moves.property_shift(images, moved, prop)
    assert np.sign(shift) == (1 if direction == "higher" else -1)
    kept = 0.45 if (prop, direction) == ("sharpness", "higher") else 0.15  # sharpening's control: see its docstring
    assert abs(moves.property_shift(images, controlled, prop)) < kept * abs(shift)
    change, change_control = (moved - images).pow(2).mean().sqrt(), (controlled - images).pow(2).mean().sqrt()
    assert change_control >= 0.9 * change  # the control is no smaller a change


def test_the_control_of_an_image_does_not_depend_on_its_batch(images):
    seeds = np.arange(100, 100 + len(images))
    for prop in moves.MOVED_PROPERTIES:
        whole = moves.control(images, prop, moves.DEFAULT_STEP[prop], "lower", seeds)
        part = moves.control(images[10:20], prop, moves.DEFAULT_STEP[prop], "lower", seeds[10:20])
        torch.testing.assert_close(whole[10:20], part, atol=1e-5, rtol=0)


def test_match_amount_recovers_the_planted_blur():
    clean = ps.render(128, "blur", 1.0, seed=6, nuisance=False)
    x = ps.to_tensor(clean.images)
    target = float(np.median(moves.pixel_properties(x[torch.from_numpy(clean.marked)], ("sharpness",))["sharpness"]))
    sigma = moves.match_amount(x[torch.from_numpy(~clean.marked)], "sharpness", "lower", target)
    assert sigma == pytest.approx(ps.BLUR_SIGMA, abs=0.1)
    assert moves.match_amount(x, "brightness", "lower", target=2.0) == 0.0  # already on the target's side
