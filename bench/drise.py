"""`python -m bench.drise`: our D-RISE against vision-explanation-methods' `DRISE_saliency`, same detector,
same images, same target detections, same mask count; masked images/second, interleaved rounds.

Detectors: the sample grid detector (`sample_models.detection.load_detector("biased")`, 64x64) and, with
`--torchvision`, a random-weight `fasterrcnn_mobilenet_v3_large_320_fpn` (costly on CPU: few masks).
Targets: per image, the clean image's top detection (box + class probabilities); VEM gets the same boxes and
probabilities with objectness 1, as its docs say for targets. Masks: each side draws its own (ours: RISE's
smooth bilinear masks, `cells` = VEM's `mask_res`, p = 0.5 = VEM's randint(0, 2)).

Gate (before timing): D-RISE is random, so two independent runs never agree exactly and a cosine between
them measures the mask noise, not the code. Instead the gate injects the *same* masks into both (VEM's
`generate_mask` is swapped for one that yields ours, in order), runs both real pipelines end to end
(masking, detector, affinity, fusion with mean-affinity centring) and requires our map, min-max normalised as
VEM normalises, to match VEM's: per-target cosine >= 0.999 and max abs difference reported (float rounding).
Efficiency: masked images/s against X_inf, the detector alone on as many images at our batch size, timed in
the same interleaved rounds (the machine's load drifts; a separate measurement would not be comparable).
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch

from bench.harness import seconds, write_results
from bench.implementations import cosine

RESULTS = Path(__file__).parent / "results"


def grid_detector():
    from sample_models.detection import SIZE, load_detector, make_scenes

    detector = load_detector("biased")

    def images(n: int) -> torch.Tensor:
        return torch.stack([s.image for s in make_scenes(n, seed=7, biased=True)])
    return detector, images, SIZE


def torchvision_detector(size: int = 96):
    import torchvision

    from explainers.detection import TorchvisionDetector

    torch.manual_seed(0)
    net = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                                       weights_backbone=None, min_size=size, max_size=size,
                                       box_score_thresh=0.0, box_detections_per_img=20)
    detector = TorchvisionDetector(net.eval())

    def images(n: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        coarse = torch.rand(n, 3, size // 8, size // 8, generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return detector, images, size


def top_detections(detector, images: torch.Tensor):
    """Per image the clean image's best-scoring detection, as our target and as VEM's DetectionRecord."""
    from vision_explanation_methods.explanations.common import DetectionRecord

    from explainers.detection import DetectionTarget

    with torch.no_grad():
        outputs = detector(images)
    ours, theirs = [], []
    for det in outputs:
        if len(det["scores"]) == 0:
            raise RuntimeError("the detector found nothing on a benchmark image; pick other images")
        best = int(det["scores"].argmax())
        boxes, probs = det["boxes"][best:best + 1].float(), det["probs"][best:best + 1].float()
        ours.append(DetectionTarget(boxes, probs))
        theirs.append(DetectionRecord(boxes, torch.ones(1), probs))
    return ours, theirs


class VEMWrapper:
    """VEM's model interface: `predict(images) -> list[DetectionRecord]` around the same detector."""

    def __init__(self, detector):
        self.detector = detector

    def predict(self, images: torch.Tensor):
        from vision_explanation_methods.explanations.common import DetectionRecord

        return [DetectionRecord(d["boxes"], d["scores"], d["probs"]) for d in self.detector(images)]


def ours_fn(detector, targets, n_masks: int, cells: int, batch_size: int):
    from explainers.drise import DRISE

    drise = DRISE(detector, n_masks=n_masks, cells=cells, p=0.5, seed=0, batch_size=batch_size, center=True,
                  tolerance=0)  # equal masks: every one of them (bench.drise_convergence: at convergence)
    return lambda images, masks=None: drise.explain_detections(images, targets, masks=masks)


def vem_fn(detector, records, n_masks: int, cells: int):
    from vision_explanation_methods.explanations import drise as vem

    wrapper = VEMWrapper(detector)
    return lambda images: vem.DRISE_saliency(wrapper, images, records, n_masks, mask_res=(cells, cells))


def gate(detector, images, targets, records, n_masks: int, cells: int) -> dict:
    """Same injected masks on both sides: per-target cosine and max |difference| after VEM's min-max."""
    from vision_explanation_methods.explanations import drise as vem

    from explainers.rise import mask_chunks

    size = tuple(images.shape[-2:])
    masks = torch.cat(list(mask_chunks(n_masks, cells, 0.5, 0, size, "cpu", chunk=n_masks)))
    # The detector sees batches of VEM's size (all images, one mask): with random weights a torchvision
    # detector's scores are near ties, and a conv's floating-point path (which depends on the batch size)
    # can flip which proposals survive; the gate compares the pipelines, not that sensitivity.
    mine = ours_fn(detector, targets, n_masks, cells, batch_size=len(images))(images, masks=masks)
    queue = iter(masks)
    real = vem.generate_mask
    vem.generate_mask = lambda *_args, **_kw: next(queue).expand(3, *size).clone()
    try:
        theirs = vem_fn(detector, records, n_masks, cells)(images)
    finally:
        vem.generate_mask = real
    cosines, diffs = [], []
    for b in range(len(images)):
        ours_map = mine[b][0]
        ours_map = (ours_map - ours_map.min()) / (ours_map.max() - ours_map.min())
        their_map = theirs[b][0]["detection"][0]
        cosines.append(float(cosine(ours_map[None], their_map[None])[0]))
        diffs.append(float((ours_map - their_map).abs().max()))
    return {"n_masks": n_masks, "min_cosine": min(cosines), "max_abs_diff": max(diffs)}


def inference_limit_fn(detector, images: torch.Tensor, n_masks: int, batch_size: int):
    """X_inf for the same work: the detector alone on len(images) x n_masks images, in batches of
    `batch_size` (one precomputed batch, called repeatedly), timed in the same interleaved rounds."""
    total = len(images) * n_masks
    x = images.repeat(-(-batch_size // len(images)), 1, 1, 1)[:batch_size] * 0.5

    def run():
        with torch.no_grad():
            for start in range(0, total, batch_size):
                detector(x[:min(batch_size, total - start)])
    return run


def bench(name: str, detector, images: torch.Tensor, n_masks: int, cells: int, repeats: int, batch_size: int,
          gate_masks: int, log=print) -> dict:
    targets, records = top_detections(detector, images)
    checked = gate(detector, images, targets, records, gate_masks, cells)
    log(f"{name}: gate on {gate_masks} injected masks: min cosine {checked['min_cosine']:.6f}, "
        f"max |diff| {checked['max_abs_diff']:.2e}")
    impls = {"ours": lambda: ours_fn(detector, targets, n_masks, cells, batch_size)(images),
             "vision-explanation-methods": lambda: vem_fn(detector, records, n_masks, cells)(images),
             "X_inf": inference_limit_fn(detector, images, n_masks, batch_size)}
    for fn in impls.values():  # warm-up
        fn()
    timings = {k: [] for k in impls}
    order = list(impls)
    for round_ in range(repeats):
        for key in order[round_ % len(order):] + order[:round_ % len(order)]:
            timings[key].append(seconds(impls[key]))
    masked = len(images) * n_masks
    rows = {k: {"masked_images_per_s": masked / statistics.median(v), "best_masked_images_per_s": masked / min(v),
                "seconds": v} for k, v in timings.items()}
    ratio = rows["ours"]["masked_images_per_s"] / rows["vision-explanation-methods"]["masked_images_per_s"]
    x_inf, x_batch = rows.pop("X_inf")["masked_images_per_s"], batch_size
    ratio_best = (rows["ours"]["best_masked_images_per_s"]
                  / rows["vision-explanation-methods"]["best_masked_images_per_s"])
    result = {"detector": name, "size": int(images.shape[-1]), "images": len(images), "n_masks": n_masks,
              "cells": cells, "batch_size": batch_size, "gate": checked,
              "gate_passed": checked["min_cosine"] >= 0.999, "x_inf": x_inf, "x_inf_batch": x_batch,
              "rows": rows, "ours_over_vem": ratio if checked["min_cosine"] >= 0.999 else None,
              "ours_over_vem_best": ratio_best, "efficiency": rows["ours"]["masked_images_per_s"] / x_inf}
    log(f"  {n_masks} masks x {len(images)} images: ours {rows['ours']['masked_images_per_s']:.0f} masked img/s, "
        f"VEM {rows['vision-explanation-methods']['masked_images_per_s']:.0f} -> {ratio:.2f}x "
        f"(best {ratio_best:.2f}x); X_inf {x_inf:.0f} img/s (batch {x_batch}), efficiency {result['efficiency']:.2f}")
    return result


def markdown(results: list[dict], machine: dict) -> str:
    lines = [f"D-RISE, {machine['threads']} threads, load average at start {machine['load_average'][0]:.1f} on "
             f"{machine['cpu_count']} cores; median (best) of {machine['repeats']} interleaved rounds.", "",
             "| detector | images | masks | ours masked img/s | VEM masked img/s | ours ÷ VEM median (best) | "
             "X_inf img/s (batch) | efficiency | gate cos (injected masks) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        o, v = r["rows"]["ours"], r["rows"]["vision-explanation-methods"]
        ratio = f"{r['ours_over_vem']:.2f}x ({r['ours_over_vem_best']:.2f}x)" if r["gate_passed"] else "gate failed"
        lines.append(f"| {r['detector']} {r['size']}px | {r['images']} | {r['n_masks']} | "
                     f"{o['masked_images_per_s']:.0f} ({o['best_masked_images_per_s']:.0f}) | "
                     f"{v['masked_images_per_s']:.0f} ({v['best_masked_images_per_s']:.0f}) | {ratio} | "
                     f"{r['x_inf']:.0f} ({r['x_inf_batch']}) | {r['efficiency']:.2f} | "
                     f"{r['gate']['min_cosine']:.6f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--masks", type=int, nargs="+", default=[1000, 5000], help="grid-detector mask counts")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--cells", type=int, default=16, help="mask grid (VEM's mask_res)")
    parser.add_argument("--batch-size", type=int, default=64, help="our masked images per detector call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torchvision", type=int, default=0, metavar="N_MASKS",
                        help="also fasterrcnn_mobilenet_v3_large_320_fpn (random weights, 96 px) at N masks, 1 image")
    parser.add_argument("--out", default="drise")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"threads": args.threads, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
               "repeats": args.repeats, "torch": torch.__version__}
    results = []
    detector, make_images, _ = grid_detector()
    images = make_images(args.images)
    for n in (m for m in args.masks if m > 0):  # --masks 0: the torchvision detector only
        results.append(bench("grid detector", detector, images, n, args.cells, args.repeats, args.batch_size,
                             gate_masks=min(n, 500)))
    if args.torchvision:
        detector, make_images, _ = torchvision_detector()
        results.append(bench("fasterrcnn_mobilenet_v3_320 (random)", detector, make_images(1), args.torchvision,
                             args.cells, args.repeats, args.batch_size, gate_masks=min(args.torchvision, 50)))
    write_results(RESULTS, args.out, machine, results, markdown(results, machine))
    return results


if __name__ == "__main__":
    main()
