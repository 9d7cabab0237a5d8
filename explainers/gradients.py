"""Input-gradient methods, computed by Captum and reduced over colour channels to one map per image.

Each method takes class-index targets (Captum's interface). Weights are frozen for the call, so no weight
gradient is ever accumulated on the user's model. `scores` are the target logits on the clean input: where
Captum's first forward is on the clean input (saliency, guided backprop) they are read from it, so the
scores cost no extra forward; the others (IG's steps and SmoothGrad's copies are never the clean input) run
one no-grad forward for them.
"""
from __future__ import annotations

import warnings
from typing import ClassVar

import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.hooks import frozen
from explainers.params import Param
from explainers.registry import register
from explainers.relu_modules import refuse_torchscript, relu_modules
from explainers.targets import class_indices


class InputGradientMethod(Explainer):
    """Shared call: class indices in, Captum attribution (B, C, H, W) out, reduced over channels by `reduction`."""

    family = "gradient"
    reduction: ClassVar[str]  # "max_abs" or "sum"
    first_forward_is_clean: ClassVar[bool] = False  # Captum's first forward sees the clean inputs

    def attribute(self, model: nn.Module, inputs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Captum attribution with `model` (the user's model wrapped to keep its first output)."""
        raise NotImplementedError

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        check_images(inputs)
        indices = indices_for(self.name, targets, inputs)
        model = KeepsFirstOutput(self.model)
        with frozen(self.model):
            # Our own leaf that requires grad: the caller's tensor is left untouched.
            attributions = self.attribute(model, inputs.detach().clone().requires_grad_(True), indices).detach()
            if self.first_forward_is_clean:
                outputs = model.first_output
            else:
                with torch.no_grad():
                    outputs = self.model(inputs)
        scores = outputs.gather(1, indices[:, None])[:, 0]
        if self.reduction == "max_abs":
            maps = attributions.abs().amax(dim=1)
        else:
            maps = attributions.sum(dim=1)
        return SaliencyBatch(maps.float(), scores.float(), self.name)


class KeepsFirstOutput(nn.Module):
    """The model, keeping (detached) the output of its first call: the clean-input logits come for free when
    the attribution's first forward is on the clean inputs. A module, so Captum's guided backprop still finds
    and hooks the ReLUs inside; it has no parameters of its own."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.first_output: torch.Tensor | None = None

    def forward(self, *args):
        output = self.model(*args)
        if self.first_output is None:
            self.first_output = output.detach()
        return output


def indices_for(method: str, targets, inputs: torch.Tensor) -> torch.Tensor:
    """Class indices on the inputs' device, one per image; Captum-backed methods take nothing else."""
    try:
        indices = class_indices(targets).to(inputs.device)
    except TypeError as exc:
        raise InputError(f"{method} takes class-index targets (a LongTensor of shape (B,)): {exc}") from exc
    if indices.shape[0] != inputs.shape[0]:
        raise InputError(f"{method}: {indices.shape[0]} targets for a batch of {inputs.shape[0]} images")
    return indices


@register
class Saliency(InputGradientMethod):
    """Simonyan et al. 2014: max over channels of |d score / d pixel|."""

    name = "saliency"
    reduction = "max_abs"
    first_forward_is_clean = True

    def __init__(self, model: nn.Module):
        super().__init__(model)

    def attribute(self, model, inputs, indices):
        return CaptumSaliency(model).attribute(inputs, target=indices, abs=True)


@register
class IntegratedGradients(InputGradientMethod):
    """Sundararajan et al. 2017, from a constant grey-level baseline (0 = black), summed over channels.

    Signed; completeness: the map sums to f(x) - f(baseline) up to the integration error.
    """

    name = "integrated_gradients"
    reduction = "sum"
    schema = (Param("baseline", float, low=0, high=1), Param("n_steps", int, low=1),
              Param("internal_batch_size", int, low=1))

    def __init__(self, model: nn.Module, *, baseline: float = 0.0, n_steps: int = 32,
                 internal_batch_size: int = 64):
        if not 0.0 <= baseline <= 1.0:
            raise InputError(f"integrated_gradients baseline is a pixel value in [0, 1], got {baseline}")
        if n_steps < 1 or internal_batch_size < 1:
            raise InputError("integrated_gradients n_steps and internal_batch_size must be >= 1")
        super().__init__(model, baseline=float(baseline), n_steps=n_steps,
                         internal_batch_size=internal_batch_size)

    def attribute(self, model, inputs, indices):
        p = self.params
        return CaptumIntegratedGradients(model).attribute(
            inputs, baselines=p["baseline"], target=indices, n_steps=p["n_steps"],
            internal_batch_size=max(p["internal_batch_size"], inputs.shape[0]),
        )


@register
class SmoothGrad(InputGradientMethod):
    """Smilkov et al. 2017: mean of |gradient| over noisy copies (Captum's NoiseTunnel(Saliency) smoothgrad).

    The noise (std `stdevs` in pixel units, [0, 1] images) is drawn once per call from a seeded generator on
    the inputs' device and shared by every image of the batch, so an image's map does not depend on which
    other images share its batch (NoiseTunnel draws per image from the global generator). Captum's Saliency
    runs `nt_samples_batch_size` noisy copies of the whole batch per backward.
    """

    name = "smoothgrad"
    reduction = "max_abs"
    schema = (Param("nt_samples", int, low=1), Param("stdevs", float, low=0), Param("seed", int),
              Param("nt_samples_batch_size", int, low=1))

    def __init__(self, model: nn.Module, *, nt_samples: int = 16, stdevs: float = 0.15, seed: int = 0,
                 nt_samples_batch_size: int = 8):
        if nt_samples < 1 or nt_samples_batch_size < 1 or stdevs < 0:
            raise InputError("smoothgrad needs nt_samples >= 1, nt_samples_batch_size >= 1, stdevs >= 0")
        super().__init__(model, nt_samples=nt_samples, stdevs=float(stdevs), seed=seed,
                         nt_samples_batch_size=nt_samples_batch_size)

    def attribute(self, model, inputs, indices):
        p = self.params
        generator = torch.Generator(device=inputs.device).manual_seed(p["seed"])
        noise = torch.randn(p["nt_samples"], *inputs.shape[1:], generator=generator, device=inputs.device)
        noise = noise * p["stdevs"]
        saliency = CaptumSaliency(model)
        total = torch.zeros_like(inputs)
        for start in range(0, p["nt_samples"], p["nt_samples_batch_size"]):
            chunk = noise[start:start + p["nt_samples_batch_size"]]
            noisy = (inputs.detach()[None] + chunk[:, None]).flatten(0, 1)  # (k * B, C, H, W), sample-major
            grads = saliency.attribute(noisy.requires_grad_(True), target=indices.repeat(chunk.shape[0]), abs=True)
            total += grads.view(chunk.shape[0], *inputs.shape).sum(dim=0)
        return total / p["nt_samples"]


@register
class GuidedBackprop(InputGradientMethod):
    """Springenberg et al. 2015: gradients through ReLUs keep only positive signal; summed over channels.

    Captum modifies `nn.ReLU` modules only. A `.pt2`'s relus are functional calls in its graphs, so they are
    made `nn.ReLU` modules for the call (`explainers.relu_modules`): the same map as on the eager model.
    TorchScript is refused (its relus cannot be reached); functional relus in a user's eager `forward` stay
    plain gradients (Captum's rule).
    """

    name = "guided_backprop"
    reduction = "sum"
    first_forward_is_clean = True

    def __init__(self, model: nn.Module):
        refuse_torchscript(model, self.name, "changes the backward pass of the model's ReLU modules")
        super().__init__(model)

    def attribute(self, model, inputs, indices):
        with warnings.catch_warnings(), relu_modules(model):
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return CaptumGuidedBackprop(model).attribute(inputs, target=indices)
