"""`python -m bench.onnx_rise`: the same RISE audit through ONNX Runtime and through PyTorch.

One network, saved twice (torch.export `.pt2` and ONNX, dynamic batch), each loaded with
`explainers.loading.models.load_model` exactly as a run loads it (card normalisation in front), and explained by the
same `RISE` object parameters (same seed, same masks). Gate before any ratio: per image cosine >= 0.9999
between the two maps. Then interleaved rounds (the order rotates), masked images per second = images x masks
/ seconds, median and best; ratio = ONNX Runtime / PyTorch. Both sides get the same thread count
(`torch.set_num_threads`; the ONNX session takes `intra_op_num_threads` from it). The D-RISE row does the
same for the sample grid detector (`.safetensors` vs its committed ONNX export).

Models: the sample `tiny_cnn` (cage v1, 64 px) and a random-weight torchvision resnet18 at 224 px.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from bench.harness import seconds, write_results
from bench.implementations import cosine

RESULTS = Path(__file__).parent / "results"


def _card(size: int, classes: int) -> dict:
    return {"task": "classification", "classes": [f"c{i}" for i in range(classes)], "input_size": [size, size]}


def model_pair(name: str, folder: Path) -> tuple[Path, Path]:
    """(.pt2, .onnx) of the same weights, each with its model.json."""
    from explainers.loading.models import load_model

    if name == "tiny_cnn":  # the committed .pt2 and the same weights from its state dict
        from sample_models.train import WEIGHTS_DIR

        from explainers.loading.architectures import build_architecture

        pt2 = WEIGHTS_DIR / "cage" / "v1" / "model.pt2"
        card = load_model(pt2).card.to_dict()
        size, net = card["input_size"][0], build_architecture(card["architecture"], len(card["classes"]))
        net.load_state_dict(torch.load(pt2.with_suffix(".pt"), weights_only=True))
        net.eval()
    else:
        import torchvision

        torch.manual_seed(0)
        net, size = torchvision.models.resnet18(weights=None, num_classes=10).eval(), 224
        card = _card(size, 10)
        (folder / "pt2").mkdir(parents=True, exist_ok=True)
        pt2 = folder / "pt2" / "model.pt2"
        program = torch.export.export(net, (torch.rand(2, 3, size, size),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(pt2))
        (folder / "pt2" / "model.json").write_text(json.dumps(card))
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "onnx" / "model.onnx"
    torch.onnx.export(net, (torch.rand(2, 3, size, size),), str(onnx_path), dynamo=True, verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    (folder / "onnx" / "model.json").write_text(json.dumps(card))
    return pt2, onnx_path


def bench_rise(name: str, pair: tuple[Path, Path], n_images: int, n_masks: int, chunk: int, repeats: int,
               log=print) -> dict:
    from explainers.loading.models import load_model
    from explainers.registry import make_explainer
    from explainers.targets import ClassTarget

    loaded = {"pytorch": load_model(pair[0]), "onnxruntime": load_model(pair[1])}
    size = loaded["pytorch"].card.input_size
    images = torch.rand(n_images, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        targets = ClassTarget(loaded["pytorch"].module(images).argmax(1))
    explainers = {k: make_explainer("rise", m.module, n_masks=n_masks, chunk=chunk, seed=0) for k, m in loaded.items()}
    maps = {k: e.explain(images, targets).maps for k, e in explainers.items()}  # also the warm-up
    gate = float(cosine(maps["pytorch"], maps["onnxruntime"]).min())
    calls = {k: (lambda e=e: e.explain(images, targets)) for k, e in explainers.items()}
    return _timed(f"rise {name} {size[0]}px", calls, n_images * n_masks, repeats, gate, log)


def bench_drise(n_images: int, n_masks: int, repeats: int, log=print) -> dict:
    from explainers.drise import DRISE
    from explainers.loading.models import load_model
    from sample_models.detection import WEIGHTS_DIR, make_scenes

    loaded = {"pytorch": load_model(WEIGHTS_DIR / "biased" / "model.safetensors"),
              "onnxruntime": load_model(WEIGHTS_DIR / "biased_onnx" / "model.onnx")}
    images = torch.stack([s.image for s in make_scenes(n_images, seed=7, biased=True)])
    from explainers.detection import detections_above

    with torch.no_grad():
        targets = [detections_above(d, 0.5) for d in loaded["pytorch"].module(images)]
    explainers = {k: DRISE(m.module, n_masks=n_masks, cells=8, seed=0) for k, m in loaded.items()}
    maps = {k: e.explain_detections(images, targets) for k, e in explainers.items()}
    gate = min(float(cosine(a, b).min()) for a, b in zip(maps["pytorch"], maps["onnxruntime"]) if len(a))
    return _timed("drise grid detector 64px", {k: (lambda e=e: e.explain_detections(images, targets))
                                               for k, e in explainers.items()}, n_images * n_masks, repeats, gate, log)


def _timed(label: str, impls: dict, masked: int, repeats: int, gate: float, log) -> dict:
    timings = {k: [] for k in impls}
    order = list(impls)
    for round_ in range(repeats):
        for key in order[round_ % len(order):] + order[:round_ % len(order)]:
            timings[key].append(seconds(impls[key]))
    rows = {k: {"masked_images_per_s": masked / statistics.median(v), "best_masked_images_per_s": masked / min(v),
                "seconds": v} for k, v in timings.items()}
    passed = gate >= 0.9999
    ratio = rows["onnxruntime"]["masked_images_per_s"] / rows["pytorch"]["masked_images_per_s"]
    best = rows["onnxruntime"]["best_masked_images_per_s"] / rows["pytorch"]["best_masked_images_per_s"]
    result = {"case": label, "masked_images": masked, "gate_min_cosine": gate, "gate_passed": passed, "rows": rows,
              "onnx_over_pytorch": ratio if passed else None, "onnx_over_pytorch_best": best if passed else None}
    log(f"{label}: gate cos {gate:.6f}; pytorch {rows['pytorch']['masked_images_per_s']:.0f}, onnxruntime "
        f"{rows['onnxruntime']['masked_images_per_s']:.0f} masked img/s -> {ratio:.2f}x (best {best:.2f}x)")
    return result


def markdown(results: list[dict], machine: dict) -> str:
    lines = [f"ONNX Runtime {machine['onnxruntime']} vs PyTorch {machine['torch']}, {machine['threads']} threads, "
             f"load average at start {machine['load_average'][0]:.1f} on {machine['cpu_count']} cores; median (best) "
             f"of {machine['repeats']} interleaved rounds.", "",
             "| case | masked images | PyTorch masked img/s | ONNX Runtime masked img/s | ONNX ÷ PyTorch median "
             "(best) | gate cos |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        p, o = r["rows"]["pytorch"], r["rows"]["onnxruntime"]
        ratio = (f"{r['onnx_over_pytorch']:.2f}x ({r['onnx_over_pytorch_best']:.2f}x)" if r["gate_passed"]
                 else "gate failed")
        lines.append(f"| {r['case']} | {r['masked_images']} | {p['masked_images_per_s']:.0f} "
                     f"({p['best_masked_images_per_s']:.0f}) | {o['masked_images_per_s']:.0f} "
                     f"({o['best_masked_images_per_s']:.0f}) | {ratio} | {r['gate_min_cosine']:.6f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["tiny_cnn", "resnet18"], choices=["tiny_cnn", "resnet18"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--masks", type=int, default=500, help="RISE masks per image (resnet18: a fifth)")
    parser.add_argument("--drise-masks", type=int, default=500, help="0: no D-RISE row")
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="onnx_rise")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"threads": args.threads, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
               "repeats": args.repeats, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            masks = args.masks if name == "tiny_cnn" else max(1, args.masks // 5)
            results.append(bench_rise(name, model_pair(name, Path(tmp) / name), args.images, masks, args.chunk,
                                      args.repeats))
    if args.drise_masks:
        results.append(bench_drise(args.images, args.drise_masks, args.repeats))
    write_results(RESULTS, args.out, machine, results, markdown(results, machine))
    return results


if __name__ == "__main__":
    main()
