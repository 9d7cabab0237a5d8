"""Model versions in order: v1, v2, ..., v10 (natural sort), oldest first, the audit time breaking ties.

A run's version is its model's own (the card's `version`, or the one a person gave on Upload or a registry
gave: `models.version`), else a version at the end of the model's name (`cage-net v3`, `shapes_v10`, an MLflow
registry version's `NAME v3`). Runs whose model has no version at all come after the versioned ones, in
audit order, and so do versions named by a word without a number ("biased"): they have no order of their own.
Every place that lists versions (the compare page, `saliency-audit compare`, the Overview's series) orders
through `version_key`, and names a model's series and version through `series_of`.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

_NAME_SUFFIX = re.compile(r"^(?P<base>.*?)[\s_/-]*(?P<version>v\d+[\w.]*)$", re.IGNORECASE)
_CHUNKS = re.compile(r"(\d+)")


def _own(version) -> str | None:
    """A model's own version as text; None for none (None, "", pandas' NaN for a catalog row without one)."""
    if version is None or (isinstance(version, float) and math.isnan(version)) or not str(version).strip():
        return None
    text = str(version).strip()
    return f"v{text}" if text.isdigit() else text


def version_of(name: str | None, version) -> str | None:
    """The version shown for a model: its own ("2" reads "v2"), else a trailing "v3" of its name, else None."""
    if _own(version) is not None:
        return _own(version)
    match = _NAME_SUFFIX.match(str(name or ""))
    return match["version"] if match and match["base"] else None


def series_of(name: str | None, version) -> tuple[str, str]:
    """(series, version label) of a model: its name and its own version, else the name without a trailing
    version ("cage-v2" -> cage, v2), else the name for both (a model with no version is its own series)."""
    name = str(name or "unnamed model")
    if _own(version) is not None:
        return name, _own(version)
    match = _NAME_SUFFIX.match(name)
    if match and match["base"]:
        return match["base"], match["version"]
    return name, name


def natural_key(text: str) -> tuple:
    """"v10" after "v9", "v1.10" after "v1.9": digit runs compare as numbers, the rest as lower-case text."""
    return tuple((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk.lower())
                 for chunk in _CHUNKS.split(str(text).strip()) if chunk)


def version_key(run: dict) -> tuple:
    """The sort key of one run (a catalog row: `model_name`, `model_version`, `created`)."""
    version = version_of(run.get("model_name"), run.get("model_version"))
    created = run.get("created")
    created = float(created) if isinstance(created, (int, float)) and not math.isnan(created) else 0.0
    ordered = version is not None and any(ch.isdigit() for ch in version)  # "biased" has no place in an order
    return (0, natural_key(version), created) if ordered else (1, (), created)


def in_version_order(runs: Iterable[dict]) -> list[dict]:
    """`runs` ordered by their model's version, oldest first; the audit's creation time breaks ties."""
    return sorted(runs, key=version_key)


def same_series(chosen: Iterable[dict], candidates: Iterable[dict]) -> list[dict]:
    """The runs among `candidates` (say, the audits of another dataset) of the same models with the same
    explainers as `chosen`, one per (model, explainer), the newest; in version order. A comparison keeps its
    series when its dataset changes."""
    wanted = {(run.get("model_id"), run.get("method")) for run in chosen}
    newest: dict[tuple, dict] = {}
    for run in sorted(candidates, key=lambda r: r.get("created") or 0):
        key = (run.get("model_id"), run.get("method"))
        if key in wanted:
            newest[key] = run
    return in_version_order(newest.values())
