"""Interventions belong to the model, not to the explainer: a second audit of the same model on the same
sample (Grad-CAM, then plain gradients) reuses them instead of running every fill and swap again.

The fills and swaps of annotated regions depend only on the model, the images, their labels, the region
masks and the test's settings. A content key over all of them, and over the source of the code that computes
and summarises them (a changed test never reads an old answer), names a JSON file under the workspace's
`cache/interventions/`. Whatever the maps decide (grid regions chosen by their lift, discovered regions)
changes the masks, so the key too: those are computed again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

_CODE = [Path(__file__).resolve().parents[1] / part for part in ("evidence", "stats")]


def cache_key(model_id: str, arrays: dict[str, object], settings: dict) -> str:
    """sha256 over the model id, every array's dtype, shape and bytes (tensors or numpy), the settings and
    the evidence and statistics code."""
    digest = hashlib.sha256(model_id.encode())
    for name in sorted(arrays):
        value = arrays[name]
        value = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        value = np.ascontiguousarray(value)
        digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for folder in _CODE:
        for path in sorted(folder.glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def load(folder: Path, key: str) -> dict | None:
    try:
        return json.loads((folder / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


def save(folder: Path, key: str, value: dict) -> None:
    """Atomically (a concurrent reader sees the whole file or none); a full disk only loses the cache."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{key}.{os.getpid()}"
        temp.write_text(json.dumps(value, default=float))  # as the run store writes evidence.json
        os.replace(temp, folder / f"{key}.json")
    except (OSError, TypeError, ValueError):
        pass
