"""Per-task fixtures of the engine conformance suite: every registered task, its scenario, its clean run."""
from __future__ import annotations

import pytest

from analysis.runs.tasks import TASKS

from .scenarios import SCENARIOS, new_run


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    from tests.reliability.forking import Zygote

    process = Zygote(tmp_path_factory.mktemp("zygote") / "zygote.log")
    yield process
    process.close()


@pytest.fixture(scope="session", params=sorted(TASKS))
def task_name(request):
    return request.param


@pytest.fixture(scope="session")
def scenario(task_name, tmp_path_factory):
    if task_name not in SCENARIOS:
        pytest.fail(f"task {task_name!r} is registered but has no scenario in tests/conformance/scenarios.py")
    return SCENARIOS[task_name](tmp_path_factory.mktemp(f"files-{task_name}"))


@pytest.fixture(scope="session")
def clean_run(scenario, task_name, tmp_path_factory):
    """(workspace root, run id) of the scenario run uninterrupted, locally, in this process."""
    from analysis.runs.engine import execute_run
    from analysis.store.workspace import Workspace

    root = tmp_path_factory.mktemp(f"clean-{task_name}") / "ws"
    run_id = new_run(root, scenario)
    final = execute_run(Workspace(root), run_id, batch_size=scenario.batch_size, progress=False)
    assert final["status"] == "done", final
    return root, run_id
