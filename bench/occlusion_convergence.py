"""Occlusion's early stop (issue 15): windows used and error against the full (Captum) map, per tolerance.

Per image: the full map (`tolerance=0`, Captum's Occlusion) and the map after the first two window lattices
(`tolerance=inf` stops every image there) with its `converged_change`. An image stops at tolerance t exactly
when that change is < t, and then its map is the two-lattice map; otherwise it is the full map. So one pair of
runs gives every tolerance; the script checks one tolerance against `Occlusion(tolerance=...)` directly.

    python -m bench.occlusion_convergence
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.rise_convergence import model_and_images, spearman, write_results
from explainers.occlusion import Occlusion
from explainers.rise import relative_change

TOLERANCES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def run_case(case: str, n_images: int, check_tolerance: float = 0.2) -> dict:
    model, images, targets = model_and_images(case, n_images)
    full = Occlusion(model, perturbations_per_eval=32).explain(images, targets).maps
    half = Occlusion(model, perturbations_per_eval=32, tolerance=float("inf")).explain(images, targets)
    all_windows = int(Occlusion(model, tolerance=1e-30).explain(images[:1], targets[:1]).extras["windows_used"][0])
    change, two = half.extras["converged_change"], int(half.extras["windows_used"][0])
    rows = []
    for tol in TOLERANCES:
        stop = change < tol
        stopped = torch.where(stop[:, None, None], half.maps, full)
        error, rho = relative_change(stopped, full), spearman(stopped, full)
        used = torch.where(stop, two, all_windows).float()
        rows.append({"tolerance": tol, "windows_mean": float(used.mean()), "stopped_share": float(stop.float().mean()),
                     "error_median": float(error.median()), "error_p90": float(np.percentile(error.numpy(), 90)),
                     "error_max": float(error.max()), "error_within_tolerance": float((error <= tol).float().mean()),
                     "spearman_median": float(rho.median()), "spearman_p10": float(np.percentile(rho.numpy(), 10))})
    direct = Occlusion(model, perturbations_per_eval=32, tolerance=check_tolerance).explain(images[:4], targets[:4])
    expected = torch.where((change[:4] < check_tolerance)[:, None, None], half.maps[:4], full[:4])
    two_lattice_error = relative_change(half.maps, full)
    return {"case": case, "images": len(images), "windows_all": all_windows, "windows_two_lattices": two,
            "change_median": float(change.median()), "two_lattice_error_over_change_median":
            float((two_lattice_error / change).median()),
            "check": {"tolerance": check_tolerance, "max_abs_diff": float((direct.maps - expected).abs().max())},
            "rows": rows}


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines += [f"**{r['case']}**, {r['images']} images, {r['windows_all']} windows in all, "
                  f"{r['windows_two_lattices']} in the first two lattices; change after two lattices: median "
                  f"{r['change_median']:.3f}; their error against the full map / that change: median "
                  f"{r['two_lattice_error_over_change_median']:.2f}; explainer check at {r['check']['tolerance']}: "
                  f"max |diff| {r['check']['max_abs_diff']:.1e}", "",
                  "| tolerance | windows per image (mean) | stopped early | rel. L2 error median | p90 | max "
                  "| error <= tol | Spearman median | p10 |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            lines.append(f"| {row['tolerance']:.2f} | {row['windows_mean']:.0f} | {row['stopped_share']:.0%} | "
                         f"{row['error_median']:.3f} | {row['error_p90']:.3f} | {row['error_max']:.3f} | "
                         f"{row['error_within_tolerance']:.0%} | {row['spearman_median']:.3f} | "
                         f"{row['spearman_p10']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["watermark@64", "cage@64", "watermark@32", "resnet18@64", "resnet18@224"])
    parser.add_argument("--images", type=int, default=24, help="images per case (resnet18@224: a quarter)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="occlusion-convergence")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for case in args.cases:
        results.append(run_case(case, max(2, args.images // 4) if case.endswith("@224") else args.images))
        print(markdown(results[-1:]), flush=True)
    write_results(results, markdown(results), args.out)


if __name__ == "__main__":
    main()
