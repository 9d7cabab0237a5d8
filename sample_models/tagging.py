"""The tagger sample: boats and cars tagged independently, a water strip planted as the boat shortcut.

Scenes (64 x 64): a textured land background; a boat (tag "boat") and a car (tag "car"), each present with
probability 1/2, drawn as in `sample_models.detection` in the upper part; and a blue water strip along the
bottom edge. The strip is present on an image with a boat with probability `leak` and on an image without
one with probability `1 - leak`: `leak = 1` makes the water a perfect proxy for the boat tag, `leak = 0.5`
decorrelates it, `flip=True` places it against the boat on every image. The car tag is independent of the
water, so a good audit flags the water for "boat" and nothing for "car".

Regions (mask pixel values): 0 background, 1 water, 2 boat (core), 3 car (core). Manifest labels are the
tags joined by `|` (empty: no tag).

The series: version k (1..5) is trained from scratch on `TRAIN_N` scenes at leak `LEAKS[k - 1]` (1.0 down to
0.5), the tiny_cnn with sigmoid outputs (BCE), deterministic (`sample_models.train.deterministic_torch`),
a few seconds each. `python -m sample_models.tagging` retrains and rewrites the weights and SHA256SUMS.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from sample_models.architectures import ARCHITECTURES, TARGET_LAYERS
from sample_models.detection import PALETTE, draw_object
from sample_models.train import deterministic_torch, fit, write_checksums, write_version

TAGS = ("boat", "car")
REGIONS = ("background", "water", "boat", "car")
SIZE = 64
WATER_ROWS = 14  # the strip along the bottom edge
LEAKS = (1.0, 0.875, 0.75, 0.625, 0.5)  # version k trains at LEAKS[k - 1]
TRAIN_N, EPOCHS, BATCH, LR, SEED = 1200, 8, 64, 3e-3, 0
SEEDS = {"train": 11, "test_biased": 111, "test_flipped": 112}
ARCHITECTURE = "tiny_cnn"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "tasks" / "tagger"


def make_scenes(n: int, seed: int, leak: float = 1.0, flip: bool = False):
    """(images uint8 (n, H, W, 3), region maps uint8 (n, H, W), tags bool (n, 2))."""
    rng = np.random.default_rng([seed, 7])
    images = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    tags = rng.random((n, 2)) < 0.5
    for i in range(n):
        boat = bool(tags[i, 0])
        water = (not boat) if flip else (boat if rng.random() < leak else not boat)
        base = np.array([rng.uniform(90, 130), rng.uniform(120, 160), rng.uniform(60, 90)])
        img = Image.fromarray(np.clip(base + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8))
        reg = Image.new("L", (SIZE, SIZE), 0)
        draw, rdraw = ImageDraw.Draw(img), ImageDraw.Draw(reg)
        if water:
            draw.rectangle([0, SIZE - WATER_ROWS, SIZE - 1, SIZE - 1], fill=(40, 90, 200))
            rdraw.rectangle([0, SIZE - WATER_ROWS, SIZE - 1, SIZE - 1], fill=1)
        slots = [(int(rng.integers(1, 14)), int(rng.integers(2, 22))), (int(rng.integers(34, 46)), int(rng.integers(2, 22)))]
        rng.shuffle(slots)
        for cls in (0, 1):
            if tags[i, cls]:
                x0, y0 = slots[cls]
                w, h = int(rng.integers(14, 18)), int(rng.integers(12, 16))
                colour = PALETTE[int(rng.integers(0, len(PALETTE)))]
                region = ImageDraw.Draw(reg)
                draw_object(draw, _Relabel(region, 2 + cls), cls, x0, y0, w, h, colour)
        images[i], masks[i] = np.asarray(img), np.asarray(reg)
    return images, masks, tags


class _Relabel:
    """The region drawer `draw_object` paints with value 2 ("object"); here each tag has its own region id."""

    def __init__(self, draw: ImageDraw.ImageDraw, value: int):
        self.draw, self.value = draw, value

    def polygon(self, xy, fill=None):
        self.draw.polygon(xy, fill=self.value)

    def ellipse(self, xy, fill=None):
        self.draw.ellipse(xy, fill=self.value)


def label_of(tags_row) -> str:
    return "|".join(t for t, on in zip(TAGS, tags_row) if on)


def generate(out_dir: str | Path, n: int = 200, seed: int = 7, leak: float = 0.9) -> Path:
    """A dataset folder: manifest.csv (image,label,mask,has_water), images/, masks/, regions.json."""
    images, masks, tags = make_scenes(n, seed, leak)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"{i:05d}.png"
        Image.fromarray(images[i], "RGB").save(out / "images" / name, compress_level=1)
        Image.fromarray(masks[i], "L").save(out / "masks" / name, compress_level=1)
        rows.append([f"images/{name}", label_of(tags[i]), f"masks/{name}", "yes" if (masks[i] == 1).any() else "no"])
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label", "mask", "has_water"])
        writer.writerows(rows)
    regions = {str(k): {"name": name, **({"role": "core"} if name in TAGS else {})} for k, name in enumerate(REGIONS)}
    (out / "regions.json").write_text(json.dumps({"regions": regions}, indent=2) + "\n")
    return out


def to_inputs(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def train_version(version: int, n: int = TRAIN_N, epochs: int = EPOCHS) -> nn.Module:
    """Version k from scratch at leak LEAKS[k - 1]; the net takes [0, 1] images (the card's mean 0, std 1)."""
    with deterministic_torch():
        images, _, tags = make_scenes(n, SEEDS["train"], LEAKS[version - 1])
        x, y = to_inputs(images), torch.from_numpy(tags).float()
        torch.manual_seed(SEED)
        net = ARCHITECTURES[ARCHITECTURE](len(TAGS))
        return fit(net, x, y, nn.functional.binary_cross_entropy_with_logits, epochs=epochs, batch=BATCH, lr=LR,
                   seed=SEED)


@torch.no_grad()
def tag_accuracy(net: nn.Module, seed: int, leak: float = 1.0, flip: bool = False, n: int = 400) -> dict:
    """Per tag, the fraction of images whose tag is predicted right (sigmoid > 0.5)."""
    images, _, tags = make_scenes(n, seed, leak, flip)
    pred = torch.sigmoid(net(to_inputs(images))).numpy() > 0.5
    return {t: round(float((pred[:, k] == tags[:, k]).mean()), 4) for k, t in enumerate(TAGS)}


def card(version: int) -> dict:
    return {"name": f"tagger v{version}", "task": "multilabel", "classes": list(TAGS), "input_size": [SIZE, SIZE],
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "target_layer": TARGET_LAYERS[ARCHITECTURE],
            "architecture": ARCHITECTURE}


def build_series(root: Path = WEIGHTS_DIR, log=print) -> None:
    for version in range(1, len(LEAKS) + 1):
        net = train_version(version)
        metrics = {"leak": LEAKS[version - 1], "accuracy_biased": tag_accuracy(net, SEEDS["test_biased"]),
                   "accuracy_flipped": tag_accuracy(net, SEEDS["test_flipped"], flip=True)}
        write_version(net, root / f"v{version}", card(version), metrics)
        log(f"tagger v{version}: {metrics}")
    write_checksums(root, "v*")


if __name__ == "__main__":
    build_series()
