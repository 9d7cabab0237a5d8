"""The built-in demo workspace: each sample scenario's validation set, its five model versions, finished audits.

The tiny ViT series on the watermark scenario's data (`sample_models/weights/vit/`, `watermark_vit`), audited
with Grad-CAM on its detected token layer (`build_vit_demo(methods=...)` adds `transformer_attribution`). Plus the moving-cue scenario, `moving_patch` (a corner patch that moves, no masks: the report's discovered
regions find it), in a partly biased and a fully biased version; and one detection scenario, `boats_and_cars`: a COCO folder of biased scenes (boats on water, cars on road,
`sample_models.detection`), the biased and the debiased detector, and one D-RISE audit each (the biased one
is flagged for a context shortcut, the debiased one is not). And the tagger (`sample_models.tagging`: a water
strip planted as the boat tag's shortcut) and the segmenter (`sample_models.segmenting`: the band under an
object planted as its class's shortcut), each with its v1..v5 series and one Grad-CAM audit per version.

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
from sample_models.train import VIT_SCENARIO, VIT_WEIGHTS_DIR, WEIGHTS_DIR

VERSIONS = (1, 2, 3, 4, 5)
METHODS = ("gradcam", "saliency")
N_IMAGES = 200
DATA_SEED = 7  # not a training or evaluation seed: the demo audits images no version was trained on
DATA_LEAK = 0.9  # a validation set drawn like the training data: the shortcut mostly agrees with the label
DETECTION_SCENARIO = "boats_and_cars"
DETECTION_VERSIONS = ("biased", "debiased", "biased_onnx")  # the last: the biased one as a black box (ONNX)
DETECTION_IMAGES = 60
DETECTION_PARAMS = {"n_masks": 300, "cells": 8}  # enough on 64x64 scenes; a few seconds per audit on a laptop
TASK_SCENARIOS = ("tagger", "segmenter")  # sample_models.tagging, sample_models.segmenting
TASK_IMAGES = 48  # one map per (image, tag / class); enough for the flags (tests/tasks use the same)
VIT_DEMO = "watermark_vit"  # the tiny ViT series, audited on the watermark scenario's validation set
VIT_METHODS = ("gradcam",)  # at the detected token layer; transformer_attribution on request (cost: 5 more audits)
MOVING_SCENARIO = "moving_patch"  # sample_models.moving_patch: a corner patch that moves; no masks
MOVING_RHO = 0.9  # its validation set: the patch's colour points at the label on 90% of images


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
    from analysis.runs.engine import execute_run

    run_ids = []
    wanted = tuple(scenarios) if scenarios else (*SCENARIOS, VIT_DEMO, MOVING_SCENARIO, DETECTION_SCENARIO,
                                                 *TASK_SCENARIOS)
    for scenario in (s for s in wanted if s in SCENARIOS):
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
    if VIT_DEMO in wanted:
        run_ids += build_vit_demo(workspace, versions=versions, n=n, device=device, log=log)
    if MOVING_SCENARIO in wanted:
        run_ids += build_moving_demo(workspace, methods=methods, n=n, device=device, log=log)
    if DETECTION_SCENARIO in wanted:
        run_ids += build_detection_demo(workspace, device=device, log=log)
    for scenario in (s for s in wanted if s in TASK_SCENARIOS):
        run_ids += build_task_demo(workspace, scenario, versions=versions, device=device, log=log)
    return run_ids


def task_dataset(scenario: str, root: Path, n: int = TASK_IMAGES) -> Path:
    """Generate (once) the validation folder of the tagger or segmenter scenario under `root`."""
    folder = root / f"{scenario}-val"
    if (folder / "manifest.csv").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{scenario}-", dir=root))
    _task_module(scenario).generate(staging, n=n, seed=DATA_SEED)
    staging.rename(folder)
    return folder


def build_task_demo(workspace, scenario: str, *, versions: tuple[int, ...] = VERSIONS, n: int = TASK_IMAGES,
                    device: str = "cpu", log: Callable[[str], None] = print) -> list[str]:
    """The tagger or segmenter scenario: dataset, the versions, one finished Grad-CAM audit each."""
    from analysis.runs.engine import execute_run

    dataset_id = workspace.register_dataset(task_dataset(scenario, workspace.root / "demo-data", n))
    run_ids = []
    for version in versions:
        folder = _task_module(scenario).WEIGHTS_DIR / f"v{version}"
        model_id = workspace.register_model(folder / "model.pt2", folder / "model.json")
        run_id = workspace.create_run(model_id, dataset_id, "gradcam", {}, n=n, seed=0,
                                      name=f"{scenario} v{version} gradcam")
        if workspace.run(run_id)["status"] != "done":
            log(f"demo: auditing {scenario} v{version} with gradcam")
            execute_run(workspace, run_id, device=device, progress=False)
        run_ids.append(run_id)
    return run_ids


def _task_module(scenario: str):
    from sample_models import segmenting, tagging

    return {"tagger": tagging, "segmenter": segmenting}[scenario]


def build_vit_demo(workspace, *, versions: tuple[int, ...] = VERSIONS, n: int = N_IMAGES, device: str = "cpu",
                   methods: tuple[str, ...] = VIT_METHODS, log: Callable[[str], None] = print) -> list[str]:
    """The tiny ViT series as a user's ViT arrives: a state dict whose card names the architecture and no
    target layer (Grad-CAM finds the token layer), audited with each of `methods`, registered as versions of
    one model (`watermark_vit` v1..v5) so the Compare page lines them up like the CNN series."""
    from analysis.runs.engine import execute_run

    dataset_id = workspace.register_dataset(demo_dataset(VIT_SCENARIO, workspace.root / "demo-data", n))
    run_ids = []
    for version in versions:
        folder = VIT_WEIGHTS_DIR / VIT_SCENARIO / f"v{version}"
        model_id = workspace.register_model(folder / "model.pt", folder / "model.json", name=VIT_DEMO,
                                            version=f"v{version}")
        for method in methods:
            run_id = workspace.create_run(model_id, dataset_id, method, {}, n=n, seed=0,
                                          name=f"ViT {VIT_SCENARIO} v{version} {method}")
            if workspace.run(run_id)["status"] != "done":
                log(f"demo: auditing ViT {VIT_SCENARIO} v{version} with {method}")
                execute_run(workspace, run_id, device=device, progress=False)
            run_ids.append(run_id)
    return run_ids


def build_moving_demo(workspace, *, methods=METHODS, n: int = N_IMAGES, device: str = "cpu",
                      log: Callable[[str], None] = print) -> list[str]:
    """The moving cue, without masks: a partly biased version (rho 0.85, shuffling the cue costs it ~11
    points) and a fully biased one (rho 1), each audited; the report shows the discovered corner region."""
    from analysis.runs.engine import execute_run
    from sample_models import moving_patch

    folder = workspace.root / "demo-data" / f"{MOVING_SCENARIO}-val"
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{MOVING_SCENARIO}-", dir=folder.parent))
        moving_patch.write_dataset(moving_patch.render(n, MOVING_RHO, seed=DATA_SEED), staging, masks=False)
        staging.rename(folder)
    dataset_id = workspace.register_dataset(folder)
    run_ids = []
    for version in moving_patch.DEMO_VERSIONS:
        weights = moving_patch.WEIGHTS_DIR / version
        model_id = workspace.register_model(weights / "model.pt", weights / "model.json")
        for method in methods:
            run_id = workspace.create_run(model_id, dataset_id, method, {}, n=n, seed=0,
                                          name=f"{MOVING_SCENARIO} {version} {method}")
            if workspace.run(run_id)["status"] != "done":
                log(f"demo: auditing {MOVING_SCENARIO} {version} with {method}")
                execute_run(workspace, run_id, device=device, progress=False)
            run_ids.append(run_id)
    return run_ids


def build_detection_demo(workspace, *, device: str = "cpu", log: Callable[[str], None] = print) -> list[str]:
    """The detection scenario: dataset, both detector versions, one finished D-RISE audit each."""
    import importlib.util

    from analysis.runs.engine import execute_run
    from sample_models.detection import WEIGHTS_DIR as DETECTION_WEIGHTS

    dataset_id = workspace.register_dataset(detection_dataset(workspace.root / "demo-data"))
    run_ids = []
    for version in DETECTION_VERSIONS:
        if version.endswith("_onnx") and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
            log(f"demo: skipping {DETECTION_SCENARIO} {version}: the ONNX extra is not installed "
                "(pip install 'saliency-audit[onnx]')")
            continue
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
