"""Small networks for the saliency-method tests: hand-set ones with maps computable by hand, random ones."""
from __future__ import annotations

import torch
from torch import nn

from explainers.registry import METHODS, load_builtin_methods

load_builtin_methods()

# D-RISE: tests/detection. The attention methods need a ViT: TRANSFORMER_METHODS run on `TinyViT`s.
ALL_METHODS = sorted(name for name, cls in METHODS.items() if cls.model_kind == "classifier" and not cls.needs_attention)
TRANSFORMER_METHODS = sorted(name for name, cls in METHODS.items() if cls.needs_attention)

# Fast settings for tests; everything else is the method's default.
FAST_PARAMS = {"rise": {"n_masks": 240, "chunk": 40}, "smoothgrad": {"nt_samples": 4},
               "occlusion": {"perturbations_per_eval": 64},
               "integrated_gradients": {"n_steps": 8}, "gradient_shap": {"n_samples": 4}}


class HandSetNet(nn.Module):
    """1x1 conv with channels (R, G - B) -> global average pool -> linear with rows [2, -1] and [-1, 3].

    Layer `conv` keeps the input resolution, so every CAM is computable by hand and needs no upsampling.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]])[:, :, None, None])
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, 3.0]]))

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


class SmallCNN(nn.Module):
    """Random CNN with a downsampling body (layer `features[3]` at 1/4 resolution) and ReLU modules."""

    def __init__(self, num_classes: int = 5, inplace: bool = False):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(inplace=inplace),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(inplace=inplace),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class FullResCNN(nn.Module):
    """Random CNN whose target layer `features[2]` keeps the input resolution: cv2 resizing is then the
    identity, so pytorch-grad-cam's maps are comparable pixel for pixel."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def tiny_vits() -> dict:
    """Random 2-block ViTs on 32x32 inputs (8x8 patches, a 4x4 grid): timm's (fused attention) and torchvision's."""
    import timm
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                           num_classes=5)
    nn.init.normal_(tv.heads.head.weight, std=0.5)  # torchvision's zero-initialised head has no gradient
    return {"timm": timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32,
                                      patch_size=8, depth=2, embed_dim=16, num_heads=2).eval(),
            "torchvision": tv.eval()}


def make(name: str, model: nn.Module, layer: nn.Module | None = None, **params):
    cls = METHODS[name]
    params = {**FAST_PARAMS.get(name, {}), **params}
    if cls.needs_layer:
        params["layer"] = layer
    return cls(model, **params)


def hooks_on(model: nn.Module) -> list[str]:
    """Names of modules that still carry any hook."""
    names = []
    for name, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs"):
            if getattr(module, attr, None):
                names.append(f"{name or '<root>'}.{attr}")
    return names
