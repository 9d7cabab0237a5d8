"""The segmenter sample: boats and cars on water and road bands (`sample_models.detection`'s scenes), with the
band under an object planted as the shortcut for its class.

Classes (pixel values of the target maps): 0 background (water and road), 1 boat, 2 car. Regions of the
masks: 0 water, 1 road, 2 object (core). Version k (1..5) is the tiny_segnet trained from scratch on
`TRAIN_N` scenes in which an object sits on its "home" band (boat on water, car on road) with probability
`P_CONTEXT[k - 1]` (1.0 down to 0.5: at v5 the band says nothing about the class). A segmenter that learned
the band labels a boat on road as a car: filling the water around boats costs boats their IoU, far more
than an equal-area fill elsewhere. Deterministic, a few seconds per version;
`python -m sample_models.segmenting` retrains and rewrites the weights and SHA256SUMS.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from sample_models.architectures import ARCHITECTURES, TARGET_LAYERS
from sample_models.detection import CLASSES as OBJECTS, REGIONS as DETECTION_REGIONS, SIZE, make_scenes
from sample_models.train import deterministic_torch, fit, write_checksums, write_version

CLASSES = ("background", *OBJECTS)
P_CONTEXT = (1.0, 0.875, 0.75, 0.625, 0.5)
TRAIN_N, EPOCHS, BATCH, LR, SEED = 600, 8, 32, 4e-3, 0
SEEDS = {"train": 21, "test_biased": 121, "test_swapped": 122}
ARCHITECTURE = "tiny_segnet"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "tasks" / "segmenter"


def class_maps(scenes) -> np.ndarray:
    """(n, H, W) uint8 class index per pixel: an object's pixels (region 2 inside its box) get its class + 1."""
    out = np.zeros((len(scenes), SIZE, SIZE), np.uint8)
    for i, scene in enumerate(scenes):
        obj = scene.regions.numpy() == 2
        for box, label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            window = np.zeros_like(obj)
            window[max(0, y0):y1 + 1, max(0, x0):x1 + 1] = True
            out[i][obj & window] = label + 1
    return out


def scenes_for(n: int, seed: int, p_context: float):
    """Scenes with objects on their home band with probability `p_context` (0: always on the other band)."""
    return make_scenes(n, seed=seed, biased=True, p_context=p_context)


def train_version(version: int, n: int = TRAIN_N, epochs: int = EPOCHS) -> nn.Module:
    with deterministic_torch():
        scenes = scenes_for(n, SEEDS["train"], P_CONTEXT[version - 1])
        x = torch.stack([s.image for s in scenes])
        y = torch.from_numpy(class_maps(scenes)).long()
        torch.manual_seed(SEED)
        net = ARCHITECTURES[ARCHITECTURE](len(CLASSES))
        weight = torch.tensor([0.3, 1.0, 1.0])  # objects are a few percent of the pixels
        return fit(net, x, y, lambda out, target: nn.functional.cross_entropy(out, target, weight=weight),
                   epochs=epochs, batch=BATCH, lr=LR, seed=SEED)


@torch.no_grad()
def class_ious(net: nn.Module, seed: int, p_context: float, n: int = 200) -> dict:
    """IoU per object class over `n` fresh scenes (p_context 0: every object on the other band)."""
    scenes = scenes_for(n, seed, p_context)
    pred = net(torch.stack([s.image for s in scenes])).argmax(1).numpy()
    truth = class_maps(scenes)
    return {name: round(float(((pred == c) & (truth == c)).sum() / max(1, ((pred == c) | (truth == c)).sum())), 4)
            for c, name in enumerate(CLASSES) if c}


def generate(out_dir: str | Path, n: int = 120, seed: int = 7, p_context: float = 0.9) -> Path:
    """A dataset folder: manifest.csv (image,label,target,mask), images/, targets/ (class maps), masks/,
    regions.json; `label` is the image's object classes joined by `|` (informative; segmentation needs none)."""
    scenes = scenes_for(n, seed, p_context)
    maps = class_maps(scenes)
    out = Path(out_dir)
    for sub in ("images", "targets", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, scene in enumerate(scenes):
        name = f"{i:05d}.png"
        pixels = (scene.image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(out / "images" / name, compress_level=1)
        Image.fromarray(maps[i], "L").save(out / "targets" / name, compress_level=1)
        Image.fromarray(scene.regions.numpy().astype(np.uint8), "L").save(out / "masks" / name, compress_level=1)
        present = sorted({OBJECTS[k] for k in scene.labels.tolist()})
        rows.append([f"images/{name}", "|".join(present), f"targets/{name}", f"masks/{name}"])
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label", "target", "mask"])
        writer.writerows(rows)
    regions = {str(k): {"name": v, **({"role": "core"} if v == "object" else {})} for k, v in DETECTION_REGIONS.items()}
    (out / "regions.json").write_text(json.dumps({"regions": regions}, indent=2) + "\n")
    return out


def card(version: int) -> dict:
    return {"name": f"segmenter v{version}", "task": "segmentation", "classes": list(CLASSES),
            "input_size": [SIZE, SIZE], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            "target_layer": TARGET_LAYERS[ARCHITECTURE], "architecture": ARCHITECTURE}


def build_series(root: Path = WEIGHTS_DIR, log=print) -> None:
    for version in range(1, len(P_CONTEXT) + 1):
        net = train_version(version)
        metrics = {"p_context": P_CONTEXT[version - 1],
                   "iou_in_context": class_ious(net, SEEDS["test_biased"], 1.0),
                   "iou_out_of_context": class_ious(net, SEEDS["test_swapped"], 0.0)}
        write_version(net, root / f"v{version}", card(version), metrics)
        log(f"segmenter v{version}: {metrics}")
    write_checksums(root, "v*")


if __name__ == "__main__":
    build_series()
