"""Targets are small callables: `target(model_output) -> (B,) scores`.

One mechanism serves classifiers, taggers, segmenters and detectors: an explainer only needs a scalar per
image to differentiate or to compare across perturbations. Taggers: `TagTarget` (one tag's logit per row),
`MultiLabelTargets` (one row per positive tag). Segmenters: `SegmentationTarget` (a class's logits summed
over its pixels, as pytorch-grad-cam's `SemanticSegmentationTarget`); `segmentation_logits` reads a
segmenter's output (torchvision's dict with "out", or the tensor itself).
"""
from __future__ import annotations

from typing import Callable, Mapping, Union

import torch

from explainers.errors import InputError

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


def segmentation_logits(output) -> torch.Tensor:
    """(B, C, H, W) logits of a segmenter: torchvision's segmenters return {"out": ..., "aux": ...}."""
    if isinstance(output, Mapping):
        if "out" not in output:
            raise InputError(f"segmentation model returned a dict without 'out' (keys: {sorted(output)}); return "
                             "logits (B, C, H, W) or {'out': logits}")
        output = output["out"]
    return output


class SegmentationLogits(torch.nn.Module):
    """A segmenter as a module with (B, C, H, W) logits out (`segmentation_logits` of the network's output)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return segmentation_logits(self.net(x))


class SegmentationTarget:
    """Sum of one class's logits over a fixed set of pixels (Grad-CAM for segmenters).

    `mask` (H, W) or (B, H, W) bool: the class's predicted pixels from the clean forward (or its ground-truth
    pixels), fixed so the target does not move when the input is perturbed. `class_idx` is one index or one
    per image (B,). Output logits are (B, C, H, W), or torchvision's dict with "out".
    """

    def __init__(self, class_idx, mask: torch.Tensor):
        self.class_idx = torch.as_tensor(class_idx, dtype=torch.long).reshape(-1)
        self.mask = torch.as_tensor(mask).bool()

    def __call__(self, output) -> torch.Tensor:
        output = segmentation_logits(output)
        if output.ndim != 4:
            raise ValueError(f"SegmentationTarget needs logits (B, C, H, W), got {tuple(output.shape)}")
        mask = self.mask.to(output.device)
        if mask.shape[-2:] != output.shape[-2:]:
            raise ValueError(f"SegmentationTarget mask {tuple(mask.shape[-2:])} != logits {tuple(output.shape[-2:])}")
        idx = self.class_idx.to(output.device).expand(output.shape[0])
        chosen = output.gather(1, idx[:, None, None, None].expand(-1, 1, *output.shape[-2:]))[:, 0]
        return (chosen * mask.to(output.dtype)).sum(dim=(-2, -1))

    def repeat(self, times: int) -> "SegmentationTarget":
        """Targets for a batch tiled `times` along dim 0 (perturbation methods)."""
        mask = self.mask if self.mask.ndim == 2 else self.mask.repeat(times, 1, 1)
        idx = self.class_idx if len(self.class_idx) == 1 else self.class_idx.repeat(times)
        return SegmentationTarget(idx, mask)

    @classmethod
    def from_prediction(cls, logits: torch.Tensor, class_idx) -> "SegmentationTarget":
        """The pixels whose argmax is `class_idx` in a clean forward's logits (B, C, H, W)."""
        idx = torch.as_tensor(class_idx, dtype=torch.long).reshape(-1, 1, 1).to(logits.device)
        return cls(class_idx, logits.argmax(1) == idx)


class TagTarget(ClassTarget):
    """Logit of one tag per row (multi-label): a tagger's target has the shape contract of `ClassTarget`, so
    every method (Captum's included) explains a tag as it explains a class."""


class MultiLabelTargets:
    """One target per tag whose sigmoid probability is above `threshold` (the tagger's own predictions).

    `expand(logits)` returns (image_index (M,), TagTarget for M rows): explain `inputs[image_index]` with it to
    get one map per (image, predicted tag), all in one batched call. `from_tags(tags)` does the same for given
    tags (ground truth): `tags` (B, T) bool.
    """

    def __init__(self, threshold: float = 0.5):
        if not 0 < threshold < 1:
            raise InputError(f"MultiLabelTargets threshold must be in (0, 1), got {threshold}")
        self.threshold = threshold

    def expand(self, logits: torch.Tensor) -> tuple[torch.Tensor, TagTarget]:
        return self.from_tags(torch.sigmoid(logits) > self.threshold)

    @staticmethod
    def from_tags(tags: torch.Tensor) -> tuple[torch.Tensor, TagTarget]:
        image_idx, tag_idx = torch.nonzero(torch.as_tensor(tags).bool(), as_tuple=True)
        return image_idx, TagTarget(tag_idx)


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
