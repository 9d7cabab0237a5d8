"""One small random CNN saved twice, as a torch.export `.pt2` and as an ONNX export, with one card (non-trivial
mean/std, so the normalisation in front of the ONNX session is exercised); plus a fixed-batch-1 ONNX export."""
import json

import pytest
import torch
from torch import nn

SIZE = 16
CARD = {"task": "classification", "classes": ["cat", "dog"], "input_size": [SIZE, SIZE],
        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                      nn.ReLU())
        self.head = nn.Linear(8 * 8 * 8, 2)  # no global pooling: where things are changes the logits

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def export_onnx(net: nn.Module, path, dynamic: bool = True, batch: int = 2):
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.onnx.export(net.eval(), (torch.rand(batch, 3, SIZE, SIZE),), str(path), dynamo=True, dynamic_shapes=shapes,
                      external_data=False, verbose=False)
    return path


@pytest.fixture(scope="session")
def classifier_files(tmp_path_factory):
    """{"net", "pt2", "onnx", "onnx_batch1"}: the same weights in each file, one model.json per folder."""
    torch.manual_seed(3)
    net = SmallCNN().eval()
    root = tmp_path_factory.mktemp("black_box")
    files = {"net": net}
    for name in ("pt2", "onnx", "onnx_batch1"):
        (root / name).mkdir()
        (root / name / "model.json").write_text(json.dumps(CARD))
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.rand(2, 3, SIZE, SIZE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(root / "pt2" / "model.pt2"))
    files["pt2"] = root / "pt2" / "model.pt2"
    files["onnx"] = export_onnx(net, root / "onnx" / "model.onnx")
    files["onnx_batch1"] = export_onnx(net, root / "onnx_batch1" / "model.onnx", dynamic=False, batch=1)
    return files
