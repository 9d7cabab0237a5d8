"""Every implementation the benchmark times, as `fn(images, targets) -> maps (N, H, W)` over a whole image set.

Peers are called the way their documentation shows: pytorch-grad-cam's CAM objects in a `with` block on a
batch, Captum's `attribute` on a batch (and, as an extra row, one image at a time as users write it), and
the original RISE code's shape (all N masks precomputed at full resolution, one image at a time). Each
pytorch-grad-cam object lives for one call only: its hooks would otherwise also fire inside our calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from bench.models import BenchModel

MapsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Impl:
    name: str  # "ours", "pytorch-grad-cam", "captum", "captum per-image loop", "RISE reference"
    fn: MapsFn
    normalised: bool = False  # output is relu + per-image min-max (pytorch-grad-cam): gate compares after that
    layer_hw: tuple[int, int] | None = None  # the CAM layer's resolution, for that comparison


@dataclass
class MethodCase:
    """One method on one model: our implementation, its peers, and the work it costs against the limit."""
    method: str
    ours: Impl
    peers: list[Impl]
    limit: str  # "fb" (forward + backward to the input) or "inf" (inference)
    passes: int  # forward(+backward) passes per image the method needs at minimum
    params: dict = field(default_factory=dict)


def batched(fn: MapsFn, batch_size: int) -> MapsFn:
    def run(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(images[i:i + batch_size], targets[i:i + batch_size])
                          for i in range(0, len(images), batch_size)])
    return run


def per_image(fn: MapsFn) -> MapsFn:
    return batched(fn, 1)


def ours(method: str, model: BenchModel, images_per_call: int, **params) -> Impl:
    from explainers.registry import METHODS, make_explainer

    make_explainer("gradcam", model.net, layer=model.layer)  # loads the registry
    if METHODS[method].needs_layer:
        explainer = make_explainer(method, model.net, layer=model.layer, **params)
    else:
        explainer = make_explainer(method, model.net, **params)
    return Impl("ours", batched(lambda x, t: explainer.explain(x, t).maps, images_per_call))


def grad_cam_library(method: str, model: BenchModel, images_per_call: int, **params) -> Impl:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": pytorch_grad_cam.GradCAM, "gradcam_pp": pytorch_grad_cam.GradCAMPlusPlus,
           "layercam": pytorch_grad_cam.LayerCAM, "scorecam": pytorch_grad_cam.ScoreCAM}[method]

    def call(x, t):
        with cls(model=model.net, target_layers=[model.layer]) as cam:
            if "batch_size" in params:
                cam.batch_size = params["batch_size"]
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
        return torch.from_numpy(maps)

    return Impl("pytorch-grad-cam", batched(call, images_per_call), normalised=True, layer_hw=layer_size(model))


def captum_layer_gradcam(model: BenchModel) -> MapsFn:
    from captum.attr import LayerAttribution, LayerGradCam

    def call(x, t):
        attributions = LayerGradCam(model.net, model.layer).attribute(x, target=t)
        return LayerAttribution.interpolate(attributions, tuple(x.shape[-2:]), "bilinear")[:, 0].detach()
    return call


def captum_saliency(model: BenchModel) -> MapsFn:
    from captum.attr import Saliency

    def call(x, t):
        return Saliency(model.net).attribute(x.clone().requires_grad_(True), target=t, abs=True).amax(1)
    return call


def captum_integrated_gradients(model: BenchModel, n_steps: int, internal_batch_size: int) -> MapsFn:
    from captum.attr import IntegratedGradients

    def call(x, t):
        return IntegratedGradients(model.net).attribute(
            x, baselines=0.0, target=t, n_steps=n_steps,
            internal_batch_size=max(internal_batch_size, len(x))).sum(1).detach()
    return call


def captum_occlusion(model: BenchModel, window: int, stride: int, perturbations_per_eval: int) -> MapsFn:
    from captum.attr import Occlusion

    def call(x, t):
        with torch.no_grad():
            return Occlusion(model.net).attribute(
                x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.5,
                target=t, perturbations_per_eval=perturbations_per_eval).mean(1)
    return call


def rise_reference(model: BenchModel, n_masks: int, cells: int, p: float, seed: int, chunk: int) -> MapsFn:
    """Petsiuk et al.'s released code: masks (N, H, W) generated once at full resolution, then per image
    `sal = softmax(model(image * masks)).T @ masks / N / p` in chunks. Our mask generator is reused so that
    both sides use the same masks and the gate can compare maps exactly."""
    from explainers.rise import draw_cells, smooth_masks

    size = model.size
    grids, shifts = draw_cells(n_masks, cells, p, seed, torch.device("cpu"))
    masks = smooth_masks(grids, shifts, size, size)  # (N, H, W), what the original code keeps in memory

    def explain_one(image, target):
        probabilities = []
        with torch.no_grad():
            for start in range(0, n_masks, chunk):
                probabilities.append(model.net(masks[start:start + chunk, None] * image).softmax(1)[:, target])
        scores = torch.cat(probabilities)
        return (scores @ masks.flatten(1)).view(size, size) / n_masks / p

    return lambda x, t: torch.stack([explain_one(x[i], int(t[i])) for i in range(len(x))])


def method_cases(model: BenchModel, methods: list[str], batch_size: int, settings: dict) -> list[MethodCase]:
    """The cases for `model`; `settings` holds per-method parameters chosen for this model size."""
    cases = []
    for method in methods:
        params = dict(settings.get(method, {}))
        if method in ("gradcam", "gradcam_pp", "layercam"):
            peers = [grad_cam_library(method, model, batch_size)]
            if method == "gradcam":
                peers += [Impl("captum", batched(captum_layer_gradcam(model), batch_size)),
                          Impl("captum per-image loop", per_image(captum_layer_gradcam(model)))]
            cases.append(MethodCase(method, ours(method, model, batch_size), peers, "fb", 1))
        elif method == "scorecam":
            channels = layer_channels(model)
            cases.append(MethodCase(method, ours(method, model, batch_size, **params),
                                    [grad_cam_library(method, model, batch_size, **params)], "inf", channels + 1,
                                    params))
        elif method == "saliency":
            cases.append(MethodCase(method, ours(method, model, batch_size), [
                Impl("captum", batched(captum_saliency(model), batch_size)),
                Impl("captum per-image loop", per_image(captum_saliency(model)))], "fb", 1))
        elif method == "integrated_gradients":
            n_steps, internal = params["n_steps"], params["internal_batch_size"]
            cases.append(MethodCase(method, ours(method, model, batch_size, **params), [
                Impl("captum", batched(captum_integrated_gradients(model, n_steps, internal), batch_size)),
                Impl("captum per-image loop", per_image(captum_integrated_gradients(model, n_steps, internal)))],
                "fb", n_steps, params))
        elif method == "occlusion":
            window, stride = params["window"], params["stride"]
            positions = ((model.size - window) // stride + 1) ** 2
            cases.append(MethodCase(method, ours(method, model, batch_size, **params), [
                Impl("captum", batched(captum_occlusion(model, window, stride, params["perturbations_per_eval"]),
                                       batch_size))], "inf", positions + 1, params))
        elif method == "rise":
            # Same images per forward on both sides: ours runs `chunk` masks x the batch, the reference one image.
            # The reference is the original estimator at every mask: compare with control_variate=False and
            # tolerance=0 (or fewer masks than a check), which `settings` sets.
            reference = {key: params[key] for key in ("n_masks", "cells", "p", "seed")}
            reference["chunk"] = params["chunk"] * batch_size
            cases.append(MethodCase(method, ours(method, model, batch_size, **params), [
                Impl("RISE reference", rise_reference(model, **reference))], "inf", params["n_masks"], params))
        else:
            raise ValueError(f"no benchmark case for method {method!r}")
    return cases


def _layer_shape(model: BenchModel) -> tuple[int, ...]:
    from explainers.hooks import capture_layer

    with torch.no_grad(), capture_layer(model.layer, graph_root=False) as captured:
        model.net(torch.zeros(1, 3, model.size, model.size))
    return tuple(captured.activation.shape)


def layer_channels(model: BenchModel) -> int:
    return _layer_shape(model)[1]


def layer_size(model: BenchModel) -> tuple[int, int]:
    return _layer_shape(model)[2:]


def as_grad_cam_library_output(maps: torch.Tensor, layer_hw: tuple[int, int]) -> torch.Tensor:
    """Our raw maps after pytorch-grad-cam's post-processing, for the gate.

    They apply relu and per-image min-max at the layer's resolution, then resize (cv2 bilinear, half-pixel
    centres, the same as torch's align_corners=False). Our maps are the bilinear upsampling U c U^T of the
    layer-resolution CAM c; U has full column rank, so c = pinv(U) map pinv(U)^T recovers it exactly (up
    to rounding), and their steps can then be applied in their order.
    """
    height, width = maps.shape[-2:]
    rows, cols = _upsampling(layer_hw[0], height), _upsampling(layer_hw[1], width)
    cam = torch.linalg.pinv(rows) @ maps.double() @ torch.linalg.pinv(cols).T
    flat = cam.clamp(min=0).flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    cam = ((flat - low) / (high - low + 1e-7)).view(cam.shape)
    return F.interpolate(cam[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def _upsampling(small: int, large: int) -> torch.Tensor:
    """(large, small) matrix of 1-D linear upsampling with align_corners=False."""
    basis = torch.eye(small, dtype=torch.float64)[:, None, :]
    return F.interpolate(basis, size=large, mode="linear", align_corners=False)[:, 0, :].T


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)
