"""Where the demo build stands, in one small JSON file beside the workspace's catalog.

The build runs in a worker process (`saliency-audit demo`, started by `saliency-audit dashboard --demo` or the
dashboard's Resume button) while the dashboard already serves; the worker writes this file before and after
each audit, the dashboard polls it. Light on purpose (no torch): the dashboard imports it.

Fields: state ("building", "done", "failed"; a reader sees "stopped" for a building one whose worker is gone),
pid, plan (the key of the audit list it builds), total, done, current (the audit being built), failed
([{audit, error}]), error (why the build did not finish), run_ids, arguments (the `saliency-audit demo` options,
for a resume), log, updated.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

STATUS_FILE = "demo-build.json"
LOG_FILE = "demo-build.log"


def status_path(root: str | os.PathLike) -> Path:
    return Path(root) / STATUS_FILE


def read_status(root: str | os.PathLike) -> dict | None:
    """The build's status with `state` "stopped" when it says building but its worker is gone; None before
    any build."""
    from analysis.store.processes import job_alive

    try:
        status = json.loads(status_path(root).read_text())
    except (OSError, ValueError):  # no build yet
        return None
    if status.get("state") == "building" and not job_alive(status.get("pid")):
        status["state"] = "stopped"
    return status


def write_status(root: str | os.PathLike, **fields) -> dict:
    """Merge `fields` into the status file (atomically: a reader never sees half a file)."""
    path = status_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        status = {}
    status.update(fields, updated=time.time())
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(json.dumps(status, indent=1))
    os.replace(temp, path)
    return status


def start_build(root: str | os.PathLike, arguments: list[str] = ()) -> int:
    """Start `saliency-audit demo` on the workspace in a worker process, unless one is building already;
    returns the builder's pid. A first build or a resume says "building" from here on (no page shows a stale
    failure); after a finished build the state stays "done" unless the builder finds work (a changed plan)."""
    from analysis.store.jobs import spawn_cli

    root = Path(root).resolve()
    status = read_status(root)
    if status and status.get("state") == "building":
        return int(status["pid"])
    pid = spawn_cli(["demo", "--workspace", str(root), *arguments], root / LOG_FILE)
    fields = {"arguments": list(arguments), "log": str(root / LOG_FILE)}
    if not status or status.get("state") != "done":
        fields.update(state="building", pid=pid, error=None, current=None)
    write_status(root, **fields)
    return pid
