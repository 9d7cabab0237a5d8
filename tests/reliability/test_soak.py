"""Soak: several `saliency-audit run` processes on one fresh workspace, three at a time, registering the same
model and dataset at once, with workers killed by SIGKILL at random moments (registration, explaining, evidence,
report) and started again with the same command. Afterwards every audit equals an undisturbed run of it (in a
second workspace), the catalog passes its integrity and invariant checks, and no temp file is left.

Bounded: four audits of 48 images, at most one kill each, a 420 s hang guard. The load it held is printed
(and recorded in bench/README.md).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from tests.runs.helpers import write_dataset

from .checks import assert_catalog_and_shards_sound, assert_catalog_invariants, assert_same_results

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
N = 48
JOBS = [("gradcam", "pred", 0), ("gradcam", "label", 1), ("saliency", "pred", 0), ("gradcam", "pred", 2)]
CONCURRENT = 3
GUARD_S = 420


def _arguments(model, data, root, job) -> list[str]:
    method, target, seed = job
    return ["run", "--model", str(model), "--data", str(data), "--method", method, "--target", target, "--n", str(N),
            "--seed", str(seed), "--batch-size", "4", "--workspace", str(root), "--no-progress"]


def test_audits_killed_at_random_finish_equal_to_undisturbed_runs(tmp_path, model_file):
    data = write_dataset(tmp_path / "data", n=N, seed=27, corrupt=(9,))
    root, reference = tmp_path / "ws", tmp_path / "reference"
    rng = random.Random(27)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    queue, running, run_ids, kills, starts = list(range(len(JOBS))), {}, {}, [], 0
    began = time.monotonic()
    while queue or running:
        assert time.monotonic() - began < GUARD_S, f"soak still running after {GUARD_S} s: {running}"
        while queue and len(running) < CONCURRENT:
            k = queue.pop(0)
            log = open(tmp_path / f"job{k}.log", "ab")
            proc = subprocess.Popen([sys.executable, "-m", "analysis.cli", *_arguments(model_file, data, root, JOBS[k])],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
            already_killed = any(job == k for job, _ in kills)
            kill_at = None if already_killed or rng.random() < 0.25 else time.monotonic() + rng.uniform(0.5, 12.0)
            running[k] = (proc, log, kill_at)
            starts += 1
        for k, (proc, log, kill_at) in list(running.items()):
            if proc.poll() is None and kill_at is not None and time.monotonic() >= kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append((k, round(kill_at - began, 1)))
            if proc.poll() is None:
                continue
            out = proc.stdout.read().decode()
            log.close()
            del running[k]
            if proc.returncode == -signal.SIGKILL:
                queue.append(k)  # the same command again: it resumes
                continue
            assert proc.returncode == 0, (tmp_path / f"job{k}.log").read_text()[-3000:]
            run_ids[k] = out.strip().splitlines()[-1]
        time.sleep(0.05)
    wall = time.monotonic() - began

    ws, ref = Workspace(root), Workspace(reference)
    explained = 0
    for k, job in enumerate(JOBS):
        capture = tmp_path / f"reference{k}.out"
        with open(capture, "w") as out:
            stdout, sys.stdout = sys.stdout, out
            try:
                assert main(_arguments(model_file, data, reference, job)) == 0
            finally:
                sys.stdout = stdout
        ref_id = capture.read_text().strip().splitlines()[-1]
        assert ref_id == run_ids[k]  # the same identity in both workspaces
        run = ws.run(run_ids[k])
        assert run["status"] == "done" and run["n_done"] == N - 1 and run["n_skipped"] == 1, run
        assert_catalog_and_shards_sound(ws, run_ids[k])
        assert_same_results(ws, run_ids[k], ref, ref_id)
        report, ref_report = cached_report(ws.store(run_ids[k]), ws), cached_report(ref.store(ref_id), ref)
        assert json.dumps(report["flags"], sort_keys=True) == json.dumps(ref_report["flags"], sort_keys=True)
        explained += run["n_done"]
    ws.close()
    ref.close()
    assert_catalog_invariants(root)
    assert kills, "no worker was killed: the schedule did not exercise resumption"
    print(f"soak: {len(JOBS)} audits x {N} images, {starts} worker starts, {CONCURRENT} at a time, "
          f"{len(kills)} SIGKILLs at {kills} s, {wall:.0f} s wall, {explained / wall:.2f} images/s explained "
          f"(with evidence and reports)")
