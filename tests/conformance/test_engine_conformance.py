"""Every registered task under the engine's guarantees (`analysis.runs.engine`), one parametrized suite:
a kill -9 then a resume equals an uninterrupted run, the Ray backend equals the local one, the report has
the contract's keys, an image on which the task raises is skipped alone. A task joins by registering itself
in `analysis.runs.tasks` and adding its scenario to `scenarios.py`."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from analysis.runs.tasks import TASKS
from analysis.store.workspace import Workspace
from tests.reliability.checks import assert_catalog_and_shards_sound

from .same import assert_same_run
from .scenarios import SCENARIOS, new_run

REPORT_KEYS = {"run": {"id", "name", "method", "params", "n_images", "seed", "status", "target_layer", "model",
                       "dataset", "task"},
               "metrics": {"accuracy", "n_images", "n_skipped"}}


def test_every_registered_task_has_a_scenario():
    assert set(TASKS) <= set(SCENARIOS), f"add a scenario for {sorted(set(TASKS) - set(SCENARIOS))}"
    assert {"classification", "detection"} <= set(TASKS)


@pytest.mark.slow
def test_kill_then_resume_equals_an_uninterrupted_run(task_name, scenario, clean_run, zygote, tmp_path):
    """SIGKILL a forked worker once its first shard is recorded (mid-run: the next batch is computing or being
    written), then resume in another worker: the store equals the uninterrupted run's, table by table."""
    root = tmp_path / "ws"
    run_id = new_run(root, scenario)
    ws = Workspace(root)
    (pid,) = zygote.fork(root, run_id, batch_size=scenario.batch_size)
    started = time.monotonic()
    while not ws.shards(run_id) and time.monotonic() - started < 240:
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    assert zygote.wait(pid) is None, "the worker finished before the kill: make the scenario longer"
    killed = ws.run(run_id)
    assert killed["status"] == "interrupted" and 0 < killed["n_done"] + killed["n_skipped"] < scenario.n, killed
    (pid,) = zygote.fork(root, run_id, batch_size=scenario.batch_size)
    assert zygote.wait(pid) == 0, zygote.log_path.read_text()[-3000:]
    assert_catalog_and_shards_sound(ws, run_id)
    assert_same_run(ws, run_id, Workspace(clean_run[0]), clean_run[1], task_name)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_backend_equals_the_local_run(task_name, scenario, clean_run, tmp_path):
    import ray

    from analysis.runs.ray_backend import run_with_ray

    root = tmp_path / "ws"
    run_id = new_run(root, scenario)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        final = run_with_ray(Workspace(root), run_id, num_workers=2, batch_size=scenario.batch_size)
    finally:
        ray.shutdown()
    assert final["status"] == "done" and final["pid"] is None
    assert_same_run(Workspace(root), run_id, Workspace(clean_run[0]), clean_run[1], task_name)


def test_report_has_the_contract_keys(task_name, clean_run):
    from analysis.report.build import cached_report
    from analysis.report.html import render_html

    root, run_id = clean_run
    report = cached_report(run_id, Workspace(root))
    json.dumps(report, allow_nan=False)
    for key in ("run", "metrics", "regions", "flags", "sanity", "skipped"):
        assert key in report, key
    for section, keys in REPORT_KEYS.items():
        assert keys <= set(report[section]), (section, keys - set(report[section]))
    assert report["run"]["id"] == run_id and report["run"]["status"] == "done"
    assert report["metrics"]["n_images"] == report["run"]["n_images"] > 0
    assert report["metrics"]["n_skipped"] == len(report["skipped"])
    assert TASKS[task_name].view in {TASKS[t].view for t in TASKS}
    assert "<h2>Shortcut flags</h2>" in render_html(report)


def test_an_image_the_task_raises_on_is_skipped_alone(task_name, scenario, clean_run, tmp_path, monkeypatch):
    """The task's explain_batch raising on one image costs that image only (retried image by image)."""
    from analysis.runs.engine import execute_run

    task = TASKS[task_name]
    clean_ids = sorted(Workspace(clean_run[0]).store(clean_run[1]).images()["image_id"].astype(int))
    poisoned = clean_ids[len(clean_ids) // 2]
    real = task.explain_batch

    def explain_batch(prepared, batch, device):
        if any(int(item.image_id) == poisoned for item in batch.items):
            raise RuntimeError("boom on one image")
        return real(prepared, batch, device)

    monkeypatch.setattr(task, "explain_batch", explain_batch)
    root = tmp_path / "ws"
    run_id = new_run(root, scenario)
    final = execute_run(Workspace(root), run_id, batch_size=scenario.batch_size, progress=False)
    store = Workspace(root).store(run_id)
    assert sorted(store.images()["image_id"].astype(int)) == [i for i in clean_ids if i != poisoned]
    reasons = store.skipped().set_index("image_id")["reason"].to_dict()
    assert "boom on one image" in reasons[poisoned] and final["n_skipped"] == len(reasons)


def test_a_task_this_version_does_not_run_is_refused_with_the_fix(tmp_path, capsys, monkeypatch):
    """A card naming a task no module implements is refused in one place (the registry), before any file is
    copied into a run, with the tasks that do run and the card to fix."""
    from analysis.cli import main
    from analysis.runs import tasks

    scenario = SCENARIOS["detection"](tmp_path)
    monkeypatch.delitem(tasks.TASKS, "detection")  # as if this version had no detection module
    code = main(["run", "--model", str(scenario.model), "--data", str(scenario.data), "--workspace",
                 str(tmp_path / "ws"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "task 'detection'" in err and "classification" in err and "model.json" in err, err
    assert Workspace(tmp_path / "ws").runs() == []
