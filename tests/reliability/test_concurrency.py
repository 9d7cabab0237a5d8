"""Two audits writing into one workspace while a dashboard-like reader polls it; one run started twice.

Workers are forked from the zygote (see forking.py). The reader is the test process with one long-lived
Workspace, calling what the dashboard calls (`runs()`, `images()`, `regions()`) as fast as it can.
"""
from __future__ import annotations


import pytest

from analysis.store.workspace import Workspace

from .checks import assert_catalog_and_shards_sound
from .conftest import CORRUPT, N_IMAGES


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for the zygote to reap it counts as finished)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _runs(root, model_file, data, targets):
    ws = Workspace(root)
    model_id, dataset_id = ws.register_model(model_file), ws.register_dataset(data)
    run_ids = [ws.create_run(model_id, dataset_id, "gradcam", {"target": target}, n=N_IMAGES, seed=0)
               for target in targets]
    ws.close()
    return run_ids


@pytest.mark.slow
def test_two_audits_and_a_reader_never_lock_or_corrupt(tmp_path, model_file, data_120, zygote):
    root = tmp_path / "ws"
    runs = _runs(root, model_file, data_120, ["pred", "label"])
    pids = [pid for run_id in runs for pid in zygote.fork(root, run_id)]

    reader = Workspace(root)
    seen = {run_id: 0 for run_id in runs}
    reads, both_partial, codes = 0, 0, {}

    def workers_running() -> bool:
        for pid in set(pids) - set(codes):
            if not _alive(pid):
                codes[pid] = zygote.wait(pid)
        return len(codes) < len(pids)

    while workers_running() or reads == 0:
        catalog = {row["id"]: row for row in reader.runs()}  # must never raise "database is locked"
        partial = 0
        for run_id in runs:
            store = reader.store(run_id).snapshot()  # images and regions from the same shards
            images, regions = store.images(), store.regions()
            assert not images["image_id"].duplicated().any()
            assert len(regions) == 3 * len(images)  # 3 annotated regions per image, never half a shard
            assert len(images) >= catalog[run_id]["n_done"] >= seen[run_id]  # progress only grows
            seen[run_id] = catalog[run_id]["n_done"]
            partial += 0 < len(images) < N_IMAGES - len(CORRUPT)
        both_partial += partial == 2
        reads += 1
    assert [codes[pid] for pid in pids] == [0, 0]
    assert both_partial > 0, "the reader never saw both runs in progress: nothing ran concurrently"

    ws = Workspace(root)
    for run_id in runs:
        run = ws.run(run_id)
        assert run["status"] == "done" and run["n_done"] == N_IMAGES - len(CORRUPT), run
        assert_catalog_and_shards_sound(ws, run_id)
    label_run = ws.store([r for r in runs if ws.run(r)["params"]["target"] == "label"][0]).images()
    assert (label_run["target_idx"] == label_run["label_idx"]).all()
    print(f"reader passes: {reads}, with both runs in progress: {both_partial}")


def test_the_same_run_started_twice_at_once_runs_once(tmp_path, model_file, data_12, zygote):
    root = tmp_path / "ws"
    (run_id,) = _runs(root, model_file, data_12, ["pred"])
    pids = zygote.fork(root, run_id, batch_size=1, count=2)  # released together
    codes = sorted(zygote.wait(pid) for pid in pids)
    assert codes == [0, 3]  # one ran it, the other was refused: "already running in process ..."
    ws = Workspace(root)
    assert ws.run(run_id)["status"] == "done"
    assert_catalog_and_shards_sound(ws, run_id)
    assert sorted(ws.store(run_id).images()["image_id"]) == [i for i in range(12) if i != 5]
