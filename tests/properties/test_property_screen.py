"""The model-free screen: a planted property is named per class; uncorrelated properties are not."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis.evidence.property_screen import delong_variance, screen
from analysis.stats.image_properties import pixel_properties
from sample_models import property_shortcut as ps

PLANTED = {"blur": ("sharpness", "lower", "blurrier"), "bright": ("brightness", "higher", "brighter"),
           "warm": ("warmth", "higher", "warmer")}


def _screen(kind, rho, seed, n=300):
    scenes = ps.render(n, kind, rho, seed)
    return screen(pixel_properties(ps.to_tensor(scenes.images)), scenes.labels, list(ps.CLASSES)), scenes


@pytest.mark.parametrize("kind", ps.KINDS)
def test_a_planted_property_is_flagged_by_name_for_its_class(kind):
    result, scenes = _screen(kind, 1.0, seed=11)
    prop, direction, word = PLANTED[kind]
    found = result.find(prop, "h")
    assert found.flagged and found.direction == direction
    assert found.separation >= 0.95 and found.interval[0] >= 0.9
    assert found.p_value_holm < 1e-10
    assert found.sentence.startswith(f"class h images are {word}")
    values = pixel_properties(ps.to_tensor(scenes.images))[prop]
    assert found.auc == pytest.approx(roc_auc_score(scenes.labels == 0, values))
    assert (found.n_class, found.n_rest) == (100, 200)


@pytest.mark.parametrize("kind", ps.KINDS)
def test_a_partly_planted_property_is_flagged_with_a_lower_auc(kind):
    prop, direction, _ = PLANTED[kind]
    found = _screen(kind, 0.85, seed=12)[0].find(prop, "h")
    assert found.flagged and found.direction == direction
    assert 0.75 < found.separation < 0.95


@pytest.mark.parametrize("kind,seed", [("clean", s) for s in range(5)] + [(k, 20) for k in ps.KINDS])
def test_uncorrelated_properties_are_never_flagged(kind, seed):
    result = _screen(kind, 0.5, seed)[0]
    assert result.flagged == []
    assert result.n_tests == 6 * 3 and result.correction == "Holm"


def test_delong_variance_matches_the_placement_values_computed_by_hand():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 6, 15).astype(float), rng.integers(1, 8, 22).astype(float)  # ties on purpose
    v10 = np.array([((neg < x).sum() + 0.5 * (neg == x).sum()) / len(neg) for x in pos])
    v01 = np.array([((pos > y).sum() + 0.5 * (pos == y).sum()) / len(pos) for y in neg])
    expected = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    assert delong_variance(pos, neg) == pytest.approx(expected)
    assert v10.mean() == pytest.approx(roc_auc_score(np.r_[np.ones(15), np.zeros(22)], np.r_[pos, neg]))


def test_properties_without_values_are_listed_as_not_tested():
    labels = np.arange(30) % 3
    result = screen({"jpeg_quality": np.full(30, np.nan), "width": np.full(30, 64.0),
                     "brightness": np.linspace(0, 1, 30)}, labels, ["a", "b", "c"])
    assert result.not_tested == {"jpeg_quality": "no finite values", "width": "the same value on every image"}
    assert {a.property for a in result.associations} == {"brightness"}


def test_an_underflowed_p_value_reads_as_a_bound_not_zero():
    """An exact test over thousands of images underflows to 0.0; the sentence says "< 1e-300", never "p = 0"."""
    from analysis.stats.p_values import p_equals

    assert p_equals(0.0) == "< 1e-300" and p_equals(1e-320) == "< 1e-300"
    assert p_equals(0.0123) == "= 0.012" and p_equals(1.13e-6) == "= 1.1e-06"
