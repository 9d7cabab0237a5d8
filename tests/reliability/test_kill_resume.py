"""kill -9 the worker at 30 random moments in a row, resuming each time: the result equals an uninterrupted run.

Workers are forked from a zygote process that already imported torch and loaded the model (forking.py),
so a kill costs milliseconds, and each is still a real SIGKILL of a process writing Parquet and SQLite.
Kill delays are seeded and scaled to the measured start-up and length of the uninterrupted run, so kills
land all along the run (start-up, mid-batch, mid-write) whatever the machine's speed.
"""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from analysis.store.workspace import Workspace

from .checks import assert_catalog_and_shards_sound, assert_same_results
from .conftest import CORRUPT, N_IMAGES

KILLS = 30


def _new_run(root, model_file, data) -> str:
    ws = Workspace(root)
    run_id = ws.create_run(ws.register_model(model_file), ws.register_dataset(data), "gradcam",
                           {"target": "pred"}, n=N_IMAGES, seed=0)
    ws.close()
    return run_id


@pytest.mark.slow
def test_thirty_kills_then_resume_equal_an_uninterrupted_run(tmp_path, model_file, data_120, zygote):
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    clean_id, run_id = _new_run(clean_root, model_file, data_120), _new_run(killed_root, model_file, data_120)
    assert run_id == clean_id  # same identity in both workspaces

    (pid,) = zygote.fork(clean_root, clean_id)  # returns once the zygote has loaded the model and forked
    started, clean = time.monotonic(), Workspace(clean_root)
    while not clean.shards(clean_id) and time.monotonic() - started < 120:
        time.sleep(0.002)
    startup_s = time.monotonic() - started  # a fresh worker's time to its first shard
    while (row := clean.run(clean_id))["n_done"] + row["n_skipped"] < N_IMAGES and row["status"] != "failed":
        assert time.monotonic() - started < 300, f"the uninterrupted worker stalled: {row}"
        time.sleep(0.002)
    full_run_s = time.monotonic() - started  # to the last shard: the evidence stage after it is not aimed at
    assert zygote.wait(pid) == 0
    clean.close()

    # Kill windows: a worker's start-up plus two thirtieths of the batches, widened while kills land before
    # any progress (a resumed worker starts slower: it reads the shards so far), narrowed again after.
    rng = random.Random(20240607)
    base_window = startup_s + 2 * (full_run_s - startup_s) / KILLS
    window, progress, leftovers = base_window, [], 0
    for _ in range(KILLS):
        (pid,) = zygote.fork(killed_root, run_id)
        time.sleep(rng.uniform(0.3, 1.0) * window)
        os.kill(pid, signal.SIGKILL)
        assert zygote.wait(pid) in (None, 0)  # killed, or it had already finished
        ws = Workspace(killed_root)
        assert_catalog_and_shards_sound(ws, run_id)
        run = ws.run(run_id)
        done = run["n_done"] + run["n_skipped"]
        stalled = progress and done == progress[-1][1] and done < N_IMAGES
        window = min(window * 1.5, full_run_s) if stalled else max(base_window, window / 1.5)
        progress.append((run["status"], done))
        leftovers += len(list(ws.run_dir(run_id).glob(".*.tmp-*")))
        ws.close()

    # A killed worker cannot record its end: the catalog still says running, readers see interrupted.
    mid_run = [done for status, done in progress if status == "interrupted" and 0 < done < N_IMAGES]
    assert len(mid_run) >= 5, f"too few kills landed mid-run to test anything: {progress}"
    assert [done for _, done in progress] == sorted(done for _, done in progress)  # nothing ever lost

    assert zygote.wait(zygote.fork(killed_root, run_id)[0]) == 0
    ws, clean = Workspace(killed_root), Workspace(clean_root)
    assert ws.run(run_id)["status"] == "done"
    assert_catalog_and_shards_sound(ws, run_id)
    assert_same_results(ws, run_id, clean, clean_id)
    images = ws.store(run_id).images()
    assert sorted(images["image_id"]) == [i for i in range(N_IMAGES) if i not in CORRUPT]
    assert sorted(ws.store(run_id).skipped()["image_id"]) == list(CORRUPT)
    # the run folder holds exactly the recorded shards: killed workers' temp folders were cleared
    recorded = {s["path"] for s in ws.shards(run_id)}
    on_disk = {p.name for p in ws.run_dir(run_id).iterdir() if p.name not in ("evidence.json", "report.json")}
    assert on_disk == recorded
    print(f"uninterrupted run {full_run_s:.2f}s (start-up {startup_s:.2f}s); kills mid-run: {len(mid_run)}/{KILLS}; "
          f"temp folders seen after kills: {leftovers}; progress: {[d for _, d in progress]}")
