"""Equality of two stored runs of any task: every shard table (the task's own included), maps, evidence."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.runs.tasks import TASKS


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if frame[c].dtype.kind in "iubO"]
    return frame.sort_values(keys).reset_index(drop=True) if keys and len(frame) else frame.reset_index(drop=True)


def _same_frames(a: pd.DataFrame, b: pd.DataFrame, name: str) -> None:
    assert list(a.columns) == list(b.columns), name
    a, b = _sorted(a), _sorted(b)
    assert len(a) == len(b), f"{name}: {len(a)} rows against {len(b)}"
    floats = [c for c in a.columns if a[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(a.drop(columns=floats), b.drop(columns=floats), obj=name)
    if floats:
        np.testing.assert_allclose(a[floats].to_numpy(float), b[floats].to_numpy(float), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def _same_arrays(a: dict, b: dict, name: str) -> None:
    assert sorted(a) == sorted(b), name
    keys = [k for k in sorted(a) if a[k].ndim == 1 and a[k].dtype.kind in "iu"]
    order_a = np.lexsort([a[k] for k in reversed(keys)]) if keys else slice(None)
    order_b = np.lexsort([b[k] for k in reversed(keys)]) if keys else slice(None)
    for key in a:
        np.testing.assert_allclose(a[key][order_a].astype(np.float64), b[key][order_b].astype(np.float64),
                                   rtol=2e-3, atol=1e-6, err_msg=f"{name}.{key}")


def _same_json(a, b, where: str = "evidence") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            _same_json(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _same_json(x, y, f"{where}[{k}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (where, a, b)
    else:
        assert a == b, (where, a, b)


def assert_same_run(ws_a, run_a: str, ws_b, run_b: str, task_name: str) -> None:
    sa, sb = ws_a.store(run_a), ws_b.store(run_b)
    for name in ("images", "regions", "skipped"):
        _same_frames(sa.table(name), sb.table(name), name)
    ids_a, maps_a = sa.maps()
    ids_b, maps_b = sb.maps()
    _same_arrays({"image_ids": ids_a, "maps": maps_a}, {"image_ids": ids_b, "maps": maps_b}, "maps")
    for name in TASKS[task_name].extra_tables:
        _same_frames(sa.table(name), sb.table(name), name)
        _same_arrays(sa.arrays(name), sb.arrays(name), name)
    _same_json(sa.evidence(), sb.evidence())
    ra, rb = ws_a.run(run_a), ws_b.run(run_b)
    assert (ra["status"], ra["n_done"], ra["n_skipped"], ra["target_layer"]) == \
        (rb["status"], rb["n_done"], rb["n_skipped"], rb["target_layer"])
