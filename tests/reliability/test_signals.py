"""Processes end when asked: SIGTERM to `saliency-audit dashboard` stops the Streamlit server it became; SIGTERM to a
run (a D-RISE run here, whose batches are the slowest) stops it between batches, keeps the finished shards, and
a second start resumes from them. Only the process that was started is signalled (not its group): that is
what a service manager or `kill PID` does.

The waits below are hang guards (a process that never ends fails the test), not speed checks; the measured
stop time is printed.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.store.processes import job_alive
from analysis.store.workspace import Workspace
from dashboard.launch import free_port, wait_until_serving
from tests.conformance.scenarios import detection, new_run

REPO = Path(__file__).resolve().parents[2]
GUARD_S = 60


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _wait_gone(pids: list[int]) -> float:
    start = time.monotonic()
    while any(job_alive(p) for p in pids) and time.monotonic() - start < GUARD_S:
        time.sleep(0.05)
    return time.monotonic() - start


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_sigterm_to_the_dashboard_stops_the_streamlit_server(tmp_path):
    port = free_port()
    with open(tmp_path / "cli.log", "wb") as log:
        cli = subprocess.Popen([sys.executable, "-m", "analysis.cli", "dashboard", "--workspace",
                                str(tmp_path / "ws"), "--port", str(port)], cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)),
                               start_new_session=True)
    try:
        wait_until_serving(port, timeout=120)
        # the CLI became the server (exec): one process, no child that could outlive it
        assert "streamlit" in Path(f"/proc/{cli.pid}/cmdline").read_text().replace("\0", " ")
        assert _children(cli.pid) == []
        os.kill(cli.pid, signal.SIGTERM)  # the CLI's pid, as `kill PID` does
        took = _wait_gone([cli.pid])
        print(f"dashboard gone {took:.2f} s after SIGTERM")
        assert cli.wait(timeout=5) in (0, 143)
        assert not _port_open(port)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_stops_a_drise_run_between_batches_and_a_resume_finishes_it(tmp_path):
    scenario = detection(tmp_path / "in")
    scenario.params = {"n_masks": 1000, "sanity_images": 1}
    root = tmp_path / "ws"
    run_id = new_run(root, scenario)
    command = [sys.executable, "-m", "analysis.cli", "run", "--resume-id", run_id, "--workspace", str(root),
               "--batch-size", "2", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    ws = Workspace(root)
    deadline = time.monotonic() + 300
    while not ws.shards(run_id) and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ws.shards(run_id), (tmp_path / "worker.log").read_text()[-2000:]
    os.kill(worker.pid, signal.SIGTERM)
    took = _wait_gone([worker.pid])
    print(f"D-RISE worker gone {took:.2f} s after SIGTERM")
    assert worker.wait(timeout=5) == 143
    assert "run cancelled; run it again to resume" in (tmp_path / "worker.log").read_text()
    cancelled = ws.run(run_id)
    kept = set(ws.store(run_id).images()["image_id"])
    assert cancelled["status"] == "cancelled" and 0 < len(kept) == cancelled["n_done"] < scenario.n

    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    images = ws.store(run_id).images()
    assert ws.run(run_id)["status"] == "done" and kept <= set(images["image_id"])
    assert not images["image_id"].duplicated().any() and len(images) == ws.run(run_id)["n_done"]
    assert ws.integrity_check() == "ok"


def test_sigterm_during_a_registration_removes_its_temp_copy(tmp_path, model_file):
    """A SIGTERM in the middle of copying a dataset in (`saliency-audit run` registering it): the CLI unwinds,
    its temp copy is removed at once (no next start needed), and it exits 143 with one line."""
    from analysis.store.temps import TEMP_NAME
    from tests.runs.helpers import write_dataset

    data = write_dataset(tmp_path / "data", n=12)
    stalled = (
        "import shutil, sys, time\n"
        "from analysis.cli import main\n"
        "real = shutil.copyfile\n"
        "def slow(src, dst, **kw):\n"
        "    if str(src).endswith('005.png'):\n"
        "        print('copying', flush=True); time.sleep(600)\n"
        "    return real(src, dst, **kw)\n"
        "shutil.copyfile = slow\n"
        "sys.exit(main())\n")
    root = tmp_path / "ws"
    child = subprocess.Popen([sys.executable, "-c", stalled, "run", "--model", str(model_file), "--data", str(data),
                              "--workspace", str(root), "--no-progress"], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "copying"
    temps = [p for p in root.rglob("*") if TEMP_NAME.match(p.name)]
    assert len(temps) == 1 and len(list(temps[0].rglob("*.png"))) >= 5  # a real partial copy
    os.kill(child.pid, signal.SIGTERM)
    _, err = child.communicate(timeout=GUARD_S)
    assert child.returncode == 143 and err.strip().splitlines() == [
        "saliency-audit: terminated; run the same command again to resume"]
    assert [p for p in root.rglob("*") if TEMP_NAME.match(p.name)] == []
    ws = Workspace(root)
    assert ws.datasets() == [] and ws.runs() == []
