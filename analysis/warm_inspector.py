"""The Upload page's model check without a cold worker start: one helper process imports torch once and
forks a fresh child for every check.

A check (`analysis.inspect_model.inspect`) is a fraction of a second of work behind seconds of imports: torch,
then `torch.export.load`'s serializer, which pulls in torch._dynamo (profile in bench/README.md). The helper
(`python -m analysis.warm_inspector`) pays them once, when the Upload page opens. Each request is served by a
child forked from it, so the model is still loaded outside the dashboard's process, and nothing a model does
(a crash, a hang, a changed global) reaches the next check. The helper exits when its stdin closes (the
dashboard ended) or after `IDLE_SECONDS` without a request; the next check starts it again.

Protocol: one JSON line per request on stdin `{"model": PATH, "card": PATH or null}`, one JSON line per answer
on stdout: `inspect`'s dict, or `{"error": "<one line>"}` (an `InputError` as "error: <message>", as the
`python -m analysis.inspect_model` command prints it). This module's client side imports no torch.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

IDLE_SECONDS = 900
PRELOAD = ("torch", "torch.export", "torch._export.serde.serialize", "torch.export.pt2_archive._package",
           "torch.export._trace", "torch.export._unlift", "torch._functorch.aot_autograd", "sympy", "networkx",
           "explainers.loading.models", "explainers.layers", "analysis.inspect_model")
_REPO = Path(__file__).resolve().parent.parent


class WarmInspector:
    """The dashboard's handle on the helper: `start()` (returns at once), `inspect(model, card, timeout)`."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the helper unless it runs; its imports go on in the background. Never waits: while a check
        holds the helper (another tab's), the helper is up anyway."""
        if self._lock.acquire(blocking=False):
            try:
                self._ensure()
            finally:
                self._lock.release()

    def _ensure(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "analysis.warm_inspector"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, cwd=_REPO, text=True, bufsize=1, start_new_session=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(_REPO), os.environ.get(
                    "PYTHONPATH", "")) if p)})
        return self._process

    def inspect(self, model_path: str | Path, card_path: str | Path | None, timeout: float = 120) -> dict:
        """`analysis.inspect_model.inspect` in a child of the helper; `{"error": ...}` for a problem."""
        with self._lock:
            for attempt in (1, 2):  # a helper that ended since (idle, killed) is started again once
                process = self._ensure()
                try:
                    process.stdin.write(json.dumps({"model": str(model_path),
                                                    "card": None if card_path is None else str(card_path)}) + "\n")
                    process.stdin.flush()
                except (BrokenPipeError, OSError):
                    self._stop()
                    continue
                line = _read_line(process, timeout)
                if line is None:
                    self._stop()
                    return {"error": f"inspecting the model took longer than {timeout:.0f} s"}
                if line == "":
                    self._stop()
                    continue
                return json.loads(line)
            return {"error": "the model check's helper process could not be started"}

    def _stop(self) -> None:
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)  # the helper and a child still loading
            except (ProcessLookupError, PermissionError):
                pass
            self._process.wait()
            self._process = None


def _read_line(process: subprocess.Popen, timeout: float) -> str | None:
    """The helper's next line; "" when it ended; None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            return process.stdout.readline()
        if time.monotonic() >= deadline:
            return None


def _serve_one(request: dict) -> dict:
    """In a forked child: one check, its answer as a dict, with `_imported`: the modules it had to import (the
    helper imports them too, so the next check of such a model finds them loaded)."""
    from analysis.inspect_model import inspect
    from explainers.errors import InputError

    before = set(sys.modules)
    try:
        return {**inspect(request["model"], request.get("card")), "_imported": sorted(set(sys.modules) - before)}
    except InputError as exc:
        return {"error": "error: " + " ".join(str(exc).split())}
    except Exception as exc:  # noqa: BLE001 - the page shows it beside the button
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]}


def _answer(request: dict) -> dict:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: load the model, answer through the pipe, leave without cleanup
        os.close(read)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a model that prints must not write into the protocol
        try:
            payload = json.dumps(_serve_one(request)).encode()
        except BaseException as exc:  # noqa: BLE001
            payload = json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}).encode()
        with os.fdopen(write, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        payload = answer.read()
    _, status = os.waitpid(pid, 0)
    if payload:
        result = json.loads(payload)
        _preload(result.pop("_imported", []))
        return result
    if os.WIFSIGNALED(status):
        return {"error": f"loading the model crashed its checking process (signal {os.WTERMSIG(status)})"}
    return {"error": f"the model check ended without an answer (exit code {os.waitstatus_to_exitcode(status)})"}


def _preload(names) -> None:
    import importlib

    for name in names:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a module only its child could import: it imports it again
                pass


def main() -> int:
    _preload(PRELOAD)  # the seconds a cold check spends before it touches the model
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], IDLE_SECONDS)
        if not ready:
            return 0
        line = sys.stdin.readline()
        if not line:
            return 0
        if line.strip():
            sys.stdout.write(json.dumps(_answer(json.loads(line))) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
