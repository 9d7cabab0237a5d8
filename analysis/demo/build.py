"""The built-in demo workspace: each sample scenario's validation set, its five model versions, finished audits.

The property scenario, `blur` (`sample_models.property_shortcut`: class h's images slightly blurred, a cue no
region holds), v1..v5, one Grad-CAM audit each (the property evidence does not depend on the explainer): v1 is
flagged by the property intervention and the dataset screen, v5 is clear. The tiny ViT series on the watermark
scenario's data (`sample_models/weights/vit/`, shown as `watermark_vit` v1..v5), audited with Grad-CAM on its
detected token layer (`VIT_METHODS`). Plus the moving-cue scenario, `moving_patch` (a corner patch that moves, no
masks: the report's discovered regions find it), in a partly biased, a fully biased and a clean version (the
clean one is clear); and one detection scenario, `boats_and_cars`: a COCO folder of biased scenes (boats on
water, cars on road, `sample_models.detection`), the biased and the debiased detector, and one D-RISE audit each (the biased one
is flagged for a context shortcut, the debiased one is not). And the tagger (`sample_models.tagging`: a water
strip planted as the boat tag's shortcut) and the segmenter (`sample_models.segmenting`: the band under an
object planted as its class's shortcut), each with its v1..v5 series and one Grad-CAM audit per version.

It is what a new user sees first, so it is built from the committed weights (no training) and the same
engine a user's audit goes through (registration, `execute_run`, evidence), in a worker process while the
dashboard already shows what has finished (`analysis.demo.status`). The most instructive audits come
first (`demo_plan`). Idempotent: models and datasets are registered by content hash and a run is identified
by its inputs, so a second call finds everything done and computes nothing; a finished build is recorded, so
a later start does not even register again (`is_built`).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from explainers.errors import InputError
from analysis.demo.status import read_status, write_status
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
VIT_METHODS = ("gradcam",)  # at the detected token layer; ("gradcam", "transformer_attribution"): 5 audits more
MOVING_SCENARIO = "moving_patch"  # sample_models.moving_patch: a corner patch that moves; no masks
MOVING_RHO = 0.9  # its validation set: the patch's colour points at the label on 90% of images
PROPERTY_SCENARIO = "blur"  # sample_models.property_shortcut: class h's images slightly blurred; no region holds it
PROPERTY_METHODS = ("gradcam",)  # the property evidence does not depend on the explainer: one audit per version
# The series built whole first: its trend is the first thing the dashboard can show, so it should be quick and
# plain. doctor_nurse: v1 flagged on the hair, v5 clear, and its data ties no image property to a class, so its
# audits run no property interventions (measured at load ~30: 38-46 s each against 140-200 s for cage's, whose
# sharper, higher-contrast dogs give six property tests per audit; bench/README.md, "Demo first start").
FIRST_SCENARIO = "doctor_nurse"
DEFAULT_SCENARIOS = (FIRST_SCENARIO, *(s for s in SCENARIOS if s != FIRST_SCENARIO), PROPERTY_SCENARIO, VIT_DEMO,
                     MOVING_SCENARIO, DETECTION_SCENARIO, *TASK_SCENARIOS)


def detection_dataset(root: Path, n: int = DETECTION_IMAGES) -> Path:
    """Generate (once) the COCO folder of the detection scenario under `root` (biased scenes, fixed seed)."""
    from sample_models.detection import make_scenes, write_coco

    return _generate_once(root / _folder_name(DETECTION_SCENARIO, n, DETECTION_IMAGES),
                          lambda staging: write_coco(make_scenes(n, seed=DATA_SEED, biased=True), staging))


def demo_dataset(scenario: str, root: Path, n: int = N_IMAGES) -> Path:
    """Generate (once) the validation folder of a scenario under `root`."""
    return _generate_once(root / _folder_name(scenario, n, N_IMAGES),
                          lambda staging: generate(scenario, staging, n=n, leak=DATA_LEAK, seed=DATA_SEED))


def task_dataset(scenario: str, root: Path, n: int = TASK_IMAGES) -> Path:
    """Generate (once) the validation folder of the tagger or segmenter scenario under `root`."""
    return _generate_once(root / _folder_name(scenario, n, TASK_IMAGES),
                          lambda staging: _task_module(scenario).generate(staging, n=n, seed=DATA_SEED))


@dataclass(frozen=True, eq=False)
class Audit:
    """One audit of the demo: which model file, which validation folder, which explainer, under which name.

    `endpoint` (the first or last version of its series) and `extra` (a second explainer, or the same model
    in a second format) only order the build: the most instructive audits finish first."""

    series: str
    version: str
    method: str
    model_file: Path
    card: Path
    dataset: Callable[[Path], Path]  # the demo-data folder -> the validation folder (generated once)
    n: int
    name: str
    params: dict = field(default_factory=dict)
    shown_as: tuple[str, str] | None = None  # (name, version) at registration; else the card's
    endpoint: bool = True
    extra: bool = False

    @property
    def label(self) -> str:
        return f"{self.series} {self.version} ({self.method})"


def demo_plan(scenarios: tuple[str, ...] | None = None, *, methods: tuple[str, ...] = METHODS,
              versions: tuple[int, ...] = VERSIONS, n: int = N_IMAGES) -> list[Audit]:
    """Every audit of the demo, in build order: the first series complete (its whole trend), then the first
    and last version of every other series (v1 flagged, v5 not), then the middle versions, then the second
    explainers and the ONNX copy. The order changes no run: each is identified by its inputs."""
    wanted = tuple(scenarios) if scenarios else DEFAULT_SCENARIOS
    plan = [audit for scenario in wanted for audit in _series(scenario, methods, versions, n)]
    first = plan[0].series if plan else None

    def rank(audit: Audit) -> int:
        if audit.extra:
            return 3 if audit.endpoint else 4
        return 0 if audit.series == first else 1 if audit.endpoint else 2

    return sorted(plan, key=rank)


def _series(scenario: str, methods: tuple[str, ...], versions: tuple[int, ...], n: int) -> list[Audit]:
    """The audits of one scenario (unknown names: none), methods after the first marked `extra`."""
    ends = (versions[0], versions[-1]) if versions else ()
    if scenario in SCENARIOS:
        return [Audit(scenario, f"v{v}", method, WEIGHTS_DIR / scenario / f"v{v}" / "model.pt2",
                      WEIGHTS_DIR / scenario / f"v{v}" / "model.json", partial(demo_dataset, scenario, n=n), n,
                      f"{scenario} v{v} {method}", shown_as=(scenario, f"v{v}"), endpoint=v in ends, extra=k > 0)
                for v in versions for k, method in enumerate(methods)]
    if scenario == VIT_DEMO:
        folder = VIT_WEIGHTS_DIR / VIT_SCENARIO
        return [Audit(f"ViT {VIT_SCENARIO}", f"v{v}", method, folder / f"v{v}" / "model.pt",
                      folder / f"v{v}" / "model.json", partial(demo_dataset, VIT_SCENARIO, n=n), n,
                      f"ViT {VIT_SCENARIO} v{v} {method}", shown_as=(VIT_DEMO, f"v{v}"), endpoint=v in ends,
                      extra=k > 0)
                for v in versions for k, method in enumerate(VIT_METHODS)]
    if scenario == MOVING_SCENARIO:
        from sample_models import moving_patch

        return [Audit(MOVING_SCENARIO, version, method, moving_patch.WEIGHTS_DIR / version / "model.pt",
                      moving_patch.WEIGHTS_DIR / version / "model.json", partial(moving_dataset, n=n), n,
                      f"{MOVING_SCENARIO} {version} {method}", shown_as=(MOVING_SCENARIO, version), extra=k > 0)
                for version in moving_patch.DEMO_VERSIONS for k, method in enumerate(methods)]
    if scenario == PROPERTY_SCENARIO:
        from sample_models import property_shortcut

        folder = property_shortcut.WEIGHTS_DIR
        return [Audit(PROPERTY_SCENARIO, f"v{v}", method, folder / f"v{v}" / "model.pt",
                      folder / f"v{v}" / "model.json", partial(property_dataset, n=n), n, f"{PROPERTY_SCENARIO} v{v} {method}",
                      shown_as=(PROPERTY_SCENARIO, f"v{v}"), endpoint=v in ends, extra=k > 0)
                for v in versions for k, method in enumerate(PROPERTY_METHODS)]
    if scenario == DETECTION_SCENARIO:
        from sample_models.detection import WEIGHTS_DIR as DETECTION_WEIGHTS

        return [Audit(DETECTION_SCENARIO, version, "drise",
                      DETECTION_WEIGHTS / version / ("model.onnx" if onnx else "model.safetensors"),
                      DETECTION_WEIGHTS / version / "model.json", detection_dataset, DETECTION_IMAGES,
                      f"{DETECTION_SCENARIO} {version} drise", dict(DETECTION_PARAMS),
                      shown_as=(DETECTION_SCENARIO, version), extra=onnx)
                for version in DETECTION_VERSIONS
                for onnx in [version.endswith("_onnx")] if not onnx or _onnx_installed()]
    if scenario in TASK_SCENARIOS:
        weights = _task_module(scenario).WEIGHTS_DIR
        return [Audit(scenario, f"v{v}", "gradcam", weights / f"v{v}" / "model.pt2", weights / f"v{v}" / "model.json",
                      partial(task_dataset, scenario), TASK_IMAGES, f"{scenario} v{v} gradcam", endpoint=v in ends)
                for v in versions]
    return []


def plan_key(plan: list[Audit]) -> str:
    """Names the audit list: a finished build of the same list is found, a changed list is built again."""
    return hashlib.sha256("\n".join(a.name + repr(sorted(a.params.items())) + str(a.n) for a in plan).encode()
                          ).hexdigest()[:16]


def is_built(workspace, plan: list[Audit]) -> bool:
    """The status file says this plan finished and every one of its runs is still done in the catalog."""
    status = read_status(workspace.root) or {}
    if status.get("state") != "done" or status.get("plan") != plan_key(plan):
        return False
    try:
        return all(workspace.run(run_id)["status"] == "done" for run_id in status.get("run_ids", []))
    except InputError:  # a run was deleted since
        return False


class DemoIncomplete(RuntimeError):
    """Some audits of the demo failed; every other one finished and is kept."""


def build_demo(workspace, *, scenarios: tuple[str, ...] | None = None, methods: tuple[str, ...] = METHODS,
               versions: tuple[int, ...] = VERSIONS, n: int = N_IMAGES, device: str = "cpu",
               log: Callable[[str], None] = print, record: bool = False) -> list[str]:
    """Register data and model versions and finish each audit of `demo_plan`; returns the run ids.

    Each dataset and model is registered once per build, a finished run is skipped, and a failed audit does
    not stop the others (DemoIncomplete at the end names them). `record`: keep the status file
    (`analysis.demo.status`) the dashboard shows progress from."""
    from analysis.runs.engine import execute_run

    plan = demo_plan(scenarios, methods=methods, versions=versions, n=n)
    note = (lambda **fields: write_status(workspace.root, **fields)) if record else (lambda **fields: None)
    note(state="building", pid=os.getpid(), plan=plan_key(plan), total=len(plan), done=0, current=None,
         failed=[], error=None)
    datasets: dict[Path, str] = {}
    models: dict[Path, str] = {}
    run_ids, failed = [], []
    for k, audit in enumerate(plan):
        note(done=k, current=audit.label)
        try:
            folder = audit.dataset(workspace.root / "demo-data")
            if folder not in datasets:
                datasets[folder] = workspace.register_dataset(folder)
            if audit.model_file not in models:
                name, version = audit.shown_as or (None, None)
                models[audit.model_file] = workspace.register_model(audit.model_file, audit.card, name=name,
                                                                    version=version)
            run_id = workspace.create_run(models[audit.model_file], datasets[folder], audit.method,
                                          dict(audit.params), n=audit.n, seed=0, name=audit.name)
            if workspace.run(run_id)["status"] != "done":
                log(f"demo: {k + 1} of {len(plan)}: auditing {audit.label}")
                execute_run(workspace, run_id, device=device, progress=False)
            run_ids.append(run_id)
        except Exception as exc:  # noqa: BLE001 (one audit's failure is reported; the others still finish)
            failed.append({"audit": audit.label, "error": " ".join(str(exc).split()) or type(exc).__name__})
            log(f"demo: {audit.label} failed: {failed[-1]['error']}")
            note(failed=failed)
    if failed:
        note(state="failed", done=len(plan) - len(failed), current=None, run_ids=run_ids,
             error=f"{len(failed)} of {len(plan)} audits failed")
        raise DemoIncomplete("; ".join(f"{f['audit']}: {f['error']}" for f in failed))
    note(state="done", done=len(plan), current=None, run_ids=run_ids)
    return run_ids


def moving_dataset(root: Path, n: int = N_IMAGES) -> Path:
    """Generate (once) the moving-cue validation folder (no masks) under `root`."""
    from sample_models import moving_patch

    return _generate_once(root / _folder_name(MOVING_SCENARIO, n, N_IMAGES), lambda staging: moving_patch.write_dataset(
        moving_patch.render(n, MOVING_RHO, seed=DATA_SEED), staging, masks=False))


def property_dataset(root: Path, n: int = N_IMAGES) -> Path:
    """Generate (once) the blur scenario's validation folder under `root`: blur marks 90% of class h's images
    and 10% of the others' (as the demo's other validation sets, drawn like the biased training data)."""
    from sample_models import property_shortcut

    scenes = partial(property_shortcut.render, n, property_shortcut.DEMO_KIND, DATA_LEAK, seed=DATA_SEED)
    return _generate_once(root / _folder_name(PROPERTY_SCENARIO, n, N_IMAGES),
                          lambda staging: property_shortcut.write_dataset(scenes(), staging))


def _folder_name(scenario: str, n: int, default: int) -> str:
    """`cage-val` for the demo's own size; `cage-val-40` for a smaller one (a quick demo, a test)."""
    return f"{scenario}-val" if n == default else f"{scenario}-val-{n}"


def _generate_once(folder: Path, write: Callable[[Path], object]) -> Path:
    """`folder`, written by `write(staging)` into a temp folder renamed into place (a killed build leaves
    no half folder), or as found."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    write(staging)
    staging.rename(folder)
    return folder


def _onnx_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))


def build_task_demo(workspace, scenario: str, *, versions: tuple[int, ...] = VERSIONS, n: int = TASK_IMAGES,
                    device: str = "cpu", log: Callable[[str], None] = print) -> list[str]:
    """The tagger or segmenter scenario on its own, `n` images: the versions, one finished Grad-CAM audit each."""
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
