"""`python -m bench.drise_convergence`: D-RISE at its default tolerance (issue 29): masks used per detection,
efficiency against the detector alone, and the ratio to vision-explanation-methods (VEM) at equal error.

Detectors: the sample grid detector (64 px), a random-weight torchvision `fasterrcnn_mobilenet_v3_large_320_fpn`
(`--frcnn-size` px) and an Ultralytics YOLOv8n built from its yaml (random weights, offline; the head made to
fire as in `tests/detection/yolo_helpers.py`: class logits biased up, box sides peaked at one stride).
Targets: per image the clean image's top detection. Ours: `DRISE` at its default tolerance with an audit's
defaults (`analysis.runs.tasks.detection.DRISE_DEFAULTS`: 8x8 cells, ceiling 1000 masks, batch 250);
`cells` = VEM's `mask_res`.

- **Efficiency**: ours' seconds against the detector alone on as many images as ours sent through it (the sum
  over images of the masks their last detection used), at our detector batch, on masked images (one batch of
  the images under D-RISE masks, called repeatedly: a detector's NMS cost depends on what it sees), timed
  in the same interleaved rounds (A B A B: the load drifts on this shared machine).
- **Equal error**: VEM draws its own masks (binary grids, nearest-neighbour upsampled, randomly cropped: its
  `generate_mask`), whose noise per mask differs from ours. On the same masks the two pipelines give the same
  maps (`bench.drise`'s gate), so the masks VEM needs for our estimated error are found by feeding VEM's own
  masks to our pipeline with the same stopping rule. VEM has no stopping rule: one call takes one `N` for all
  its images, so at equal error it runs the largest of those counts (the row also gives the sum over images
  of each image's count: an oracle that knew each image's count in advance). Its seconds per mask (one
  detector call over the images per mask) are timed in the same rounds at `--vem-masks` masks. Where VEM's
  masks reach the ceiling still above the tolerance, its count is extrapolated as n (error / tolerance)^2
  (the error of a mean falls as 1 / sqrt(n)) and marked so.
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch
from torch import nn

from analysis.runs.tasks.detection import DRISE_DEFAULTS
from bench.drise import VEMWrapper, grid_detector, top_detections, torchvision_detector
from bench.harness import seconds, write_results

RESULTS = Path(__file__).parent / "results"


def yolo_detector(size: int = 64, seed: int = 0):
    """YOLOv8n from `yolov8n.yaml`, random weights, head biased to fire (test helper's recipe), in the D-RISE format."""
    from explainers.loading.yolo import YoloDetector, import_ultralytics
    from sample_models.detection import CLASSES, make_scenes

    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel("yolov8n.yaml", nc=len(CLASSES), verbose=False).eval()
    head = model.model[-1]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.weight.requires_grad:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        for branch in head.cv3:
            branch[-1].weight.mul_(100.0)
            branch[-1].bias[:] = 1.0
        for branch in head.cv2:
            branch[-1].weight.mul_(0.05)
            branch[-1].bias[:] = 0.0
            branch[-1].bias.view(4, head.reg_max)[:, 1] = 6.0
    detector = YoloDetector(model)

    def images(n: int) -> torch.Tensor:
        scenes = torch.stack([s.image for s in make_scenes(n, seed=7, biased=True)])
        return nn.functional.interpolate(scenes, size=(size, size), mode="bilinear", align_corners=False)
    return detector, images, size


def vem_masks(n: int, cells: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """(n, H, W) masks from VEM's own `generate_mask`, with the padding `DRISE_saliency` uses."""
    from vision_explanation_methods.explanations import drise as vem

    torch.manual_seed(seed)
    padding = int(max(size[0] / cells, size[1] / cells))
    return torch.stack([vem.generate_mask((cells, cells), size, padding, "cpu")[0] for _ in range(n)])


def needed(result, ours, tolerance: float) -> list[float]:
    """Per image the masks its last detection needed for the error ours reached (the tolerance, or above it
    where ours stopped at the ceiling); past the ceiling, n (error / that error)^2."""
    out = []
    for used, error, reached in zip(result.masks_used, result.estimated_error, ours.estimated_error):
        goals = [max(tolerance, float(r)) for r in reached]
        counts = [float(u) if not e >= g else float(u) * (float(e) / g) ** 2 for u, e, g in zip(used, error, goals)]
        out.append(max(counts))
    return out


def bench(name: str, detector, images: torch.Tensor, *, cells: int, ceiling: int, batch_size: int, repeats: int,
          vem_n: int, log=print) -> dict:
    from vision_explanation_methods.explanations import drise as vem

    from explainers.drise import DRISE
    from explainers.rise import mask_chunks

    targets, records = top_detections(detector, images)
    drise = DRISE(detector, cells=cells, n_masks=ceiling, batch_size=batch_size)
    run = drise.explain_detections_with_counts(images, targets)
    used = [int(u.max()) for u in run.masks_used]  # per image: what its last detection needed
    size = tuple(images.shape[-2:])
    theirs = drise.explain_detections_with_counts(images, targets, masks=vem_masks(ceiling, cells, size, seed=1))
    vem_used = needed(theirs, run, drise.tolerance)
    batch = drise.batch_size
    masks = next(mask_chunks(batch, cells, drise.p, 0, size, "cpu", batch))  # the work the detector does inside
    x = images.repeat(-(-batch // len(images)), 1, 1, 1)[:batch] * masks[:, None]
    total = sum(used)

    def alone():
        with torch.no_grad():
            for start in range(0, total, batch):
                detector(x[:min(batch, total - start)])

    wrapper = VEMWrapper(detector)
    impls = {"ours": lambda: drise.explain_detections(images, targets), "detector alone": alone,
             "vem": lambda: vem.DRISE_saliency(wrapper, images, records, vem_n, mask_res=(cells, cells))}
    timings = {k: [] for k in impls}
    load = [os.getloadavg()[0]]
    order = list(impls)
    for round_ in range(repeats):
        for key in order[round_ % len(order):] + order[:round_ % len(order)]:
            timings[key].append(seconds(impls[key]))
    load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in timings.items()}
    vem_per_mask = med["vem"] / vem_n
    result = {"detector": name, "size": int(images.shape[-1]), "images": len(images), "cells": cells,
              "tolerance": drise.tolerance, "ceiling": drise.n_masks, "min_masks": drise.min_masks,
              "masks_used": [u.tolist() for u in run.masks_used],
              "estimated_error": [e.tolist() for e in run.estimated_error],
              "vem_masks_needed": [round(u) for u in vem_used],
              "vem_extrapolated": [bool((e >= drise.tolerance).any()) for e in theirs.estimated_error],
              "seconds": timings, "load": load,
              "efficiency": med["detector alone"] / med["ours"],
              "vem_fixed_n": max(vem_used), "vem_equal_error_s": vem_per_mask * max(vem_used),
              "vem_oracle_s": vem_per_mask * sum(vem_used) / len(images)}
    result["ours_over_vem_equal_error"] = result["vem_equal_error_s"] / med["ours"]
    result["ours_over_vem_oracle"] = result["vem_oracle_s"] / med["ours"]
    log(f"{name}: masks used {result['masks_used']} (VEM masks {result['vem_masks_needed']}); ours {med['ours']:.2f} s, "
        f"alone {med['detector alone']:.2f} s -> efficiency {result['efficiency']:.2f}; VEM at equal error "
        f"{result['vem_equal_error_s']:.1f} s ({result['ours_over_vem_equal_error']:.1f}x, oracle "
        f"{result['ours_over_vem_oracle']:.1f}x); load {load[0]:.1f}-{load[1]:.1f}")
    return result


def markdown(results: list[dict], machine: dict) -> str:
    lines = [f"D-RISE at convergence, {machine['threads']} threads, {machine['cpu_count']} cores (shared); median "
             f"of {machine['repeats']} interleaved rounds.", "",
             "| detector | images | masks used per detection (ceiling) | estimated error | ours s | detector alone s | efficiency | "
             "VEM masks for equal error | ours ÷ VEM at equal error (oracle) | load |",
             "|---|---:|---|---|---:|---:|---:|---|---:|---|"]
    for r in results:
        lines.append(f"| {r['detector']} {r['size']}px | {r['images']} | {r['masks_used']} ({r['ceiling']}) | "
                     f"{[[round(e, 2) for e in image] for image in r['estimated_error']]} | "
                     f"{statistics.median(r['seconds']['ours']):.2f} | "
                     f"{statistics.median(r['seconds']['detector alone']):.2f} | {r['efficiency']:.2f} | "
                     f"{r['vem_masks_needed']}{' (extrapolated)' if any(r['vem_extrapolated']) else ''} | "
                     f"{r['ours_over_vem_equal_error']:.1f}x "
                     f"({r['ours_over_vem_oracle']:.1f}x) | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=["grid", "frcnn", "yolo"])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--cells", type=int, default=DRISE_DEFAULTS["cells"])
    parser.add_argument("--ceiling", type=int, default=DRISE_DEFAULTS["n_masks"], help="D-RISE n_masks")
    parser.add_argument("--batch-size", type=int, default=DRISE_DEFAULTS["batch_size"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vem-masks", type=int, default=50, help="masks per timed VEM call (its rate is linear)")
    parser.add_argument("--frcnn-size", type=int, default=64)
    parser.add_argument("--yolo-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="drise-convergence")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"threads": args.threads, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
               "repeats": args.repeats, "torch": torch.__version__}
    makers = {"grid": lambda: grid_detector(), "frcnn": lambda: torchvision_detector(args.frcnn_size),
              "yolo": lambda: yolo_detector(args.yolo_size)}
    names = {"grid": "grid detector", "frcnn": "fasterrcnn_mobilenet_v3_320 (random)", "yolo": "yolov8n (random)"}
    results = []
    for key in args.detectors:
        detector, make_images, _ = makers[key]()
        results.append(bench(names[key], detector, make_images(args.images), cells=args.cells, ceiling=args.ceiling,
                             batch_size=args.batch_size, repeats=args.repeats, vem_n=args.vem_masks))
    write_results(RESULTS, args.out, machine, results, markdown(results, machine))
    return results


if __name__ == "__main__":
    main()
