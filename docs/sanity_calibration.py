"""How stable the model-randomisation decision is by sample (docs/CALIBRATION.md, "The sanity check's decision").

For the demo's watermark v5 (the four-block CNN whose Grad-CAM verdict flipped by sample) and each explainer: the
per-image cascade of `analysis.evidence.sanity` once over the demo's 200 validation images, then 200 evidence
samples drawn as the evidence stage draws them (a seeded permutation), each judged by `sanity.judge` as
`model_randomisation` does (8 images, doubled while undecided, up to 32), against the rule it replaced (the
cascade mean of the first 8 images < 0.5). Run from the repository root:

    PYTHONPATH=. python docs/sanity_calibration.py [method ...]
"""
from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from analysis.data.datasets import open_dataset
from analysis.demo.build import demo_dataset
from analysis.evidence import sanity
from analysis.evidence.stage import module_layer_name
from explainers.loading.models import load_model
from explainers.preprocess import to_input
from sample_models.train import WEIGHTS_DIR

SAMPLES = 200


def per_image_cascade(method: str) -> dict:
    loaded = load_model(WEIGHTS_DIR / "watermark" / "v5" / "model.pt2")
    dataset = open_dataset(demo_dataset("watermark", Path(tempfile.mkdtemp())))
    images = torch.stack([to_input(dataset.load(item)[0], loaded.card) for item in dataset.items])
    with torch.no_grad():
        targets = loaded.module(images).argmax(dim=1)
    layer = module_layer_name(loaded, loaded.target_layer_name()) if method == "gradcam" else None
    first, _ = sanity._explained(loaded.module, images, targets, method, layer, {})
    return sanity._restored_cascade(
        loaded.module, lambda: sanity._explained(loaded.module, images, targets, method, layer, {})[0].maps,
        sanity._comparable(first.maps), 0, 8)


def decide(cascade: dict, rows: np.ndarray) -> str:
    """`model_randomisation`'s looks on the images `rows` (in draw order)."""
    sizes = sanity._look_sizes(sanity.MIN_IMAGES, min(sanity.MAX_IMAGES, len(rows)))
    for k, size in enumerate(sizes):
        part = {**cascade, **{key: cascade[key][:, rows[:size]] for key in ("abs", "signed", "ssim")}}
        result = sanity.judge([part], method="m", looks=len(sizes), last=k == len(sizes) - 1)
        if result["passed"] is not None:
            return f"{'passed' if result['passed'] else 'failed'} ({result['decided_by']})"
    raise AssertionError("the last look decides")


def main(methods: list[str]) -> None:
    print("| explainer | stages (mean over 200 images) | cascade mean | old rule: passed | new rule |")
    print("|---|---|---|---|---|")
    for method in methods:
        cascade = per_image_cascade(method)
        draws = [np.random.default_rng(seed).permutation(cascade["abs"].shape[1]) for seed in range(SAMPLES)]
        old = sum(float(cascade["abs"][:, rows[:sanity.MIN_IMAGES]].mean()) < sanity.THRESHOLD for rows in draws)
        new = Counter(decide(cascade, rows) for rows in draws)
        stages = ", ".join(f"{v:.2f}" for v in cascade["abs"].mean(axis=1))
        print(f"| {method} | {stages} | {cascade['abs'].mean():.2f} | {old}/{SAMPLES} | "
              + "; ".join(f"{k}: {v}/{SAMPLES}" for k, v in sorted(new.items())) + " |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:] or ["gradcam", "saliency", "guided_backprop"])
