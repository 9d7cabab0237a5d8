"""Attention rollout and Chefer et al.'s gradient-weighted rollout on timm and torchvision ViTs: an exact hand
case, a plain reference computation from attention probabilities obtained independently (timm's own unfused
path with `retain_grad`, torchvision's `need_weights=True`), and the models they refuse."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torchvision.models.vision_transformer import VisionTransformer

from explainers.attention import AttentionRollout, TransformerAttribution
from explainers.errors import InputError
from explainers.registers import artifact_pixels
from tests.explainers.saliency_nets import SmallCNN


def timm_vit(name="vit_tiny_patch16_224", depth=2, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=3, img_size=32, patch_size=8, depth=depth,
                             embed_dim=16, num_heads=2, **kwargs).eval()


def tv_vit():
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=3)
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


def upsampled(grid_maps, size=(32, 32)):
    return F.interpolate(grid_maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def reference_rollout(attentions, readout, prefix, grid):
    """Abnar & Zuidema, image by image: R = prod_l (0.5 mean_h A_l + 0.5 I), the readout rows over the patches."""
    maps = []
    for b in range(attentions[0].shape[0]):
        n = attentions[0].shape[-1]
        relevance = torch.eye(n, dtype=torch.float64)
        for a in attentions:
            mixed = 0.5 * a[b].double().mean(0) + 0.5 * torch.eye(n, dtype=torch.float64)
            relevance = (mixed / mixed.sum(1, keepdim=True)) @ relevance
        maps.append(relevance[readout].mean(0)[prefix:].reshape(grid))
    return torch.stack(maps).float()


def reference_chefer(attentions, grads, readout, prefix, grid):
    """Chefer et al. 2021 eq. 5-6, image by image: R = I; R += mean_h((grad * A)^+) R."""
    maps = []
    for b in range(attentions[0].shape[0]):
        n = attentions[0].shape[-1]
        relevance = torch.eye(n, dtype=torch.float64)
        for a, g in zip(attentions, grads):
            relevance = relevance + (g[b].double() * a[b].double()).clamp(min=0).mean(0) @ relevance
        maps.append(relevance[readout].mean(0)[prefix:].reshape(grid))
    return torch.stack(maps).float()


def timm_attention_and_grads(model, x, t):
    """The attention probabilities from timm's own unfused path, their gradients by retain_grad (Chefer's way)."""
    kept = []
    handles = [block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: kept.append(out))
               for block in model.blocks]
    for block in model.blocks:
        block.attn.fused_attn = False
    try:
        logits = model(x)
        for a in kept:
            a.retain_grad()
        logits.gather(1, t[:, None]).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        for block in model.blocks:
            block.attn.fused_attn = True
        model.zero_grad()
    return [a.detach() for a in kept], [a.grad for a in kept]


def test_uniform_attention_gives_the_hand_computed_rollout():
    # Zero query/key projections: every attention row is uniform, U = 11^T / N, and
    # ((U + I) / 2)^L = I / 2^L + (1 - 1 / 2^L) U, so each patch gets (1 - 1 / 2^L) / N from the class token.
    model = timm_vit(depth=3)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[:32].zero_()
            block.attn.qkv.bias[:32].zero_()
    result = AttentionRollout(model).explain(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    n_tokens = 1 + 16
    torch.testing.assert_close(result.maps, torch.full((2, 32, 32), (1 - 0.5 ** 3) / n_tokens), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name, prefix, readout", [("vit_tiny_patch16_224", 1, [0]),
                                                   ("deit_tiny_distilled_patch16_224", 2, [0, 1])])
def test_timm_maps_match_the_reference_computation(name, prefix, readout):
    model = timm_vit(name)
    torch.manual_seed(3)
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    attentions, grads = timm_attention_and_grads(model, x, t)
    rollout = AttentionRollout(model).explain(x, t)
    torch.testing.assert_close(rollout.maps, upsampled(reference_rollout(attentions, readout, prefix, (4, 4))))
    chefer = TransformerAttribution(model).explain(x, t)
    expected = upsampled(reference_chefer(attentions, grads, readout, prefix, (4, 4)))
    torch.testing.assert_close(chefer.maps, expected, rtol=1e-4, atol=1e-6)
    other = TransformerAttribution(model).explain(x, torch.tensor([1, 2, 0]))
    assert not torch.allclose(other.maps, chefer.maps), "the gradient-weighted rollout is class-specific"
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")), "timm's fused path restored"


def test_torchvision_rollout_matches_need_weights_attention():
    model = tv_vit()
    torch.manual_seed(4)
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    attentions = []

    def record(block, inputs, _output):  # the block's own MultiheadAttention, asked for its weights
        y = block.ln_1(inputs[0])
        attentions.append(block.self_attention(y, y, y, need_weights=True, average_attn_weights=False)[1])
    handles = [block.register_forward_hook(record) for block in model.encoder.layers]
    with torch.no_grad():
        logits = model(x)
    for handle in handles:
        handle.remove()
    result = AttentionRollout(model).explain(x, t)
    torch.testing.assert_close(result.maps, upsampled(reference_rollout(attentions, [0], 1, (4, 4))))
    torch.testing.assert_close(result.scores, logits.gather(1, t[:, None])[:, 0])
    chefer = TransformerAttribution(model).explain(x, t)
    assert torch.isfinite(chefer.maps).all() and (chefer.maps > 0).all()


def hf_vit(model_type="vit"):
    import transformers
    from explainers.loading.hf_loader import LogitsOf

    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type.split("-")[0], image_size=32, patch_size=8, hidden_size=16,
                                               num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                               num_labels=3)
    classes = {"vit": transformers.ViTForImageClassification, "deit": transformers.DeiTForImageClassification,
               "deit-teacher": transformers.DeiTForImageClassificationWithTeacher}
    model = classes[model_type](config)
    for head in ("classifier", "cls_classifier", "distillation_classifier"):
        if hasattr(model, head):
            torch.nn.init.normal_(getattr(model, head).weight, std=0.5)
    return LogitsOf(model.eval())


def hf_eager_attention_and_grads(model, x, t):
    """The probabilities Hugging Face itself returns (`output_attentions` on its eager path), their gradients by
    retain_grad: an independent capture of what our hook recomputes from the projections."""
    config = model.model.config
    before = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        out = model.model(pixel_values=x, output_attentions=True)
        for a in out.attentions:
            a.retain_grad()
        out.logits.gather(1, t[:, None]).sum().backward()
    finally:
        config._attn_implementation = before
        model.zero_grad()
    return [a.detach() for a in out.attentions], [a.grad for a in out.attentions], out.logits.detach()


@pytest.mark.parametrize("model_type, prefix, readout", [("vit", 1, [0]), ("deit", 2, [0]),
                                                          ("deit-teacher", 2, [0, 1])])
def test_hugging_face_vits_match_their_own_eager_attentions(model_type, prefix, readout):
    """DeiT's class head reads the class token only; with its teacher head the prediction averages both."""
    model = hf_vit(model_type)
    assert model.model.config._attn_implementation == "sdpa"  # the default path exposes no probabilities
    torch.manual_seed(5)
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    attentions, grads, logits = hf_eager_attention_and_grads(model, x, t)
    rollout = AttentionRollout(model).explain(x, t)
    torch.testing.assert_close(rollout.maps, upsampled(reference_rollout(attentions, readout, prefix, (4, 4))),
                               rtol=1e-4, atol=1e-6)
    chefer = TransformerAttribution(model).explain(x, t)
    torch.testing.assert_close(chefer.maps, upsampled(reference_chefer(attentions, grads, readout, prefix, (4, 4))),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(chefer.scores, logits.gather(1, t[:, None])[:, 0], rtol=1e-4, atol=1e-5)
    other = TransformerAttribution(model).explain(x, torch.tensor([1, 2, 0]))
    assert not torch.allclose(other.maps, chefer.maps), "the gradient-weighted rollout is class-specific"
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=1e-4, atol=1e-5)  # hooks gone, outputs as before


def test_a_hugging_face_block_with_a_relative_position_bias_is_refused():
    """BEiT adds a learned bias to the attention logits, which the recomputation does not: refused, not explained."""
    import transformers
    from explainers.loading.hf_loader import LogitsOf

    config = transformers.BeitConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, num_labels=3,
                                     use_relative_position_bias=True)
    torch.manual_seed(0)
    beit = transformers.BeitForImageClassification(config).eval()
    with pytest.raises(InputError, match="self-attention"):
        TransformerAttribution(LogitsOf(beit)).explain(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))


@pytest.mark.parametrize("cls", [AttentionRollout, TransformerAttribution])
def test_models_without_global_attention_are_refused_with_the_fix(cls):
    with pytest.raises(InputError, match="Vision Transformer with global self-attention.*use gradcam"):
        cls(SmallCNN())
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=3, img_size=32,
                             patch_size=4, window_size=4, embed_dim=16, depths=(2,), num_heads=(2,))
    with pytest.raises(InputError, match="window attention"):
        cls(swin)


def plant_artifact(model, row, col, scale=50.0):
    """Scale one patch token of the residual stream after the first block: a register-like high-norm token."""
    def hook(_module, _inputs, output):
        output = output.clone()
        output[:, model.num_prefix_tokens + row * 4 + col] *= scale
        return output
    return model.blocks[0].register_forward_hook(hook)


@pytest.mark.parametrize("method", ["attention_rollout", "transformer_attribution", "gradcam"])
def test_a_planted_high_norm_token_is_reported_and_a_clean_model_reports_none(method):
    from explainers.registry import make_explainer

    model = timm_vit(depth=3)
    params = {"layer": model.blocks[-1].norm1} if method == "gradcam" else {}
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    clean = make_explainer(method, model, **params).explain(x, t).artifact_tokens
    assert clean.shape == (2, 4, 4) and not clean.any()
    handle = plant_artifact(model, row=1, col=2)
    try:
        flagged = make_explainer(method, model, **params).explain(x, t).artifact_tokens
    finally:
        handle.remove()
    expected = torch.zeros(2, 4, 4, dtype=torch.bool)
    expected[:, 1, 2] = True
    assert torch.equal(flagged, expected)
    # at map resolution: every pixel the token's value reaches under bilinear upsampling, its 8x8 patch and
    # half a patch around it (16x16)
    pixels = artifact_pixels(flagged, (32, 32))
    assert pixels.shape == (2, 32, 32) and pixels.sum() == 2 * 256 and pixels[:, 4:20, 12:28].all()


def test_cnn_maps_have_no_artifact_tokens():
    from explainers.cam import GradCAM

    model = SmallCNN().eval()
    assert GradCAM(model, layer=model.features[3]).explain(torch.rand(1, 3, 32, 32), torch.tensor([0])).artifact_tokens is None
