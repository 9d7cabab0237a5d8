"""Workers as forked children of the test process: a real process to SIGKILL, without re-importing torch.

`fork_worker` runs `execute_run` in a child and returns its pid. Passing `prepared` (what
`runner.prepare` returned in the parent) skips reloading the model in each child: the kills are aimed at
explaining and writing, which is where a run's state lives. Exit codes: 0 done, 3 refused (InputError),
1 anything else (its traceback goes to stderr).
"""
from __future__ import annotations

import os
import sys
import traceback

import torch

from analysis import runner
from analysis.workspace import Workspace
from explainers.errors import InputError


def fork_worker(root, run_id: str, *, batch_size: int = 4, prepared=None, start_fd: int | None = None) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        torch.set_num_threads(1)
        if prepared is not None:
            runner.prepare = lambda *args, **kwargs: prepared
        if start_fd is not None:
            os.read(start_fd, 1)  # wait for the parent's go, so several workers start together
        runner.execute_run(Workspace(root), run_id, batch_size=batch_size, progress=False)
        code = 0
    except InputError as exc:
        print(f"worker refused: {exc}", file=sys.stderr)
        code = 3
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def exit_code(pid: int) -> int | None:
    """Wait for the child; its exit code, or None when a signal killed it."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None
