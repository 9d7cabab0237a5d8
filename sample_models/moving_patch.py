"""The calibration series: a small patch in a random corner whose colour encodes the label with probability rho.

After Decoy-MNIST (Ross et al. 2017), made synthetic and tiny so a model trains in seconds on a CPU. The
core is a faint bar through the centre (horizontal for class "h", vertical for class "v"), learnable but
noisy; the cue is a flat SIZE/6 square in one of the four corners, red when it points at "h", blue when
it points at "v", pointing at the true class with probability `rho` (0.5: no information, a clean model;
1: a perfect proxy). Because the corner changes from image to image, no fixed grid cell holds the cue in
more than a quarter of the images: the case that `analysis.stats.discovered_regions` is for.

Ground truth reliance: `shuffle_drop(net, scenes)` = accuracy on the images minus accuracy with every
patch recoloured to point at a random class (the same pixels otherwise). Region map: 0 background,
1 bar (core), 2 patch.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES = ("h", "v")
SIZE = 32
PATCH = SIZE // 6
CONTRAST = 0.08  # the bar over the background noise (std 0.12): learnable, but the cue is easier
COLOURS = np.array([[0.9, 0.15, 0.15], [0.15, 0.2, 0.9]], np.float32)  # the cue's colour for "h", for "v"
REGIONS = {"0": {"name": "background"}, "1": {"name": "bar", "role": "core"}, "2": {"name": "patch"}}
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass
class Scenes:
    images: np.ndarray  # (n, S, S, 3) uint8
    masks: np.ndarray  # (n, S, S) uint8 region ids
    labels: np.ndarray  # (n,) int64
    cue: np.ndarray  # (n,) int64, the class the patch colour points at
    corner: np.ndarray  # (n,) int64 index into CORNERS


def paint_patch(rgb: np.ndarray, mask: np.ndarray, corner: int, cue: int) -> None:
    """The cue: a PATCH-px square of `COLOURS[cue]` one pixel in from `corner` (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right), region 2 in the mask; the moving-cue and shapes-and-tag scenes share it."""
    y0 = 1 if corner < 2 else SIZE - 1 - PATCH
    x0 = 1 if corner % 2 == 0 else SIZE - 1 - PATCH
    rgb[y0:y0 + PATCH, x0:x0 + PATCH] = COLOURS[cue]
    mask[y0:y0 + PATCH, x0:x0 + PATCH] = 2


def render(n: int, rho: float, seed: int = 0) -> Scenes:
    """`n` images (labels alternate, then shuffled); deterministic in (n, rho, seed)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    cue = np.where(rng.random(n) < rho, labels, 1 - labels)
    corner = rng.integers(0, 4, n)
    rgb = 0.45 + 0.12 * rng.standard_normal((n, SIZE, SIZE, 3)).astype(np.float32)
    mask = np.zeros((n, SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    offset = rng.integers(-3, 4, (n, 2))
    for i in range(n):
        cy, cx = SIZE // 2 + offset[i, 0], SIZE // 2 + offset[i, 1]
        long_, thin = (np.abs(xx - cx) < 7) & (np.abs(yy - cy) < 2), (np.abs(yy - cy) < 7) & (np.abs(xx - cx) < 2)
        bar = long_ if labels[i] == 0 else thin
        rgb[i][bar] += CONTRAST
        mask[i][bar] = 1
        paint_patch(rgb[i], mask[i], int(corner[i]), int(cue[i]))
    images = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    return Scenes(images, mask, labels, cue, corner)


def shuffled_cue(scenes: Scenes, seed: int = 0) -> np.ndarray:
    """The images with every patch recoloured to point at a random class (everything else unchanged)."""
    rng = np.random.default_rng(seed)
    images = scenes.images.copy()
    colours = np.clip(COLOURS * 255 + 0.5, 0, 255).astype(np.uint8)[rng.integers(0, 2, len(images))]
    where = scenes.masks == 2
    images[where] = np.repeat(colours, where.reshape(len(images), -1).sum(1), axis=0)
    return images


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> float (n, 3, S, S), normalised with mean = std = 0.5 (the card's)."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5


@torch.no_grad()
def accuracy(net, images: np.ndarray, labels: np.ndarray) -> float:
    """`net` in eval mode (as `train` returns it; an exported program's module is)."""
    return float((net(to_tensor(images)).argmax(1).numpy() == labels).mean())


def shuffle_drop(net, scenes: Scenes, seed: int = 0) -> float:
    """Ground-truth reliance: accuracy lost when the cue points at a random class."""
    return accuracy(net, scenes.images, scenes.labels) - accuracy(net, shuffled_cue(scenes, seed), scenes.labels)


def train(rho: float, seed: int = 0, n: int = 1000, epochs: int = 5):
    """A PatchNet (`sample_models.architectures`) trained on `render(n, rho, seed=1000 + seed)`; seconds on
    one CPU thread."""
    scenes = render(n, rho, seed=1000 + seed)
    x, y = to_tensor(scenes.images), torch.from_numpy(scenes.labels)
    return fit_patch_net(x, y, len(CLASSES), seed=seed, epochs=epochs)


def fit_patch_net(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int, epochs: int):
    """A PatchNet fitted by Adam (lr 3e-3, batches of 64 in a seeded order), deterministic; the moving-cue and
    the shapes-and-tag series train the same way."""
    from sample_models.architectures import ARCHITECTURES
    from sample_models.train import deterministic_torch

    n = len(x)
    with deterministic_torch():
        torch.manual_seed(seed)
        net = ARCHITECTURES["patch_net"](num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        order = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(n, generator=order)
            for i in range(0, n, 64):
                idx = perm[i:i + 64]
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


def save_model(net, folder: Path) -> Path:
    """model.pt (a state dict: rebuilt as a plain, hookable, fast net) and its card; returns the model file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    card = {"task": "classification", "classes": list(CLASSES), "input_size": [SIZE, SIZE], "mean": [0.5] * 3,
            "std": [0.5] * 3, "target_layer": "block3", "architecture": "patch_net"}
    (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return folder / "model.pt"


def write_dataset(scenes: Scenes, folder: Path, *, masks: bool = True) -> Path:
    """A manifest folder (DESIGN.md section 3) with masks, or (masks=False) a plain ImageFolder tree."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, mask, label) in enumerate(zip(scenes.images, scenes.masks, scenes.labels)):
        name = f"{i:05d}.png"
        sub = Path("images") if masks else Path(CLASSES[label])
        (folder / sub).mkdir(exist_ok=True)
        Image.fromarray(image, "RGB").save(folder / sub / name, compress_level=1)
        if masks:
            (folder / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask, "L").save(folder / "masks" / name, compress_level=1)
            rows.append([f"images/{name}", CLASSES[label], f"masks/{name}", CORNERS[scenes.corner[i]]])
    if masks:
        with open(folder / "manifest.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["image", "label", "mask", "corner"])
            writer.writerows(rows)
        (folder / "regions.json").write_text(json.dumps({"regions": REGIONS}, indent=2) + "\n")
    return folder


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "moving_patch"


def load_version(name: str, weights: Path | None = None):
    """A committed demo version (state dict, `weights_only=True`) in a fresh PatchNet, eval mode."""
    from sample_models.architectures import ARCHITECTURES

    net = ARCHITECTURES["patch_net"](len(CLASSES))
    net.load_state_dict(torch.load((weights or WEIGHTS_DIR) / name / "model.pt", weights_only=True))
    return net.eval()
DEMO_VERSIONS = {"partly_biased": 0.85, "moving_cue": 1.0, "clean": 0.5}  # name -> rho of its training data (seed 0)


def train_demo_versions(out: Path = WEIGHTS_DIR) -> dict[str, float]:
    """Train and save the demo's two versions; returns each one's shuffle drop (its true reliance)."""
    drops = {}
    for name, rho in DEMO_VERSIONS.items():
        net = train(rho, 0)
        save_model(net, out / name)
        drops[name] = round(shuffle_drop(net, render(400, rho, seed=500)), 4)
        (out / name / "metrics.json").write_text(json.dumps({"rho": rho, "seed": 0, "shuffle_drop": drops[name]}) + "\n")
    return drops


if __name__ == "__main__":
    print(train_demo_versions())
