"""The built-in demo workspace: each sample scenario's validation set, its five model versions, finished audits.

Plus one detection scenario, `boats_and_cars`: a COCO folder of biased scenes (boats on water, cars on road,
`sample_models.detection`), the biased and the debiased detector, and one D-RISE audit each (the biased one
is flagged for a context shortcut, the debiased one is not).

It is what a new user sees first, so it is built from the committed weights (no training) and the same
engine a user's audit goes through (registration, `execute_run`, evidence). Idempotent: models and
datasets are registered by content hash and a run is identified by its inputs, so a second call finds
everything done and computes nothing.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from sample_models.scenes import SCENARIOS, generate
from sample_models.train import WEIGHTS_DIR

VERSIONS = (1, 2, 3, 4, 5)
METHODS = ("gradcam", "saliency")
N_IMAGES = 200
DATA_SEED = 7  # not a training or evaluation seed: the demo audits images no version was trained on
DATA_LEAK = 0.9  # a validation set drawn like the training data: the shortcut mostly agrees with the label
DETECTION_SCENARIO = "boats_and_cars"
DETECTION_VERSIONS = ("biased", "debiased", "biased_onnx")  # the last: the biased one as a black box (ONNX)
DETECTION_IMAGES = 60
DETECTION_PARAMS = {"n_masks": 300, "cells": 8}  # enough on 64x64 scenes; a few seconds per audit on a laptop


def detection_dataset(root: Path, n: int = DETECTION_IMAGES) -> Path:
    """Generate (once) the COCO folder of the detection scenario under `root` (biased scenes, fixed seed)."""
    from sample_models.detection import make_scenes, write_coco

    folder = root / f"{DETECTION_SCENARIO}-val"
    if (folder / "instances.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DETECTION_SCENARIO}-", dir=root))
    write_coco(make_scenes(n, seed=DATA_SEED, biased=True), staging)
    staging.rename(folder)
    return folder


def demo_dataset(scenario: str, root: Path, n: int = N_IMAGES) -> Path:
    """Generate (once) the validation folder of a scenario under `root`."""
    folder = root / f"{scenario}-val"
    if (folder / "manifest.csv").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{scenario}-", dir=root))
    generate(scenario, staging, n=n, leak=DATA_LEAK, seed=DATA_SEED)
    staging.rename(folder)
    return folder


def build_demo(workspace, *, scenarios: tuple[str, ...] | None = None, methods: tuple[str, ...] = METHODS,
               versions: tuple[int, ...] = VERSIONS, n: int = N_IMAGES, device: str = "cpu",
               log: Callable[[str], None] = print) -> list[str]:
    """Register data and model versions and finish one audit per (scenario, version, method); returns run ids."""
    from analysis.runs.runner import execute_run

    run_ids = []
    wanted = tuple(scenarios) if scenarios else (*SCENARIOS, DETECTION_SCENARIO)
    for scenario in (s for s in wanted if s != DETECTION_SCENARIO):
        dataset_id = workspace.register_dataset(demo_dataset(scenario, workspace.root / "demo-data", n))
        for version in versions:
            folder = WEIGHTS_DIR / scenario / f"v{version}"
            model_id = workspace.register_model(folder / "model.pt2", folder / "model.json", name=scenario,
                                                version=f"v{version}")
            for method in methods:
                run_id = workspace.create_run(model_id, dataset_id, method, {}, n=n, seed=0,
                                              name=f"{scenario} v{version} {method}")
                if workspace.run(run_id)["status"] != "done":
                    log(f"demo: auditing {scenario} v{version} with {method}")
                    execute_run(workspace, run_id, device=device, progress=False)
                run_ids.append(run_id)
    if DETECTION_SCENARIO in wanted:
        run_ids += build_detection_demo(workspace, device=device, log=log)
    return run_ids


def build_detection_demo(workspace, *, device: str = "cpu", log: Callable[[str], None] = print) -> list[str]:
    """The detection scenario: dataset, both detector versions, one finished D-RISE audit each."""
    from analysis.runs.runner import execute_run
    from sample_models.detection import WEIGHTS_DIR as DETECTION_WEIGHTS

    dataset_id = workspace.register_dataset(detection_dataset(workspace.root / "demo-data"))
    run_ids = []
    for version in DETECTION_VERSIONS:
        folder = DETECTION_WEIGHTS / version
        model_file = folder / ("model.onnx" if version.endswith("_onnx") else "model.safetensors")
        model_id = workspace.register_model(model_file, folder / "model.json", name=DETECTION_SCENARIO,
                                            version=str(version))
        run_id = workspace.create_run(model_id, dataset_id, "drise", dict(DETECTION_PARAMS), n=DETECTION_IMAGES,
                                      seed=0, name=f"{DETECTION_SCENARIO} {version} drise")
        if workspace.run(run_id)["status"] != "done":
            log(f"demo: auditing {DETECTION_SCENARIO} {version} with drise")
            execute_run(workspace, run_id, device=device, progress=False)
        run_ids.append(run_id)
    return run_ids
