"""A worker killed with SIGKILL cannot record its end: readers see `interrupted` (with what to do), not `running`
forever, and resuming it finishes the run."""
from __future__ import annotations

import os
import signal
import time

import pytest

from analysis.cli import main
from analysis.store.workspace import Workspace


@pytest.mark.slow
def test_a_killed_worker_reads_as_interrupted_and_resumes(tmp_path, model_file, data_12, zygote, capsys):
    root = tmp_path / "workspace"
    ws = Workspace(root)
    run_id = ws.create_run(ws.register_model(model_file), ws.register_dataset(data_12), "gradcam",
                           {"target": "pred"}, n=12, seed=0)
    (pid,) = zygote.fork(root, run_id, batch_size=2)
    deadline = time.monotonic() + 120
    while not ws.shards(run_id):
        assert time.monotonic() < deadline, "the worker wrote no shard"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    zygote.wait(pid)

    row = ws.run(run_id)
    assert row["status"] == "interrupted" and f"process {pid}" in row["error"] and "again" in row["error"]
    assert [r["status"] for r in ws.runs() if r["id"] == run_id] == ["interrupted"]
    assert main(["runs", "--workspace", str(root), "--format", "json"]) == 0
    assert '"interrupted"' in capsys.readouterr().out

    data = str(data_12)
    assert main(["run", "--model", str(model_file), "--data", data, "--n", "12", "--workspace", str(root),
                 "--no-progress"]) == 0  # the same command resumes it
    row = ws.run(run_id)
    assert row["status"] == "done" and row["n_done"] + row["n_skipped"] == 12 and row["error"] is None


def test_a_live_worker_still_reads_as_running(tmp_path, model_file, data_12):
    ws = Workspace(tmp_path / "workspace")
    run_id = ws.create_run(ws.register_model(model_file), ws.register_dataset(data_12), "gradcam", {}, n=12, seed=0)
    ws.update_run(run_id, status="running", pid=os.getpid())
    assert ws.run(run_id)["status"] == "running"
