"""GradientSHAP (Lundberg & Lee 2017, "expected gradients") by Captum, summed over colour channels.

SHAP values approximated as E[(x - b) * grad f(b + a (x + noise - b))] over baselines b drawn from
`baselines` (constant grey levels in pixel space; [0, 1] images), a ~ U(0, 1) and Gaussian noise of
`stdevs`. Signed; in expectation the map sums to f(x) - E[f(b)].

Captum draws its samples from numpy's and torch's global generators, per expanded batch, so one image's
draws would depend on its batch neighbours and on whatever ran before. Each image is therefore explained
by its own Captum call (its `n_samples` in one batch) under a generator state seeded with `seed` and
restored afterwards: maps are reproducible and independent of batching, and the caller's random state is
left as it was.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from captum.attr import GradientShap as CaptumGradientShap
from torch import nn

from explainers.errors import InputError
from explainers.gradients import InputGradientMethod
from explainers.params import Param
from explainers.registry import register


@register
class GradientShap(InputGradientMethod):
    name = "gradient_shap"
    reduction = "sum"
    schema = (Param("baselines", list, low=0, high=1), Param("n_samples", int, low=1), Param("stdevs", float, low=0),
              Param("seed", int))

    def __init__(self, model: nn.Module, *, baselines: tuple[float, ...] | list[float] = (0.0, 0.5, 1.0),
                 n_samples: int = 16, stdevs: float = 0.0, seed: int = 0):
        levels = tuple(float(b) for b in (baselines if isinstance(baselines, (list, tuple)) else [baselines]))
        if not levels or not all(0.0 <= b <= 1.0 for b in levels):
            raise InputError(f"gradient_shap baselines are grey levels in [0, 1], got {baselines!r}")
        if n_samples < 1 or stdevs < 0:
            raise InputError("gradient_shap needs n_samples >= 1 and stdevs >= 0")
        super().__init__(model, baselines=list(levels), n_samples=n_samples, stdevs=float(stdevs), seed=seed)

    def attribute(self, model, inputs, indices):
        p = self.params
        levels = torch.tensor(p["baselines"], dtype=inputs.dtype, device=inputs.device)
        baselines = levels.view(-1, 1, 1, 1).expand(len(levels), *inputs.shape[1:]).contiguous()
        explainer = CaptumGradientShap(model)
        maps = []
        for i in range(inputs.shape[0]):
            with seeded(p["seed"], inputs.device):
                maps.append(explainer.attribute(inputs[i:i + 1], baselines=baselines, n_samples=p["n_samples"],
                                                stdevs=p["stdevs"], target=indices[i:i + 1]))
        return torch.cat(maps)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """numpy's and torch's global generators seeded for the block, then restored."""
    state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(state)
