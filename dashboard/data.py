"""What the pages read, fetched from the engine and cached; the one module that calls `analysis`.

Pages never compute: every number comes from an `analysis` function called here. Caching follows the
run store's immutability: a run's tables only change when a shard is added, so `st.cache_data` is keyed by
(run id, number of complete shards) and a finished run is read once.
No model file is ever loaded here: layer listing runs `analysis.inspect_model` in a child of the warm checker
process (`analysis.warm_inspector`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import state
from explainers.errors import InputError

# Seconds per image on CPU for a 224 px ResNet-sized model, used only when no earlier run of the method
# has recorded its speed. Rough on purpose: the page says "about".
SECONDS_PER_IMAGE = {
    "gradcam": 0.05, "gradcam_pp": 0.05, "layercam": 0.05, "saliency": 0.05, "guided_backprop": 0.06,
    "integrated_gradients": 1.0, "smoothgrad": 1.0, "scorecam": 2.0, "occlusion": 3.0, "rise": 4.0,
    "drise": 8.0,
}


@st.cache_resource
def workspace(root: str):
    """One shared `Workspace` per root (its SQLite connection is read-mostly and WAL)."""
    from analysis.store.workspace import Workspace

    return Workspace(root)


def ws():
    return workspace(str(state.workspace_root()))


def _frame(rows: Any) -> pd.DataFrame:
    """Catalog rows as a frame whose text columns keep None for "nothing" (pandas would make it NaN, which is
    true in `if run.get("error")` and reads "nan" on a page); numeric columns stay numeric."""
    frame = pd.DataFrame([dict(row) if not isinstance(row, dict) else row for row in rows])
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column].dtype):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


# --- catalog ------------------------------------------------------------------------------------------
def registered_models(tracking_uri: str) -> list[str]:
    """Names of the registered models in an MLflow registry (HTTP only: nothing is downloaded or loaded)."""
    from analysis.store import mlflow_registry

    client = mlflow_registry.client(tracking_uri)
    try:
        return sorted(m.name for m in client.search_registered_models())
    except Exception as exc:  # connection refused, bad URI: the page says it in one line
        raise InputError(f"cannot list the models of {tracking_uri}: {str(exc).splitlines()[0][:200]}") from None


def registered_versions(tracking_uri: str, name: str) -> pd.DataFrame:
    """A registered model's versions, oldest first, each with its aliases, its audit flags and the finished
    audit of it in this workspace (`run_id`, None when it has none yet)."""
    from analysis.store import mlflow_registry

    found = mlflow_registry.versions(mlflow_registry.client(tracking_uri), name)
    audited = {}
    for run in ws().runs():  # the newest finished audit of each registry version
        source = (ws().model(run["model_id"]) or {}).get("source") or {}
        if run["status"] == "done" and source.get("uri"):
            audited[source["uri"]] = run["id"]
    return pd.DataFrame([{"version": f"v{v.version}", "aliases": ", ".join(v.aliases) or "",
                          "flags": v.tags.get("saliency_audit.flags", "not audited"), "uri": v.uri,
                          "run_id": audited.get(v.uri)} for v in found])


def models() -> pd.DataFrame:
    """Registered models with `label`: the name a person gave, with its version ("cage-net v2")."""
    from analysis.report.labels import model_label

    frame = _frame(ws().models())
    if not frame.empty:
        frame["label"] = [model_label(n, v) for n, v in zip(frame["name"], frame.get("version", [None] * len(frame)))]
    return frame


def model_name(model_id: str) -> str:
    from analysis.report.labels import model_label

    row = ws().model(model_id) or {}
    return model_label(row.get("name"), row.get("version")) if row else "deleted model"


def dataset_name(dataset_id: str) -> str:
    return (ws().dataset(dataset_id) or {}).get("name") or "deleted dataset"


def datasets() -> pd.DataFrame:
    """Registered datasets with `task` (the task whose format it is in, `analysis.runs.tasks.task_of_dataset`)
    and `tasks` (every task that takes it, comma-joined)."""
    frame = _frame(ws().datasets())
    if not frame.empty:
        found = [_dataset_tasks(path, sha) for path, sha in zip(frame["abspath"], frame["sha256"])]
        frame["task"] = [first for first, _ in found]
        frame["tasks"] = [takers for _, takers in found]
    return frame


@st.cache_data(show_spinner=False, max_entries=256)
def _dataset_tasks(abspath: str, sha256: str) -> tuple[str, str]:  # the content hash keys the cache
    from analysis.runs.tasks import TASKS, task_of_dataset

    path = Path(abspath)
    return task_of_dataset(path).name, ",".join(name for name, t in TASKS.items() if t.takes_dataset(path))


def runs() -> pd.DataFrame:
    """Every run with `model_label` (name and version of its model) beside the catalog's columns."""
    from analysis.report.labels import model_label

    frame = _frame(ws().runs())
    if not frame.empty:
        frame["model_label"] = [model_label(n, v) if n is not None else "deleted model"
                                for n, v in zip(frame["model_name"], frame["model_version"])]
    return frame


def run_info(run_id: str) -> dict:
    return dict(ws().run(run_id))


def version(run_id: str) -> str:
    """Complete shards + status: the cache key that changes exactly when a run's results do."""
    return f"{len(ws().shards(run_id))}:{run_info(run_id)['status']}"


def _store(run_id: str):
    """The run's tables as of now: a running run gains shards between two reads, and a page that read
    `images()` before a shard landed and `regions()` after would pair rows of different samples."""
    return ws().store(run_id).snapshot()


def run_label(run_id: str) -> str:
    """"cage v1 gradcam · cage v1 on cage-photos", plus the status while it is not done; no ids."""
    info = run_info(run_id)
    status = "" if info.get("status") == "done" else f" ({info.get('status')})"
    return (f"{info.get('name') or info.get('method')} · {model_name(info['model_id'])} on "
            f"{info.get('dataset_name') or 'deleted dataset'}{status}")


# --- housekeeping -------------------------------------------------------------------------------------
def rename(kind: str, item_id: str, name: str, version: str | None = None) -> None:
    """Rename a model (and set its version), a dataset or a run; `InputError` for an empty name."""
    {"model": lambda: ws().rename_model(item_id, name, version), "dataset": lambda: ws().rename_dataset(item_id, name),
     "run": lambda: ws().rename_run(item_id, name)}[kind]()
    st.cache_data.clear()  # names are inside cached reports' headers


def delete(kind: str, item_id: str) -> list[str]:
    """Delete a model / dataset (with its audits, returned) or a run; `InputError` while a job of it runs."""
    removed = {"model": ws().delete_model, "dataset": ws().delete_dataset,
               "run": lambda i: ws().delete_run(i) or [i]}[kind](item_id)
    st.cache_data.clear()
    dataset.clear()
    return removed


def runs_of(kind: str, item_id: str) -> list[str]:
    column = {"model": "model_id", "dataset": "dataset_id", "run": "id"}[kind]
    return [r["id"] for r in ws().runs() if r[column] == item_id]


# --- human labels -------------------------------------------------------------------------------------
def labels(dataset_id: str) -> list[dict]:
    return ws().labels(dataset_id)


def set_label(dataset_id: str, region: str, verdict: str, note: str, run_id: str) -> None:
    ws().set_label(dataset_id, region, verdict, note, run_id=run_id, model_id=run_info(run_id)["model_id"])


def remove_label(dataset_id: str, region: str) -> None:
    ws().remove_label(dataset_id, region)


def methods(task: str = "classification") -> list[str]:
    """Explainers for models of `task` (`analysis.runs.tasks.methods_for`): D-RISE for detectors, ..."""
    from analysis.runs.tasks import methods_for

    return methods_for(task) or sorted(SECONDS_PER_IMAGE)


def model_task(model_id: str) -> str:
    """The model card's task (classification when the card does not say)."""
    from analysis.runs.tasks import card_task_name

    return card_task_name(ws().model(model_id))


def model_card(model_id: str) -> dict:
    """The registered model's card (a dict; empty when the catalog has none)."""
    return dict((ws().model(model_id) or {}).get("card") or {})


@st.cache_data(show_spinner=False, max_entries=16)
def run_arrays(run_id: str, version: str, name: str) -> dict:
    """A task's own arrays of a run (e.g. a tagger's `tag_maps`: one map per image and tag)."""
    return _store(run_id).arrays(name)


def task_info(task: str) -> dict:
    """What the pages need to know about a task: its `view`, `default_method`, `model_kind`, `dataset_hint`; the
    default task's when this version does not run `task` (the page then says so through `supported`)."""
    from analysis.runs.tasks import DEFAULT_TASK, TASKS

    known = TASKS.get(task)
    chosen = known or TASKS[DEFAULT_TASK]
    return {"name": task, "supported": known is not None, "view": chosen.view,
            "default_method": chosen.default_method, "model_kind": chosen.model_kind,
            "dataset_hint": chosen.dataset_hint}


def report_view(report: dict) -> str:
    """The view that shows this report (its `run.task` through the registry)."""
    from analysis.runs.tasks import view_of

    return view_of((report.get("run") or {}).get("task"))


# --- one run ------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def _cached_report(run_id: str, version: str) -> dict:
    from analysis.report.build import cached_report

    return cached_report(_store(run_id), ws())


def report(run_id: str, version: str) -> dict:
    """The run's report, with the catalog's current names and the dataset's labels (both cheap, never stale)."""
    from analysis.report.build import with_catalog

    return with_catalog(_cached_report(run_id, version), ws().store(run_id), ws())  # names only: no shard listing


@st.cache_data(show_spinner=False, max_entries=16)
def gallery_table(run_id: str, version: str) -> pd.DataFrame:
    """One row per explained image: the `images` table plus one `mass.<region>` column per region."""
    store = _store(run_id)
    images = store.images()
    regions = store.regions()
    wide = regions.pivot_table(index="image_id", columns="region", values="mass", aggfunc="first")
    wide.columns = [f"mass.{name}" for name in wide.columns]
    lifts = regions.pivot_table(index="image_id", columns="region", values="lift", aggfunc="first")
    lifts.columns = [f"lift.{name}" for name in lifts.columns]
    table = images.merge(wide, left_on="image_id", right_index=True, how="left")
    table = table.merge(lifts, left_on="image_id", right_index=True, how="left")
    clusters = image_clusters(run_id, version)
    if clusters is not None:
        table = table.merge(clusters, on="image_id", how="left")
    return table


@st.cache_data(show_spinner=False, max_entries=8)
def detections(run_id: str, version: str) -> pd.DataFrame:
    """A detection run's `detections` table: one row per detection, box in image pixels, masses per region."""
    return _store(run_id).table("detections")


@st.cache_data(show_spinner=False, max_entries=8)
def store_images(run_id: str, version: str) -> pd.DataFrame:
    """The run's `images` table as stored."""
    return _store(run_id).images()


def image_clusters(run_id: str, version: str) -> pd.DataFrame | None:
    """`image_id, cluster` for images in a departing saliency cluster, as the report found them."""
    clusters = report(run_id, version).get("clusters") or []
    rows = [{"image_id": int(i), "cluster": f"{c['class']} #{c['cluster']}"} for c in clusters
            for i in c.get("image_ids", [])]
    return pd.DataFrame(rows, columns=["image_id", "cluster"]) if rows else None


@st.cache_resource(show_spinner=False, max_entries=4)
def saliency_maps(run_id: str, version: str) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids, maps float32 (N, h, w)) as stored: every map of the run (80 MB at 5,000 images), so a page
    that shows a few images reads them with `maps_of`. A resource, not data: never pickled, never copied."""
    image_ids, maps = _store(run_id).maps()
    return np.asarray(image_ids), np.asarray(maps, dtype=np.float32)


@st.cache_data(show_spinner=False, max_entries=64)
def maps_of(run_id: str, version: str, image_ids: tuple[int, ...]) -> dict[int, np.ndarray]:
    """image id -> its stored map (float32), for the images a page shows: only the shards that hold them are
    read (a gallery page of 24 images touches at most 24 of a 5,000-image run's 157 shards)."""
    ids, maps = _store(run_id).maps(list(image_ids))
    return {int(i): np.asarray(m, dtype=np.float32) for i, m in zip(ids, maps)}


@st.cache_data(show_spinner=False, max_entries=16)
def region_masses(run_id: str, version: str) -> pd.DataFrame:
    """`image_id` and one `mass.<region>` column per region: what picking a finding's picture needs, without
    the images table, the lifts or the report's clusters that `gallery_table` joins."""
    regions = _store(run_id).regions()
    if regions.empty:
        return pd.DataFrame(columns=["image_id"])
    wide = regions.pivot_table(index="image_id", columns="region", values="mass", aggfunc="first")
    wide.columns = [f"mass.{name}" for name in wide.columns]
    return wide.reset_index()


@st.cache_resource(max_entries=8)
def dataset(dataset_id: str):
    """The opened dataset (manifest parsed once; a zip extracted once by the workspace)."""
    return ws().open_dataset(dataset_id)


def region_names(dataset_id: str) -> dict[int, str]:
    return {region_id: region.name for region_id, region in dataset(dataset_id).regions.items()}


@st.cache_data(show_spinner=False, max_entries=256)
def picture(dataset_id: str, image_id: int):
    """(image, region mask or None) for display: EXIF-oriented image, mask at the image's size."""
    ds = dataset(dataset_id)
    item = next(item for item in ds.items if item.image_id == int(image_id))
    return ds.load(item)


def progress(run_id: str) -> tuple[int, int, str, str | None]:
    """(images done, images planned, status, stage) from the catalog: cheap enough to poll every 2 s."""
    info = run_info(run_id)
    total = info.get("n_total") or info.get("n") or 0
    return int(info.get("n_done") or 0), int(total), str(info.get("status")), info.get("stage")


def estimate_seconds(method: str, n_images: int) -> tuple[float, str]:
    """(seconds, basis), learned from the finished runs on this machine (`analysis.store.jobs.estimate_seconds`)."""
    from analysis.store.jobs import estimate_seconds as learned

    done = runs()
    history = [] if done.empty else done[(done.status == "done") & (done.n_done > 0)].to_dict("records")
    return learned(history, method, n_images, SECONDS_PER_IMAGE)


# --- several runs -------------------------------------------------------------------------------------
def engine_function(module: str, name: str):
    """An engine function, or None when this installation's engine lacks it (the page says so)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def in_version_order(run_ids: list[str]) -> list[str]:
    """`run_ids` ordered by their model's version, oldest first (`analysis.report.version_order`)."""
    from analysis.report.version_order import in_version_order as ordered

    rows = {r["id"]: r for r in ws().runs()}
    return [r["id"] for r in ordered(rows[i] for i in run_ids if i in rows)]


def same_series(run_ids: list[str], dataset_id: str) -> list[str]:
    """The audits on `dataset_id` of the models and explainers of `run_ids`, in version order."""
    from analysis.report.version_order import same_series as matching

    rows = ws().runs()
    chosen = [r for r in rows if r["id"] in set(run_ids)]
    return [r["id"] for r in matching(chosen, [r for r in rows if r["dataset_id"] == dataset_id
                                                and r["status"] == "done"])]


@st.cache_data(show_spinner=False, max_entries=8)
def comparison(run_ids: tuple[str, ...], versions: tuple[str, ...], names: tuple[str, ...],
               task: str = "classification") -> dict | None:
    """The task's comparison (`Task.compare`: per-region numbers per run, accuracy or recall, a summary), with
    the versions each run's report flags (`analysis.report.compare.with_flags`); None if this engine cannot
    compare runs of that task."""
    from analysis.report.compare import with_flags
    from analysis.runs.tasks import TASKS

    if task not in TASKS:
        return None
    from analysis.report.verdict import with_verdicts

    reports = [report(r, v) for r, v in zip(run_ids, versions)]
    result = TASKS[task].compare([_store(r) for r in run_ids], list(names), maps=False)  # the page shows no map similarity
    return with_verdicts(with_flags(result, reports), list(names), reports)


def discovered_by_version(run_ids: tuple[str, ...], versions: tuple[str, ...], names: tuple[str, ...]) -> dict:
    """name -> that version's report, for the regions discovered in each audit (`views.comparison_discovered`)."""
    return {name: report(r, v) for r, v, name in zip(run_ids, versions, names)}


def discovered_tracks(reports: dict) -> list[list[str | None]]:
    """The same discovered cue across the versions of `reports` (`analysis.report.compare.discovered_tracks`)."""
    match = engine_function("analysis.report.compare", "discovered_tracks")
    return match(list(reports.values())) if match is not None else []


# --- exports ------------------------------------------------------------------------------------------
def exporters(run_id: str, version: str) -> dict[str, object]:
    """Format -> a no-argument callable producing the file (run when the button is clicked), or None."""
    render_html = engine_function("analysis.report.html", "render_html")
    to_csv = engine_function("analysis.report.build", "to_csv")
    return {
        "html": None if render_html is None else (lambda: render_html(report(run_id, version))),
        "json": lambda: json.dumps(report(run_id, version), indent=1, default=str),
        "csv": None if to_csv is None else (lambda: to_csv(report(run_id, version))),
    }


# --- submitting work ----------------------------------------------------------------------------------
def submit_run(model_id: str, dataset_id: str, method: str, n_images: int, seed: int, name: str | None) -> str:
    """Create the run in the catalog and hand it to a worker process; returns at once."""
    from analysis.store.jobs import start_job

    run_id = ws().create_run(model_id, dataset_id, method, params={}, n=n_images, seed=seed, name=name)
    start_job(str(state.workspace_root()), run_id, "cpu")
    return run_id


def resume_run(run_id: str) -> None:
    from analysis.store.jobs import start_job

    start_job(str(state.workspace_root()), run_id, "cpu")


def cancel_run(run_id: str) -> None:
    from analysis.store.jobs import cancel_job

    cancel_job(ws(), run_id)


def demo_status() -> dict | None:
    """Where the demo build stands (`analysis.demo.status`); None when this workspace never built one."""
    from analysis.demo.status import read_status

    return read_status(state.workspace_root())


def resume_demo() -> int:
    """Start the demo builder again with the options it had; finished audits are kept, the rest resume."""
    from analysis.demo.status import start_build

    status = demo_status() or {}
    return start_build(state.workspace_root(), status.get("arguments") or [])


@st.cache_resource
def _inspector():
    """One warm model checker per dashboard process (`analysis.warm_inspector`): torch imported once."""
    from analysis.warm_inspector import WarmInspector

    return WarmInspector()


def warm_model_check() -> None:
    """Start the model checker's imports now (the Upload page opens), so the first check does not wait for them."""
    _inspector().start()


def inspect_model(model_path: Path, card_path: Path | None, timeout: float = 120) -> dict:
    """Layers and format of a model file, found in a child of the warm checker process (the model is never
    loaded in this one). Returns `{"layers": [...], "target_layer": ..., "format": ...}` or
    `{"error": "<one line>"}`."""
    return _inspector().inspect(model_path, card_path, timeout)


# --- display helpers backed by the engine -------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def accuracy(run_id: str, version: str) -> pd.DataFrame:
    """Accuracy with Wilson intervals overall / per class / per subgroup, as the report computed them."""
    return pd.DataFrame(report(run_id, version).get("accuracy") or [])


MAP_SCALE_SAMPLE = 1024  # about as many maps the colour scale is read from: all of them up to this many


@st.cache_data(show_spinner=False, max_entries=16)
def map_scale(run_id: str, version: str) -> float:
    """One colour scale for every overlay of a run, so a faint map looks faint: the 99th percentile of the
    pixels of about `MAP_SCALE_SAMPLE` maps from shards spread over the run (a folder sorted by class puts
    one class in the first shards). All 5,000 maps of a run took 1-2.5 s of a first render for a scale
    0.4% away on the bench's run (bench/README.md)."""
    from analysis.store.run_store import RunStore
    from dashboard.overlay import display_scale

    shards = ws().shards(run_id)
    step = max(1, -(-sum(s["n_rows"] for s in shards) // MAP_SCALE_SAMPLE))  # ceil(images / sample)
    sample = RunStore(ws().run_dir(run_id), ws(), run_id, shards=[s["path"] for s in shards][::step])
    return display_scale(sample.maps()[1])


# --- uploads ------------------------------------------------------------------------------------------
def staging_dir() -> Path:
    """Uploads wait here, outside the catalog, until they pass validation."""
    path = state.workspace_root() / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage(name: str, payload: bytes) -> Path:
    """Write an uploaded file under a fresh folder, keeping only its base name (no path from the browser)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=staging_dir()))
    path = folder / Path(name).name
    path.write_bytes(payload)
    return path


def unstage(path: Path) -> None:
    """Remove the staging folder `stage` made for `path` (once checked and registered, or refused): the workspace
    keeps its own copy, and nothing uploaded stays behind in uploads/."""
    import shutil

    folder = Path(path).parent
    if folder.parent.resolve() == staging_dir().resolve():
        shutil.rmtree(folder, ignore_errors=True)


def register_model(model_path: Path, card: dict, name: str, version: str | None = None) -> str:
    """Write the card beside the staged model and register both (the workspace copies them in by hash)."""
    card_path = model_path.parent / "model.json"
    card_path.write_text(json.dumps(card, indent=1))
    return ws().register_model(model_path, card_path, name=name, version=version)


def check_dataset(path: Path, classes: list[str] | None) -> tuple[int, list[dict]]:
    """Open and validate a staged dataset: (its size, the images that will not decode, with reasons), or
    `InputError` saying what to fix, with paths inside the upload named from the uploaded file (not from the
    staging folder it was unpacked into)."""
    import re

    from analysis.data.datasets import open_dataset
    from explainers.errors import InputError

    workdir = path.parent / "extracted"
    try:
        opened = open_dataset(path, workdir=workdir)
        opened.validate(classes)
    except InputError as exc:
        message = re.sub(re.escape(str(workdir)) + r"/[^/\s]+", path.name, str(exc))
        raise InputError(message.replace(str(path), path.name)) from None
    unreadable = opened.unreadable_images() if hasattr(opened, "unreadable_images") else []
    return len(opened), unreadable


def register_dataset(path: Path, name: str | None = None) -> str:
    return ws().register_dataset(path, name=name)


def trust(report: dict) -> list[dict]:
    """Per explainer, how far to trust it (`analysis.report.trust.explainer_trust`: decided there, shown here)."""
    from analysis.report.trust import explainer_trust

    return explainer_trust(report)
