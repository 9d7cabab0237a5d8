"""Process liveness, for the catalog (a `running` run whose worker is gone reads as interrupted; a dead
registration's temp copy is removed) and for jobs: a leaf module, so the workspace and the jobs that start
workers on it do not import each other."""
from __future__ import annotations

import os
from pathlib import Path


def job_alive(pid: int | None) -> bool:
    """Whether `pid` is a live process (a zombie, finished but not yet reaped, counts as dead)."""
    if not pid:
        return False
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own finished child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True
