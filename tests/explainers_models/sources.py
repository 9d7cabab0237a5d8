"""Writers for the model sources users bring: timm state dicts, Hugging Face folders (random weights, tiny)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

CLASSES = ["cat", "dog", "bird"]


def timm_model(name: str, size: int = 32, seed: int = 0, num_classes: int = 3):
    import timm

    torch.manual_seed(seed)
    kwargs = {"img_size": size} if any(k in name for k in ("vit", "deit", "swin")) else {}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs).eval()


def write_timm(folder: Path, name: str, size: int = 32, seed: int = 0, classes=CLASSES, **card_fields):
    """(network, weights path): a timm model's safetensors with a card naming `timm:<name>`."""
    net = timm_model(name, size, seed, len(classes))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    card = {"task": "classification", "classes": list(classes), "input_size": [size, size],
            "architecture": f"timm:{name}", **card_fields}
    path.with_suffix(".json").write_text(json.dumps(card))
    return net, path


def write_hf_vit(folder: Path, size: int = 32, seed: int = 0, classes=CLASSES, mean=(0.5, 0.5, 0.5),
                 std=(0.5, 0.5, 0.5)):
    """(model, folder): a random tiny ViTForImageClassification saved with save_pretrained (safetensors)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=len(classes), id2label=dict(enumerate(classes)),
                       label2id={c: i for i, c in enumerate(classes)})
    torch.manual_seed(seed)
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(str(folder))
    ViTImageProcessor(size={"height": size, "width": size}, image_mean=list(mean),
                      image_std=list(std)).save_pretrained(str(folder))
    return model, folder


def zip_folder(folder: Path, path: Path, *, top: bool = True) -> Path:
    """A zip of `folder`: its files under the folder's name (`top`), or at the zip's root."""
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                inner = file.relative_to(folder.parent if top else folder).as_posix()
                archive.write(file, inner)
    return path
