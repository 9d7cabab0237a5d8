"""`python -m bench.ig_steps`: integrated gradients, ours against Captum on one model at a realistic step count.

Ours calls Captum's `IntegratedGradients.attribute` and adds one no-grad forward of the clean images for the
target scores (`SaliencyBatch.scores`); that forward is 1 / (3 n_steps) of the work (a backward costs about
two forwards), so the bound on ours / Captum is 1 / (1 + 1 / (3 n_steps)): 0.92 at the table's 4 steps,
0.99 at 32. This runs the gate and interleaved rounds of the same harness at `--steps`.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from bench import harness
from bench.implementations import method_cases
from bench.models import build, images_and_targets


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build(args.model)
    images, targets = images_and_targets(model, args.images)
    settings = {"integrated_gradients": {"n_steps": args.steps, "internal_batch_size": args.steps * args.images}}
    (case,) = method_cases(model, ["integrated_gradients"], args.images, settings)
    case.peers = [p for p in case.peers if p.name == "captum"]  # the per-image loop is the table's business
    cosines = harness.gate(case, images, targets)
    timings = harness.time_case(case, images, targets, args.repeats, torch.device("cpu"), min_seconds=0)
    limits = harness.Limits(fb=float("nan"), inf=float("nan"), fb_batch=0, inf_batch=0)
    rows = harness.case_rows(case, timings, cosines, len(images), limits)
    bound = 1 / (1 + 1 / (3 * args.steps))
    result = {"model": args.model, "n_steps": args.steps, "images": args.images, "threads": args.threads,
              "load_average": os.getloadavg(), "bound_ours_over_captum": bound, "rows": rows}
    out = Path(__file__).parent / "results" / f"ig-{args.model}-{args.steps}steps.json"
    out.write_text(json.dumps(result, indent=1))
    captum = rows[1]
    print(f"{args.model} IG {args.steps} steps, {args.images} images: ours {rows[0]['images_per_s']:.3f} img/s, "
          f"captum {captum['images_per_s']:.3f}; ours/captum {captum['ours_over_peer']:.3f} median, "
          f"{captum['ours_over_peer_best']:.3f} best; bound {bound:.3f}; gate cos {captum['gate_cosine']:.5f}")
    return result


if __name__ == "__main__":
    main()
