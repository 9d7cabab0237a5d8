"""Workers forked from a clean "zygote" process: real processes to SIGKILL, without re-importing torch.

Why a zygote and not os.fork() in the test process: once a process has run a backward pass (any earlier
test explaining in-process), autograd refuses to run in its forked children ("Unable to handle autograd's
threading in combination with fork-based multiprocessing"). The zygote is a fresh Python that imports
torch once (one thread), loads each run's model once (`runner.prepare`) and never runs autograd itself; it forks a
worker per request, and each worker runs `execute_run` with the prepared model. The test process kills
workers by pid and asks the zygote to reap them. Worker exit codes: 0 done, 3 refused (InputError), 1
anything else (traceback in the zygote's log).

Nothing may be shared between workers but the files under test. torch.fx's Interpreter (every forward of a
`.pt2` model) creates a tqdm bar, which takes tqdm's class lock, by default a multiprocessing semaphore: one
semaphore for the zygote and all its children, so a worker SIGKILLed while holding it blocked every later
worker forever (a CI run hung on it). The zygote gives tqdm a thread lock, private to each process, and no
monitor thread that could hold it at fork time. A worker that still hangs has its stack dumped to the log and
is killed after `WAIT_TIMEOUT_S`, so a hang fails the test instead of the CI run.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WAIT_TIMEOUT_S = 300  # the slowest worker here (120 images with evidence) takes well under a minute


class Zygote:
    def __init__(self, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.forking"], cwd=ROOT,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                                               MKL_NUM_THREADS="1"), text=True, bufsize=1)

    def _ask(self, **command):
        self._proc.stdin.write(json.dumps(command) + "\n")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died; its log:\n{self.log_path.read_text()[-3000:]}")
        return json.loads(line)

    def fork(self, root, run_id: str, batch_size: int = 4, count: int = 1) -> list[int]:
        """Start `count` workers on the run; several start together (released at once after forking)."""
        return self._ask(op="fork", root=str(root), run_id=run_id, batch_size=batch_size, count=count)["pids"]

    def wait(self, pid: int) -> int | None:
        """Reap a worker: its exit code, or None when a signal killed it. RuntimeError if it hangs."""
        reply = self._ask(op="wait", pid=pid)
        if reply.get("hung"):
            raise RuntimeError(f"worker {pid} did not finish within {WAIT_TIMEOUT_S} s; its stack is in the "
                               f"zygote's log:\n{self.log_path.read_text()[-6000:]}")
        return reply["code"]

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(30)
        self._log.close()


def _serve() -> None:
    # No torch.set_num_threads here (OMP_NUM_THREADS instead): a thread pool set up before fork can abort
    # a child's autograd thread ("Invalid thread pool!").
    from analysis.runs import runner
    from analysis.store.workspace import Workspace
    from tqdm import tqdm

    from explainers.errors import InputError

    tqdm.monitor_interval = 0
    tqdm.set_lock(threading.RLock())
    prepared = {}
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "wait":
            reply = _reap(command["pid"])
        else:
            key = (command["root"], command["run_id"])
            if key not in prepared:
                ws = Workspace(command["root"])
                prepared[key] = runner.prepare(ws, ws.run(command["run_id"]))
                ws.close()
            go_read, go_write = os.pipe()
            pids = []
            for _ in range(command["count"]):
                pid = os.fork()
                if pid == 0:
                    _work(runner, Workspace, InputError, prepared[key], command, go_read)
                pids.append(pid)
            os.write(go_write, b"g" * command["count"])
            os.close(go_read), os.close(go_write)
            reply = {"pids": pids}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _reap(pid: int) -> dict:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"code": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None}
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGUSR1)  # faulthandler in the worker writes every thread's stack to the log
            time.sleep(1)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"code": None, "hung": True}
        time.sleep(0.005)


def _work(runner, Workspace, InputError, prepared, command, go_read) -> None:
    code = 1
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the zygote's stdout is its reply channel
        runner.prepare = lambda *args, **kwargs: prepared
        os.read(go_read, 1)
        runner.execute_run(Workspace(command["root"]), command["run_id"], batch_size=command["batch_size"],
                           progress=False)
        code = 0
    except InputError as exc:
        print(f"worker refused: {exc}", file=sys.stderr)
        code = 3
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


if __name__ == "__main__":
    _serve()
