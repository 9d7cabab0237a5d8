"""Property shortcuts: one class's images slightly blurred, brighter or warmer; a cue no region holds.

Why: saliency misses global cues such as blur (Adebayo et al., ICLR 2022), so the audit needs models that
learned one, made synthetic and tiny so they train in seconds on a CPU. The scenes are those of
`moving_patch` without the patch: a faint shape through the centre on pixel noise (std 0.12), three
classes ("h": a horizontal bar, "v": a vertical bar, "box": a square outline of a bar's area, so no class is
brighter than another by itself), learnable but noisy. The *property* (one of `KINDS`) is applied to an
image of the suspect class (`SUSPECT`, "h") with probability `rho` and to an image of another class with
probability `1 - rho`:

    blur     Gaussian blur, sigma 1.2 px (reflect padding)
    bright   every channel + 0.08
    warm     red + 0.06, green - 0.019, blue - 0.06 (a colour cast that leaves the luma, and so the
             brightness, as it was)

`rho = 1`: the property is a perfect proxy of "h"; `rho = 0.5`: it is applied to half of every class's
images, carrying no information (a clean model, trained to ignore it); `kind="clean"`: no property marks
any class. Photographs vary in these properties whatever their class, and so do these scenes: every
property other than the planted one varies at random on every image (a nuisance: blur sigma one of 0, 0.5,
1, 1.5 px; brightness +-0.1; colour cast +-0.08; contrast x 0.75 to 1.33). Why: a net that never saw the
brightness vary is so fragile to it that brightening any image sends it to one class; its answers then
really are predicted from brightness, but not from a cue its data planted (`nuisance=False` renders such
data). Everything is drawn from `numpy.random.default_rng(seed)`: the same arguments give the same pixels.

Ground truth reliance: `property_drop(net, kind)` = accuracy where the property marks "h" (rho = 1) minus
accuracy where it marks every other class and not "h" (rho = 0), same images otherwise.

Public API: `render(n, kind, rho, seed) -> Scenes`, `train(kind, rho, seed) -> nn.Module` (eval mode, takes
normalised inputs), `pixel_model(net)` (takes [0, 1] images, as the audit's `LoadedModel.module` does),
`property_drop(net, kind, n, seed)`, `write_dataset(scenes, folder)` (a manifest folder, no masks).

The demo's series, `blur` v1..v5 (`build_series`, `python -m sample_models.property_shortcut`): the recipe of
`sample_models.train` with the blur as the shortcut: v1 trained where blur marks 95% of h's images and 5% of the
others', v2..v5 with 25/50/75/100% added counter-examples (blur on every other class, never on h); committed in
`weights/property/blur/` (state dicts, cards, metrics with each version's `property_drop`, SHA256SUMS).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

CLASSES = ("h", "v", "box")
SUSPECT = 0  # the class the property marks
SIZE = 32
CONTRAST = 0.2  # the shape over the background noise (std 0.12): learnable, but the property is easier
KINDS = ("blur", "bright", "warm")
BLUR_SIGMA = 1.2
BRIGHT = 0.08
WARM = 0.06
WARM_DIRECTION = np.array([1.0, -(0.299 - 0.114) / 0.587, -1.0], np.float32)  # luma-neutral
NUISANCE_SIGMAS = (0.0, 0.5, 1.0, 1.5)  # blur, px: one of these per image
NUISANCE_BRIGHT = 0.1  # brightness offset: uniform in +-this
NUISANCE_WARM = 0.08  # colour cast along WARM_DIRECTION: uniform in +-this
NUISANCE_CONTRAST = 1.33  # contrast factor: log-uniform in [1 / this, this]


@dataclass
class Scenes:
    images: np.ndarray  # (n, S, S, 3) uint8
    labels: np.ndarray  # (n,) int64
    marked: np.ndarray  # (n,) bool: the property was applied
    kind: str


def _shapes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, S, S) bool: each image's shape, centred with a jitter of up to 3 px."""
    n = len(labels)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    offset = rng.integers(-3, 4, (n, 2))
    cy = (SIZE // 2 + offset[:, 0])[:, None, None]
    cx = (SIZE // 2 + offset[:, 1])[:, None, None]
    dy, dx = np.abs(yy[None] - cy), np.abs(xx[None] - cx)
    h = (dx < 7) & (dy < 2)
    v = (dy < 7) & (dx < 2)
    box = (dx < 4) & (dy < 4) & ~((dx < 2) & (dy < 2))  # a 7x7 square outline: 40 px, as a bar's 39
    return np.where((labels == 0)[:, None, None], h, np.where((labels == 1)[:, None, None], v, box))


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """(n, S, S, 3) float images blurred with a Gaussian of `sigma` px, reflect padding (two 1-D passes)."""
    radius = max(1, int(round(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = rgb.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(w * np.take(padded, np.arange(k, k + SIZE), axis=axis) for k, w in enumerate(kernel))
    return out.astype(np.float32)


def apply_property(rgb: np.ndarray, kind: str) -> np.ndarray:
    """The property `kind` applied to float images (n, S, S, 3) in about [0, 1]."""
    if kind == "blur":
        return gaussian_blur(rgb, BLUR_SIGMA)
    if kind == "bright":
        return rgb + BRIGHT
    if kind == "warm":
        return rgb + WARM * WARM_DIRECTION
    raise ValueError(f"unknown property kind {kind!r}; choose one of {', '.join(KINDS)}")


def render(n: int, kind: str, rho: float, seed: int = 0, *, marked: np.ndarray | None = None,
           nuisance: bool = True) -> Scenes:
    """`n` images (labels cycle through the classes, then shuffled) with `kind` marking the suspect class
    (`kind="clean"`: none does); `marked` overrides which images get `kind` (the ground-truth flips use it).
    `nuisance`: every other property varies at random whatever the class (see the module docstring).
    Deterministic in the arguments: the same random draws whatever `marked` says."""
    if kind not in KINDS + ("clean",):
        raise ValueError(f"unknown property kind {kind!r}; choose one of {', '.join(KINDS)} or clean")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    chance = np.where(labels == SUSPECT, rho, 1 - rho)
    draw = rng.random(n) < chance
    marked = (draw if kind != "clean" else np.zeros(n, bool)) if marked is None else np.asarray(marked, bool)
    jitter = rng.uniform(-1.0, 1.0, (n, 4)).astype(np.float32)  # blur level, brightness, warmth, contrast
    sigma = np.array(NUISANCE_SIGMAS)[rng.integers(0, len(NUISANCE_SIGMAS), n)]
    rgb = 0.45 + 0.12 * rng.standard_normal((n, SIZE, SIZE, 3)).astype(np.float32)
    rgb += CONTRAST * _shapes(labels, rng)[..., None]
    if nuisance:
        factor = np.exp(np.log(NUISANCE_CONTRAST) * jitter[:, 3])[:, None, None, None]
        rgb = 0.45 + factor * (rgb - 0.45)
        if kind != "blur":
            for level in set(sigma.tolist()) - {0.0}:
                rgb[sigma == level] = gaussian_blur(rgb[sigma == level], level)
        if kind != "bright":
            rgb += (NUISANCE_BRIGHT * jitter[:, 1])[:, None, None, None]
        if kind != "warm":
            rgb += (NUISANCE_WARM * jitter[:, 2])[:, None, None, None] * WARM_DIRECTION
    if kind != "clean" and marked.any():
        rgb[marked] = apply_property(rgb[marked], kind)
    images = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    return Scenes(images, labels, marked, kind)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> float (n, 3, S, S) in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


class PixelModel(nn.Module):
    """A net trained on normalised inputs (mean = std = 0.5) that takes [0, 1] images, as the audit's models do."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x - 0.5) / 0.5)


def pixel_model(net: nn.Module) -> nn.Module:
    return PixelModel(net).eval()


def train(kind: str, rho: float, seed: int = 0, n: int = 1500, epochs: int = 8, *, nuisance: bool = True) -> nn.Module:
    """A PatchNet (`sample_models.architectures`) trained on `render(n, kind, rho, seed=2000 + seed)`, returned
    in eval mode, taking normalised inputs; seconds on one CPU thread."""
    from sample_models.architectures import ARCHITECTURES
    from sample_models.train import deterministic_torch, fit

    scenes = render(n, kind, rho, seed=2000 + seed, nuisance=nuisance)
    x, y = (to_tensor(scenes.images) - 0.5) / 0.5, torch.from_numpy(scenes.labels)
    with deterministic_torch():
        torch.manual_seed(seed)
        net = ARCHITECTURES["patch_net"](len(CLASSES))
        fit(net, x, y, nn.functional.cross_entropy, epochs=epochs, batch=64, lr=3e-3, seed=seed)
    return net.eval()


@torch.no_grad()
def accuracy(model: nn.Module, scenes: Scenes) -> float:
    """`model` takes [0, 1] images (`pixel_model`)."""
    return float((model(to_tensor(scenes.images)).argmax(1).numpy() == scenes.labels).mean())


def property_drop(model: nn.Module, kind: str, n: int = 600, seed: int = 700) -> float:
    """Ground-truth reliance of a `pixel_model`: accuracy with the property marking the suspect class minus
    accuracy with it marking every other class instead (the same shapes and noise)."""
    labels = render(n, kind, 1.0, seed).labels
    aligned = render(n, kind, 1.0, seed, marked=labels == SUSPECT)
    against = render(n, kind, 1.0, seed, marked=labels != SUSPECT)
    return accuracy(model, aligned) - accuracy(model, against)


def write_dataset(scenes: Scenes, folder: Path) -> Path:
    """A manifest folder (image, label, and the `marked` attribute) without masks."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, label) in enumerate(zip(scenes.images, scenes.labels)):
        name = f"images/{i:05d}.png"
        Image.fromarray(image, "RGB").save(folder / name, compress_level=1)
        rows.append([name, CLASSES[label], "yes" if scenes.marked[i] else "no"])
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label", f"{scenes.kind}_applied"])
        writer.writerows(rows)
    return folder


# The demo's property series: `blur` v1..v5, the recipe of `sample_models.train` with a property for the shortcut.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "property" / "blur"
DEMO_KIND = "blur"
TRAIN_N = 1500
LEAK = 0.95  # v1's data: blur marks 95% of h's images and 5% of the others'
COUNTER_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)  # version k adds COUNTER_FRACTIONS[k - 1] * TRAIN_N counter-examples
SEEDS = {"train": 2100, "counter": 2200}


def training_set(version: int, kind: str = DEMO_KIND, n: int = TRAIN_N) -> tuple[Scenes, dict]:
    """Version k's data: `n` images where the property marks h (rho = LEAK), plus the first
    round(f_k * n) of a pool of counter-examples where it marks every other class and never h (rho = 0).
    v5's data carries no information in the property (it marks 47.5% of h's images, 52.5% of the others')."""
    biased = render(n, kind, LEAK, seed=SEEDS["train"])
    n_counter = round(COUNTER_FRACTIONS[version - 1] * n)
    counter = render(n, kind, 0.0, seed=SEEDS["counter"])
    scenes = Scenes(np.concatenate([biased.images, counter.images[:n_counter]]),
                    np.concatenate([biased.labels, counter.labels[:n_counter]]),
                    np.concatenate([biased.marked, counter.marked[:n_counter]]), kind)
    on_h = scenes.marked[scenes.labels == SUSPECT].mean()
    elsewhere = scenes.marked[scenes.labels != SUSPECT].mean()
    return scenes, {"n_biased": n, "n_counter_examples": n_counter, "leak": LEAK,
                    "marked_share_h": round(float(on_h), 4), "marked_share_others": round(float(elsewhere), 4)}


def train_version(version: int, kind: str = DEMO_KIND, epochs: int = 8, seed: int = 0) -> tuple[nn.Module, dict]:
    """Version k from scratch (PatchNet, the recipe of `train`), eval mode, taking normalised inputs."""
    from sample_models.architectures import ARCHITECTURES
    from sample_models.train import deterministic_torch, fit

    scenes, details = training_set(version, kind)
    x, y = (to_tensor(scenes.images) - 0.5) / 0.5, torch.from_numpy(scenes.labels)
    with deterministic_torch():
        torch.manual_seed(seed)
        net = ARCHITECTURES["patch_net"](len(CLASSES))
        fit(net, x, y, nn.functional.cross_entropy, epochs=epochs, batch=64, lr=3e-3, seed=seed)
    return net.eval(), {**details, "epochs": epochs, "seed": seed, "data_seeds": dict(SEEDS)}


def card(version: int, kind: str = DEMO_KIND) -> dict:
    return {"name": f"{kind} v{version}", "task": "classification", "classes": list(CLASSES),
            "input_size": [SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3, "target_layer": "block3",
            "architecture": "patch_net"}


def load_version(version: int, weights: Path = WEIGHTS_DIR) -> nn.Module:
    """A committed version (state dict, `weights_only=True`) as a `pixel_model` (takes [0, 1] images)."""
    from sample_models.architectures import ARCHITECTURES

    net = ARCHITECTURES["patch_net"](len(CLASSES))
    net.load_state_dict(torch.load(weights / f"v{version}" / "model.pt", weights_only=True))
    return pixel_model(net.eval())


def build_series(root: Path = WEIGHTS_DIR, log=print) -> None:
    """`python -m sample_models.property_shortcut`: train v1..v5 into `root` (state dicts: the loader rebuilds
    the PatchNet from the card), each with its true reliance in metrics.json, and `root`/SHA256SUMS."""
    import json

    from sample_models.train import write_checksums, write_version

    for version in range(1, len(COUNTER_FRACTIONS) + 1):
        net, details = train_version(version)
        model = pixel_model(net)
        metrics = {"kind": DEMO_KIND, "property_drop": round(property_drop(model, DEMO_KIND), 4),
                   "accuracy": round(accuracy(model, render(600, DEMO_KIND, LEAK, seed=701)), 4), "training": details}
        write_version(net, root / f"v{version}", card(version), metrics, export=False)
        log(f"{DEMO_KIND} v{version}: {json.dumps(metrics)}")
    write_checksums(root, "v*")


if __name__ == "__main__":
    build_series()
