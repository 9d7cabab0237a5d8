"""Class activation maps: a weighted sum of one layer's activation channels, upsampled to the input.

`ActivationCAM` owns the hooks and the arithmetic; each method only says how to weight the channels
(pytorch-grad-cam's design). Transformer layers are laid out on the patch grid first (`explainers.tokens`:
prefix tokens dropped, Swin's channels-last permuted), exactly what pytorch-grad-cam's `reshape_transform`
does, but with the grid read from the input instead of written by the user. Maps are returned before any ReLU: raw and signed, so dataset-level statistics
keep their magnitudes (region statistics take the positive part later).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.hooks import capture_layer, frozen
from explainers.layers import LIST_LAYERS_HINT
from explainers.registers import artifact_tokens, reads_residual_input
from explainers.params import Param
from explainers.registry import register
from explainers.targets import Target, as_target
from explainers.tokens import GridLayout, grid_layout, prefix_token_count


class ActivationCAM(Explainer):
    """Base of the CAM family. Subclasses implement `channel_weights`.

    With gradients: one forward in which the layer's activation is the graph root, then one
    `torch.autograd.grad` for the whole batch, so the backward runs through the head only.
    """

    family = "cam"
    needs_layer: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = True
    observes_clean_output: ClassVar[bool] = True  # `explain` scores the clean forward first

    def __init__(self, model: nn.Module, *, layer: nn.Module, **params):
        super().__init__(model, **params)
        self.layer = layer  # an nn.Module, so not part of config(): the run records the layer name
        self._prefix_tokens = _UNKNOWN  # read from the model on first use (`explainers.tokens`)

    def channel_weights(
        self, inputs: torch.Tensor, target: Target, activations: torch.Tensor, grads: torch.Tensor | None
    ) -> torch.Tensor:
        """Weights broadcastable to the activation (B, C, h, w): (B, C, 1, 1) per channel or per position."""
        raise NotImplementedError

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        grid = self.explain_on_grid(inputs, targets)
        with torch.no_grad():
            maps = F.interpolate(grid.maps[:, None], size=inputs.shape[-2:], mode="bilinear", align_corners=False)
        return SaliencyBatch(maps[:, 0], grid.scores, self.name, artifact_tokens=grid.artifact_tokens)

    def explain_on_grid(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        """The maps at the layer's own resolution (h, w), before upsampling: what pytorch-grad-cam computes
        before its ReLU and resize, and the grid `artifact_tokens` live on."""
        check_images(inputs)
        target = as_target(targets)
        with frozen(self.model):
            with capture_layer(self.layer, graph_root=self.uses_gradients, keep_input=True) as captured:
                with torch.set_grad_enabled(self.uses_gradients):  # also inside a caller's no_grad
                    scores = target(self.model(inputs))
                    raw = _checked_activation(captured.activation, self.layer, inputs.shape[0])
                    layout = self._layout(raw, inputs)
                    grads = _gradient(scores, raw) if self.uses_gradients else None
            if grads is not None:
                _refuse_gridless_gradient(grads, layout, self.layer)
                grads = layout.to_map(grads)
            with torch.no_grad():
                activations = layout.to_map(raw.detach())
                weights = self.channel_weights(inputs, target, activations, grads)
                cam = (weights * activations).sum(dim=1)
                artifacts = _artifacts(layout, raw.detach(), captured.input, self.layer)
        return SaliencyBatch(cam.float(), scores.detach().float(), self.name, artifact_tokens=artifacts)

    def _layout(self, activation: torch.Tensor, inputs: torch.Tensor) -> GridLayout:
        if self._prefix_tokens is _UNKNOWN:
            self._prefix_tokens = prefix_token_count(self.model)
        layout = grid_layout(activation.shape, inputs.shape[-2:], prefix_tokens=self._prefix_tokens, layer=self.layer)
        if layout is None:
            raise InputError(
                f"layer {type(self.layer).__name__} outputs shape {tuple(activation.shape)}, which does not lie on "
                f"the patch grid of a {inputs.shape[-2]}x{inputs.shape[-1]} image (neither a (B, C, h, w) map nor "
                f"(B, prefix + h*w, D) tokens); pick a convolutional block or a transformer block's first norm "
                f"(e.g. blocks[-1].norm1) as \"target_layer\" ({LIST_LAYERS_HINT})")
        return layout


_UNKNOWN = object()


def _checked_activation(activation: torch.Tensor | None, layer: nn.Module, batch: int) -> torch.Tensor:
    if activation is None:
        raise InputError(f"layer {type(layer).__name__} was not run by the model's forward; "
                         f"pick a layer the forward pass goes through ({LIST_LAYERS_HINT})")
    if activation.ndim not in (3, 4) or activation.shape[0] != batch:
        raise InputError(f"layer {type(layer).__name__} outputs shape {tuple(activation.shape)}, not a "
                         "(B, C, h, w) feature map or (B, N, D) tokens; pick a convolutional block or a transformer "
                         f"block's first norm (e.g. blocks[-1].norm1) ({LIST_LAYERS_HINT})")
    return activation


def _refuse_gridless_gradient(grads: torch.Tensor, layout: GridLayout, layer: nn.Module) -> None:
    """After the last attention block only the class token reaches the head: the patch tokens get exactly zero
    gradient and every map would be blank. That is the layer's fault, not the images', so say so."""
    if layout.kind == "tokens" and layout.prefix and grads[:, :layout.prefix].any() and not grads[:, layout.prefix:].any():
        raise InputError(
            f"layer {type(layer).__name__}: the score depends on its prefix (class) token only, so its patch tokens "
            "have no gradient (a layer after the last attention block); pick the last block's first norm "
            f"(e.g. blocks[-1].norm1, encoder.layers[-1].ln_1) as \"target_layer\" ({LIST_LAYERS_HINT})")


def _artifacts(layout: GridLayout, output: torch.Tensor, layer_input: torch.Tensor | None,
               layer: nn.Module) -> torch.Tensor | None:
    """Outlier-norm patch tokens of a transformer layer (`explainers.registers`); None for CNN maps."""
    if layout.kind == "channels_first":
        return None
    source = output
    if reads_residual_input(layer) and layer_input is not None and layer_input.shape == output.shape:
        source = layer_input
    return artifact_tokens(layout.to_map(source))


def _gradient(scores: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    # Images are independent in eval mode, so the gradient of the sum is each image's own gradient.
    (grads,) = torch.autograd.grad(scores.sum(), activations, allow_unused=True)
    if grads is None:
        raise InputError("the target score does not depend on the chosen layer; pick a layer before the head")
    return grads


@register
class GradCAM(ActivationCAM):
    """Selvaraju et al. 2017: channel weight = spatial mean of the gradient."""

    name = "gradcam"

    def channel_weights(self, inputs, target, activations, grads):
        return grads.mean(dim=(2, 3), keepdim=True)


@register
class GradCAMPlusPlus(ActivationCAM):
    """Chattopadhyay et al. 2018, closed form of eq. 19 with exp(score) (as pytorch-grad-cam)."""

    name = "gradcam_pp"

    def channel_weights(self, inputs, target, activations, grads):
        grads_2 = grads.pow(2)
        grads_3 = grads_2 * grads
        sum_activations = activations.sum(dim=(2, 3), keepdim=True)
        alpha = grads_2 / (2 * grads_2 + sum_activations * grads_3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp(min=0) * alpha).sum(dim=(2, 3), keepdim=True)


@register
class LayerCAM(ActivationCAM):
    """Jiang et al. 2021: each position weighted by its own positive gradient."""

    name = "layercam"

    def channel_weights(self, inputs, target, activations, grads):
        return grads.clamp(min=0)


@register
class ScoreCAM(ActivationCAM):
    """Wang et al. 2020: channel weight = softmax over channels of the target's score on the image masked by
    that channel's upsampled, min-max normalised activation (pytorch-grad-cam's convention: the target's score,
    a logit for class targets, then softmax across channels).

    No gradients. Masked images are run `batch_size` at a time, all images of the batch per channel chunk.
    """

    name = "scorecam"
    uses_gradients = False
    schema = (Param("batch_size", int, low=1),)

    def __init__(self, model: nn.Module, *, layer: nn.Module, batch_size: int = 64):
        if batch_size < 1:
            raise InputError(f"scorecam batch_size must be >= 1, got {batch_size}")
        super().__init__(model, layer=layer, batch_size=batch_size)

    def channel_weights(self, inputs, target, activations, grads):
        batch, channels = activations.shape[:2]
        per_forward = max(1, self.params["batch_size"] // batch)
        channel_scores = []
        for start in range(0, channels, per_forward):
            chunk = activations[:, start:start + per_forward]
            masks = F.interpolate(chunk, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
            low = masks.amin(dim=(2, 3), keepdim=True)
            high = masks.amax(dim=(2, 3), keepdim=True)
            masks = (masks - low) / (high - low + 1e-8)
            # (k, B, C, H, W): channel-major so that each k-slice is a batch the target understands.
            masked = inputs[None] * masks.transpose(0, 1)[:, :, None]
            output = self.model(masked.flatten(0, 1))
            for k in range(masks.shape[1]):
                channel_scores.append(target(output[k * batch:(k + 1) * batch]))
        scores = torch.stack(channel_scores, dim=1)  # (B, C)
        return scores.softmax(dim=1)[:, :, None, None]
