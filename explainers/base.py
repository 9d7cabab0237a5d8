"""What every explainer is: keyword parameters at construction, one call on a batch.

`explain(inputs, targets) -> SaliencyBatch`. Inputs are images in [0, 1] (B, C, H, W) on the model's
device; the model owns its normalisation (see `explainers.loading.models`), so perturbation baselines and fills
live in pixel space. Maps are raw, signed float32 at input resolution, never min-max normalised per image:
dataset-level comparison needs the magnitudes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from explainers.errors import InputError
from explainers.params import Param
from explainers.targets import Target

FAMILIES = ("cam", "gradient", "perturbation", "lrp", "attention")


@dataclass(frozen=True)
class SaliencyBatch:
    maps: torch.Tensor  # (B, H, W) float32, signed, input resolution
    scores: torch.Tensor  # (B,) the target's score on the unperturbed input (detached)
    method: str
    # (B, h, w) bool on the explained layer's patch grid: outlier-norm tokens (register artifacts,
    # `explainers.registers`); None where the method has no token layer (CNN maps, pixel-space methods).
    artifact_tokens: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)  # per-image side results, e.g. RISE's masks used (B,)


class Explainer:
    """Base of all saliency methods. Subclasses set `name` and implement `explain`.

    `model_kind`: "classifier" methods take a module returning logits (B, C); "detector" methods (D-RISE)
    take a callable returning per-image detections, so the classification runner refuses them.
    `needs_layer`: the method hooks an internal layer (CAM family); such methods refuse models without
    reachable layers (TorchScript) with an `InputError` that says how to export a `.pt2` instead.
    `needs_attention`: the method reads a Vision Transformer's attention probabilities (`explainers.attention`)
    and refuses other models with an `InputError`.
    `black_box`: the method needs nothing but the model's outputs (perturbation methods); only such methods
    accept a model that runs outside autograd (a `BlackBox`, e.g. ONNX Runtime), see `refuse_black_box`.
    `family` (one of `FAMILIES`): what kind of evidence the map is; the evidence's second explainer is taken
    from another family. `schema`: the keyword parameters (`explainers.params.Param`), checked before a run
    is created (`explainers.registry.check_params`).
    """

    name: ClassVar[str]
    family: ClassVar[str]
    schema: ClassVar[tuple[Param, ...]] = ()
    needs_layer: ClassVar[bool] = False
    needs_attention: ClassVar[bool] = False
    black_box: ClassVar[bool] = False
    model_kind: ClassVar[str] = "classifier"  # what `model` is: a module returning logits, or a "detector"
    # True when `explain` first calls the target on the model's output for the unperturbed batch, so a caller
    # can read the logits from the target (`targets.ObservedOutput`) instead of running its own forward.
    observes_clean_output: ClassVar[bool] = False

    def __init__(self, model: nn.Module, **params: Any):
        refuse_black_box(type(self), model)
        self.model = model
        self.params = dict(params)

    def explain(self, inputs: torch.Tensor, targets: Target | torch.Tensor) -> SaliencyBatch:
        raise NotImplementedError

    @classmethod
    def needs(cls) -> tuple[str, ...]:
        """What the method needs of a model: "layer" (a hookable layer), "attention" (a ViT's attention),
        "weights" (gradients or parameters: not a black box)."""
        return (("layer",) * cls.needs_layer + ("attention",) * cls.needs_attention
                + ("weights",) * (not cls.black_box))

    def config(self) -> dict[str, Any]:
        """Hashable, JSON-able description of this explainer: the cache key and what the run records."""
        return {"method": self.name, **{k: v for k, v in sorted(self.params.items()) if _jsonable(v)}}


class BlackBox(nn.Module):
    """A module whose forward runs outside PyTorch (ONNX Runtime): outputs only, no gradients, no layers.

    `source` names the user's file in error messages.
    """

    source: str = "the model"


def refuse_black_box(method: type[Explainer], model: Any) -> None:
    """The one place where gradient and CAM methods refuse a black-box model, with the fix."""
    if method.black_box or not isinstance(model, nn.Module):
        return
    box = next((m for m in model.modules() if isinstance(m, BlackBox)), None)
    if box is not None:
        raise InputError(
            f"{box.source}: method {method.name!r} needs gradients or layer hooks, which an ONNX model (run by "
            "onnxruntime, no PyTorch inside) does not have; use occlusion or rise (drise for detectors), or export "
            "a .pt2 for gradient methods: torch.export.save(torch.export.export(model.eval(), (x,), "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}), 'model.pt2')")


def is_black_box(model: Any) -> bool:
    return isinstance(model, nn.Module) and any(isinstance(m, BlackBox) for m in model.modules())


def _jsonable(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, type(None), list, tuple))


def check_images(inputs: torch.Tensor) -> None:
    """Refuse what is not a float image batch early, with the fix, instead of a shape error deep in a model."""
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise InputError(f"explain() takes a float image batch (B, C, H, W) in [0, 1]; got {shape}. "
                         "Stack images with torch.stack and convert with .float() / 255.")
