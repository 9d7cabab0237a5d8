"""CAM methods on Vision Transformers: the default layer is pytorch-grad-cam's recipe (the last block's first
norm), the tokens are laid out on the patch grid without a user-written reshape, and the maps agree with
pytorch-grad-cam given its `reshape_transform` at the same layer.

pytorch-grad-cam returns relu(cam) min-max normalised and resized to the input; to compare the layer and the
reshape and nothing else, its signed weighted sum is recorded before that (`get_cam_image`) and ours is taken
before upsampling (`explain_on_grid`): signed maps on the layer's grid, so no image drops out to the ReLU. Score-CAM builds its masks by upsampling the activations to the input, and
pytorch-grad-cam does that with align_corners=True where we use pixel centres (align_corners=False), so
Score-CAM is compared on patch-size-1 models, whose masks need no resize.
"""
from __future__ import annotations

from functools import partial

import pytest
import timm
import torch
import torchvision
from pytorch_grad_cam import GradCAM as TheirGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as TheirGradCAMPlusPlus
from pytorch_grad_cam import LayerCAM as TheirLayerCAM
from pytorch_grad_cam import ScoreCAM as TheirScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from explainers.cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from explainers.errors import InputError
from explainers.layers import detect_target_layer, layer_layouts

THEIRS = {"gradcam": TheirGradCAM, "gradcam_pp": TheirGradCAMPlusPlus, "layercam": TheirLayerCAM,
          "scorecam": TheirScoreCAM}
OURS = {cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM)}
GRADIENT_CAMS = ("gradcam", "gradcam_pp", "layercam")


def tokens_to_map(prefix: int, grid: tuple[int, int]):
    """pytorch-grad-cam's ViT reshape_transform with the prefix and grid written in (its own has 1 and 14x14)."""
    def reshape(tensor):
        return tensor[:, prefix:].reshape(tensor.shape[0], *grid, tensor.shape[2]).transpose(2, 3).transpose(1, 2)
    return reshape


def channels_last_to_map(tensor):
    return tensor.permute(0, 3, 1, 2)


def _random_head(model, head):
    torch.nn.init.normal_(head.weight, std=0.5)  # torchvision initialises ViT heads to zero: no gradient at all
    return model.eval()


def tv_vit_b_16():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=64, num_classes=3)
    return _random_head(model, model.heads.head)


def tv_vit_tiny(size=32, patch=4):
    torch.manual_seed(0)
    model = VisionTransformer(image_size=size, patch_size=patch, num_layers=2, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=3)
    return _random_head(model, model.heads.head)


def timm_vit(name="vit_tiny_patch16_224", img_size=32, patch=8, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=3, img_size=img_size, patch_size=patch, depth=2,
                             embed_dim=16, num_heads=2, **kwargs).eval()


def timm_swin(img_size=32, patch=4, depths=(2, 2)):
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=3, img_size=img_size,
                             patch_size=patch, window_size=4, embed_dim=16, depths=depths,
                             num_heads=(2,) * len(depths)).eval()


def hf_vit():
    """A random tiny transformers ViT behind the loader's `.logits` unwrapper (pytorch-grad-cam's Hugging Face
    tutorial wraps it the same way, then explains `vit.encoder.layer[-1].layernorm_before`)."""
    from transformers import ViTConfig, ViTForImageClassification

    from explainers.loading.hf_loader import LogitsOf

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=3)
    return LogitsOf(ViTForImageClassification(config)).eval()


def tv_swin():
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=3).eval()


# (model id, factory, input size, expected default layer, pytorch-grad-cam reshape_transform, grid)
CASES = {
    "torchvision vit_b_16": (tv_vit_b_16, (64, 64), "encoder.layers.encoder_layer_11.ln_1",
                             partial(vit_reshape_transform, height=4, width=4), (4, 4)),
    "torchvision ViT tiny": (tv_vit_tiny, (32, 32), "encoder.layers.encoder_layer_1.ln_1",
                             partial(vit_reshape_transform, height=8, width=8), (8, 8)),
    "timm ViT 32x48": (partial(timm_vit, img_size=(32, 48)), (32, 48), "blocks.1.norm1", tokens_to_map(1, (4, 6)),
                       (4, 6)),
    "timm ViT 4 registers": (partial(timm_vit, reg_tokens=4), (32, 32), "blocks.1.norm1", tokens_to_map(5, (4, 4)),
                             (4, 4)),
    "timm DeiT distilled": (partial(timm_vit, "deit_tiny_distilled_patch16_224"), (32, 32), "blocks.1.norm1",
                            tokens_to_map(2, (4, 4)), (4, 4)),
    "timm Swin": (timm_swin, (32, 32), "layers.1.blocks.1.norm1", channels_last_to_map, (4, 4)),
    "torchvision Swin": (tv_swin, (32, 32), "features.3.1.norm1", channels_last_to_map, (4, 4)),
    "Hugging Face ViT": (hf_vit, (32, 32), "model.vit.layers.1.layernorm_before", tokens_to_map(1, (4, 4)), (4, 4)),
}
# Patch size 1: the layer's grid is the input's, so Score-CAM's mask resize is the identity on both sides.
SCORECAM_CASES = {
    "torchvision ViT tiny p1": (partial(tv_vit_tiny, size=8, patch=1), (8, 8), "encoder.layers.encoder_layer_1.ln_1",
                                partial(vit_reshape_transform, height=8, width=8), (8, 8)),
    "timm DeiT distilled p1 8x6": (partial(timm_vit, "deit_tiny_distilled_patch16_224", img_size=(8, 6), patch=1),
                                   (8, 6), "blocks.1.norm1", tokens_to_map(2, (8, 6)), (8, 6)),
    "timm Swin p1": (partial(timm_swin, img_size=8, patch=1, depths=(2,)), (8, 8), "layers.0.blocks.1.norm1",
                     channels_last_to_map, (8, 8)),
}
AGREEMENT = [(case, method) for case in CASES for method in GRADIENT_CAMS] + \
            [(case, "scorecam") for case in SCORECAM_CASES]


@pytest.fixture(scope="module")
def models():
    built = {}

    def get(case):
        if case not in built:
            built[case] = (CASES | SCORECAM_CASES)[case][0]()
        return built[case]
    return get


def signed_cams(theirs_cls):
    """pytorch-grad-cam's own weighted sum (`get_cam_image`, after its reshape_transform), recorded before its
    ReLU, min-max scaling and resize: the signed map at the layer's grid, what ours is before upsampling."""
    class Recording(theirs_cls):
        def get_cam_image(self, *args, **kwargs):
            self.signed = super().get_cam_image(*args, **kwargs)
            return self.signed
    return Recording


@pytest.mark.parametrize("case", list(CASES | SCORECAM_CASES))
def test_default_layer_is_the_last_blocks_first_norm(case, models):
    _, size, expected, _, _ = (CASES | SCORECAM_CASES)[case]
    assert detect_target_layer(models(case), size) == expected


@pytest.mark.parametrize("case, method", AGREEMENT)
def test_agrees_with_pytorch_grad_cam_and_its_reshape_transform(case, method, models):
    _, size, layer_name, reshape, grid = (CASES | SCORECAM_CASES)[case]
    model = models(case)
    layer = dict(model.named_modules())[layer_name]
    torch.manual_seed(1)
    x, t = torch.rand(4, 3, *size).repeat_interleave(3, dim=0), torch.arange(3).repeat(4)  # every class
    ours = OURS[method](model, layer=layer).explain_on_grid(x, t).maps
    assert ours.shape == (12, *grid)
    with signed_cams(THEIRS[method])(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        cam.batch_size = 64
        cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    theirs = torch.from_numpy(cam.signed).float()
    cosine = torch.nn.functional.cosine_similarity(ours.flatten(1), theirs.flatten(1))
    assert cosine.min() >= 0.999, (case, method, cosine)
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4 * theirs.abs().max())


def test_full_resolution_map_is_the_grid_map_upsampled(models):
    model = models("timm ViT 32x48")
    x, t = torch.rand(2, 3, 32, 48), torch.tensor([0, 2])
    explainer = GradCAM(model, layer=model.blocks[1].norm1)
    grid, full = explainer.explain_on_grid(x, t), explainer.explain(x, t)
    expected = torch.nn.functional.interpolate(grid.maps[:, None], size=(32, 48), mode="bilinear",
                                               align_corners=False)[:, 0]
    assert full.maps.shape == (2, 32, 48)
    torch.testing.assert_close(full.maps, expected)


def test_a_layer_after_the_last_attention_block_is_refused_with_the_fix(models):
    model = models("timm ViT 32x48")
    x, t = torch.rand(2, 3, 32, 48), torch.tensor([0, 2])
    with pytest.raises(InputError, match=r"prefix \(class\) token only.*blocks\[-1\]\.norm1"):
        GradCAM(model, layer=model.norm).explain(x, t)  # the final norm: only the class token reaches the head


def test_a_layer_that_is_not_on_the_patch_grid_is_refused_with_the_fix(models):
    model = models("timm ViT 32x48")
    x, t = torch.rand(1, 3, 32, 48), torch.tensor([0])
    with pytest.raises(InputError, match=r"does not lie on the patch grid of a 32x48 image.*blocks\[-1\]\.norm1"):
        GradCAM(model, layer=model.blocks[1].attn.q_norm).explain(x, t)  # (B, heads, N, head_dim)


def test_the_listing_shows_token_layers_with_their_grid(models):
    layouts = {name: layout for name, _, layout in layer_layouts(models("timm ViT 4 registers"), (32, 32))}
    assert layouts["blocks.1.norm1"].describe() == "tokens: 5 prefix + 4x4 patches"
    assert layouts["patch_embed.proj"].describe() == "4x4 map"
    swin = {name: layout for name, _, layout in layer_layouts(models("timm Swin"), (32, 32))}
    assert swin["layers.1.blocks.1.norm1"].describe() == "4x4 map, channels last"
