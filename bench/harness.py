"""Time ours and the peers in one process: same model, images and targets, interleaved, median of repeats.

Order of work per model: the compute limit (X_fb, X_inf), then per method a correctness gate on one batch
(which doubles as warm-up), then `repeats` rounds in which every implementation processes all images once,
the order rotating each round so that drift in machine load hits every implementation alike. The limit
(one pass over the images at its best batch) is timed in those same rounds, and efficiency uses that.
A ratio is reported only for a peer that passed the gate. Peak memory is measured separately
(`bench.memory`), one fresh subprocess per implementation.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.implementations import Impl, MethodCase, as_grad_cam_library_output, batched, cosine
from bench.models import BenchModel

GATE_COSINE = 0.999


@dataclass
class Limits:
    """Throughput of the raw model on this machine, images/second, at the best batch size tried."""
    fb: float  # forward + backward to the input (weights frozen)
    inf: float  # inference
    fb_batch: int
    inf_batch: int


def write_results(results_dir: Path, name: str, machine: dict, results: list[dict], table: str) -> None:
    """`<name>.json` (machine + results) and `<name>.md` (the table) in `results_dir`; the table is printed."""
    results_dir.mkdir(exist_ok=True)
    base = results_dir / name
    base.with_suffix(".json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    base.with_suffix(".md").write_text(table)
    print(table)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, *args, device: torch.device = torch.device("cpu")) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn(*args)
    synchronize(device)
    return time.perf_counter() - start


def forward_backward_fn(net: torch.nn.Module):
    """Forward + backward to the input with the weights frozen for the call: X_fb's unit of work."""
    def forward_backward(x, t):
        flags = [(p, p.requires_grad) for p in net.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(net(x).gather(1, t[:, None]).sum(), x)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        return grad
    return forward_backward


def inference_fn(net: torch.nn.Module):
    def inference(x, t):
        with torch.no_grad():
            return net(x)
    return inference


def measure_limits(model: BenchModel, images: torch.Tensor, targets: torch.Tensor, batch_sizes: list[int],
                   repeats: int, device: torch.device) -> Limits:
    """The best batch size of each limit (and its rate at the start of the run)."""
    forward_backward, inference = forward_backward_fn(model.net), inference_fn(model.net)
    fb = {b: _rate(forward_backward, images, targets, b, repeats, device) for b in batch_sizes}
    inf = {b: _rate(inference, images, targets, b, repeats, device) for b in batch_sizes}
    best_fb, best_inf = max(fb, key=fb.get), max(inf, key=inf.get)
    return Limits(fb[best_fb], inf[best_inf], best_fb, best_inf)


def limit_impl(model: BenchModel, limits: Limits, kind: str) -> Impl:
    """The limit as an implementation timed in the same rounds (one pass over the images at its best batch),
    so that efficiency compares ours with the limit under the same machine load: on a shared machine the
    load drifts by several times within a run, and a limit measured once at the start is not comparable."""
    if kind == "fb":
        return Impl("X_fb", batched(forward_backward_fn(model.net), limits.fb_batch))
    return Impl("X_inf", batched(inference_fn(model.net), limits.inf_batch))


def _rate(fn, images, targets, batch, repeats, device) -> float:
    """Images/second of `fn` on batches of `batch` (images tiled when the set is smaller than one batch)."""
    if len(images) < batch:
        reps = -(-batch // len(images))
        images, targets = images.repeat(reps, 1, 1, 1)[:batch], targets.repeat(reps)[:batch]
    x, t = images[:batch], targets[:batch]
    fn(x, t)  # warm-up
    return batch / statistics.median(seconds(fn, x, t, device=device) for _ in range(repeats))


def gate(case: MethodCase, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Minimum per-image cosine between our maps and each peer's, on `images` (after the peer's
    normalisation when the peer normalises). Runs every implementation once: the warm-up too."""
    reference = case.ours.fn(images, targets).float().cpu()
    result = {}
    for peer in case.peers:
        theirs = peer.fn(images, targets).float().cpu()
        mine = as_grad_cam_library_output(reference, peer.layer_hw) if peer.normalised else reference
        result[peer.name] = float(cosine(mine, theirs).min())
    return result


def time_case(case: MethodCase, images: torch.Tensor, targets: torch.Tensor, repeats: int,
              device: torch.device, min_seconds: float = 2.0, max_rounds: int = 15,
              limit: Impl | None = None) -> dict[str, list[float]]:
    """At least `repeats` rounds; cheap cases get more (until `min_seconds` per implementation or
    `max_rounds`), because a 30 ms workload on a shared machine is mostly scheduling noise. `limit`
    (see `limit_impl`) joins the rotation."""
    impls: list[Impl] = [case.ours, *case.peers] + ([limit] if limit is not None else [])
    timings: dict[str, list[float]] = {impl.name: [] for impl in impls}
    round_ = 0
    while round_ < repeats or (round_ < max_rounds and min(map(sum, timings.values())) < min_seconds):
        shift = round_ % len(impls)
        round_ += 1
        for impl in impls[shift:] + impls[:shift]:
            timings[impl.name].append(seconds(impl.fn, images, targets, device=device))
    return timings


def case_rows(case: MethodCase, timings: dict[str, list[float]], cosines: dict[str, float], n_images: int,
              limits: Limits) -> list[dict]:
    """One row per implementation: images/s, our speed-up over it, and (ours) efficiency against the limit."""
    rate = {name: n_images / statistics.median(ts) for name, ts in timings.items()}
    best = {name: n_images / min(ts) for name, ts in timings.items()}
    key = "X_fb" if case.limit == "fb" else "X_inf"
    interleaved = key in timings  # else the rate measured at the start of the run
    limit = (rate[key] if interleaved else (limits.fb if case.limit == "fb" else limits.inf)) / case.passes
    rows = [{"impl": "ours", "images_per_s": rate["ours"], "best_images_per_s": best["ours"],
             "seconds": timings["ours"], "efficiency": rate["ours"] / limit, "limit_images_per_s": limit,
             "limit_interleaved": interleaved, "limit_seconds": timings.get(key)}]
    for peer in case.peers:
        passed = cosines[peer.name] >= GATE_COSINE
        rows.append({"impl": peer.name, "images_per_s": rate[peer.name], "best_images_per_s": best[peer.name],
                     "seconds": timings[peer.name], "gate_cosine": cosines[peer.name], "gate_passed": passed,
                     "ours_over_peer": rate["ours"] / rate[peer.name] if passed else None,
                     "ours_over_peer_best": best["ours"] / best[peer.name] if passed else None})
    return rows
