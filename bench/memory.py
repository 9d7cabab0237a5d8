"""Memory: peak RSS of one implementation on one batch, and RSS growth of our Grad-CAM over many images.

tracemalloc does not see torch's CPU allocations (they bypass Python's allocator), so we use the operating
system's numbers. Peak: each implementation runs in a fresh subprocess (so one implementation's freed but
cached memory cannot hide another's peak): warm up on one image, read the current RSS, run one batch,
then `getrusage(RUSAGE_SELF).ru_maxrss` (the high-water mark, KiB on Linux) minus that RSS is the peak the
batch added. Growth: the current RSS (/proc/self/statm) after every batch of a long loop.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

MIB = 1024 * 1024


def current_rss() -> int:
    """Resident set size in bytes now (Linux /proc; elsewhere the high-water mark, an upper bound)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return max_rss()


def max_rss() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def peak_mib(model: str, method: str, impl: str, batch_size: int, settings: dict, threads: int) -> float:
    """Peak MiB one batch of `impl` adds, measured in a fresh subprocess."""
    command = [sys.executable, "-m", "bench.memory", "peak", "--model", model, "--method", method,
               "--impl", impl, "--batch-size", str(batch_size), "--settings", json.dumps(settings),
               "--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=_repo_root())
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def rss_growth(n_images: int, batch_size: int = 64, threads: int = 2) -> list[float]:
    """MiB of RSS after each batch while our Grad-CAM explains `n_images` tiny_cnn 64x64 images (subprocess)."""
    command = [sys.executable, "-m", "bench.memory", "growth", "--n", str(n_images), "--batch-size",
               str(batch_size), "--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=_repo_root())
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_mib"]


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peak(args) -> dict:
    from bench.implementations import method_cases
    from bench.models import build, images_and_targets

    model = build(args.model)
    (case,) = method_cases(model, [args.method], args.batch_size, {args.method: json.loads(args.settings)})
    impl = next(i for i in [case.ours, *case.peers] if i.name == args.impl)
    images, targets = images_and_targets(model, args.batch_size)
    impl.fn(images[:1], targets[:1])
    before = current_rss()
    impl.fn(images, targets)
    return {"peak_mib": max(0, max_rss() - before) / MIB}


def _growth(args) -> dict:
    """Images are generated per batch (as a data loader would) and maps kept only as a per-image summary."""
    from explainers.registry import make_explainer
    from bench.models import build

    model = build("tiny_cnn")
    explainer = make_explainer("gradcam", model.net, layer=model.layer)
    generator = torch.Generator().manual_seed(0)
    rss, kept = [], []
    for start in range(0, args.n, args.batch_size):
        size = min(args.batch_size, args.n - start)
        images = torch.rand(size, 3, 64, 64, generator=generator)
        targets = torch.randint(0, 2, (size,), generator=generator)
        # Kept as numpy, as the runner keeps floats: thousands of small torch tensors kept alive fragment
        # the heap (RSS grows ~0.3 MiB per kept tensor with glibc) and would measure the caller, not Grad-CAM.
        kept.append(explainer.explain(images, targets).maps.clamp(min=0).mean(dim=(1, 2)).numpy().copy())
        rss.append(current_rss() / MIB)
    return {"rss_mib": rss, "n_summaries": int(sum(len(k) for k in kept))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["peak", "growth"])
    parser.add_argument("--model"), parser.add_argument("--method"), parser.add_argument("--impl")
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(_peak(args) if args.mode == "peak" else _growth(args)))


if __name__ == "__main__":
    main()
