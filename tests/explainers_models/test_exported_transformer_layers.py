"""The default CAM layer is found on exported transformers too: a `.pt2` keeps the module tree but every module
is a graph (`InterpreterModule`); the class each had before export (`_ty`) says which is the last attention
block and its first norm. ViT, Swin and ConvNeXt exported get the eager model's layer and the same Grad-CAM."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from explainers.layers import detect_target_layer
from explainers.list_layers import main as list_layers
from explainers.loading.models import Normalize, load_model
from explainers.registry import make_explainer

def vit() -> nn.Module:
    net = VisionTransformer(image_size=32, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
                            num_classes=2)
    nn.init.normal_(net.heads.head.weight, std=0.5)  # torchvision zero-initialises the head: no gradient at all
    return net


NETS = {
    "vit": (vit, "encoder.layers.encoder_layer_3.ln_1"),
    "swin": (lambda: SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                     window_size=[4, 4], num_classes=2), "features.3.1.norm1"),
    "convnext": (lambda: ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=2),
                 "features"),
}
CARD = {"task": "classification", "classes": ["a", "b"], "input_size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}


def exported(net: nn.Module, folder) -> object:
    folder.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(net.eval(), (torch.rand(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(folder / "model.pt2"))
    (folder / "model.json").write_text(json.dumps(CARD))  # no target_layer
    return folder / "model.pt2"


@pytest.mark.parametrize("kind", list(NETS))
def test_exported_model_gets_the_eager_default_layer_and_the_same_gradcam(tmp_path, kind):
    build, expected = NETS[kind]
    torch.manual_seed(0)
    net = build().eval()
    assert detect_target_layer(net, (32, 32)) == expected
    loaded = load_model(exported(net, tmp_path / kind))
    assert loaded.target_layer_name() == expected
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 1])
    eager = nn.Sequential(Normalize(CARD["mean"], CARD["std"]), net).eval()
    ours = make_explainer("gradcam", loaded.module, layer=loaded.layer(expected)).explain(x, t).maps
    reference = make_explainer("gradcam", eager, layer=eager[1].get_submodule(expected)).explain(x, t).maps
    assert float(reference.abs().max()) > 0
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))


def test_list_layers_marks_the_token_layer_of_an_exported_vit(tmp_path, capsys):
    torch.manual_seed(0)
    path = exported(NETS["vit"][0](), tmp_path / "vit")
    assert list_layers([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "encoder.layers.encoder_layer_3.ln_1\t(65, 64)\ttokens: 1 prefix + 8x8 patches\t<- target layer" in lines


class DetachedFeatures(nn.Module):
    """Spatial layers whose activations never reach the output's gradient: no CAM layer can be chosen."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.features(x).detach().mean(dim=(2, 3)))


def test_list_layers_lists_the_candidates_when_none_can_be_chosen(tmp_path, capsys):
    path = exported(DetachedFeatures(), tmp_path / "detached")
    assert list_layers([str(path)]) == 0
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == ["features", "features.0", "features.1"]
    assert "<- target layer" not in out
    assert err.startswith("no default target layer: no layer that CAM methods can hook was found (3 tried")
    assert err.count("\n") == 1 and len(err) < 400


def test_attention_methods_on_an_exported_vit_say_why_not(tmp_path):
    from explainers.errors import InputError

    torch.manual_seed(0)
    loaded = load_model(exported(vit(), tmp_path / "vit"))
    with pytest.raises(InputError, match=r"a \.pt2 export turns into graph calls.*state dict.*gradcam"):
        make_explainer("attention_rollout", loaded.module)
