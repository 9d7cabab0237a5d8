"""One small audit per registered task, for the engine conformance suite (tests/conformance).

A task joins the suite by registering itself (`analysis.runs.tasks`) and adding its scenario here: a model
file (with its card), a dataset folder and the run's method and parameters, sized to run in seconds.
`test_every_registered_task_has_a_scenario` fails until it does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Scenario:
    model: Path
    card: Path | None
    data: Path
    method: str
    params: dict = field(default_factory=dict)
    n: int = 12
    batch_size: int = 4


def classification(folder: Path) -> Scenario:
    from tests.runs.helpers import write_dataset, write_model

    model = write_model(folder / "model")
    data = write_dataset(folder / "data", n=16, seed=3, corrupt=(5,))
    return Scenario(model, None, data, "gradcam", {"target": "pred"}, n=16, batch_size=4)


def detection(folder: Path) -> Scenario:
    from sample_models.detection import WEIGHTS_DIR, make_scenes, write_coco

    data = write_coco(make_scenes(8, seed=5, biased=True), folder / "boats")
    return Scenario(WEIGHTS_DIR / "biased" / "model.safetensors", WEIGHTS_DIR / "biased" / "model.json", data,
                    "drise", {"n_masks": 100, "sanity_images": 1}, n=8, batch_size=2)


def multilabel(folder: Path) -> Scenario:
    from sample_models.tagging import WEIGHTS_DIR, generate

    data = generate(folder / "tags", n=12, seed=5)
    return Scenario(WEIGHTS_DIR / "v1" / "model.pt2", WEIGHTS_DIR / "v1" / "model.json", data, "gradcam",
                    {"target": "gt"}, n=12, batch_size=4)


def segmentation(folder: Path) -> Scenario:
    from sample_models.segmenting import WEIGHTS_DIR, generate

    data = generate(folder / "segments", n=8, seed=5)
    return Scenario(WEIGHTS_DIR / "v1" / "model.pt2", WEIGHTS_DIR / "v1" / "model.json", data, "gradcam",
                    {"target": "pred"}, n=8, batch_size=2)


SCENARIOS: dict[str, Callable[[Path], Scenario]] = {"classification": classification, "detection": detection,
                                                    "multilabel": multilabel, "segmentation": segmentation}


def new_run(root: Path, scenario: Scenario) -> str:
    """The scenario's run in the workspace at `root` (created, not started); same id in every workspace."""
    from analysis.store.workspace import Workspace

    ws = Workspace(root)
    model_id = ws.register_model(scenario.model, scenario.card)
    run_id = ws.create_run(model_id, ws.register_dataset(scenario.data), scenario.method, dict(scenario.params),
                           n=scenario.n, seed=0)
    ws.close()
    return run_id
