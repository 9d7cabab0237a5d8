"""The task registry: the card's `task` -> the `analysis.runs.task.Task` that runs, reports and compares it.

The one place that knows which tasks exist: the CLI, the engine, both backends, the report, the HTML report
and the dashboard ask it instead of comparing task strings. A new task is a module here with a `TASK`
object, added to `_MODULES`. A task a card may name but no module implements is refused here, with the fix.

A task's module is imported the first time its task is asked for: the task modules import torch, and a
reader of a finished audit's cached report (`saliency-audit report / check`) needs none of them.
"""
from __future__ import annotations

import importlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from analysis.runs.methods import check_method_kind, methods_of_kind
from explainers.errors import InputError
from explainers.loading.model_tasks import TASK_NAMES

if TYPE_CHECKING:
    from analysis.runs.task import Task

_MODULES = ("classification", "detection", "segmentation", "multilabel")  # modules here; each names its task


class TaskRegistry(MutableMapping):
    """task name -> `Task`, in `_MODULES` order; a module is imported when its task is first read."""

    def __init__(self, names):
        self._tasks: dict[str, Task | None] = dict.fromkeys(names)

    def __getitem__(self, name: str) -> Task:
        task = self._tasks[name]  # KeyError for a task no module implements
        if task is None:
            task = importlib.import_module(f"{__name__}.{name}").TASK
            if task.name != name:
                raise RuntimeError(f"{__name__}.{name} holds the task {task.name!r}; name the module after it")
            self._tasks[name] = task
        return task

    def __setitem__(self, name: str, task: Task) -> None:
        self._tasks[name] = task

    def __delitem__(self, name: str) -> None:
        del self._tasks[name]

    def __contains__(self, name) -> bool:  # without importing (Mapping's would read the task)
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


TASKS: MutableMapping[str, Task] = TaskRegistry(_MODULES)
DEFAULT_TASK = "classification"  # a card without `task`
CARD_TASKS = TASK_NAMES  # what a card may say (`explainers.loading.model_tasks`: the model side of the same tasks)


def get_task(name: str | None) -> Task:
    """The registered task `name` (None: the default); InputError naming the supported tasks otherwise."""
    name = name or DEFAULT_TASK
    if name in TASKS:
        return TASKS[name]
    known = "a task this version does not run yet" if name in CARD_TASKS else "not a task"
    raise InputError(f"model card task {name!r}: {known}; this version audits {', '.join(sorted(TASKS))} models. "
                     f"Set \"task\" in the card (model.json) to one of them, or upgrade saliency-audit")


def card_task_name(model_row: dict | None) -> str:
    """The task a catalog model row's card names (the default when it names none); never raises."""
    return ((model_row or {}).get("card") or {}).get("task") or DEFAULT_TASK


def task_of_model(model_row: dict | None) -> Task:
    return get_task(card_task_name(model_row))


def task_of_run(workspace, run: dict) -> Task:
    """The task of a catalog run row (through its model's card); InputError when it is not supported."""
    return task_of_model(workspace.model(run["model_id"]))


def task_of_store(store, model_row: dict | None) -> Task:
    """The task of a stored run, for readers: the model's card when the catalog has it, else what the store
    holds (the evidence's `task`, or a shard table only that task writes)."""
    if model_row is not None and card_task_name(model_row) in TASKS:
        return TASKS[card_task_name(model_row)]
    named = (store.evidence() or {}).get("task")
    if named in TASKS:
        return TASKS[named]
    for task in TASKS.values():
        if any(len(store.table(name)) or store.arrays(name) for name in task.extra_tables):
            return task
    return TASKS[DEFAULT_TASK]


def view_of(task_name: str | None) -> str:
    """The dashboard / HTML view of a report's or comparison's `task` (the default task's view when it names
    none or one this version does not know: an old or a foreign report still renders)."""
    return TASKS.get(task_name or DEFAULT_TASK, TASKS[DEFAULT_TASK]).view


def task_of_dataset(path: Path) -> Task:
    """The task whose dataset format the registered folder or zip at `path` is in (the default otherwise)."""
    for task in TASKS.values():
        if task.name != DEFAULT_TASK and task.own_dataset_format and task.takes_dataset(Path(path)):
            return task
    return TASKS[DEFAULT_TASK]


def methods_for(task_name: str | None) -> list[str]:
    """Explainer names that explain models of the task."""
    return methods_of_kind(get_task(task_name).model_kind)


def check_run_params(task: Task, method: str, params: dict) -> dict:
    """The run's `params` checked before the run is created, the same way for every task: the task's own
    (`task.run_params`, their values by `task.check_settings`) and the method's (its declared schema).
    One-line InputError naming the parameter and the accepted ones; the checked params otherwise."""
    from explainers.registry import check_params

    checked = check_params(method, params, also=task.run_params)
    task.check_settings(method, checked)
    return checked


def check_method(method: str, task_name: str | None = DEFAULT_TASK, *, any_task: bool = False) -> None:
    """InputError unless `method` explains models of the task (`any_task`: unless it is a known method)."""
    check_method_kind(method, None if any_task else get_task(task_name).model_kind)
