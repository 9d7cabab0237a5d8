"""The background shard writer: overlap with compute, record only complete shards, errors in the caller."""
from __future__ import annotations

import errno
import threading

import pytest

from analysis.cli import main
from analysis.store.shard_writer import ShardWriter
from analysis.store.run_store import RunStore
from analysis.store.workspace import Workspace

from tests.runs.helpers import write_dataset, write_model


def test_shard_n_is_written_while_batch_n_plus_1_is_computed():
    next_batch_computed = threading.Event()
    overlapped = []

    def write(index):
        if index == 0:  # a synchronous writer would wait here forever: batch 1 is computed after it returns
            overlapped.append(next_batch_computed.wait(timeout=10))
        return f"shard-{index}"

    recorded = []
    with ShardWriter(write) as writer:
        writer.submit(0, record=recorded.append)
        next_batch_computed.set()  # "compute" batch 1 on this thread
        writer.submit(1, record=recorded.append)
    assert overlapped == [True]
    assert recorded == ["shard-0", "shard-1"]


def test_a_shard_is_recorded_on_the_callers_thread_only_after_its_write_returned():
    release = threading.Event()
    events = []

    def write(index):
        release.wait(timeout=10)
        events.append(("written", index, threading.current_thread().name))
        return index

    def record(index):
        events.append(("recorded", index, threading.current_thread().name))

    writer = ShardWriter(write)
    writer.submit(0, record=record)
    assert events == []  # in flight: not recorded
    release.set()
    writer.submit(1, record=record)
    writer.close(failing=False)
    main_thread = threading.current_thread().name
    assert [e[:2] for e in events] == [("written", 0), ("recorded", 0), ("written", 1), ("recorded", 1)]
    assert all(name.startswith("shard-writer") for kind, _, name in events if kind == "written")
    assert all(name == main_thread for kind, _, name in events if kind == "recorded")


def test_write_error_reaches_the_caller_unchanged_and_its_shard_is_never_recorded():
    full = OSError(errno.ENOSPC, "No space left on device")

    def write(index):
        if index == 1:
            raise full
        return index

    recorded = []
    with pytest.raises(OSError) as raised:
        with ShardWriter(write) as writer:
            for index in range(4):
                writer.submit(index, record=recorded.append)
    assert raised.value is full
    assert recorded == [0]


def test_after_an_error_elsewhere_the_shard_in_flight_is_kept_and_the_callers_error_wins():
    recorded = []
    with pytest.raises(KeyError):
        with ShardWriter(lambda index: index) as writer:
            writer.submit(0, record=recorded.append)
            writer.submit(1, record=recorded.append)
            raise KeyError("compute failed on batch 2")
    assert recorded == [0, 1]

    def failing_write(index):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(KeyError):  # the writer's own error does not mask the caller's
        with ShardWriter(failing_write) as writer:
            writer.submit(0, record=recorded.append)
            raise KeyError("compute failed")


def test_runner_writes_shards_off_the_main_thread_and_records_them_all(tmp_path, monkeypatch, capsys):
    model, data = write_model(tmp_path / "model"), write_dataset(tmp_path / "data", n=12)
    threads, real_write = [], RunStore.write_shard

    def spy(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "write_shard", spy)
    code = main(["run", "--model", str(model), "--data", str(data), "--n", "12", "--workspace", str(tmp_path / "ws"),
                 "--batch-size", "4", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert len(threads) == 3 and all(name.startswith("shard-writer") for name in threads)
    ws = Workspace(tmp_path / "ws")
    (run,) = ws.runs()
    assert [s["index"] for s in ws.shards(run["id"])] == [0, 1, 2]
    assert run["n_done"] == 12 and sorted(ws.store(run["id"]).images()["image_id"]) == list(range(12))
