"""`python -m bench.run [--quick] [--device cuda] [--models ...]`: the peer benchmark, JSON + Markdown in bench/results/.

Profiles keep the default run near ten minutes on two CPU cores: image counts, repeats and the costlier
methods' parameters shrink with model size (Score-CAM on resnet layer4 means 512-2048 forwards per image,
so it runs on tiny_cnn only). `--images N` overrides the image count of every model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from bench import harness, memory
from bench.implementations import method_cases
from bench.models import build, images_and_targets

RESULTS = Path(__file__).parent / "results"

PROFILES = {
    "tiny_cnn": {
        "images": 32, "batch_size": 32, "limit_batches": [16, 32, 64],
        "methods": ["gradcam", "gradcam_pp", "layercam", "scorecam", "saliency", "integrated_gradients",
                    "occlusion", "rise"],
        "settings": {"scorecam": {"batch_size": 256},
                     "integrated_gradients": {"n_steps": 32, "internal_batch_size": 256},
                     "occlusion": {"window": 8, "stride": 4, "perturbations_per_eval": 16},
                     "rise": {"n_masks": 1000, "cells": 7, "p": 0.5, "seed": 0, "chunk": 16, "tolerance": 0,
                              "control_variate": False}},
    },
    "resnet18": {
        "images": 8, "batch_size": 8, "limit_batches": [4, 8],
        "methods": ["gradcam", "gradcam_pp", "saliency", "integrated_gradients", "rise"],
        "settings": {"integrated_gradients": {"n_steps": 4, "internal_batch_size": 32},
                     "rise": {"n_masks": 32, "cells": 7, "p": 0.5, "seed": 0, "chunk": 4, "tolerance": 0,
                              "control_variate": False}},
    },
    "resnet50": {
        "images": 4, "batch_size": 4, "limit_batches": [4],
        "methods": ["gradcam", "saliency"],
        "settings": {},
    },
}

QUICK = {"tiny_cnn": {**PROFILES["tiny_cnn"], "images": 16, "batch_size": 16, "limit_batches": [16],
                      "methods": ["gradcam", "saliency", "rise"],
                      "settings": {"rise": {"n_masks": 200, "cells": 7, "p": 0.5, "seed": 0, "chunk": 8}}}}


def run_model(name: str, profile: dict, repeats: int, device: torch.device, with_memory: bool,
              threads: int, log) -> dict:
    model = build(name)
    model.net.to(device)
    images, targets = images_and_targets(model, profile["images"])
    images, targets = images.to(device), targets.to(device)
    limits = harness.measure_limits(model, images, targets, profile["limit_batches"], repeats, device)
    log(f"{name}: X_fb {limits.fb:.1f} img/s (batch {limits.fb_batch}), X_inf {limits.inf:.1f} img/s "
        f"(batch {limits.inf_batch})")
    cases = []
    for case in method_cases(model, profile["methods"], profile["batch_size"], profile["settings"]):
        gate_images = min(len(images), profile["batch_size"])
        cosines = harness.gate(case, images[:gate_images], targets[:gate_images])
        timings = harness.time_case(case, images, targets, repeats, device,
                                    limit=harness.limit_impl(model, limits, case.limit))
        rows = harness.case_rows(case, timings, cosines, len(images), limits)
        if with_memory and device.type == "cpu":
            for row in rows:
                row["peak_mib"] = memory.peak_mib(name, case.method, row["impl"], profile["batch_size"],
                                                  case.params, threads)
        cases.append({"method": case.method, "params": case.params, "limit": case.limit,
                      "passes_per_image": case.passes, "rows": rows})
        log("  " + ", ".join(f"{r['impl']} {r['images_per_s']:.2f}" for r in rows)
            + f", limit {rows[0]['limit_images_per_s']:.2f}  [{case.method}]")
    return {"size": model.size, "layer": model.layer_name, "images": len(images),
            "batch_size": profile["batch_size"], "limits": vars(limits), "cases": cases}


def machine(threads: int, device: torch.device) -> dict:
    import captum
    import pytorch_grad_cam  # noqa: F401
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": torch.__version__, "captum": captum.__version__,
            "grad-cam": version("grad-cam"), "device": str(device), "threads": threads,
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Device {m['device']}, {m['threads']} threads, torch {m['torch']}, captum {m['captum']}, "
             f"grad-cam {m['grad-cam']}; load average at start {m['load_average'][0]:.1f} on "
             f"{m['cpu_count']} cores; median (best) of >= {result['repeats']} interleaved rounds. Efficiency: "
             f"ours against the limit timed in the same rounds (one pass over the images at the limit's best "
             f"batch, divided by the passes per image); the limit row is its rate at the start of the run.", "",
             "| model | method | implementation | images/s median (best) | ours ÷ this median (best) | "
             "efficiency of ours vs limit | peak MiB | gate cos |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, model in result["models"].items():
        lim = model["limits"]
        lines.append(f"| {name} | **limit** | X_fb (fwd+bwd to input, batch {lim['fb_batch']}) / X_inf "
                     f"(batch {lim['inf_batch']}) | {lim['fb']:.1f} / {lim['inf']:.1f} | | | | |")
        for case in model["cases"]:
            for row in case["rows"]:
                ratio = row.get("ours_over_peer")
                ratio_text = (f"{ratio:.2f}x ({row['ours_over_peer_best']:.2f}x)" if ratio else
                              ("gate failed" if row["impl"] != "ours" else ""))
                eff = f"{row['efficiency']:.2f} of {row['limit_images_per_s']:.2f}" if "efficiency" in row else ""
                peak = f"{row['peak_mib']:.0f}" if "peak_mib" in row else ""
                cos = f"{row['gate_cosine']:.4f}" if "gate_cosine" in row else ""
                speed = f"{row['images_per_s']:.2f} ({row['best_images_per_s']:.2f})"
                lines.append(f"| {name} | {case['method']} | {row['impl']} | {speed} | {ratio_text} | {eff} | "
                             f"{peak} | {cos} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny_cnn, 3 methods: a ~1 minute smoke test")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3, quick 2)")
    parser.add_argument("--models", nargs="+", default=None, choices=sorted(PROFILES))
    parser.add_argument("--images", type=int, default=None, help="images per case for every model")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-implementation peak RSS")
    parser.add_argument("--out", default=None, help="result basename in bench/results (default: latest[-quick])")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    profiles = QUICK if args.quick else {k: PROFILES[k] for k in (args.models or PROFILES)}
    if args.images:
        profiles = {k: {**p, "images": args.images} for k, p in profiles.items()}
    repeats = args.repeats or (2 if args.quick else 3)
    started = time.perf_counter()
    result = {"machine": machine(args.threads, device), "repeats": repeats, "models": {}}
    RESULTS.mkdir(exist_ok=True)
    base = RESULTS / (args.out or ("latest-quick" if args.quick else "latest"))
    for name, profile in profiles.items():
        result["models"][name] = run_model(name, profile, repeats, device, not (args.no_memory or args.quick),
                                           args.threads, log=lambda text: print(text, flush=True))
        result["wall_seconds"] = time.perf_counter() - started
        base.with_suffix(".json").write_text(json.dumps(result, indent=1))  # after every model: partial
        base.with_suffix(".md").write_text(markdown(result))  # results survive an interrupted run
    print(markdown(result))
    print(f"wrote {base}.json and .md in {result['wall_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
