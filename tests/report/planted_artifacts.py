"""The clean tiny ViT (watermark v5) with planted register artifacts: its last block adds a large fixed vector
to the tokens of the four top-left patches, which every other token (the class token included) is masked
from attending to, and the net blanks the top-left corner of its input. So those tokens have an outlier
norm (`explainers.registers` marks them), Grad-CAM's pooled channel weights light them up (most of the
map's mass on 6% of the image), and the decision cannot depend on the top-left corner at all: the case
Darcet et al. describe, with the model's indifference to the artifact patches true by construction
instead of assumed.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sample_models.architectures import TinyViT
from sample_models.scenes import SCENARIOS
from sample_models.train import MEAN, STD, VIT_SCENARIO, VIT_WEIGHTS_DIR, to_tensors

ARCHITECTURE = "tiny_vit_planted_registers"
GRID = 8  # TinyViT's 8x8 patch grid at 64 px
BLANK = 22  # the net blanks its input's top-left 22x22 px, the grid cell `top-left`: filling it changes nothing
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))
SCALE = 5.0  # the artifact's norm over the median token norm


class ArtifactBlock(nn.Module):
    """A torchvision EncoderBlock's modules (same names: the v5 state dict loads), with the artifact written
    into the residual stream and masked out of every other token's attention."""

    def __init__(self, block: nn.Module, width: int):
        super().__init__()
        self.ln_1, self.self_attention, self.ln_2, self.mlp = block.ln_1, block.self_attention, block.ln_2, block.mlp
        self.register_buffer("artifact", torch.zeros(width))

    def forward(self, x):
        n = x.shape[1]
        marks = torch.zeros(n, dtype=torch.bool, device=x.device)
        marks[[1 + row * GRID + col for row, col in CELLS]] = True
        x = x + marks[None, :, None].to(x.dtype) * self.artifact
        hidden = marks[None, :].expand(n, n) & ~torch.eye(n, dtype=torch.bool, device=x.device)
        h = self.ln_1(x)
        attended, _ = self.self_attention(h, h, h, attn_mask=hidden, need_weights=False)
        x = x + attended
        return x + self.mlp(self.ln_2(x))


class PlantedRegistersViT(TinyViT):
    def __init__(self, num_classes: int = 2):
        super().__init__(num_classes)
        self.blocks[-1] = ArtifactBlock(self.blocks[-1], self.head.in_features)

    def forward(self, x):
        blank = torch.ones_like(x[:1, :1])
        blank[..., :BLANK, :BLANK] = 0
        return super().forward(x * blank)  # 0: the mean colour in the net's normalised input


def build(images: torch.Tensor) -> PlantedRegistersViT:
    """v5's weights; the artifact vector points where both classes' Grad-CAM weights (at the last block's
    first norm, times its scale) are positive on average, so it draws map mass whatever the prediction."""
    net = PlantedRegistersViT(len(SCENARIOS[VIT_SCENARIO].classes))
    state = torch.load(VIT_WEIGHTS_DIR / VIT_SCENARIO / "v5" / "model.pt", weights_only=True)
    net.load_state_dict({**state, "blocks.1.artifact": torch.zeros(net.head.in_features)})
    net.eval()
    norm = net.blocks[1].ln_1
    captured = {}
    hook = norm.register_forward_hook(lambda module, args, out: captured.update(input=args[0], output=out))
    directions = []
    for k in range(2):
        (grad,) = torch.autograd.grad(net(images)[:, k].sum(), captured["output"])
        weights = grad[:, 1:].mean(dim=1).mean(dim=0)
        directions.append(weights / weights.norm())
    hook.remove()
    token_norm = captured["input"].detach().norm(dim=-1).median()
    u = (directions[0] + directions[1]) * norm.weight.detach()
    z = (u - u.mean()) / u.std()
    with torch.no_grad():
        net.blocks[1].artifact.copy_(z / z.norm() * token_norm * SCALE)
    return net


def write_model(folder: Path, images: torch.Tensor) -> Path:
    """State dict + card (no target_layer: the token layer is detected, as for a user's ViT)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    torch.save(build(images).state_dict(), path)
    card = {"task": "classification", "classes": list(SCENARIOS[VIT_SCENARIO].classes), "input_size": [64, 64],
            "mean": list(MEAN), "std": list(STD), "architecture": ARCHITECTURE}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def calibration_images(n: int = 32) -> torch.Tensor:
    from sample_models.scenes import render

    return to_tensors(render(VIT_SCENARIO, n=n, seed=11))[0]
