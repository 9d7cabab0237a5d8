"""Scale a run out over Ray actors (optional: `pip install .[ray]`): same engine, same rows, same report.

The driver runs the engine (`analysis.runs.engine`): the atomic claim, SIGTERM / cancel, resume, the
failure guard, the shard writer, the catalog and the evidence stage are the local backend's own. Only the
per-batch compute moves to the actors: each actor prepares the run's task once (model, dataset, explainer)
and turns the batches it is handed into their tables (decode, explain, per-image retry), which it returns to
the driver; the driver admits them through the failure guard and writes each as an atomic shard. Shard
indexes follow the batch order, so a Ray run's store holds exactly what a local run's store holds. A crash
loses at most the batches in flight, and `execute_run` or this function resumes.
"""
from __future__ import annotations

import os
from pathlib import Path

from analysis.runs.decoding import decode
from analysis.runs.engine import (Explained, Plan, ShardSink, claimed, explain_decoded, finish_run,
                                  run_evidence)
from analysis.runs.tasks import task_of_run
from analysis.store.workspace import Workspace
from explainers.errors import InputError

MAX_IN_FLIGHT_PER_WORKER = 2


class ShardWorker:
    """A Ray actor: the run's task prepared once; explains whole batches into their tables."""

    def __init__(self, workspace_root: str, run_id: str, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        workspace = Workspace(workspace_root)
        run = workspace.run(run_id)
        self.task, self.device = task_of_run(workspace, run), device
        self.prepared = self.task.prepare(workspace, run, device)
        self.items = {int(item.image_id): item for item in self.prepared.dataset.items}
        workspace.close()

    def explain(self, index: int, image_ids: list[int]) -> tuple[int, Explained]:
        batch = decode(self.prepared.dataset, self.prepared.loaded.card, [self.items[i] for i in image_ids])
        with self.task.compute_scope(self.prepared, self.device):
            return index, explain_decoded(self.task, self.prepared, batch, self.device)


def run_with_ray(workspace: Workspace, run_id: str, address: str | None = None, num_workers: int = 2, *,
                 device: str = "cpu", batch_size: int = 32, threads_per_worker: int = 1,
                 progress: bool = False) -> dict:
    """Run (or resume) `run_id` on `num_workers` Ray actors; returns the final catalog row.

    `address=None` starts a local Ray instance with `num_workers` CPUs (unless one is already running in
    this process); otherwise it connects to the cluster at `address` ("auto", "ray://host:10001").
    """
    ray = _import_ray()
    if num_workers < 1:
        raise InputError(f"num_workers must be >= 1, got {num_workers}")
    with claimed(workspace, run_id, device) as run:
        task = task_of_run(workspace, run)
        prepared = task.prepare(workspace, run, device)  # the driver's own copy: checks first, then evidence
        plan = Plan.of(workspace, run, prepared, task)
        batches = [(index, [int(item.image_id) for item in items]) for index, items in plan.batches(batch_size)]
        if not ray.is_initialized():
            _init(ray, address, num_workers)
        actor = ray.remote(num_cpus=threads_per_worker, num_gpus=1 if device == "cuda" else 0)(ShardWorker)
        root = str(Path(workspace.root).resolve())
        workers = [actor.remote(root, run_id, device, threads_per_worker)
                   for _ in range(min(num_workers, len(batches)))]  # none when everything is done
        with ShardSink(workspace, run_id, plan, task, progress) as sink:
            pending, queue, results, next_to_write = {}, list(batches), {}, 0
            while queue or pending:
                for worker in workers:  # top every actor up to MAX_IN_FLIGHT_PER_WORKER batches
                    while queue and sum(1 for w in pending.values() if w is worker) < MAX_IN_FLIGHT_PER_WORKER:
                        index, ids = queue.pop(0)
                        pending[worker.explain.remote(index, ids)] = worker
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    pending.pop(ref)
                    index, explained = ray.get(ref)
                    results[index] = explained
                while next_to_write < len(batches) and batches[next_to_write][0] in results:  # in batch order
                    index = batches[next_to_write][0]
                    sink.add(index, results.pop(index))
                    next_to_write += 1
        run_evidence(workspace.store(run_id), run, task, prepared, device, batch_size, progress)
    return finish_run(workspace, run_id, progress=progress)


def _init(ray, address: str | None, num_workers: int) -> None:
    if address is not None:
        ray.init(address=address)
        return
    # Local actors must import this checkout even when it is not pip-installed.
    project_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (project_root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=num_workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("the Ray backend needs the optional extra: pip install 'saliency-audit[ray]' "
                         "(or pip install 'ray[data]'), or run without --backend ray") from None
    return ray
