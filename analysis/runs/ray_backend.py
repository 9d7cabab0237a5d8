"""Scale a run out over Ray actors (optional: `pip install .[ray]`): same engine, same rows, same report.

The driver runs the engine (`analysis.runs.engine`): the atomic claim, SIGTERM / cancel, resume, the
failure guard, the catalog, the progress bar and the evidence stage are the local backend's own. The
per-batch work moves to the actors: each actor prepares the run's task once (model, dataset, explainer),
turns the batches it is handed into their tables (decode, explain, per-image retry) and writes each batch
as an atomic shard into the workspace itself (which therefore sits on a filesystem every node mounts at the
same path); the catalog rows it needs come from the driver (`CatalogRows`), so only the driver opens
SQLite. The driver receives a few counts per shard and records it in the catalog, so its memory does not
grow with the image count. Shard indexes follow the batch order, so a Ray run's store holds exactly
what a local run's store holds. A crash loses at most the batches in flight (a shard written but not yet
recorded is written again), and `execute_run` or this function resumes.

Images that raise are written into their shard's skipped table by the actor; while no image of the run has
been explained yet, such a shard is held back from the catalog (the failure guard's rule: a model broken on
every image must not leave its images recorded as skipped), and recorded once one image works.
"""
from __future__ import annotations

import os
import socket
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from analysis.runs.decoding import decode
from analysis.runs.engine import (STAGES, FailureGuard, Plan, claimed, explain_decoded, finish_run,
                                  progress_bar, run_evidence, skipped_frame)
from analysis.runs.tasks import task_of_run
from analysis.store.run_store import RunStore
from analysis.store.workspace import Workspace
from explainers.errors import InputError

MAX_IN_FLIGHT_PER_WORKER = 2
TOKEN_FIX = ("if the cluster uses Ray token authentication, give this machine the head's token: "
             "RAY_AUTH_MODE=token with RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file> (`ray get-auth-token` "
             "on the head prints it), and move away a ~/.ray/auth_token left by another cluster")


@dataclass(frozen=True)
class Written:
    """What an actor sends back for one batch: its shard's folder and counts, never its tables."""
    index: int
    path: str
    n_rows: int
    n_skipped: int
    n_explained: int
    failed: list  # skip rows of the images that raised (already in the shard's skipped table)


class CatalogRows:
    """The catalog rows a worker's `task.prepare` reads (run, model, dataset), sent by the driver: workers never
    open the SQLite catalog, whose WAL index lives in shared memory that does not cross hosts."""

    def __init__(self, root: str, run: dict, model: dict, dataset: dict):
        self.root, self.run_row, self._model, self._dataset = Path(root), run, model, dataset

    @classmethod
    def of(cls, workspace: Workspace, run: dict) -> "CatalogRows":
        return cls(str(Path(workspace.root).resolve()), run, workspace.model(run["model_id"]),
                   workspace.dataset(run["dataset_id"]))

    def model(self, model_id: str) -> dict | None:
        return self._model if self._model["id"] == model_id else None

    def dataset(self, dataset_id: str) -> dict | None:
        return self._dataset if self._dataset["id"] == dataset_id else None

    def open_dataset(self, dataset_id: str):
        row = self.dataset(dataset_id)
        if row is None:
            raise InputError(f"no registered dataset with id {dataset_id}")
        dataset = Workspace.open_dataset_at(self.root / row["path"], self.root / "datasets" / dataset_id)
        dataset.shown_as = row["source"] or dataset.shown_as
        # The driver validated every file before the actors started (`task.prepare` in `run_with_ray`): an actor
        # repeating it read 200,000 image and mask headers at 100k images, most of the run's start-up. An actor
        # only checks that it sees the files at all (a node without the shared workspace mounted).
        dataset.validate = lambda *args, **kwargs: _can_read(dataset)
        return dataset

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id


def _can_read(dataset) -> None:
    """InputError unless this process can read the dataset's first image (the workspace mounted here too)."""
    from analysis.data.images import ImageError, image_header

    if not dataset.items:
        return
    item = dataset.items[0]  # detection datasets keep the path relative to their root, without `image_path`
    path = dataset.image_path(item) if hasattr(dataset, "image_path") else Path(dataset.root) / item.image
    try:
        image_header(path)
    except (OSError, ImageError) as exc:
        raise InputError(f"a Ray worker on {socket.gethostname()} cannot read {path} ({exc}): mount the workspace "
                         "at the same path on every node (docs/SCALING.md)") from None


class ShardWorker:
    """A Ray actor: the run's task prepared once; explains whole batches and writes each as a shard."""

    def __init__(self, catalog: CatalogRows, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        run = catalog.run_row
        self.task, self.device = task_of_run(catalog, run), device
        self.prepared = self.task.prepare(catalog, run, device)
        self.items = {int(item.image_id): item for item in self.prepared.dataset.items}
        self.store = RunStore(catalog.run_dir(run["id"]))

    def explain(self, index: int, image_ids: list[int]) -> Written:
        batch = decode(self.prepared.dataset, self.prepared.loaded.card, [self.items[i] for i in image_ids])
        with self.task.compute_scope(self.prepared, self.device):
            explained = explain_decoded(self.task, self.prepared, batch, self.device)
        tables = explained.tables
        skipped = skipped_frame(explained.decode_skipped + explained.failed, tables)
        extra = {name: tables.extra[name] for name in self.task.extra_tables}
        path = self.store.write_shard(index, tables.images, tables.regions, tables.maps, skipped,
                                      **({"extra": extra} if extra else {}))
        return Written(index, path, len(tables.images), len(skipped), explained.n_explained, explained.failed)


class ShardRecorder:
    """The driver's side of the shards: the failure guard, the catalog records and the progress bar."""

    def __init__(self, workspace: Workspace, run_id: str, plan: Plan, progress: bool):
        self.workspace, self.run_id = workspace, run_id
        self.n_done, self.n_skipped = plan.n_done, plan.n_skipped
        self.guard = FailureGuard(explained=plan.n_done)
        self.bar = progress_bar(len(plan.sample), plan.n_done + plan.n_skipped, progress, STAGES[0])
        self.held: list[Written] = []

    def add(self, written: Written) -> None:
        self.guard.admit(written.n_explained, written.failed)  # raises for a model failing on everything
        if written.failed and not self.guard.explained:
            self.held.append(written)
            return
        for shard in self.held + [written]:
            self._record(shard)
        self.held = []

    def finish(self) -> None:
        self.guard.finish()
        for shard in self.held:  # not reached with held failures: finish() raised
            self._record(shard)

    def close(self) -> None:
        self.bar.close()

    def _record(self, shard: Written) -> None:
        self.n_done += shard.n_rows
        self.n_skipped += shard.n_skipped
        self.workspace.record_shard(self.run_id, shard.index, shard.n_rows, shard.path, n_done=self.n_done,
                                    n_skipped=self.n_skipped)
        self.bar.update(shard.n_rows + shard.n_skipped)


def run_with_ray(workspace: Workspace, run_id: str, address: str | None = None, num_workers: int = 2, *,
                 device: str = "cpu", batch_size: int = 32, threads_per_worker: int = 1,
                 progress: bool = False) -> dict:
    """Run (or resume) `run_id` on `num_workers` Ray actors; returns the final catalog row.

    `address=None` starts a local Ray instance with `num_workers` CPUs, bound to 127.0.0.1 (unless one is
    already running in this process); otherwise it connects to the cluster at `address` ("auto",
    "host:6379", "ray://host:10001"). Connection and authentication failures are InputErrors with the fix.
    """
    ray = _import_ray()
    if num_workers < 1:
        raise InputError(f"num_workers must be >= 1, got {num_workers}")
    if not ray.is_initialized():  # before the claim: a wrong address leaves the run as it was
        init_ray(ray, address, num_workers)
    with claimed(workspace, run_id, device) as run:
        workspace.update_run(run_id, stage="explaining")
        task = task_of_run(workspace, run)
        prepared = task.prepare(workspace, run, device)  # the driver's own copy: checks first, then evidence
        plan = Plan.of(workspace, run, prepared, task)
        batches = deque((index, [int(item.image_id) for item in items])
                        for index, items in plan.batches(batch_size))
        actor = ray.remote(num_cpus=threads_per_worker, num_gpus=1 if device == "cuda" else 0)(ShardWorker)
        catalog = CatalogRows.of(workspace, run)
        workers = [actor.remote(catalog, device, threads_per_worker)
                   for _ in range(min(num_workers, len(batches)))]  # none when everything is done
        recorder = ShardRecorder(workspace, run_id, plan, progress)
        try:
            pending: dict = {}
            in_flight = {id(worker): 0 for worker in workers}
            while batches or pending:
                for worker in workers:  # top every actor up to MAX_IN_FLIGHT_PER_WORKER batches
                    while batches and in_flight[id(worker)] < MAX_IN_FLIGHT_PER_WORKER:
                        pending[worker.explain.remote(*batches.popleft())] = worker
                        in_flight[id(worker)] += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    in_flight[id(pending.pop(ref))] -= 1
                    recorder.add(ray.get(ref))
            recorder.finish()
        finally:
            recorder.close()
            for worker in workers:
                ray.kill(worker)  # the model and dataset they hold are not needed for the evidence
        run_evidence(workspace.store(run_id), run, task, prepared, device, batch_size, progress)
    return finish_run(workspace, run_id, progress=progress)


def init_ray(ray, address: str | None, num_workers: int) -> None:
    """Start a local instance (address None) or join the cluster at `address`; InputError with the fix."""
    if address is None:
        # Local actors must import this checkout even when it is not pip-installed.
        project_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (project_root, os.environ.get("PYTHONPATH")) if p)
        with _loopback_only(ray):  # "local": a new instance, never a `ray start` cluster found on the machine
            ray.init(address="local", num_cpus=num_workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
        return
    _reachable(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except getattr(ray.exceptions, "AuthenticationError", ()):  # Ray token authentication (recent Rays)
        raise InputError(f"--ray-address {address}: the cluster requires a Ray authentication token and "
                         f"none was found; {TOKEN_FIX}") from None
    except ConnectionError:
        raise InputError(f"--ray-address {address}: Ray did not accept the connection; {TOKEN_FIX}; otherwise "
                         "check that the address is the head's (`ray status` on the head)") from None
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(f"--ray-address {address}: {first}; pass the head's host:port (`ray start --head` "
                         "prints it), ray://host:10001, or leave --ray-address out to start a local one") from None


def _reachable(address: str) -> None:
    """A host:port (or ray://host:port) that nothing answers is refused in seconds, not after Ray's retries."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise InputError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); start the "
                         "head with `ray start --head` and pass the address it prints, or leave --ray-address "
                         "out to start a local Ray instance") from None


@contextmanager
def _loopback_only(ray):
    """A head this tool starts listens on 127.0.0.1 only. Ray binds its servers to every interface unless the
    node's address is the loopback one, which it chooses where it does not run clusters (macOS, Windows):
    the same switch, for the start of this local instance only."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("the Ray backend needs the optional extra: pip install 'saliency-audit[ray]' "
                         "(or pip install ray), or run without --backend ray") from None
    return ray
