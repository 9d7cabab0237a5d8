"""One forward per image in the main pass: for a method that scores the clean forward first (Grad-CAM), the
logits, prediction and target come from the explainer's own forward, with the same numbers as the no-grad
forward it replaces; a method that cannot (Captum's saliency takes class indices) still gets its logits."""
from __future__ import annotations

import pytest
import torch

from analysis.runs.tasks.classification import forward_and_explain
from explainers.loading.models import load_model
from explainers.registry import make_explainer
from tests.runs.helpers import write_model


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(write_model(tmp_path_factory.mktemp("model")))


def _counting(module):
    calls = {"n": 0}
    forward = module.forward

    def counted(x):
        calls["n"] += 1
        return forward(x)

    module.forward = counted
    return calls, forward


@pytest.mark.parametrize("target_mode", ["pred", "label"])
def test_gradcam_main_pass_runs_one_forward_with_the_two_forward_numbers(loaded, target_mode):
    images = torch.rand(6, 3, *loaded.card.input_size, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    explainer = make_explainer("gradcam", loaded.module, layer=loaded.layer("features"))
    calls, forward = _counting(loaded.module)
    try:
        one = forward_and_explain(images, labels, loaded, explainer, target_mode)
        assert calls["n"] == 1
        explainer.observes_clean_output = False  # this instance only: the path every other method takes
        calls["n"] = 0
        two = forward_and_explain(images, labels, loaded, explainer, target_mode)
        assert calls["n"] == 2
    finally:
        loaded.module.forward = forward
    with torch.no_grad():
        logits = loaded.module(images)
    expected_targets = logits.softmax(1).argmax(1) if target_mode == "pred" else labels
    assert torch.equal(one[1], expected_targets) and torch.equal(two[1], expected_targets)
    torch.testing.assert_close(one[0], logits, rtol=0, atol=0)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_method_taking_class_indices_still_gets_the_logits(loaded):
    images = torch.rand(4, 3, *loaded.card.input_size, generator=torch.Generator().manual_seed(1))
    explainer = make_explainer("saliency", loaded.module)
    assert not explainer.observes_clean_output
    logits, targets, maps, scores, _ = forward_and_explain(images, torch.zeros(4, dtype=torch.long), loaded,
                                                        explainer, "pred")
    with torch.no_grad():
        expected = loaded.module(images)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert torch.equal(targets, expected.argmax(1)) and maps.shape == (4, *loaded.card.input_size)
    torch.testing.assert_close(scores, expected.gather(1, targets[:, None])[:, 0], rtol=1e-6, atol=1e-6)
