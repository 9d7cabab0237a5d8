"""Scale a run out over Ray actors (optional: `pip install .[ray]`): same rows, same store, same report.

One model per actor: each actor loads the model and the dataset once (`runner.prepare`), then explains the
batches it is handed with the runner's own per-batch code (`_decode`, `_explain_batch`) and writes each as
an atomic shard of the run store. Only the driver writes the SQLite catalog: it records a shard after the
actor returns, so a crash loses at most the batches in flight and `execute_run` or this function resumes.
Shard indexes follow the batch order, so a Ray run's store holds exactly what a local run's store holds.
Detection runs go the same way with `analysis.runs.detection_run`'s per-batch code and evidence stage.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from analysis.runs import detection_run
from analysis.runs.runner import _decode, _explain_batch, _region_spec, evidence_stage, finish_run, prepare
from analysis.data.sampling import stratified_sample
from analysis.store.workspace import Workspace
from explainers.errors import InputError

MAX_IN_FLIGHT_PER_WORKER = 2


class ShardWorker:
    """A Ray actor: one loaded model, explains and writes whole shards."""

    def __init__(self, workspace_root: str, run_id: str, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.workspace = Workspace(workspace_root)
        self.run_id, self.device = run_id, device
        run = self.workspace.run(run_id)
        self.detection = detection_run.model_task(self.workspace, run) == "detection"
        if self.detection:
            self.loaded, self.dataset, self.explainer, self.options = detection_run.prepare(self.workspace, run, device)
            self.layer_name = None
        else:
            self.loaded, self.dataset, self.explainer, self.layer_name, self.target_mode = prepare(
                self.workspace, run, device)
            self.classes = list(self.loaded.card.classes)
            self.regions = _region_spec(self.dataset)
        self.items = {int(item.image_id): item for item in self.dataset.items}

    def target_layer(self) -> str | None:
        return self.layer_name

    def explain(self, index: int, image_ids: list[int]) -> tuple[int, int, int, str]:
        batch = _decode(self.dataset, self.loaded.card, [self.items[i] for i in image_ids])
        store = self.workspace.store(self.run_id)
        if self.detection:
            tables = detection_run.explain_batch(batch, self.loaded, self.explainer, self.dataset, self.options,
                                                 self.device)
            images, skipped = tables["images"], tables["skipped"]
            path = store.write_shard(index, images, tables["regions"], tables["maps"], skipped,
                                     extra={k: tables[k] for k in detection_run.EXTRA_TABLES})
            return index, len(images), len(skipped), path
        images, regions, maps, skipped = _explain_batch(batch, self.loaded, self.explainer, self.classes,
                                                        self.regions, self.target_mode, self.device)
        path = store.write_shard(index, images, regions, maps, skipped)
        return index, len(images), len(skipped), path


def run_with_ray(workspace: Workspace, run_id: str, address: str | None = None, num_workers: int = 2, *,
                 device: str = "cpu", batch_size: int = 32, threads_per_worker: int = 1) -> dict:
    """Run (or resume) `run_id` on `num_workers` Ray actors; returns the final catalog row.

    `address=None` starts a local Ray instance with `num_workers` CPUs (unless one is already running in
    this process); otherwise it connects to the cluster at `address` ("auto", "ray://host:10001").
    """
    ray = _import_ray()
    if num_workers < 1:
        raise InputError(f"num_workers must be >= 1, got {num_workers}")
    run = workspace.run(run_id)
    dataset = workspace.open_dataset(run["dataset_id"])
    sample = [dataset.items[i] for i in stratified_sample([it.label for it in dataset.items], run["n"], run["seed"])]
    store = workspace.store(run_id)
    done = store.done_image_ids()
    todo = [int(item.image_id) for item in sample if int(item.image_id) not in done]
    next_index = max((s["index"] for s in workspace.shards(run_id)), default=-1) + 1
    batches = [(next_index + k, todo[i:i + batch_size]) for k, i in enumerate(range(0, len(todo), batch_size))]
    n_done, n_skipped = len(store.images()), len(store.skipped())

    if not ray.is_initialized():
        _init(ray, address, num_workers)
    workspace.update_run(run_id, status="running", pid=os.getpid(), device=device, error=None,
                         n_total=len(sample), n_done=n_done, n_skipped=n_skipped)
    try:
        actor = ray.remote(num_cpus=threads_per_worker, num_gpus=1 if device == "cuda" else 0)(ShardWorker)
        root = str(Path(workspace.root).resolve())
        workers = [actor.remote(root, run_id, device, threads_per_worker)
                   for _ in range(min(num_workers, len(batches)))]  # none when everything is done
        if workers:  # the catalog records the hooked layer, as the local runner does
            workspace.update_run(run_id, target_layer=ray.get(workers[0].target_layer.remote()))
        pending, queue = {}, list(batches)
        while queue or pending:
            for worker in workers:  # top every actor up to MAX_IN_FLIGHT_PER_WORKER batches
                while queue and sum(1 for w in pending.values() if w is worker) < MAX_IN_FLIGHT_PER_WORKER:
                    index, ids = queue.pop(0)
                    pending[worker.explain.remote(index, ids)] = worker
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                index, n_images, n_skip, path = ray.get(ref)
                n_done, n_skipped = n_done + n_images, n_skipped + n_skip
                workspace.record_shard(run_id, index, n_images, path, n_done=n_done, n_skipped=n_skipped)
    except BaseException as exc:
        cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps the actor's exception
        message = str(cause) if isinstance(cause, InputError) else f"{type(cause).__name__}: {cause}"
        workspace.update_run(run_id, status="failed", error=message, pid=None)
        if isinstance(cause, InputError):
            raise cause from None
        traceback.print_exc(file=sys.stderr)
        raise
    if detection_run.model_task(workspace, run) == "detection":  # the driver's own copy, for evidence
        loaded, dataset, explainer, options = detection_run.prepare(workspace, run, device)
        detection_run.evidence_stage(store, run, loaded, dataset, options, device, batch_size, explainer)
    else:
        loaded, dataset, _, layer_name, _ = prepare(workspace, run, device)
        evidence_stage(store, run, loaded, dataset, layer_name)
    return finish_run(workspace, run_id)


def _init(ray, address: str | None, num_workers: int) -> None:
    if address is not None:
        ray.init(address=address)
        return
    # Local actors must import this checkout even when it is not pip-installed.
    project_root = str(Path(__file__).resolve().parents[2])  # the checkout (analysis/runs/ -> ../..)
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
