"""The second explainer is sized by need: 32 images when every region's lift CI is clear of 1, more while one
is not (the robustness verdict reads lift > 1)."""
import numpy as np
import pytest
import pandas as pd
import torch

from analysis.evidence.stage import Subset, second_explainer_lifts


class _Loaded:
    def __init__(self, module):
        self.module = module


class _ReadsWeights(torch.nn.Module):
    """logit_1 = sum(weights * red^2) / 2: the plain gradient is weights * red, so it varies with the image."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.nn.Parameter(weights)

    def forward(self, x):
        score = 0.5 * (x[:, 0] ** 2 * self.weights).flatten(1).sum(1)
        return torch.stack([-score, score], 1)


def _batch(n, seed):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 8, 8, dtype=torch.long)
    masks[:, :2, :2] = 1  # "tag", top-left
    frame = pd.DataFrame({"image_id": np.arange(n), "target_idx": np.ones(n, dtype=np.int64)})
    return Subset(np.arange(n), torch.rand(n, 3, 8, 8, generator=gen), masks, frame)


REGIONS = pd.DataFrame({"region": ["background", "tag"], "region_id": [0, 1]})


def test_clear_lifts_stop_at_32_images_and_lifts_near_1_take_the_limit():
    batch = _batch(96, seed=0)
    on_tag = torch.full((8, 8), 0.01)
    on_tag[:2, :2] = 1.0
    clear = second_explainer_lifts(_Loaded(_ReadsWeights(on_tag)), batch, REGIONS, "saliency", seed=0,
                                   limit=64, batch_size=16)
    assert clear["n"] == 32 and clear["regions"]["tag"]["lift"] > 10
    assert clear["regions"]["tag"]["lift_ci"][0] > 1 and clear["regions"]["background"]["lift_ci"][1] < 1

    # equal weight on every pixel: every lift is ~1 with a CI that contains it, so the verdict could go
    # either way and the limit is spent
    flat = torch.ones(8, 8)
    near = second_explainer_lifts(_Loaded(_ReadsWeights(flat)), batch, REGIONS, "saliency", seed=0,
                                  limit=64, batch_size=16)
    assert near["n"] == 64
    lo, hi = near["regions"]["tag"]["lift_ci"]
    assert lo <= 1 <= hi and abs(near["regions"]["tag"]["lift"] - 1) < 0.2


def test_a_limit_that_is_not_a_multiple_of_the_batch_size_stops_at_the_limit():
    flat = torch.ones(8, 8)
    out = second_explainer_lifts(_Loaded(_ReadsWeights(flat)), _batch(96, seed=0), REGIONS, "saliency", seed=0,
                                 limit=40, batch_size=16)
    assert out["n"] == 40


class _Hooks:
    """A loaded model with reachable layers (an eager or .pt2 network) or without (TorchScript)."""

    def __init__(self, supports_hooks=True):
        self.module = torch.nn.Linear(2, 2)
        self.supports_hooks = supports_hooks


def test_the_second_explainer_is_of_another_declared_family(monkeypatch):
    """A CAM registered by a user (`@register`) gets plain gradients, not Grad-CAM (its own family): the
    choice reads the method's declared family, not a list of names."""
    from analysis.evidence.stage import second_method
    from explainers import registry
    from explainers.base import Explainer
    from explainers.cam import GradCAM

    registry.load_builtin_methods()  # into the real registry first: modules register once, when imported
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))

    @registry.register
    class EigenishCAM(GradCAM):
        name = "my_cam"

    assert second_method("my_cam", _Hooks()) == "saliency"
    families = {name: cls.family for name, cls in registry.METHODS.items()}
    for method, family in families.items():
        for hooks in (True, False):
            second = second_method(method, _Hooks(hooks))
            assert families[second] != family, (method, hooks, second)

    with pytest.raises(TypeError, match="set `family`"):
        @registry.register
        class NoFamily(Explainer):
            name = "no_family"
