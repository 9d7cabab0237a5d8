"""The Ray backend as a team meets it: a wrong address or a token mismatch is one line and exit 2, a head the
tool starts listens on loopback only, the CLI prints progress and stages, and the driver records shards the
actors wrote (the failure guard's rule kept: shards of a model that fails on everything are never recorded)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import ray
from analysis.runs.engine import Plan
from analysis.runs.ray_backend import CatalogRows, ShardRecorder, ShardWorker, Written, init_ray
from analysis.store.run_store import RunStore
from analysis.store.workspace import Workspace
from dashboard.launch import free_port
from explainers.errors import InputError
from tests.runs.helpers import write_dataset, write_model

pytestmark = [pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[2]
RAY_BIN = Path(sys.executable).with_name("ray")


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "analysis.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    write_model(folder / "model")
    write_dataset(folder / "data", n=12)
    return folder


def _run_args(files, workspace, address=None):
    return ["run", "--model", files / "model" / "model.pt2", "--data", files / "data", "--n", 12,
            "--batch-size", 4, "--workspace", workspace, "--backend", "ray", "--workers", 2,
            *(["--ray-address", address] if address else [])]


def test_an_address_where_nothing_listens_is_one_line(files, tmp_path):
    port = free_port()  # free: nothing listens on it
    result = _cli(*_run_args(files, tmp_path / "ws", f"127.0.0.1:{port}"), "--no-progress")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"--ray-address 127.0.0.1:{port}: nothing answers there" in line and "ray start --head" in line


def test_a_token_mismatch_is_one_line_naming_the_token_fix(files, tmp_path):
    """A head with Ray token authentication, and a client holding another cluster's token."""
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live under it
    port = free_port()
    env = {**os.environ, "HOME": str(temp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "a" * 32}
    head = subprocess.Popen([str(RAY_BIN), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             f"--temp-dir={temp / 'ray'}", "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:  # the head's GCS port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, "ray start --head did not come up"
                time.sleep(0.5)
        result = _cli(*_run_args(files, tmp_path / "ws", f"127.0.0.1:{port}"), "--no-progress",
                      env={"HOME": str(temp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "b" * 32})
    finally:
        _stop_head(head, temp)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [l for l in result.stderr.strip().splitlines() if l.startswith("saliency-audit")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Ray did not accept the connection" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]
    assert "ray get-auth-token" in lines[0]
    assert Workspace(tmp_path / "ws").runs()[0]["status"] == "pending"  # the run was not claimed, nor failed


def _stop_head(head, temp: Path) -> None:
    """This head's processes only: its process group, then anything still naming its temp dir."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for process in psutil.process_iter(["cmdline"]):
        if any(str(temp) in part for part in process.info["cmdline"] or ()):
            process.kill()
    shutil.rmtree(temp, ignore_errors=True)


def test_a_head_started_by_the_tool_listens_on_loopback_only():
    assert not ray.is_initialized()
    init_ray(ray, None, 1)
    try:
        host, port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
        assert host == "127.0.0.1"
        listening = [c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)]
        assert listening and set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42  # and it runs work
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_the_cli_on_ray_prints_progress_and_stages(files, tmp_path):
    result = _cli(*_run_args(files, tmp_path / "ws"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert "explain" in err and "12/12" in err  # the main pass's bar, named by its stage
    assert "stage: evidence" in err and "stage: report" in err
    assert "12 images explained, 0 skipped" in err
    run = Workspace(tmp_path / "ws").runs()[0]
    assert run["status"] == "done" and len(Workspace(tmp_path / "ws").shards(run["id"])) == 3


class _Catalog:
    def __init__(self):
        self.recorded = []

    def record_shard(self, run_id, index, n_rows, path, *, n_done, n_skipped):
        self.recorded.append((index, n_rows, n_done, n_skipped))


def _plan(n):
    return Plan(sample=list(range(n)), todo=list(range(n)), n_done=0, n_skipped=0, first_index=0)


def _failed(k):
    return [{"image_id": k, "image": f"{k}.png", "reason": "model or explainer raised RuntimeError: x"}]


def test_a_failing_first_shard_is_recorded_once_an_image_works():
    catalog = _Catalog()
    recorder = ShardRecorder(catalog, "run", _plan(8), progress=False)
    recorder.add(Written(0, "shard-00000", 0, 1, 0, _failed(0)))  # held: nothing has worked yet
    assert catalog.recorded == []
    recorder.add(Written(1, "shard-00001", 4, 0, 4, []))
    recorder.finish()
    assert catalog.recorded == [(0, 0, 0, 1), (1, 4, 4, 1)]


def test_shards_of_a_model_that_fails_on_everything_are_never_recorded():
    catalog = _Catalog()
    recorder = ShardRecorder(catalog, "run", _plan(16), progress=False)
    with pytest.raises(RuntimeError, match="failed on each of the first 8 images"):
        for index in range(8):
            recorder.add(Written(index, f"shard-{index:05d}", 0, 1, 0, _failed(index)))
    assert catalog.recorded == []  # a resume after the fix retries them instead of skipping them


def test_undecodable_images_alone_are_recorded_at_once():
    catalog = _Catalog()
    recorder = ShardRecorder(catalog, "run", _plan(4), progress=False)
    recorder.add(Written(0, "shard-00000", 0, 4, 0, []))  # corrupt files: decode skips, not model failures
    recorder.finish()
    assert catalog.recorded == [(0, 0, 0, 4)]


def test_a_worker_prepares_and_writes_its_shard_without_opening_the_catalog(files, tmp_path):
    """What a worker on another node does: the driver's rows in, a shard folder out; no SQLite involved."""
    workspace = Workspace(tmp_path / "ws")
    run_id = workspace.create_run(workspace.resolve_model(str(files / "model" / "model.pt2")),
                                  workspace.resolve_dataset(str(files / "data")), "gradcam", {"target": "pred"},
                                  n=12, seed=0)
    rows = CatalogRows.of(workspace, workspace.run(run_id))
    workspace.close()
    for path in (tmp_path / "ws").glob("*.sqlite*"):
        path.rename(path.with_name("moved-" + path.name))  # any catalog access would now fail or start empty
    worker = ShardWorker(rows, "cpu", 1)
    written = worker.explain(3, [0, 1, 2, 5])
    assert (written.index, written.path, written.n_rows, written.n_skipped, written.failed) == (
        3, "shard-00003", 4, 0, [])
    assert not (tmp_path / "ws" / "catalog.sqlite").exists()  # nothing recreated a catalog
    shard = RunStore(tmp_path / "ws" / "runs" / run_id)
    assert sorted(shard.images()["image_id"]) == [0, 1, 2, 5] and len(shard.maps()[0]) == 4


def test_a_worker_reads_one_header_not_the_dataset_and_names_a_missing_mount(files, tmp_path, monkeypatch):
    """The driver validated every file before the actors start: an actor reading every image and mask header
    again was most of a 100k-image run's start-up. It still refuses, in one line, a node that cannot see the
    files (the workspace not mounted there)."""
    import analysis.data.datasets as datasets
    import analysis.data.images as images

    workspace = Workspace(tmp_path / "ws")
    run_id = workspace.create_run(workspace.resolve_model(str(files / "model" / "model.pt2")),
                                  workspace.resolve_dataset(str(files / "data")), "gradcam", {"target": "pred"},
                                  n=12, seed=0)
    rows = CatalogRows.of(workspace, workspace.run(run_id))
    read = []
    for module in (images, datasets):
        if hasattr(module, "image_header"):
            original = getattr(module, "image_header")
            monkeypatch.setattr(module, "image_header", lambda path, f=original: read.append(path) or f(path))
    worker = ShardWorker(rows, "cpu", 1)
    assert len(read) == 1 and len(worker.items) == 12  # one header, not the 12 the driver's validation reads
    assert len(Workspace(tmp_path / "ws").open_dataset(workspace.run(run_id)["dataset_id"]).items) == 12
    read.clear()
    workspace.open_dataset(workspace.run(run_id)["dataset_id"]).validate(["cat", "dog"])
    assert len(read) == 12  # the driver's own validation reads them all
    first = rows.open_dataset(workspace.run(run_id)["dataset_id"])
    first.image_path(first.items[0]).unlink()
    with pytest.raises(InputError, match=r"cannot read .*mount the workspace at the same path on every node"):
        ShardWorker(rows, "cpu", 1)
