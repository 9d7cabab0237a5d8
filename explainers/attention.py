"""Attribution methods made for Vision Transformers, read from the attention probabilities of every block.

- `attention_rollout` (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): each block's
  attention averaged over heads, plus the identity for the residual connection, rows renormalised:
  A' = (mean_h A + I) / 2; R = A'_L ... A'_1. Class-agnostic: it shows where information flows from.
- `transformer_attribution` (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for
  Interpreting Bi-Modal and Encoder-Decoder Transformers", eq. 5-6): gradient-weighted rollout,
  R = I, then per block R += mean_h((dA ⊙ A)^+) R, with dA the gradient of the target score w.r.t.
  the attention probabilities A: class-specific.
The map is the readout token's row of R over the patch tokens (the class token; the class and the
distillation token averaged for DeiT; for a model without a class token, the mean row of the patch
tokens), laid out on the patch grid (`explainers.tokens`) and upsampled bilinearly to the input.

Why here and not a library: Captum and zennit have no attention rollout; the reference code (Chefer's
repository) ships its own ViT with hooks built in, which a user's torchvision or timm model is not. So the
probabilities are captured from the user's own modules, with their own weights:
- timm `Attention` (ViT, DeiT, and models built from its blocks): its fused kernel never materialises the
  probabilities, so `fused_attn` is switched off for the call (timm's own unfused path, same maths) and
  its `attn_drop` (identity in eval) hands over the probabilities, in the graph;
- torchvision `nn.MultiheadAttention` (ViT `EncoderBlock`): called with `need_weights=False`, so the
  block's attention is recomputed from the module's own projections with the probabilities exposed, and
  that output replaces the module's (checked equal to it: a configuration this does not reproduce, such as
  masks, is refused rather than explained);
- Hugging Face attention (`ViTAttention`, `DeiTAttention`: `q_proj`, `k_proj`, `v_proj`, `o_proj`):
  with the default `sdpa` implementation no probabilities exist, so the block is recomputed from its own
  projections the same way, checked equal to its output (BEiT's relative position bias, for one, is not
  reproduced: refused), and returned in its place with the probabilities.
Window attention (Swin) mixes local windows only: rollout over it is not defined, and it is refused.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from explainers.base import Explainer, SaliencyBatch, check_images
from explainers.errors import InputError
from explainers.hooks import frozen
from explainers.registers import artifact_tokens
from explainers.module_types import type_name
from explainers.registry import register
from explainers.relu_modules import graph_modules
from explainers.targets import as_target
from explainers.tokens import grid_layout, prefix_token_count

NOT_A_VIT = ("needs a Vision Transformer with global self-attention (timm ViT/DeiT `Attention`, torchvision "
             "`nn.MultiheadAttention` or Hugging Face ViT/DeiT attention blocks, loaded from a state dict "
             "with \"architecture\" in the card or a Hugging Face folder); for other models use gradcam (it finds "
             "a transformer's last block) or a gradient method")


class AttentionCapture:
    """The attention probabilities (B, heads, N, N) of every self-attention call, in call order, and the
    residual stream entering the last attention block (B, N, D) for the register-artifact check."""

    def __init__(self):
        self.attentions: list[torch.Tensor] = []
        self.last_block_input: torch.Tensor | None = None


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules whose probabilities can be captured; an InputError for other models."""
    if any("Window" in type(m).__name__ for m in model.modules()):
        raise InputError(f"{type(model).__name__} uses window attention (Swin): attention methods {NOT_A_VIT}")
    modules = [m for m in model.modules()
               if _is_timm_attention(m) or _is_hf_attention(m) or isinstance(m, nn.MultiheadAttention)]
    if not modules and any("Attention" in type_name(m) for m in graph_modules(model)):
        raise InputError("attention methods read the attention probabilities inside the attention modules, which a "
                         ".pt2 export turns into graph calls that never expose them; give the model as a state dict "
                         "with \"architecture\" in its card, or use gradcam (it finds the exported transformer's "
                         "last block) or a gradient method")
    if not modules:
        raise InputError(f"{type(model).__name__}: attention methods {NOT_A_VIT}")
    return modules


@contextmanager
def captured_attention(model: nn.Module) -> Iterator[AttentionCapture]:
    """Hooks (and timm's `fused_attn` switched off) for the block only; everything restored in `finally`."""
    modules = attention_modules(model)
    capture = AttentionCapture()
    handles, fused = [], []
    try:
        for module in modules:
            if isinstance(module, nn.MultiheadAttention):
                handles.append(module.register_forward_hook(_multihead_hook(capture), with_kwargs=True))
            elif _is_hf_attention(module):
                handles.append(module.register_forward_hook(_hf_attention_hook(capture), with_kwargs=True))
            else:
                fused.append((module, module.fused_attn))
                module.fused_attn = False
                handles.append(module.attn_drop.register_forward_hook(
                    lambda _m, _i, output: capture.attentions.append(output)))
        block = _parent(model, modules[-1])
        if block is not None:
            handles.append(block.register_forward_pre_hook(_keep_block_input(capture)))
        yield capture
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in fused:
            module.fused_attn = flag


def _is_timm_attention(module: nn.Module) -> bool:
    return (all(hasattr(module, a) for a in ("fused_attn", "qkv", "attn_drop", "num_heads"))
            and "Window" not in type(module).__name__)


def _is_hf_attention(module: nn.Module) -> bool:
    """A transformers self-attention block with separate q/k/v/o projections (ViT, DeiT; others of the same
    shape run too, and the recomputation check refuses those it does not reproduce, BEiT's biased one)."""
    return (all(isinstance(getattr(module, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(hasattr(module, a) for a in ("num_attention_heads", "head_dim", "scaling"))
            and "Window" not in type(module).__name__)


def _parent(model: nn.Module, child: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if any(c is child for c in module.children()):
            return module
    return None


def _keep_block_input(capture: AttentionCapture):
    def hook(_module, inputs):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 3:
            capture.last_block_input = inputs[0].detach()
    return hook


def _multihead_hook(capture: AttentionCapture):
    def hook(mha: nn.MultiheadAttention, args, kwargs, output):
        names = ("query", "key", "value")
        query, key, value = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names))
        unsupported = (not (query is key is value) or mha.in_proj_weight is None or mha.bias_k is not None
                       or mha.add_zero_attn or kwargs.get("attn_mask") is not None
                       or kwargs.get("key_padding_mask") is not None or kwargs.get("is_causal"))
        if unsupported:
            raise InputError("attention methods support self-attention without masks only "
                             f"(nn.MultiheadAttention(x, x, x)); {NOT_A_VIT}")
        x = query if mha.batch_first else query.transpose(0, 1)
        batch, tokens, dim = x.shape
        heads = mha.num_heads
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.reshape(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(dim // heads)).softmax(dim=-1)
        out = mha.out_proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))
        out = out if mha.batch_first else out.transpose(0, 1)
        original = output[0]
        if not torch.allclose(out, original, rtol=1e-3, atol=1e-4 * float(original.detach().abs().max()) + 1e-6):
            raise InputError(f"could not reproduce this nn.MultiheadAttention's output; {NOT_A_VIT}")
        capture.attentions.append(attention)
        return (out, *output[1:])
    return hook


def _hf_attention_hook(capture: AttentionCapture):
    def hook(module: nn.Module, args, kwargs, output):
        x = args[0] if args else kwargs.get("hidden_states")
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        if mask is not None or not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise InputError(f"attention methods support unmasked self-attention only ({type(module).__name__}); "
                             f"{NOT_A_VIT}")
        batch, tokens, _ = x.shape
        shape = (batch, tokens, -1, module.head_dim)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (module.q_proj, module.k_proj, module.v_proj))
        attention = (q @ k.transpose(-2, -1) * module.scaling).softmax(dim=-1)
        out = module.o_proj((attention @ v).transpose(1, 2).reshape(batch, tokens, -1))
        original = output[0] if isinstance(output, tuple) else output
        if not torch.allclose(out, original, rtol=1e-3, atol=1e-4 * float(original.detach().abs().max()) + 1e-6):
            raise InputError(f"could not reproduce this {type(module).__name__}'s output (a relative position "
                             f"bias?); {NOT_A_VIT}")
        capture.attentions.append(attention)
        return (out, attention, *output[2:]) if isinstance(output, tuple) else out
    return hook


class AttentionMethod(Explainer):
    """Base of the attention-flow methods: capture, then `block_weights` per block, then the rollout."""

    family = "attention"
    needs_attention: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = False

    def __init__(self, model: nn.Module, **params):
        super().__init__(model, **params)
        attention_modules(model)  # refuse a model without supported attention now, not on the first batch

    def block_weights(self, attention: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """(B, N, N) from one block's probabilities (B, heads, N, N) and their gradient."""
        raise NotImplementedError

    def rollout(self, weights: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        check_images(inputs)
        target = as_target(targets)
        with frozen(self.model), captured_attention(self.model) as capture:
            with torch.set_grad_enabled(self.uses_gradients):
                # Weights are frozen, so the input is what makes the attention part of a graph.
                scores = target(self.model(inputs.detach().requires_grad_(self.uses_gradients)))
                attentions = capture.attentions
                if not attentions:
                    raise InputError(f"{type(self.model).__name__}: no attention module ran; {NOT_A_VIT}")
                grads = (torch.autograd.grad(scores.sum(), attentions, allow_unused=True) if self.uses_gradients
                         else [None] * len(attentions))
        with torch.no_grad():
            relevance = self.rollout([self.block_weights(a.detach().float(), None if g is None else g.float())
                                      for a, g in zip(attentions, grads)])
            tokens = relevance.shape[-1]
            prefix = prefix_token_count(self.model)
            layout = grid_layout((inputs.shape[0], tokens, 1), inputs.shape[-2:], prefix_tokens=prefix)
            if layout is None:
                raise InputError(f"{tokens} tokens do not lie on the patch grid of a {inputs.shape[-2]}x"
                                 f"{inputs.shape[-1]} image; {NOT_A_VIT}")
            rows = _readout_rows(self.model, layout.prefix) if layout.prefix else slice(None)
            grid = relevance[:, rows].mean(dim=1)[:, layout.prefix:].reshape(-1, *layout.grid)
            maps = F.interpolate(grid[:, None], size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            artifacts = None
            if capture.last_block_input is not None and capture.last_block_input.shape[1] == tokens:
                artifacts = artifact_tokens(layout.to_map(capture.last_block_input))
        return SaliencyBatch(maps.float(), scores.detach().float(), self.name, artifact_tokens=artifacts)


def _readout_rows(model: nn.Module, prefix: int) -> list[int]:
    """The tokens the head reads: the class token, and DeiT's distillation token beside it (timm's distilled
    DeiT; Hugging Face's only `...WithTeacher`, whose plain `DeiTForImageClassification` reads the class token)."""
    distilled = any(getattr(m, "dist_token", None) is not None or type(m).__name__.endswith("WithTeacher")
                    for m in model.modules())
    return [0, 1] if distilled and prefix >= 2 else [0]


@register
class AttentionRollout(AttentionMethod):
    """Abnar & Zuidema 2020: (mean over heads + identity) / 2, rows renormalised, multiplied over blocks."""

    name = "attention_rollout"

    def block_weights(self, attention, grad):
        eye = torch.eye(attention.shape[-1], device=attention.device)
        mixed = 0.5 * attention.mean(dim=1) + 0.5 * eye
        return mixed / mixed.sum(dim=-1, keepdim=True)

    def rollout(self, weights):
        relevance = weights[0]
        for block in weights[1:]:
            relevance = block @ relevance
        return relevance


@register
class TransformerAttribution(AttentionMethod):
    """Chefer et al. 2021 (generic attention explainability): R = I; R += mean_h((dA ⊙ A)^+) R per block."""

    name = "transformer_attribution"
    uses_gradients = True

    def block_weights(self, attention, grad):
        if grad is None:  # a block the score does not depend on: it adds nothing
            return torch.zeros_like(attention[:, 0])
        return (grad * attention).clamp(min=0).mean(dim=1)

    def rollout(self, weights):
        eye = torch.eye(weights[0].shape[-1], device=weights[0].device)
        relevance = eye.expand_as(weights[0]).clone()
        for block in weights:
            relevance = relevance + block @ relevance
        return relevance
