"""Property interventions on trained models: blur, brightness and colour-cast shortcuts are flagged by name
(by the screen too); clean models over five seeds are not flagged by the intervention."""
import numpy as np
import pytest
import torch

from analysis.evidence.property_interventions import Candidate, property_interventions
from analysis.evidence.property_screen import screen
from analysis.stats.image_properties import pixel_properties
from sample_models import property_shortcut as ps

pytestmark = pytest.mark.slow
N = 240  # the evidence sample: up to 3 looks of 100 rows per test
CLASSES = list(ps.CLASSES)
PLANTED = {"blur": ("sharpness", "lower", "blur", "blurring"), "bright": ("brightness", "higher", "brightness", "brightening"),
           "warm": ("warmth", "higher", "a warm colour cast", "warming")}


def audit(model, scenes):
    x = ps.to_tensor(scenes.images)
    found = screen(pixel_properties(x), scenes.labels, CLASSES)
    return found, property_interventions(model, x, scenes.labels, CLASSES, screen=found, seed=1)


@pytest.fixture(scope="module")
def shortcut_models():
    return {kind: ps.pixel_model(ps.train(kind, 1.0, seed=0)) for kind in ps.KINDS}


@pytest.mark.parametrize("kind", ps.KINDS)
def test_a_property_shortcut_is_flagged_by_name_by_the_screen_and_the_intervention(shortcut_models, kind):
    model = shortcut_models[kind]
    assert ps.property_drop(model, kind) > 0.5  # ground truth: the model leans on the property
    prop, direction, cue, verb = PLANTED[kind]
    found, result = audit(model, ps.render(N, kind, 1.0, seed=300))
    assert found.find(prop, "h").flagged and found.find(prop, "h").direction == direction
    top = result.results[0]
    assert (top.property, top.class_name, top.direction, top.flagged) == (prop, "h", direction, True)
    assert top.amount_source == "matched to the data"
    assert top.towards.rate >= 0.5 and top.towards.control_rate <= 0.15
    assert top.interval[0] > 0.3 and top.p_value_holm < 1e-6 and top.n == 100  # decided at the first look
    assert top.sentence.startswith(f"class h is predicted from {cue}: {verb} the other classes' images sends")
    assert abs(top.control_shift) < 0.1 * abs(top.move_shift)
    # other flags may follow (a net that learned "brighter: h" can send darker images to box: it does), never first
    assert all(r.effect <= top.effect for r in result.flagged)


@pytest.mark.parametrize("kind", ps.KINDS)
def test_a_shortcut_learned_elsewhere_is_flagged_on_audit_data_without_it(shortcut_models, kind):
    """The audit's images need not carry the cue: with no association to match, the default step tests it."""
    prop, direction, _, _ = PLANTED[kind]
    found, result = audit(shortcut_models[kind], ps.render(N, "clean", 0.5, seed=301))
    assert not found.flagged
    hit = result.find(prop, "h", direction)
    assert hit.flagged and hit.amount_source == "default step"
    # the control can send some images too (a net that never saw a cast vary reads the ramp's warmer half):
    # it costs power, never validity
    assert hit.towards.rate >= 0.3 and hit.effect >= 0.25


@pytest.mark.parametrize("seed", range(5))
def test_clean_models_are_not_flagged_and_say_what_they_exclude(seed):
    model = ps.pixel_model(ps.train("clean", 0.5, seed=seed))
    assert max(abs(ps.property_drop(model, kind)) for kind in ps.KINDS) < 0.08  # ground truth: no reliance
    found, result = audit(model, ps.render(N, "clean", 0.5, seed=400 + seed))
    assert not found.flagged
    assert result.flagged == []
    assert len(result.results) == 4 * 3 * 2 and result.design["n_tests"] == 24
    blur = result.find("sharpness", "h", "lower")
    assert blur.decision in ("excluded", "undecided") and blur.sentence.split(":")[0] in (
        "no evidence that class h is predicted from blur", "undecided whether class h is predicted from blur")


def test_the_towards_test_counts_exactly():
    """A model that answers h exactly when an image is brighter than 0.5: every count is known in advance."""
    class BrightnessReader(torch.nn.Module):
        def forward(self, x):
            bright = x.mean(dim=(1, 2, 3)) > 0.5
            return torch.stack([bright.float(), (~bright).float(), torch.zeros(len(x))], dim=1)

    levels = torch.linspace(0.3, 0.49, 100)  # flat grey images, all predicted "v"
    images = levels.view(-1, 1, 1, 1).expand(-1, 3, 8, 8).clone()
    labels = np.ones(100, dtype=np.int64)
    result = property_interventions(BrightnessReader(), images, labels, CLASSES,
                                    candidates=[Candidate("brightness", 0, "higher")])
    towards = result.results[0].towards
    expected = int((levels + 0.08 > 0.5).sum())  # brightened past 0.5; the control keeps every mean
    assert towards.n == 100 and towards.discordant == (expected, 0)
    assert towards.rate == expected / 100 and towards.control_rate == 0.0
    assert result.results[0].planned_looks == 1 and towards.p_value == towards.p_value_raw  # 100 rows: one look
    assert towards.p_value_raw == pytest.approx(0.5 ** expected)  # exact McNemar: b of b + 0 discordant pairs
    assert result.results[0].away is None  # no image of class h in the sample
