"""A registration killed (SIGKILL) mid-copy leaves a `.tmp-PID-TOKEN` copy; the next start removes it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from analysis.store.temps import remove_dead_temps
from analysis.store.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]

# Registers the dataset with a copy that stalls half-way, so the parent can kill it mid-copy.
STALLED_COPY = """
import shutil, sys, time
from analysis.store.workspace import Workspace
real_copy = shutil.copy2
copied = []
def slow_copy(src, dst, **kw):
    copied.append(src)
    if len(copied) == 5:
        print("copying", flush=True)
        time.sleep(600)
    return real_copy(src, dst, **kw)
real_copytree = shutil.copytree
def stalling_copytree(src, dst, symlinks=False, ignore=None, copy_function=None, *args, **kwargs):
    return real_copytree(src, dst, symlinks, ignore, slow_copy, *args, **kwargs)
shutil.copytree = stalling_copytree
Workspace(sys.argv[1]).register_dataset(sys.argv[2])
"""


def test_a_killed_registration_leaves_nothing_after_the_next_one(tmp_path, data_12):
    root = tmp_path / "workspace"
    child = subprocess.Popen([sys.executable, "-c", STALLED_COPY, str(root), str(data_12)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert child.stdout.readline().strip() == "copying"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    leftovers = list((root / "datasets").glob("*/.*.tmp-*"))
    assert [p.name.rsplit("-", 1)[0] for p in leftovers] == [f".{data_12.name}.tmp-{child.pid}"]
    assert len(list(leftovers[0].rglob("*.png"))) >= 4  # a real partial copy

    workspace = Workspace(root)
    assert not leftovers[0].exists()  # opening the workspace is enough
    dataset_id = workspace.register_dataset(data_12)
    assert list((root / "datasets").glob("*/.*.tmp-*")) == []
    assert workspace.open_dataset(dataset_id).items  # registered and readable


def test_a_live_process_keeps_its_temp(tmp_path):
    live = tmp_path / f".model.pt2.tmp-{os.getpid()}-0a1b"
    dead_pid = _dead_pid()
    dead = tmp_path / f".model.pt2.tmp-{dead_pid}-2c3d"
    live.write_bytes(b"x")
    dead.mkdir()
    assert remove_dead_temps(tmp_path) == [dead.name]
    assert live.exists() and not dead.exists()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    time.sleep(0.1)
    return process.pid
