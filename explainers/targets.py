"""Targets are small callables: `target(model_output) -> (B,) scores`.

One mechanism serves classifiers, taggers, segmenters and detectors: an explainer only needs a scalar per
image to differentiate or to compare across perturbations.
"""
from __future__ import annotations

from typing import Callable, Union

import torch

Target = Callable[[torch.Tensor], torch.Tensor]


class ClassTarget:
    """Logit of one class per image (the usual classifier target).

    `indices` is kept public: Captum-backed methods take class indices, not callables.
    """

    def __init__(self, indices: torch.Tensor | list[int]):
        self.indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        idx = self.indices.to(output.device)
        if output.shape[0] != idx.shape[0]:
            raise ValueError(f"ClassTarget has {idx.shape[0]} indices for a batch of {output.shape[0]}")
        return output.gather(1, idx[:, None]).squeeze(1)

    def repeat(self, times: int) -> "ClassTarget":
        """Targets for a batch that was tiled `times` along dim 0 (perturbation / integration steps)."""
        return ClassTarget(self.indices.repeat(times))


def as_target(targets: Union[Target, torch.Tensor, list[int]]) -> Target:
    """Accept class indices or a callable target."""
    if callable(targets) and not isinstance(targets, torch.Tensor):
        return targets
    return ClassTarget(targets)


def class_indices(targets: Union[Target, torch.Tensor, list[int]]) -> torch.Tensor:
    """Class indices for methods that need them (Captum); refuses arbitrary callables clearly."""
    target = as_target(targets)
    if isinstance(target, ClassTarget):
        return target.indices
    raise TypeError(f"{type(target).__name__} is not a class-index target; this method needs class indices")


class ObservedOutput:
    """A target that keeps the first model output it scores (`output`, detached): for explainers whose first
    target call is the clean forward (`Explainer.observes_clean_output`), the caller reads the logits from
    the explainer's own forward instead of running a second one."""

    def __init__(self, inner: Target):
        self.inner, self.output = inner, None

    @property
    def indices(self) -> torch.Tensor:
        return self.inner.indices

    def observe(self, output: torch.Tensor) -> None:
        if self.output is None:
            self.output = output.detach()

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        self.observe(output)
        return self.inner(output)


class PredictedClass(ObservedOutput):
    """The logit of the class the model predicts, decided on the first output scored (the clean forward:
    softmax, then the first maximum, as a no-grad forward would pick it) and fixed for later calls."""

    def __init__(self):
        super().__init__(None)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.inner is None:
            self.observe(output)
            probs = torch.softmax(self.output.float().nan_to_num(0.0), dim=1)
            self.inner = ClassTarget(probs.max(dim=1).indices)
        return self.inner(output)
