"""A YOLOv8n built from Ultralytics' yaml (random weights, nothing downloaded) for the 64x64 boat/car scenes,
saved the way Ultralytics saves checkpoints and exported to ONNX the way `yolo export format=onnx` lays it out."""
import copy
import json
from pathlib import Path

import torch
from torch import nn

from explainers.loading.yolo import import_ultralytics
from sample_models.detection import CLASSES, SIZE

CLASS_BIAS = 1.0  # a random head proposes nothing (Ultralytics starts class logits near -9); this makes it detect
BOX_BIAS = 6.0


class RawHead(nn.Module):
    """The decoded head output only, (B, 4 + C, N): what an Ultralytics ONNX export returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)[0]


def build_yolo(seed: int = 0, config: str = "yolov8n.yaml") -> nn.Module:
    """A detector, or with `config="yolov8n-seg.yaml"` an instance segmenter (random mask prototypes and
    coefficients: masks that cover part of each box)."""
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    torch.manual_seed(seed)
    kind = SegmentationModel if "-seg" in config else DetectionModel
    model = kind(config, nc=len(CLASSES), verbose=False).eval()
    head = model.model[-1]
    with torch.no_grad():
        for module in model.modules():  # PyTorch's default init shrinks activations to ~1e-7 over 20 layers
            if isinstance(module, nn.Conv2d) and module.weight.requires_grad:  # not DFL's fixed 0..15 weights
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        for branch in head.cv3:
            branch[-1].weight.mul_(100.0)  # class logits that vary by ~0.1 between anchors and images
            branch[-1].bias[:] = CLASS_BIAS
        for branch in head.cv2:  # box sides peaked at one stride from the anchor: boxes of 2 strides, not the image
            branch[-1].weight.mul_(0.05)
            branch[-1].bias[:] = 0.0
            branch[-1].bias.view(4, head.reg_max)[:, 1] = BOX_BIAS
    return model.half().float()  # the weights a checkpoint holds (Ultralytics saves half precision)


def write_yolo_files(model: nn.Module, folder: Path, onnx: bool = True) -> dict:
    """{"pt": checkpoint (card opts in), "pt_untrusted": the same bytes without the opt-in, "onnx": export}."""
    folder.mkdir(parents=True, exist_ok=True)
    card = {"name": "yolov8n boats", "task": "detection", "classes": list(CLASSES), "input_size": [SIZE, SIZE],
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    files = {}
    for name, trust in (("pt", True), ("pt_untrusted", False)):
        (folder / name).mkdir(exist_ok=True)
        torch.save({"model": copy.deepcopy(model).half(), "ema": None, "train_args": {}, "version": "8.4"},
                   folder / name / "yolo.pt")
        (folder / name / "yolo.json").write_text(json.dumps({**card, **({"trust_pickle": True} if trust else {})}))
        files[name] = folder / name / "yolo.pt"
    if not onnx:
        return files
    (folder / "onnx").mkdir(exist_ok=True)
    torch.onnx.export(RawHead(model).eval(), (torch.rand(2, 3, SIZE, SIZE),), str(folder / "onnx" / "yolo.onnx"),
                      dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False,
                      verbose=False)
    (folder / "onnx" / "yolo.json").write_text(json.dumps(card))
    files["onnx"] = folder / "onnx" / "yolo.onnx"
    return files
