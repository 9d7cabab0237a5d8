"""Mask-free series: a shape (the label) at a centred or random position, and a tag in a random corner.

Issue 25's case as a new user builds it: the class is the shape (a filled "rectangle" or a "cross", random colour
and size, so only its outline tells the class); a flat SIZE/6 tag sits in one of the four corners, red when it
points at "rectangle", blue at "cross", pointing at the true class with probability `rho` (0.5: present
but carrying no information; None: no tag). A clean model looks at the shape wherever it is; a biased one
(rho near 1) at the tag. Without masks the audit must tell the two apart: the shape's area is where the
label's evidence is, the tag a cue beside it. Masks (for checks only): 0 background, 1 shape, 2 tag.
Trained with the moving-patch recipe (`sample_models.moving_patch.train`'s loop, PatchNet) in seconds.
"""
from __future__ import annotations

import numpy as np
import torch

from sample_models import moving_patch
from sample_models.moving_patch import SIZE, Scenes

CLASSES = ("rectangle", "cross")


def render(n: int, rho: float | None, seed: int = 0, *, moving: bool = True) -> Scenes:
    """`n` images (labels alternate, then shuffled); `moving`: the shape's centre anywhere in the middle 60%
    of the image (else within 2 pixels of the centre). Deterministic in the arguments."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    cue = labels.copy() if rho is None else np.where(rng.random(n) < rho, labels, 1 - labels)
    corner = rng.integers(0, 4, n)
    rgb = 0.45 + 0.1 * rng.standard_normal((n, SIZE, SIZE, 3)).astype(np.float32)
    mask = np.zeros((n, SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    spread = int(0.3 * SIZE) if moving else 2
    centre = SIZE // 2 + rng.integers(-spread, spread + 1, (n, 2))
    half = rng.integers(4, 7, (n, 2))  # half height, half width: 4-6 px
    colour = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    for i in range(n):
        dy, dx = (yy - centre[i, 0]) / half[i, 0], (xx - centre[i, 1]) / half[i, 1]
        box = np.maximum(np.abs(dy), np.abs(dx)) <= 1
        shape = box if labels[i] == 0 else box & (np.minimum(np.abs(dy), np.abs(dx)) <= 0.4)
        rgb[i][shape] = colour[i]
        mask[i][shape] = 1
        if rho is not None:
            moving_patch.paint_patch(rgb[i], mask[i], int(corner[i]), int(cue[i]))
    images = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    return Scenes(images, mask, labels, cue, corner)


def train(rho: float | None, seed: int = 0, *, moving: bool = True, n: int = 1000, epochs: int = 8):
    """A PatchNet trained on `render(n, rho, 1000 + seed, moving=moving)` (seconds on one CPU thread)."""
    scenes = render(n, rho, seed=1000 + seed, moving=moving)
    x, y = moving_patch.to_tensor(scenes.images), torch.from_numpy(scenes.labels)
    return moving_patch.fit_patch_net(x, y, len(CLASSES), seed=seed, epochs=epochs)


def save_model(net, folder):
    """model.pt and its card (the moving-patch card with this series' class names)."""
    import json

    path = moving_patch.save_model(net, folder)
    card = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**card, "classes": list(CLASSES)}, indent=2) + "\n")
    return path


def write_dataset(scenes: Scenes, folder):
    """A plain ImageFolder tree (no masks: the case this series is for)."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(scenes.images, scenes.labels)):
        sub = folder / CLASSES[label]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGB").save(sub / f"{i:05d}.png", compress_level=1)
    return folder


def shuffle_drop(net, scenes: Scenes, seed: int = 0) -> float:
    """Ground-truth reliance on the tag (accuracy lost when its colour points at a random class)."""
    return moving_patch.shuffle_drop(net, scenes, seed)
