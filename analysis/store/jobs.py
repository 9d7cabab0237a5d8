"""Background runs: a worker process that outlives whoever started it (the dashboard, a shell).

The worker is the ordinary CLI (`python -m analysis.cli run --resume-id RUN`) in its own session, so
closing the dashboard or pressing Ctrl-C there does not kill it, and a killed worker is resumed by simply
starting it again (finished shards are kept). Its output goes to `runs/<id>/worker.log`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from analysis.store.processes import job_alive  # noqa: F401 (part of this module's interface)
from analysis.store.workspace import Workspace

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: analysis/store/jobs.py -> ../..


def start_job(workspace_root: str | os.PathLike, run_id: str, device: str = "cpu", batch_size: int = 32) -> int:
    """Start the worker for `run_id`; returns its pid (also recorded in the catalog)."""
    workspace = Workspace(workspace_root)
    workspace.run(run_id)  # unknown id -> InputError here, not in a detached process
    pid = spawn_cli(["run", "--resume-id", run_id, "--workspace", str(workspace.root), "--device", device,
                     "--batch-size", str(batch_size), "--no-progress"], workspace.run_dir(run_id) / "worker.log")
    workspace.update_run(run_id, status="running", pid=pid)
    return pid


def spawn_cli(arguments: list[str], log_path: Path) -> int:
    """`python -m analysis.cli ARGUMENTS` in its own session (it outlives its starter), output appended to
    `log_path`; returns its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "analysis.cli", *arguments], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=str(PROJECT_ROOT), env=env,
                                start_new_session=True)
    return proc.pid


def cancel_job(workspace: Workspace, run_id: str) -> bool:
    """SIGTERM the run's worker and mark the run cancelled (resumable). True when a live worker was signalled."""
    run = workspace.run(run_id)
    pid, signalled = run.get("pid"), False
    if pid and job_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
            signalled = True
        except ProcessLookupError:
            pass
    if run["status"] in ("pending", "running"):
        workspace.update_run(run_id, status="cancelled", pid=None)
    return signalled


def estimate_seconds(history: list[dict], method: str, n_images: int,
                     typical: dict[str, float]) -> tuple[float, str]:
    """(seconds, basis) for a run of `method` on `n_images`, learned from finished runs on this machine.

    A run costs a fixed part (loading, interventions, sanity, report) plus a part per image, so with runs of
    the method at two sizes or more the estimate is the least-squares line `a + b * n` (both >= 0); with
    one size, that run's time scaled by size. Without a run of the method, the `typical` seconds per image
    are scaled by how this machine did on the other methods against the same table; without any, `typical`.
    `history` rows: catalog runs with `method`, `n_done`, `created`, `updated`.
    """
    rows = [(r["method"], float(r["n_done"]), max(float(r["updated"]) - float(r["created"]), 1e-3))
            for r in history if r.get("n_done")]
    same = [(n, t) for m, n, t in rows if m == method]
    if same:
        sizes = np.array([n for n, _ in same])
        times = np.array([t for _, t in same])
        if len(set(sizes)) >= 2:
            slope, intercept = np.polyfit(sizes, times, 1)
            if slope > 0 and intercept >= 0:
                return (float(intercept + slope * n_images),
                        f"{len(same)} earlier {method} audit(s) on this machine: {intercept:.0f} s + "
                        f"{slope:.2f} s per image")
        per_image = float(np.median(times / sizes))
        return n_images * per_image, f"{len(same)} earlier {method} audit(s) on this machine: {per_image:.2f} s per image"
    base = typical.get(method, 1.0)
    others = [t / (n * typical[m]) for m, n, t in rows if m in typical]
    if others:
        factor = float(np.median(others))
        return (n_images * base * factor,
                f"typical speed of {method}, scaled by {len(others)} earlier audit(s) on this machine")
    return n_images * base, f"a typical {base:g} s per image for {method} on CPU"
