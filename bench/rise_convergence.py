"""RISE convergence (issue 15): masks used and error against the full-count map, per stopping tolerance,
for the original estimator ("plain", `control_variate=False`) and the control variate ("cv", the default).

One pass of `n_masks` masks per image, with RISE's own seeded mask set (`draw_cells` / `smooth_masks`), keeps
the running map at every checkpoint (`explainers.rise.checkpoints`). RISE's early stop with the same seed
stops at one of those checkpoints with exactly that prefix map, so every tolerance is evaluated from the one
pass; the script checks that against `RISE(tolerance=...)` on a few images (`check` in the JSON).
Per tolerance: masks used (median, p90, max), and of the stopped map against the full-count map the
centred relative L2 error (the rule's own measure) and the Spearman rank correlation over pixels (median,
p10), the error against the plain estimator's full-count map, and the error against the expectation (infinitely many masks), estimated as below. `floor` is the centred relative distance between two full-count maps of different seeds over
sqrt(2): the full-count map's own sampling error, so the error against the *exact* expectation is about
sqrt(error^2 + floor^2).

    python -m bench.rise_convergence        # sample tiny_cnns at 64 / 32 px, random resnet18 at 64 / 224 px
    python -m bench.rise_convergence --cases watermark@64 --images 16
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from explainers.rise import RISE, MaskSums, checkpoints, draw_cells, relative_change, smooth_masks

TOLERANCES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
ESTIMATORS = ("plain", "cv")  # control_variate=False / True
ROOT = Path(__file__).resolve().parents[1]


def model_and_images(case: str, n_images: int):
    """(model, images in [0, 1] (B, 3, S, S), targets) for a case `NAME@SIZE`: NAME a sample scenario (its v1
    tiny_cnn, trained, from its state dict so that it also takes sizes other than its card's 64) on its own
    scenes, or `resnet18` (random weights) on the watermark scenes, upsampled past 64 px."""
    import torch.nn.functional as F

    from explainers.loading.models import load_model
    from sample_models.scenes import SCENARIOS, render

    name, size = case.split("@")
    size = int(size)
    drawn = min(size, 64)
    scenario = name if name in SCENARIOS else "watermark"
    images = torch.as_tensor(render(scenario, n=n_images, size=drawn, leak=0.9, seed=7).images).float()
    images = images.permute(0, 3, 1, 2) / 255.0  # (n, S, S, 3) uint8
    if size != drawn:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    if name in SCENARIOS:
        model = load_model(ROOT / f"sample_models/weights/{name}/v1/model.pt").module.eval()
    else:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, num_classes=1000).eval()
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    return model, images, targets


def prefix_maps(model, images, targets, n, cells, p, seed, chunk, every=250):
    """{estimator: {count: ((B, H, W) map after the first `count` masks, (B,) estimated error)}} at every
    checkpoint, for the original estimator ("plain") and the control variate ("cv"), from the same forwards
    and RISE's own running sums (`MaskSums`)."""
    batch, height, width = images.shape[0], images.shape[2], images.shape[3]
    grids, shifts = draw_cells(n, cells, p, seed, images.device)
    rows = torch.arange(batch)
    sums = {name: MaskSums(batch, height, width, images.device, name == "cv", errors=True) for name in ESTIMATORS}
    counts = checkpoints(n, every)
    starts = sorted({s for lo, hi in zip([0] + counts, counts) for s in range(lo, hi, chunk)})
    ends = starts[1:] + [n]
    out = {name: {} for name in ESTIMATORS}
    with torch.no_grad():
        for start, end in zip(starts, ends):  # chunks never straddle a checkpoint
            masks = smooth_masks(grids[start:end], shifts[start:end], height, width)
            logits = model((masks[:, None, None] * images[None]).flatten(0, 1))
            probs = logits.softmax(dim=1).view(len(masks), batch, -1)
            scores = probs.gather(2, targets[None, :, None].expand(len(masks), batch, 1))[..., 0].float()  # (k, B)
            for name in ESTIMATORS:
                sums[name].add(rows, scores, masks)
                if end in counts:
                    out[name][end] = (sums[name].estimate(rows, end, p),
                                      sums[name].error(rows, end))
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    rank = lambda m: m.flatten(1).argsort(dim=1).argsort(dim=1).float()  # noqa: E731
    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def centred_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return relative_change(a, b)  # ||centred(a - b)|| / ||centred(a)||: the stopping rule's own measure


def simulate(maps: dict, n: int, tolerance: float):
    """RISE's stopping rule on the prefix maps: (masks used (B,), stopped map (B, H, W))."""
    counts = sorted(maps)
    batch = maps[n][0].shape[0]
    used = torch.full((batch,), n)
    for count in counts[:-1]:
        newly = (maps[count][1] < tolerance) & (used == n)
        used[newly] = count
    stopped = torch.stack([maps[int(u)][0][i] for i, u in enumerate(used)])
    return used, stopped


def run_case(case, n_images, n, cells, seed, chunk, check_images):
    model, images, targets = model_and_images(case, n_images)
    started = time.perf_counter()
    maps = prefix_maps(model, images, targets, n, cells, 0.5, seed, chunk)
    seconds = time.perf_counter() - started
    others = prefix_maps(model, images, targets, n, cells, 0.5, seed + 1, chunk)
    plain_full = maps["plain"][n][0]
    result = {"case": case, "images": len(images), "n_masks": n, "cells": cells, "seed": seed,
              "full_pass_s": round(seconds, 1), "estimators": {}}
    for name in ESTIMATORS:
        full, full_estimate = maps[name][n]
        other = others[name][n][0]
        floor = centred_error(full, other) / 2 ** 0.5
        rows = []
        for tol in TOLERANCES:
            used, stopped = simulate(maps[name], n, tol)
            error, rho = centred_error(stopped, full), spearman(stopped, full)
            # against the expectation: E||stopped - other seed's full map||^2 = truth error^2 + floor^2 (relative)
            truth = (relative_change(stopped, other).square() - floor.square()).clamp_min(0).sqrt()
            vs_plain = centred_error(plain_full, stopped)  # relative to the plain full map's centred norm
            rows.append({"tolerance": tol, "masks_median": float(used.float().median()),
                         "masks_p90": float(np.percentile(used.numpy(), 90)), "masks_max": int(used.max()),
                         "stopped_share": float((used < n).float().mean()),
                         "error_median": float(error.median()), "error_p90": float(np.percentile(error.numpy(), 90)),
                         "error_max": float(error.max()),
                         "error_within_tolerance": float((error <= tol).float().mean()),
                         "truth_error_median": float(truth.median()),
                         "vs_plain_full_median": float(vs_plain.median()),
                         "spearman_median": float(rho.median()),
                         "spearman_p10": float(np.percentile(rho.numpy(), 10))})
        # the explainer itself, same seed: identical masks used and maps to the simulation
        k = min(check_images, len(images))
        explained = RISE(model, n_masks=n, cells=cells, seed=seed, chunk=chunk, tolerance=0.25,
                         control_variate=name == "cv").explain(images[:k], targets[:k])
        used, stopped = simulate({c: (m[:k], e[:k]) for c, (m, e) in maps[name].items()}, n, 0.25)
        check = {"images": k, "masks_used_equal": bool(torch.equal(explained.extras["masks_used"], used)),
                 "max_abs_diff": float((explained.maps - stopped).abs().max()),
                 "map_scale": float(stopped.abs().max())}
        result["estimators"][name] = {
            "floor_median": float(floor.median()), "floor_p90": float(np.percentile(floor.numpy(), 90)),
            "estimated_floor_median": float(full_estimate.median()), "rows": rows, "check": check}
    result["cv_full_vs_plain_full_median"] = float(centred_error(plain_full, maps["cv"][n][0]).median())
    return result


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines += [f"**{r['case']}**, {r['images']} images, full count {r['n_masks']} masks (cells {r['cells']}); "
                  f"control-variate full map vs plain full map: median {r['cv_full_vs_plain_full_median']:.3f}", ""]
        for name, e in r["estimators"].items():
            lines += [f"*{name}*: full map's own sampling error (two seeds / sqrt 2): median {e['floor_median']:.3f}, "
                      f"p90 {e['floor_p90']:.3f} (the rule's estimate of it: median {e['estimated_floor_median']:.3f}); "
                      f"explainer check: masks_used equal {e['check']['masks_used_equal']}, "
                      f"max |diff| {e['check']['max_abs_diff']:.1e} (map max {e['check']['map_scale']:.2f})", "",
                      "| tolerance | masks used median | p90 | max | stopped early | rel. L2 error vs own full median "
                      "| p90 | max | error <= tol | error vs expectation (est.) median | vs plain full median "
                      "| Spearman median | p10 |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for row in e["rows"]:
                lines.append(f"| {row['tolerance']:.2f} | {row['masks_median']:.0f} | {row['masks_p90']:.0f} | "
                             f"{row['masks_max']} | {row['stopped_share']:.0%} | {row['error_median']:.3f} | "
                             f"{row['error_p90']:.3f} | {row['error_max']:.3f} | "
                             f"{row['error_within_tolerance']:.0%} | {row['truth_error_median']:.3f} | "
                             f"{row['vs_plain_full_median']:.3f} | "
                             f"{row['spearman_median']:.3f} | {row['spearman_p10']:.3f} |")
            lines.append("")
    return "\n".join(lines)


def write_results(results: list[dict], table: str, name: str) -> None:
    """bench/results/<name>.json (the numbers) and <name>.md (the table), for this bench and the occlusion one."""
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=1))
    (out / f"{name}.md").write_text(table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["watermark@64", "cage@64", "watermark@32", "resnet18@64", "resnet18@224"])
    parser.add_argument("--images", type=int, default=24, help="images per case (resnet18: a third, at 224 a quarter)")
    parser.add_argument("--masks", type=int, default=4000)
    parser.add_argument("--cells", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--check-images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="rise-convergence")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for case in args.cases:
        n_images = max(2, args.images // (4 if case.endswith("@224") else 3)) if case.startswith("resnet") else args.images
        results.append(run_case(case, n_images, args.masks, args.cells, args.seed, args.chunk, args.check_images))
        print(markdown(results[-1:]), flush=True)
    write_results(results, markdown(results), args.out)


if __name__ == "__main__":
    main()
