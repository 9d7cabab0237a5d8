"""Disk full mid-run: one clear line (exit 2: the user can fix it), nothing recorded is lost, rerun resumes.

Two ways to fill the disk: ENOSPC injected into the k-th shard write (always runs), and a real 3 MiB
tmpfs filled to the brim (needs `mount`, i.e. root; skipped where it is refused).
"""
from __future__ import annotations

import errno
import subprocess

import pytest

from analysis.cli import main
from analysis.store.run_store import RunStore
from analysis.store.workspace import Workspace

from .checks import assert_catalog_and_shards_sound

FIX = "free space and run the same command again to resume"


def _run(capsys, ws_root, model_file, data, batch_size=4) -> tuple[int, str, str]:
    code = main(["run", "--model", str(model_file), "--data", str(data), "--n", "12", "--workspace",
                 str(ws_root), "--batch-size", str(batch_size), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_enospc_on_the_third_shard_stops_cleanly_and_resumes(tmp_path, model_file, data_12, capsys,
                                                             monkeypatch):
    real_write, calls = RunStore._write_tables, []

    def full_on_third(tmp, images, regions, maps, skipped):
        calls.append(len(images))
        if len(calls) == 3:
            images.to_parquet(tmp / "images.parquet", index=False)  # half a shard, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(tmp, images, regions, maps, skipped)

    monkeypatch.setattr(RunStore, "_write_tables", staticmethod(full_on_third))
    code, out, err = _run(capsys, tmp_path / "ws", model_file, data_12)
    assert code == 2
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len([l for l in lines if "error" in l]) == 1
    assert "disk full" in lines[-1] and FIX in lines[-1]
    ws = Workspace(tmp_path / "ws")
    (run,) = ws.runs()
    assert run["status"] == "failed" and "disk full" in run["error"] and FIX in run["error"]
    assert run["n_done"] + run["n_skipped"] == 8  # two whole shards kept
    assert_catalog_and_shards_sound(ws, run["id"])
    assert not list(ws.run_dir(run["id"]).glob(".*tmp*"))  # the half shard was removed, not left to fill

    monkeypatch.setattr(RunStore, "_write_tables", staticmethod(real_write))  # space freed
    code, out, err = _run(capsys, tmp_path / "ws", model_file, data_12)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == run["id"]
    final = ws.run(run["id"])
    assert final["status"] == "done" and final["error"] is None
    assert_catalog_and_shards_sound(ws, run["id"])
    assert sorted(ws.store(run["id"]).images()["image_id"]) == [i for i in range(12) if i != 5]


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(folder, leave_bytes: int):
    """Write a filler file until only about `leave_bytes` are free."""
    import os

    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))
    return filler


@pytest.mark.parametrize("leave_bytes, partial", [(150_000, True), (6_000, False)],
                         ids=["shard-write-fails", "catalog-write-fails"])
def test_real_full_filesystem_then_free_space_and_resume(small_disk, model_file, data_12, capsys, leave_bytes,
                                                         partial):
    """150 kB free: a few shards fit, then a shard write fails; 6 kB: the catalog (SQLite) write fails."""
    ws_root = small_disk / "ws"
    ws = Workspace(ws_root)
    ws.register_model(model_file)
    ws.register_dataset(data_12)
    ws.close()
    filler = _fill(small_disk, leave_bytes)

    code, out, err = _run(capsys, ws_root, model_file, data_12, batch_size=1)
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if "saliency-audit" in l]
    assert "Traceback" not in err and len(lines) == 1
    assert "disk full" in lines[0] and FIX in lines[0]
    filler.unlink()  # space freed (the catalog cannot even be opened on a full disk)
    ws = Workspace(ws_root)
    runs = ws.runs()
    kept = set()
    if runs:  # with 6 kB free even opening the catalog fails
        kept = set(ws.store(runs[0]["id"]).images()["image_id"]) | set(ws.store(runs[0]["id"]).skipped()["image_id"])
    assert 0 < len(kept) < 12 if partial else len(kept) < 12
    if partial:  # the failed shard's temp folder was removed, which leaves room to record why it stopped
        assert runs[0]["status"] == "failed" and FIX in runs[0]["error"]
    ws.close()

    code, out, err = _run(capsys, ws_root, model_file, data_12, batch_size=1)
    assert code == 0, err
    ws = Workspace(ws_root)
    (run,) = ws.runs()
    final = ws.run(run["id"])
    assert final["status"] == "done"
    assert_catalog_and_shards_sound(ws, run["id"])
    images = ws.store(run["id"]).images()
    assert sorted(images["image_id"]) == [i for i in range(12) if i != 5]
    assert kept <= set(images["image_id"]) | {5}  # nothing recorded before the disk filled was lost
    ws.close()
