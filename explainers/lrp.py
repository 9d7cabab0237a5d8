"""Layer-wise Relevance Propagation (Bach et al. 2015) for CNNs, computed by zennit.

zennit rewrites each layer's gradient with an LRP rule (a *composite* maps rules to layer types) after
*canonizers* put the network in a form the rules assume (batch norm merged into the preceding conv;
torchvision resnets get their residual additions as modules so relevance splits between the branches
instead of being counted twice). We start the backward pass from the target logit itself (one-hot times the
logit), so the map is in logit units: under conservative rules its sum is the target logit, minus what
the biases and stabilisers absorb. Summed over colour channels; signed.

The model's own `Normalize` (explainers.loading.models) passes relevance through unchanged (zennit's `Pass` rule):
it is an affine map of the pixels, not a layer whose inputs compete for relevance.

Exported `.pt2` graphs and TorchScript are refused: their layers keep no types (an unflattened `.pt2`
layer is a graph module whose convolution is a function call), so no rule would be assigned and the
"relevance" would be a plain gradient times input under LRP's name.

Scope: networks built from convolutions, linear layers, batch norm, activations and pooling. A layer that
owns parameters but has no rule (LayerNorm, GroupNorm, attention, a layer-scale vector: ConvNeXt, ViT,
Swin) is refused with the alternatives, since plain gradients through it would silently break conservation.
Residual networks other than torchvision resnets have no canonizer in zennit: they run, but their relevance
is not conserved.
"""
from __future__ import annotations

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import COMPOSITES
from zennit.rules import Pass
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import BatchNorm, Linear

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.gradients import indices_for
from explainers.hooks import frozen
from explainers.loading.models import Normalize
from explainers.params import Param
from explainers.registry import register
from explainers.relu_modules import is_exported_graph, refuse_torchscript

# zennit's composites that need no input bounds (EpsilonGammaBox needs the pixel range in normalised space).
COMPOSITE_NAMES = ("epsilon_plus_flat", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat")
CANONIZERS = ("auto", "sequential_merge_batchnorm", "resnet", "vgg", "none")


@register
class LRP(Explainer):
    """`composite`: a zennit composite name (EpsilonPlusFlat by default); `canonizer`: `auto` picks zennit's
    ResNet / VGG canonizer for torchvision resnets / VGGs and SequentialMergeBatchNorm otherwise."""

    name = "lrp"
    family = "lrp"
    schema = (Param("composite", str, choices=COMPOSITE_NAMES), Param("canonizer", str, choices=CANONIZERS),
              Param("epsilon", float, low=0, open_low=True))

    def __init__(self, model: nn.Module, *, composite: str = "epsilon_plus_flat", canonizer: str = "auto",
                 epsilon: float = 1e-6):
        if composite not in COMPOSITE_NAMES:
            raise InputError(f"lrp composite {composite!r}: choose one of {', '.join(COMPOSITE_NAMES)}")
        if canonizer not in CANONIZERS:
            raise InputError(f"lrp canonizer {canonizer!r}: choose one of {', '.join(CANONIZERS)}")
        if not epsilon > 0:
            raise InputError(f"lrp epsilon must be > 0, got {epsilon}")
        refuse_torchscript(model, self.name, "assigns its rules by layer type (Conv2d, Linear, BatchNorm)")
        refuse_exported_graph(model)
        refuse_unruled_layers(model)
        super().__init__(model, composite=composite, canonizer=canonizer, epsilon=float(epsilon))

    def make_composite(self):
        return COMPOSITES[self.params["composite"]](
            epsilon=self.params["epsilon"], layer_map=[(Normalize, Pass())],
            canonizers=canonizers_for(self.model, self.params["canonizer"]))

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        check_images(inputs)
        indices = indices_for(self.name, targets, inputs)
        was_training = self.model.training
        self.model.eval()  # batch-norm merging assumes running statistics
        try:
            with frozen(self.model), torch.enable_grad(), Gradient(self.model, self.make_composite()) as attributor:
                leaf = inputs.detach().clone().requires_grad_(True)
                output, relevance = attributor(leaf, lambda out: start_relevance(out, indices))
        finally:
            self.model.train(was_training)
        scores = output.detach().gather(1, indices[:, None])[:, 0]
        return SaliencyBatch(relevance.detach().sum(dim=1).float(), scores.float(), self.name)


def start_relevance(output: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The target logit on its class, 0 elsewhere: relevance starts as the score being explained."""
    one_hot = torch.zeros_like(output).scatter_(1, indices[:, None], 1.0)
    return output.detach() * one_hot


def canonizers_for(model: nn.Module, choice: str) -> list:
    if choice == "none":
        return []
    if choice == "auto":
        import torchvision

        kinds = {type(m) for m in model.modules()}
        if any(issubclass(k, torchvision.models.ResNet) for k in kinds):
            choice = "resnet"
        elif any(issubclass(k, torchvision.models.VGG) for k in kinds):
            choice = "vgg"
        else:
            choice = "sequential_merge_batchnorm"
    return [{"resnet": ResNetCanonizer, "vgg": VGGCanonizer,
             "sequential_merge_batchnorm": SequentialMergeBatchNorm}[choice]()]


def refuse_exported_graph(model: nn.Module) -> None:
    if is_exported_graph(model):
        raise InputError(
            "method 'lrp' assigns its rules by layer type (Conv2d, Linear, BatchNorm), and a .pt2 export keeps the "
            "layer tree but not the types (each layer is a graph of function calls); give the model as a state "
            "dict with \"architecture\" in its card, or use integrated_gradients or gradient_shap")


def refuse_unruled_layers(model: nn.Module) -> None:
    """InputError naming the first layer that owns parameters but has no LRP rule in the composites."""
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False)]
        if own and not isinstance(module, (Linear, BatchNorm)):
            raise InputError(
                f"lrp: layer {name or '<model>'} ({type(module).__name__}) has no LRP rule in zennit's composites "
                "(LRP here covers CNNs of convolutions, linear layers, batch norm, activations and pooling); "
                "use integrated_gradients or gradient_shap for this model")
