"""One workspace, many writers: CLI processes, dashboard threads and workers registering, creating, claiming,
labelling, renaming and deleting at the same time. Writers are real processes (`catalog_worker`), released
together at one wall-clock instant; the catalog's invariants (`checks.assert_catalog_invariants`) must hold
after any interleaving, and every operation either succeeds or is refused with an InputError.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.store.workspace import Workspace
from tests.runs.helpers import write_dataset

from .checks import assert_catalog_invariants

REPO = Path(__file__).resolve().parents[2]
N_WRITERS = 3


class Writers:
    """N_WRITERS persistent `catalog_worker` processes; `run(root, [ops per writer])` -> outcomes per writer."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.procs = [subprocess.Popen([sys.executable, "-m", "tests.reliability.catalog_worker"], cwd=REPO,
                                       env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
                      for _ in range(N_WRITERS)]

    def run(self, root: Path, ops: list[list]) -> list[list[str]]:
        start_at = time.time() + 0.3  # each has its Workspace open by then; all start the same instant
        for proc, mine in zip(self.procs, ops):
            proc.stdin.write(json.dumps({"root": str(root), "ops": mine, "start_at": start_at}) + "\n")
        outcomes = []
        for proc in self.procs[:len(ops)]:
            line = proc.stdout.readline()
            assert line, "a writer process died"
            outcomes.append(json.loads(line))
        return outcomes

    def close(self):
        for proc in self.procs:
            proc.stdin.close()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def writers():
    w = Writers()
    yield w
    w.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model_file):
    """Two datasets (one also as a zip), two models (one file, two cards), and their ids."""
    base = tmp_path_factory.mktemp("inputs")
    data = [write_dataset(base / "cats", n=40, seed=3), write_dataset(base / "dogs", n=6, seed=4)]
    archive = base / "dogs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(data[1].rglob("*")):
            z.write(path, Path("dogs") / path.relative_to(data[1]))
    data.append(archive)
    models = []
    for version in ("1", "2"):
        folder = base / f"model-v{version}"
        folder.mkdir()
        shutil.copy(model_file, folder / model_file.name)
        card = json.loads((model_file.parent / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**card, "version": version}))
        models.append(folder / model_file.name)
    scratch = Workspace(base / "scratch")
    ids = {"dataset_ids": [scratch.register_dataset(p) for p in data],
           "model_ids": [scratch.register_model(p) for p in models]}
    scratch.close()
    return {"data": [str(p) for p in data], "models": [str(p) for p in models], **ids}


def _assert_no_errors(outcomes):
    errors = [o for writer in outcomes for o in writer if not (o == "ok" or o.startswith("refused: "))]
    assert errors == [], errors[0]


@pytest.mark.parametrize("which", [0, 2], ids=["folder", "zip"])
def test_three_registrations_of_one_dataset_at_once(tmp_path, writers, inputs, which):
    """The CI failure: three `saliency-audit run` on a fresh workspace with one new dataset; one died with
    `OSError: [Errno 39] Directory not empty` and left `.tmp-PID`. Now the losers reuse the winner's copy."""
    root = tmp_path / "ws"
    outcomes = writers.run(root, [[["register_dataset", inputs["data"][which]]]] * N_WRITERS)
    assert outcomes == [["ok"]] * N_WRITERS
    ws = Workspace(root)
    assert [d["id"] for d in ws.datasets()] == [inputs["dataset_ids"][which]]
    assert len(ws.open_dataset(inputs["dataset_ids"][which]).items) == (40 if which == 0 else 6)
    ws.close()
    assert_catalog_invariants(root)


def test_same_model_dataset_and_run_from_three_writers(tmp_path, writers, inputs):
    root = tmp_path / "ws"
    mine = [["register_model", inputs["models"][0]], ["register_dataset", inputs["data"][0]],
            ["claim", inputs["model_ids"][0], inputs["dataset_ids"][0], 0]]
    outcomes = writers.run(root, [mine] * N_WRITERS)
    assert outcomes == [["ok", "ok", "ok"]] * N_WRITERS
    ws = Workspace(root)
    (run,) = ws.runs()
    assert run["status"] == "done" and run["n_done"] == 4 and len(ws.shards(run["id"])) == 1
    ws.close()
    assert_catalog_invariants(root)


def _operations(inputs):
    """One writer's operation, drawn from everything the CLI, dashboard and workers do to a catalog."""
    model = st.sampled_from(range(len(inputs["models"])))
    data = st.sampled_from(range(len(inputs["data"])))
    seed = st.sampled_from([0, 1])
    m_id = model.map(lambda k: inputs["model_ids"][k])
    d_id = data.map(lambda k: inputs["dataset_ids"][k])
    return st.one_of(
        data.map(lambda k: ["register_dataset", inputs["data"][k]]),
        model.map(lambda k: ["register_model", inputs["models"][k]]),
        st.tuples(m_id, d_id, seed).map(lambda t: ["create_run", *t]),
        st.tuples(m_id, d_id, seed).map(lambda t: ["claim", *t]),
        st.tuples(d_id, st.sampled_from(["background", "frame"]), st.sampled_from(["shortcut", "legitimate"]))
        .map(lambda t: ["label", *t]),
        st.tuples(d_id, st.sampled_from(["a", "b"])).map(lambda t: ["rename", "dataset", *t]),
        st.tuples(m_id, st.sampled_from(["a", "b"])).map(lambda t: ["rename", "model", *t]),
        d_id.map(lambda i: ["delete_dataset", i]),
        m_id.map(lambda i: ["delete_model", i]),
        st.tuples(m_id, d_id, seed).map(lambda t: ["delete_run", *t]),
    )


def test_any_interleaving_keeps_the_catalog_sound(tmp_path_factory, writers, inputs):
    """Hypothesis draws each writer's operations (registrations first, so most later ones find something
    to act on); the three run at once; afterwards no operation raised anything but InputError and the
    catalog's invariants hold."""
    examples = []

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.lists(_operations(inputs), min_size=2, max_size=7), min_size=N_WRITERS,
                    max_size=N_WRITERS))
    def interleave(ops):
        setup = [["register_dataset", inputs["data"][k]] for k in range(len(inputs["data"]))] + \
                [["register_model", inputs["models"][k]] for k in range(len(inputs["models"]))]
        root = tmp_path_factory.mktemp("interleave") / "ws"
        outcomes = writers.run(root, [setup[i::N_WRITERS] + mine for i, mine in enumerate(ops)])
        _assert_no_errors(outcomes)
        assert_catalog_invariants(root)
        examples.append(sum(o == "ok" for writer in outcomes for o in writer))

    interleave()
    assert len(examples) == 12 and min(examples) >= 5  # every example really wrote to the catalog


def test_threads_sharing_one_workspace_write_at_once(tmp_path, inputs):
    """Dashboard sessions are threads sharing one cached `Workspace`: with one SQLite connection between
    them, two `BEGIN IMMEDIATE` collided ("cannot start a transaction within a transaction")."""
    ws = Workspace(tmp_path / "ws")
    dataset_id = ws.register_dataset(inputs["data"][1])
    model_id = ws.register_model(inputs["models"][0])
    barrier, failures = threading.Barrier(6), []

    def session(k: int) -> None:
        try:
            barrier.wait()
            for i in range(15):
                ws.set_label(dataset_id, f"region{k}-{i % 3}", "shortcut" if i % 2 else "legitimate")
                ws.rename_dataset(dataset_id, f"name {k}.{i}")
                ws.create_run(model_id, dataset_id, "gradcam", n=4, seed=k * 100 + i)
        except Exception as exc:  # noqa: BLE001 - the test reports whatever a session raised
            failures.append(repr(exc))

    threads = [threading.Thread(target=session, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert len(ws.labels(dataset_id)) == 18 and len(ws.runs()) == 90
    ws.close()
    assert_catalog_invariants(tmp_path / "ws")


def test_connections_of_finished_threads_are_closed(tmp_path):
    """Streamlit runs each rerun of a page in a new thread: a connection per thread must not pile up."""
    ws = Workspace(tmp_path / "ws")
    for _ in range(20):
        thread = threading.Thread(target=ws.runs)
        thread.start()
        thread.join()
    ws.runs()  # this thread's connection; the finished threads' are closed on the way
    assert len(ws._connections) <= 2
    open_files = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            open_files.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            pass
    assert sum(path == str(tmp_path / "ws" / "catalog.sqlite") for path in open_files) <= 2
    ws.close()
