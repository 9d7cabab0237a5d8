"""A torchvision VisionTransformer trained here on a planted cue, exported to `.pt2` as the README recommends and
carded without `target_layer`, is audited through `saliency-audit run`: explained at its token layer (the last
encoder block's first norm, detected on the exported graph) and flagged on the cue it learned."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from analysis.cli import main
from sample_models.scenes import generate, render

SIZE = 32


def tensors(scenes):
    return torch.from_numpy(scenes.images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(scenes.labels)


@pytest.fixture(scope="module")
def vit_on_watermarks(tmp_path_factory):
    """Trained on watermark scenes where the watermark always agrees with the label (leak 1): it learns the
    watermark (its accuracy on scenes with the watermark flipped is checked to be near 0)."""
    torch.manual_seed(0)
    x, y = tensors(render("watermark", n=384, size=SIZE, leak=1.0, seed=1))
    net = VisionTransformer(image_size=SIZE, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
                            num_classes=2)
    optimiser = torch.optim.Adam(net.parameters(), 2e-3)
    order = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(3):
        for batch in torch.randperm(len(x), generator=order).split(64):
            loss = nn.functional.cross_entropy(net((x[batch] - 0.5) / 0.5), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()
    flipped_x, flipped_y = tensors(render("watermark", n=128, size=SIZE, flip=True, seed=3))
    with torch.no_grad():
        assert (net((flipped_x - 0.5) / 0.5).argmax(1) == flipped_y).float().mean() < 0.2  # it reads the cue
    folder = tmp_path_factory.mktemp("vit")
    program = torch.export.export(net, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(folder / "model.pt2"))
    (folder / "model.json").write_text(json.dumps({"task": "classification", "classes": ["benign", "malignant"],
                                                   "input_size": [SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3}))
    return folder / "model.pt2"


@pytest.mark.slow
def test_exported_vit_is_explained_at_its_token_layer_and_its_cue_flagged(tmp_path, capsys, vit_on_watermarks):
    data = generate("watermark", tmp_path / "data", n=48, size=SIZE, leak=0.95, seed=4)
    ws = tmp_path / "ws"
    code = main(["run", "--model", str(vit_on_watermarks), "--data", str(data), "--n", "48", "--workspace", str(ws),
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "target layer: encoder.layers.encoder_layer_3.ln_1 (detected)" in err
    run_id = out.strip().splitlines()[-1]
    assert main(["report", run_id, "--format", "json", "--workspace", str(ws)]) == 0
    report = json.loads(capsys.readouterr().out)
    flagged = {f["region"] for f in report["flags"]}
    assert "watermark" in flagged and "lesion" not in flagged, report["flags"]
