"""Deterministic training of the retraining series: one shortcut model and four progressively fixed ones.

For every scenario, version k (1..5) is trained from scratch, with the same seed, on

    the biased set      TRAIN_N images at leak 0.95 (seed 1), plus
    counter-examples    round(f_k * TRAIN_N) shortcut-flipped images (shortcut placed against the label,
                        seed 2; the first ones of one fixed pool), f_k = 0, 0.25, 0.5, 0.75, 1.0.

So v1 sees the shortcut agree with the label on 95% of its images, and the agreement falls to
0.76, 0.63, 0.54 and 0.475 for v2..v5: at v5 the shortcut carries no information. Training from scratch
(not fine-tuning) keeps each version a function of its data alone, which is what the version comparison
should show. Each version is evaluated on a held-out biased set (leak 0.95, seed 101) and a
shortcut-flipped set (seed 102); the gap between the two is the ground truth of the shortcut.

Determinism: one intra-op thread, `torch.use_deterministic_algorithms(True)`, seeded init and a seeded
shuffling generator; the same machine reproduces the weights bit for bit. Versions train in parallel
worker processes (one thread each), which changes nothing in the result.

Outputs, per version, in `<out>/<scenario>/v<k>/`: `model.pt` (state dict), `model.pt2` (torch.export of
the bare net: the loader adds normalisation from the card), `model.json` (model card), `metrics.json`.
`<out>/SHA256SUMS` lists every weight file and card (sha256sum format).

`--vit` trains the same series for the tiny Vision Transformer (`sample_models.architectures.TinyViT`) on the
watermark scenario into `weights/vit/watermark/v<k>/` (state dict and a card without `target_layer`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sample_models.architectures import ARCHITECTURES, TARGET_LAYERS
from sample_models.scenes import SCENARIOS, Scenes, render

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ARCHITECTURE = "tiny_cnn"
# The transformer series: the same data, recipe and seeds, one scenario (a ViT is slower to train on a CPU).
VIT_ARCHITECTURE = "tiny_vit"
VIT_SCENARIO = "watermark"
VIT_WEIGHTS_DIR = WEIGHTS_DIR / "vit"
SIZE = 64
MEAN = STD = (0.5, 0.5, 0.5)
TRAIN_N = 2000
LEAK = 0.95
COUNTER_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)  # version k uses COUNTER_FRACTIONS[k - 1]
EPOCHS = 10
BATCH = 64
LR = 3e-3
SEED = 0
SEEDS = {"train": 1, "counter": 2, "test_biased": 101, "test_flipped": 102}
EVAL_N = 1000


@contextmanager
def deterministic_torch(threads: int = 1):
    """One thread and deterministic kernels for the block; the previous settings come back after."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def to_tensors(scenes: Scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as normalised float tensors (N, 3, H, W) and labels (N,)."""
    x = torch.from_numpy(scenes.images).permute(0, 3, 1, 2).float().div_(255)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.from_numpy(scenes.labels)


def training_set(scenario: str, version: int, n: int = TRAIN_N) -> tuple[torch.Tensor, torch.Tensor, dict]:
    fraction = COUNTER_FRACTIONS[version - 1]
    biased = render(scenario, n=n, size=SIZE, leak=LEAK, seed=SEEDS["train"])
    x, y = to_tensors(biased)
    agree = biased.agrees
    n_counter = round(fraction * n)
    if n_counter:
        counter = render(scenario, n=n, size=SIZE, leak=LEAK, seed=SEEDS["counter"], flip=True)
        cx, cy = to_tensors(counter)
        x, y = torch.cat([x, cx[:n_counter]]), torch.cat([y, cy[:n_counter]])
        agree = np.concatenate([agree, counter.agrees[:n_counter]])
    details = {"n_biased": n, "n_counter_examples": n_counter, "counter_fraction": fraction,
               "shortcut_agreement": round(float(agree.mean()), 4)}
    return x, y, details


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    net.eval()
    correct = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, *, epochs: int, batch: int, lr: float, seed: int,
        on_epoch=None) -> nn.Module:
    """How every sample model trains: Adam with a one-cycle schedule over mini-batches shuffled by `seed`, from
    the net's current weights; `on_epoch(epoch, last loss)` after each epoch. Returns the net in eval mode."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * -(-len(x) // batch))
    order = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=order).split(batch):
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if on_epoch:
            on_epoch(epoch, loss.item())
    return net.eval()


def train_version(scenario: str, version: int, *, n: int = TRAIN_N, epochs: int = EPOCHS,
                  seed: int = SEED, log=None, architecture: str = ARCHITECTURE) -> tuple[nn.Module, dict]:
    """Train one version from scratch; returns the net (eval mode) and the training details."""
    with deterministic_torch():
        x, y, details = training_set(scenario, version, n)
        torch.manual_seed(seed)
        net = ARCHITECTURES[architecture](len(SCENARIOS[scenario].classes))
        on_epoch = (lambda epoch, loss: log(f"{scenario} v{version} epoch {epoch}: loss {loss:.4f}")) if log else None
        fit(net, x, y, nn.functional.cross_entropy, epochs=epochs, batch=BATCH, lr=LR, seed=seed, on_epoch=on_epoch)
    details.update({"epochs": epochs, "batch_size": BATCH, "optimizer": "Adam + OneCycleLR", "max_lr": LR,
                    "seed": seed, "data_seeds": {"train": SEEDS["train"], "counter": SEEDS["counter"]},
                    "leak": LEAK, "from_scratch": True, "architecture": architecture})
    return net, details


def evaluate(net: nn.Module, scenario: str, n: int = EVAL_N, seeds: tuple[int, int] | None = None) -> dict:
    """Accuracy on a held-out biased set and on a shortcut-flipped set (and the drop between them)."""
    seed_b, seed_f = seeds or (SEEDS["test_biased"], SEEDS["test_flipped"])
    with deterministic_torch():
        biased = accuracy(net, *to_tensors(render(scenario, n=n, size=SIZE, leak=LEAK, seed=seed_b)))
        flipped = accuracy(net, *to_tensors(render(scenario, n=n, size=SIZE, seed=seed_f, flip=True)))
    return {"accuracy_biased": biased, "accuracy_flipped": flipped, "accuracy_drop": round(biased - flipped, 4),
            "eval_n": n, "eval_seeds": {"biased": seed_b, "flipped": seed_f}}


def model_card(scenario: str, version: int, architecture: str = ARCHITECTURE) -> dict:
    """The CNN's card names its Grad-CAM layer; the ViT's does not: the loader finds the token layer."""
    sc = SCENARIOS[scenario]
    prefix = "" if architecture == ARCHITECTURE else "ViT "
    card = {"name": f"{prefix}{scenario} v{version}", "task": "classification", "classes": list(sc.classes),
            "input_size": [SIZE, SIZE], "mean": list(MEAN), "std": list(STD)}
    if architecture in TARGET_LAYERS:
        card["target_layer"] = TARGET_LAYERS[architecture]
    return {**card, "architecture": architecture}


def save_version(net: nn.Module, folder: Path, scenario: str, version: int, metrics: dict,
                 architecture: str = ARCHITECTURE) -> None:
    """The ViT is saved as a state dict only (its card names the architecture): small, and the loader
    rebuilds the real modules, which the attention methods need."""
    write_version(net, folder, model_card(scenario, version, architecture), metrics,
                  export=architecture == ARCHITECTURE)


def write_version(net: nn.Module, folder: Path, card: dict, metrics: dict, *, export: bool = True) -> None:
    """One sample version's folder: model.pt (state dict), model.pt2 (`export`), model.json, metrics.json."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    if export:
        export_net(net, folder / "model.pt2")
    (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def export_net(net: nn.Module, path: Path) -> None:
    """torch.export of the bare net with a dynamic batch dimension (any batch size loads and runs)."""
    example = torch.zeros(2, 3, SIZE, SIZE)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(net.eval(), (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, path)


def load_version(scenario: str, version: int, weights: Path = WEIGHTS_DIR, architecture: str = ARCHITECTURE
                 ) -> nn.Module:
    """The committed state dict in a fresh net (eval mode); expects normalised inputs (MEAN/STD)."""
    net = ARCHITECTURES[architecture](len(SCENARIOS[scenario].classes))
    net.load_state_dict(torch.load(weights / scenario / f"v{version}" / "model.pt", weights_only=True))
    return net.eval()


def _train_and_save(job: tuple[str, int, str, str]) -> tuple[str, int, dict, float]:
    scenario, version, out, architecture = job
    start = time.perf_counter()
    net, details = train_version(scenario, version, architecture=architecture)
    metrics = {"scenario": scenario, "version": f"v{version}", **evaluate(net, scenario), "training": details}
    save_version(net, Path(out) / scenario / f"v{version}", scenario, version, metrics, architecture)
    return scenario, version, metrics, time.perf_counter() - start


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checksums(out: Path, versions: str = "*/v*") -> Path:
    """`out`/SHA256SUMS over the model files of the version folders `versions` (a glob below `out`: one
    series per scenario, or `v*` for a folder holding one series)."""
    files = sorted(p for p in out.glob(f"{versions}/*") if p.name in ("model.pt", "model.pt2", "model.json"))
    (out / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(out).as_posix()}\n" for p in files))
    return out / "SHA256SUMS"


def train_series(scenarios: list[str], out: Path = WEIGHTS_DIR, workers: int = 2, log=print,
                 architecture: str = ARCHITECTURE) -> list[tuple]:
    """Train every version of every scenario (in `workers` one-thread processes) and write checksums."""
    jobs = [(s, v, str(out), architecture) for s in scenarios for v in range(1, len(COUNTER_FRACTIONS) + 1)]
    start = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_train_and_save, jobs))
    else:
        results = [_train_and_save(job) for job in jobs]
    for scenario, version, m, seconds in results:
        log(f"{scenario:13s} v{version}  biased {m['accuracy_biased']:.3f}  flipped {m['accuracy_flipped']:.3f}"
            f"  agreement {m['training']['shortcut_agreement']:.3f}  ({seconds:.1f} s)")
    write_checksums(out)
    log(f"trained {len(jobs)} versions in {time.perf_counter() - start:.1f} s with {workers} workers")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=list(SCENARIOS), action="append",
                        help="train this scenario (repeatable; default: all)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (default: the package's)")
    parser.add_argument("--workers", type=int, default=2, help="parallel one-thread training processes")
    parser.add_argument("--vit", action="store_true",
                        help=f"train the tiny ViT series instead ({VIT_ARCHITECTURE}, scenario {VIT_SCENARIO}, "
                             "into weights/vit/ unless --out)")
    args = parser.parse_args(argv)
    if args.vit:
        out = args.out if args.out != WEIGHTS_DIR else VIT_WEIGHTS_DIR
        train_series(args.scenario or [VIT_SCENARIO], out, args.workers, architecture=VIT_ARCHITECTURE)
    else:
        train_series(args.scenario or list(SCENARIOS), args.out, args.workers)


if __name__ == "__main__":
    main()
