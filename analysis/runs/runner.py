"""Execute one run: sample, batch, explain, region shares, one atomic shard per batch, resumable.

Everything the user can get wrong (labels not in the card's classes, unknown layer, CAM on TorchScript) is
checked before the first image is explained. Decoding the next batch overlaps the current batch's compute
(one prefetch thread). Memory stays flat: a batch's maps are pooled to <= 64x64 and written with its shard,
never accumulated. A corrupt image or a NaN output skips that image, with the reason, and the run goes on;
so does an image on which the model or explainer raises (a failing batch is retried image by image), unless
nothing at all succeeds, which is a broken model or method rather than a bad image. A full disk stops the run
with one line saying how to resume; every shard already recorded stays.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from analysis.runs import detection_run
from analysis.stats.regions import grid_shares, region_shares
from analysis.data.sampling import stratified_sample
from analysis.store.shard_writer import ShardWriter
from analysis.store.run_store import pool_maps
from analysis.store.workspace import DiskFullError, Workspace, is_disk_full
from explainers.errors import InputError
from explainers.targets import ClassTarget

RUNNER_PARAMS = ("target", "layer")  # run parameters the runner consumes; the rest go to the explainer
SYSTEMIC_FAILURES = 8  # this many images raising, with none explained, is a broken model/method: stop


class Cancelled(BaseException):
    """SIGTERM from `cancel_job`: stop after marking the run cancelled (finished shards stay)."""


@dataclass
class Decoded:
    """One batch after decoding: tensors for the images that decoded, reasons for those that did not."""
    items: list
    inputs: torch.Tensor | None
    masks: list
    skipped: list[tuple[Any, str]]


@dataclass
class RegionSpec:
    ids: list[int]
    names: list[str]
    roles: list[str | None]


def execute_run(workspace: Workspace, run_id: str, *, device: str = "cpu", batch_size: int = 32,
                progress: bool = True) -> dict:
    """Run (or resume) `run_id` to completion; returns the final catalog row."""
    run = _claim(workspace, run_id, device)
    previous_handler = _install_sigterm()
    try:
        _execute(workspace, run, device=device, batch_size=batch_size, progress=progress)
    except Cancelled:
        _record_end(workspace, run_id, status="cancelled", pid=None)
        raise
    except BaseException as exc:
        if is_disk_full(exc):
            full = exc if isinstance(exc, DiskFullError) else DiskFullError(
                f"disk full while writing run {run_id} in {workspace.root} ({exc}); {DiskFullError.FIX}")
            _record_end(workspace, run_id, status="failed", error=str(full), pid=None)
            if full is exc:
                raise
            raise full from exc
        message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        _record_end(workspace, run_id, status="failed", error=message or type(exc).__name__, pid=None)
        if not isinstance(exc, (InputError, KeyboardInterrupt)):
            traceback.print_exc(file=sys.stderr)
        raise
    finally:
        _restore_sigterm(previous_handler)
    return finish_run(workspace, run_id)


def finish_run(workspace: Workspace, run_id: str) -> dict:
    """Mark the run done and leave its report beside it, so readers open it without recomputing."""
    from analysis.report.build import cached_report

    workspace.update_run(run_id, status="done", pid=None, stage="report")  # done: the report's key says so
    cached_report(workspace.store(run_id), workspace)
    workspace.update_run(run_id, stage=None)
    return workspace.run(run_id)


def prepare(workspace: Workspace, run: dict, device: str = "cpu"):
    """Load and check everything a run needs; raises InputError before any compute."""
    from explainers.base import refuse_black_box
    from explainers.models import load_model
    from explainers.registry import METHODS, make_explainer

    if detection_run.model_task(workspace, run) == "detection":
        raise InputError(f"run {run['id']}: detection runs go through analysis.runs.detection_run")
    params = dict(run["params"])
    target_mode = params.get("target", "pred")
    if target_mode not in ("pred", "label"):
        raise InputError(f"parameter target={target_mode!r}: use 'pred' (predicted class) or 'label'")
    make_explainer_check(run["method"])
    model_row = workspace.model(run["model_id"])
    loaded = load_model(model_row["abspath"], device=device)
    dataset = workspace.open_dataset(run["dataset_id"])
    dataset.validate(list(loaded.card.classes))

    explainer_params = {k: v for k, v in params.items() if k not in RUNNER_PARAMS}
    layer_name = None
    refuse_black_box(METHODS[run["method"]], loaded.module)  # gradient/CAM methods on ONNX: the fix, not a crash
    if METHODS[run["method"]].needs_layer:
        if not loaded.supports_hooks:
            raise InputError(f"{model_row['path']}: method {run['method']!r} hooks an internal layer, which a "
                             f"{loaded.format} model does not expose; export the model with torch.export "
                             f"(.pt2) or use a gradient/perturbation method (e.g. --method saliency)")
        layer_name = params.get("layer") or loaded.target_layer_name()
        source = ("given" if params.get("layer") else
                  "card" if getattr(loaded.card, "target_layer", None) else "detected")
        layer = loaded.layer(layer_name)  # InputError naming close names for a typo
        print(f"target layer: {layer_name} ({source})", file=sys.stderr)
        explainer = make_explainer(run["method"], loaded.module, layer=layer, **explainer_params)
    else:
        explainer = make_explainer(run["method"], loaded.module, **explainer_params)
    return loaded, dataset, explainer, layer_name, target_mode


def make_explainer_check(method: str, task: str | None = "classification") -> None:
    """InputError unless `method` explains models of `task` (None: any known method)."""
    from explainers.registry import METHODS, _load_builtin_methods

    _load_builtin_methods()
    kind = "detector" if task == "detection" else "classifier"
    allowed = sorted(name for name, cls in METHODS.items() if task is None or cls.model_kind == kind)
    if method not in allowed:
        why = (f"explains {'detectors, not classifiers' if kind == 'classifier' else 'classifiers, not detectors'}; "
               if method in METHODS else "unknown method; ")
        raise InputError(f"method {method!r}: {why}choose one of: {', '.join(allowed)}")


def _execute(workspace: Workspace, run: dict, *, device: str, batch_size: int, progress: bool) -> None:
    workspace.update_run(run["id"], stage="explaining")  # the stage a progress bar names (see evidence_stage)
    if detection_run.model_task(workspace, run) == "detection":
        return detection_run.execute(workspace, run, device=device, batch_size=batch_size, progress=progress)
    run_id = run["id"]
    loaded, dataset, explainer, layer_name, target_mode = prepare(workspace, run, device)
    classes = list(loaded.card.classes)
    regions = _region_spec(dataset)

    sample = [dataset.items[i] for i in stratified_sample([it.label for it in dataset.items], run["n"], run["seed"])]
    store = workspace.store(run_id)
    store.remove_unfinished()  # temp folders of killed workers; we hold the run, so none is live
    done = store.done_image_ids()
    todo = [item for item in sample if int(item.image_id) not in done]
    n_done, n_skipped = len(store.images()), len(store.skipped())
    next_index = max((s["index"] for s in workspace.shards(run_id)), default=-1) + 1
    workspace.update_run(run_id, n_total=len(sample), target_layer=layer_name, n_done=n_done,
                         n_skipped=n_skipped)

    bar = _progress_bar(len(sample), n_done + n_skipped, progress)
    guard = _FailureGuard(explained=n_done)

    def recorder(index: int, n_rows: int, n_done: int, n_skipped: int, n_items: int):
        def record(path: str) -> None:  # on this thread, once the shard's folder is complete
            workspace.record_shard(run_id, index, n_rows, path, n_done=n_done, n_skipped=n_skipped)
            bar.update(n_items)
        return record

    try:
        with ShardWriter(store.write_shard) as writer:  # shard N is written while batch N+1 is computed
            for batch in _prefetched(dataset, loaded.card, todo, batch_size):
                images, region_rows, maps, skipped = _explain_batch(
                    batch, loaded, explainer, classes, regions, target_mode, device, guard)
                n_done += len(images)
                n_skipped += len(skipped)
                writer.submit(next_index, images, region_rows, maps, skipped,
                              record=recorder(next_index, len(images), n_done, n_skipped,
                                              len(images) + len(skipped)))
                next_index += 1
        guard.finish()
    finally:
        bar.close()
    evidence_stage(store, run, loaded, dataset, layer_name)


def evidence_stage(store, run: dict, loaded, dataset, layer_name: str | None) -> None:
    """Interventions, second explainer, sanity and faithfulness, once every map is stored.

    Written once (a resumed run that has it skips it); both backends end with it, so their reports agree.
    """
    if store.evidence():
        return
    from analysis.evidence.stage import compute_evidence

    explainer_params = {k: v for k, v in run["params"].items() if k not in RUNNER_PARAMS}

    def stage(name: str) -> None:
        if store.workspace is not None:
            store.workspace.update_run(run["id"], stage=name)

    stage("interventions")
    store.write_evidence(compute_evidence(loaded, dataset, store, method=run["method"], layer_name=layer_name,
                                          seed=int(run["seed"]), params=explainer_params, on_stage=stage))


def _explain_batch(batch: Decoded, loaded, explainer, classes, regions: RegionSpec | None, target_mode, device,
                   guard: "_FailureGuard | None" = None):
    skipped = [_skip_row(item, reason) for item, reason in batch.skipped]
    image_rows, region_rows, kept_maps = [], [], []
    if batch.inputs is not None:
        label_idx = torch.tensor([classes.index(str(it.label)) for it in batch.items])
        outputs, failures = _outputs_per_image_on_error(batch.inputs.to(device), label_idx, loaded, explainer,
                                                        target_mode)
        failed = [_skip_row(batch.items[k], reason) for k, reason in failures.items()]
        skipped.extend(guard.admit(len(outputs), failed) if guard is not None else failed)
        for k, (logits, confidence, pred_idx, target_idx, saliency, score) in outputs.items():
            item = batch.items[k]
            if not bool(torch.isfinite(logits).all()):
                skipped.append(_skip_row(item, "model returned non-finite outputs (NaN/inf)"))
                continue
            if not bool(torch.isfinite(saliency).all()):
                skipped.append(_skip_row(item, f"{explainer.name} returned a non-finite map (NaN/inf)"))
                continue
            row = {"image_id": int(item.image_id), "image": str(item.image), "label": str(item.label),
                   "label_idx": int(label_idx[k]), "pred": classes[pred_idx], "pred_idx": pred_idx,
                   "confidence": confidence, "correct": pred_idx == int(label_idx[k]),
                   "target_idx": target_idx, "score": score}
            for name, value in (getattr(item, "attributes", None) or {}).items():
                row[f"attr.{name}"] = None if value is None else str(value)
            image_rows.append(row)
            region_rows.extend(_region_rows(int(item.image_id), saliency, batch.masks[k], regions))
            kept_maps.append(saliency)
    images = pd.DataFrame(image_rows, columns=None if image_rows else
                          ["image_id", "image", "label", "label_idx", "pred", "pred_idx", "confidence",
                           "correct", "target_idx", "score"])
    region_frame = pd.DataFrame(region_rows, columns=["image_id", "region", "region_id", "role", "mass",
                                                      "area", "lift"])
    pooled = pool_maps(torch.stack(kept_maps)) if kept_maps else np.zeros((0, 1, 1), np.float16)
    skipped_frame = pd.DataFrame(skipped, columns=["image_id", "image", "reason"])
    return images, region_frame, pooled, skipped_frame


def _outputs_per_image_on_error(inputs: torch.Tensor, label_idx: torch.Tensor, loaded, explainer, target_mode):
    """Per-image outputs {k: (logits, confidence, pred_idx, target_idx, map, score)} and {k: reason}.

    A batch that raises is retried image by image, so one image that breaks the model or explainer (or a
    batch too big for the device) costs that image only. InputError is the user's to fix: never skipped.
    """
    try:
        return _outputs(inputs, label_idx, loaded, explainer, target_mode, range(len(inputs))), {}
    except InputError:
        raise
    except Exception as exc:
        if len(inputs) == 1:
            return {}, {0: _failure_reason(exc)}
    outputs, failures = {}, {}
    for k in range(len(inputs)):
        try:
            outputs.update(_outputs(inputs[k:k + 1], label_idx[k:k + 1], loaded, explainer, target_mode, [k]))
        except InputError:
            raise
        except Exception as exc:
            failures[k] = _failure_reason(exc)
    return outputs, failures


def _outputs(inputs, label_idx, loaded, explainer, target_mode, positions) -> dict:
    with torch.no_grad():
        logits = loaded.module(inputs).float()
    probs = torch.softmax(logits.nan_to_num(0.0), dim=1)
    confidence, pred_idx = probs.max(dim=1)
    target_idx = pred_idx.cpu() if target_mode == "pred" else label_idx
    result = explainer.explain(inputs, ClassTarget(target_idx))
    maps = result.maps.detach().float().cpu()
    scores = result.scores.detach().float().cpu()
    logits = logits.cpu()
    return {k: (logits[j], float(confidence[j]), int(pred_idx[j]), int(target_idx[j]), maps[j], float(scores[j]))
            for j, k in enumerate(positions)}


def _failure_reason(exc: BaseException) -> str:
    return f"model or explainer raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class _FailureGuard:
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


def _region_rows(image_id: int, saliency: torch.Tensor, mask, regions: RegionSpec | None) -> Iterator[dict]:
    if regions is not None:
        mass, area = region_shares(saliency, mask, regions.ids)
        names, ids, roles = regions.names, regions.ids, regions.roles
    else:
        names, mass, area = grid_shares(saliency, *saliency.shape[-2:])
        ids, roles = [-1] * len(names), [None] * len(names)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(area > 0, mass / np.where(area > 0, area, 1), np.nan)
    for k, name in enumerate(names):
        yield {"image_id": image_id, "region": name, "region_id": int(ids[k]), "role": roles[k],
               "mass": float(mass[k]), "area": float(area[k]), "lift": float(lift[k])}


def _region_spec(dataset) -> RegionSpec | None:
    """The dataset's annotated regions, or None (grid regions) when it has no masks."""
    regions = getattr(dataset, "regions", None)
    if not regions or not getattr(dataset, "has_masks", True):
        return None
    values = list(regions.values()) if isinstance(regions, dict) else list(regions)
    values.sort(key=lambda r: int(r.id))
    return RegionSpec([int(r.id) for r in values], [str(r.name) for r in values],
                      [getattr(r, "role", None) for r in values])


def _prefetched(dataset, card, items: list, batch_size: int) -> Iterator[Decoded]:
    """Decode batch k+1 in a thread while batch k is explained (PIL decoding releases the GIL)."""
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = pool.submit(_decode, dataset, card, chunks[0])
        for k in range(len(chunks)):
            batch = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(_decode, dataset, card, chunks[k + 1])
            yield batch


def _decode(dataset, card, items: list) -> Decoded:
    from explainers.preprocess import to_input

    kept, tensors, masks, skipped = [], [], [], []
    for item in items:
        try:
            image, mask = dataset.load(item)
            tensor = to_input(image, card)
        except Exception as exc:  # a corrupt file skips this image, never the run
            skipped.append((item, getattr(exc, "reason", None) or str(exc) or type(exc).__name__))
            continue
        if getattr(dataset, "has_masks", False) and mask is None:
            skipped.append((item, "no region mask for this image"))
            continue
        kept.append(item)
        tensors.append(tensor)
        masks.append(mask)
    return Decoded(kept, torch.stack(tensors) if tensors else None, masks, skipped)


def _skip_row(item, reason: str) -> dict:
    return {"image_id": int(item.image_id), "image": str(item.image), "reason": reason}


def _claim(workspace: Workspace, run_id: str, device: str) -> dict:
    """Mark the run as ours in one transaction, so two workers started together cannot both run it."""
    from analysis.store.jobs import job_alive

    holder = workspace.claim_run(run_id, os.getpid(), device, is_alive=job_alive)
    if holder is not None:
        raise InputError(f"run {run_id} is already running in process {holder}; wait for it or cancel it")
    return workspace.run(run_id)


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


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", file=sys.stderr, dynamic_ncols=True)
