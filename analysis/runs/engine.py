"""The run engine: one loop for every task and both backends (local here, Ray in `ray_backend`).

`execute_run` claims the run (atomically: one worker per run), samples, skips what recorded shards already
hold (resume), decodes the next batch while the current one computes, has the run's task (`analysis.runs.
tasks`) explain each batch into its tables, writes one atomic shard per batch in a background thread, then
the task's evidence (once) and the report. What the engine guarantees, whatever the task:
- a corrupt image, or a non-finite output, skips that image with the reason and the run goes on; so does an
  image on which the model or explainer raises (a failing batch is retried image by image), unless nothing
  at all succeeds (`FailureGuard`): that is a broken model or method rather than a bad image;
- SIGTERM (`cancel_job`) marks the run cancelled; finished shards stay and a resume goes on from them;
- a full disk stops the run with one line saying how to resume; every shard already recorded stays;
- `InputError` (the user's to fix) stops the run with its message, before any compute where possible.
Memory stays flat: a batch's maps are pooled to <= 64x64 and written with its shard, never accumulated.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from analysis.data.sampling import stratified_sample
from analysis.runs.decoding import prefetched
from analysis.runs.task import Decoded, Prepared, Tables, Task, skip_row
from analysis.runs.tasks import task_of_run
from analysis.store.shard_writer import ShardWriter
from analysis.store.workspace import DiskFullError, Workspace, is_disk_full
from explainers.errors import InputError

SYSTEMIC_FAILURES = 8  # this many images raising, with none explained, is a broken model/method: stop
STAGES = ("explain", "evidence", "report")  # what the progress output names, in order


class Cancelled(BaseException):
    """SIGTERM from `cancel_job`: stop after marking the run cancelled (finished shards stay)."""


def execute_run(workspace: Workspace, run_id: str, *, device: str = "cpu", batch_size: int = 32,
                progress: bool = True) -> dict:
    """Run (or resume) `run_id` to completion on this process; returns the final catalog row."""
    with claimed(workspace, run_id, device) as run:
        workspace.update_run(run_id, stage="explaining")  # the catalog's `runs.stage`: what a progress bar names
        task = task_of_run(workspace, run)
        prepared = task.prepare(workspace, run, device)
        plan = Plan.of(workspace, run, prepared, task)
        with task.compute_scope(prepared, device):
            with ShardSink(workspace, run_id, plan, task, progress) as sink:
                for batch in prefetched(prepared.dataset, prepared.loaded.card, plan.todo, batch_size,
                                        pin=str(device).startswith("cuda")):
                    sink.add(plan.next_index(), explain_decoded(task, prepared, batch, device))
            run_evidence(workspace.store(run_id), run, task, prepared, device, batch_size, progress)
    return finish_run(workspace, run_id, progress=progress)


@contextmanager
def claimed(workspace: Workspace, run_id: str, device: str) -> Iterator[dict]:
    """Hold `run_id` for this process (the catalog row as claimed); record how it ended: cancelled on
    SIGTERM, failed with the message otherwise (a full disk as one line saying how to resume)."""
    run = claim(workspace, run_id, device)
    previous_handler = _install_sigterm()
    try:
        yield run
    except Cancelled:
        _record_end(workspace, run_id, status="cancelled", pid=None)
        raise
    except BaseException as exc:
        cause = getattr(exc, "cause", None) or exc  # Ray's RayTaskError wraps the actor's exception
        if is_disk_full(cause):
            full = cause if isinstance(cause, DiskFullError) else DiskFullError(
                f"disk full while writing run {run_id} in {workspace.root} ({cause}); {DiskFullError.FIX}")
            _record_end(workspace, run_id, status="failed", error=str(full), pid=None)
            if full is exc:
                raise
            raise full from exc
        message = str(cause) if isinstance(cause, InputError) else f"{type(cause).__name__}: {cause}"
        _record_end(workspace, run_id, status="failed", error=message or type(cause).__name__, pid=None)
        if isinstance(cause, InputError) and cause is not exc:
            raise cause from None
        if not isinstance(cause, (InputError, KeyboardInterrupt)):
            traceback.print_exc(file=sys.stderr)
        raise
    finally:
        _restore_sigterm(previous_handler)


def claim(workspace: Workspace, run_id: str, device: str) -> dict:
    """Mark the run as ours in one transaction, so two workers started together cannot both run it."""
    from analysis.store.processes import job_alive

    holder = workspace.claim_run(run_id, os.getpid(), device, is_alive=job_alive)
    if holder is not None:
        raise InputError(f"run {run_id} is already running in process {holder}; wait for it or cancel it")
    return workspace.run(run_id)


@dataclass
class Plan:
    """The run's sample, what is left of it, and the counts and next shard index recorded so far."""
    sample: list
    todo: list
    n_done: int
    n_skipped: int
    first_index: int
    _issued: int = 0

    @classmethod
    def of(cls, workspace: Workspace, run: dict, prepared: Prepared, task: Task) -> "Plan":
        dataset = prepared.dataset
        sample = [dataset.items[i] for i in stratified_sample([it.label for it in dataset.items], run["n"], run["seed"])]
        store = workspace.store(run["id"])
        store.remove_unfinished()  # temp folders of killed workers; we hold the run, so none is live
        done = store.done_image_ids()
        plan = cls(sample, [item for item in sample if int(item.image_id) not in done], len(store.images()),
                   len(store.skipped()), max((s["index"] for s in workspace.shards(run["id"])), default=-1) + 1)
        workspace.update_run(run["id"], n_total=len(sample), target_layer=prepared.target_layer,
                             n_done=plan.n_done, n_skipped=plan.n_skipped)
        return plan

    def next_index(self) -> int:
        index = self.first_index + self._issued
        self._issued += 1
        return index

    def batches(self, batch_size: int) -> list[tuple[int, list]]:
        """(shard index, items) for every batch left, in order."""
        return [(self.next_index(), self.todo[i:i + batch_size]) for i in range(0, len(self.todo), batch_size)]


@dataclass
class Explained:
    """One batch's result before the failure guard: its tables, the images that raised, how many worked."""
    tables: Tables
    failed: list[dict]
    decode_skipped: list[dict]
    n_explained: int


def explain_decoded(task: Task, prepared: Prepared, batch: Decoded, device: str) -> Explained:
    """The task's tables for a decoded batch; a batch that raises is retried image by image, and the images
    that still raise are reported in `failed` (InputError is the user's to fix: it propagates)."""
    decode_skipped = [skip_row(item, reason) for item, reason in batch.skipped]
    if batch.inputs is None or not batch.items:
        return Explained(task.empty_tables(), [], decode_skipped, 0)
    try:
        return Explained(task.explain_batch(prepared, batch, device), [], decode_skipped, len(batch.items))
    except InputError:
        raise
    except Exception as exc:
        if len(batch.items) == 1:
            return Explained(task.empty_tables(), [skip_row(batch.items[0], failure_reason(exc))], decode_skipped, 0)
    parts, failed = [], []
    for k in range(len(batch.items)):
        try:
            parts.append(task.explain_batch(prepared, batch.subset(k), device))
        except InputError:
            raise
        except Exception as exc:
            failed.append(skip_row(batch.items[k], failure_reason(exc)))
    return Explained(Tables.join(parts, task.empty_tables()), failed, decode_skipped, len(parts))


def failure_reason(exc: BaseException) -> str:
    return f"model or explainer raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class FailureGuard:
    """Tells one bad image (skip it) from a model or method that fails on everything (stop the run).

    Until some image has been explained, images that raise are held back rather than recorded as skipped:
    if the model turns out to be broken, fixing it and resuming retries them instead of skipping them.
    """

    def __init__(self, explained: int = 0, limit: int = SYSTEMIC_FAILURES):
        self.limit, self.explained, self.held = limit, explained, []

    def admit(self, n_explained: int, failed: list[dict]) -> list[dict]:
        """Skip rows to record now for this batch's failures (with any held ones once something worked)."""
        self.explained += n_explained
        if self.explained:
            released, self.held = self.held + failed, []
            return released
        self.held.extend(failed)
        if len(self.held) >= self.limit:
            self._stop()
        return []

    def finish(self) -> None:
        if self.held:
            self._stop()

    def _stop(self) -> None:
        raise RuntimeError(f"the model or explainer failed on each of the first {len(self.held)} images "
                           f"(not one bad image; nothing was recorded for them): {self.held[0]['reason']}")


def skipped_frame(rows: list[dict], tables: Tables):
    """A shard's skipped table: undecodable and raising images (`rows`), then the task's own skips."""
    import pandas as pd

    from analysis.runs.task import SKIPPED_COLUMNS

    return pd.DataFrame(rows + tables.skipped.to_dict("records"), columns=SKIPPED_COLUMNS)


class ShardSink:
    """Where explained batches go, for both backends: the failure guard, then one atomic shard per batch
    (written in a background thread, recorded in the catalog on this thread once complete), and progress."""

    def __init__(self, workspace: Workspace, run_id: str, plan: Plan, task: Task, progress: bool):
        self.workspace, self.run_id, self.task = workspace, run_id, task
        self.n_done, self.n_skipped = plan.n_done, plan.n_skipped
        self.guard = FailureGuard(explained=plan.n_done)
        self.bar = progress_bar(len(plan.sample), plan.n_done + plan.n_skipped, progress, STAGES[0])
        self.writer = ShardWriter(workspace.store(run_id).write_shard)

    def add(self, index: int, explained: Explained) -> None:
        tables = explained.tables
        released = self.guard.admit(explained.n_explained, explained.failed)
        skipped = skipped_frame(explained.decode_skipped + released, tables)
        self.n_done += len(tables.images)
        self.n_skipped += len(skipped)
        n_rows, n_done, n_skipped, n_items = len(tables.images), self.n_done, self.n_skipped, len(tables.images) + len(skipped)

        def record(path: str) -> None:  # on this thread, once the shard's folder is complete
            self.workspace.record_shard(self.run_id, index, n_rows, path, n_done=n_done, n_skipped=n_skipped)
            self.bar.update(n_items)

        extra = {"extra": {name: tables.extra[name] for name in self.task.extra_tables}} if self.task.extra_tables else {}
        self.writer.submit(index, tables.images, tables.regions, tables.maps, skipped, record=record, **extra)

    def __enter__(self) -> "ShardSink":
        return self

    def __exit__(self, exc_type, _exc, _tb) -> None:
        try:
            self.writer.close(failing=exc_type is not None)
            if exc_type is None:
                self.guard.finish()
        finally:
            self.bar.close()


def run_evidence(store, run: dict, task: Task, prepared: Prepared, device: str, batch_size: int,
                 progress: bool = False) -> None:
    """The task's evidence, once every map is stored; written once (a resumed run that has it skips it).
    Both backends end with it, under the task's compute scope, so their reports agree."""
    if store.evidence():
        return
    announce(STAGES[1], progress)
    workspace = store.workspace
    if progress and workspace is not None:  # every part the task names (interventions' looks, sanity...)
        workspace.stage_listener = lambda _run_id, stage: announce(f"{STAGES[1]}: {stage}", True)
    try:
        with task.compute_scope(prepared, device):
            store.write_evidence(task.evidence(store, run, prepared, device, batch_size))
    finally:
        if workspace is not None:
            workspace.stage_listener = None


def finish_run(workspace: Workspace, run_id: str, *, progress: bool = False) -> dict:
    """Mark the run done and leave its report beside it, so readers open it without recomputing."""
    from analysis.report.build import cached_report

    workspace.update_run(run_id, status="done", pid=None, stage="report")  # done: the report's key says so
    announce(STAGES[2], progress)
    cached_report(workspace.store(run_id), workspace)
    workspace.update_run(run_id, stage=None)
    return workspace.run(run_id)


def announce(stage: str, enabled: bool) -> None:
    """One stderr line when a stage (or a part of one) after the main pass starts, with the seconds since
    the previous line: those stages show no per-image bar."""
    if enabled:
        now = time.monotonic()
        took = f" ({now - _ANNOUNCED[0]:.1f} s after the previous step)" if _ANNOUNCED else ""
        _ANNOUNCED[:] = [now]
        print(f"stage: {stage}{took}", file=sys.stderr, flush=True)


_ANNOUNCED: list[float] = []  # when the last announce() printed


def _record_end(workspace: Workspace, run_id: str, **fields) -> None:
    """Record how the run ended. On a full disk the catalog may refuse even this; the error being raised
    says why, and the next run's claim takes over a 'running' row whose process is gone."""
    try:
        workspace.update_run(run_id, **fields)
    except (sqlite3.Error, DiskFullError):
        pass


def _install_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(_signum, _frame):
        raise Cancelled()

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


class _NoBar:
    def update(self, _n: int) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, initial: int, enabled: bool, stage: str = STAGES[0]):
    """A tqdm bar on stderr named by its stage (or one that shows nothing)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc=stage, file=sys.stderr, dynamic_ncols=True)
