"""What a method's parameters are (name, type, range): the schema each explainer declares, checked once.

Why a schema and not the constructor's own checks: a run is created from `--param KEY=VALUE` pairs long
before any explainer is built (the model is loaded in the worker), and a typo or a wrong type must be refused
then, in one line naming the parameter and the accepted ones, with nothing left in the catalog. The
constructors keep their checks for callers of the Python API; the schema is what the CLI, the dashboard and
every task's run check before a run exists (`explainers.registry.check_params`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from explainers.errors import InputError

TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a word", list: "a list of numbers"}


@dataclass(frozen=True)
class Param:
    """One keyword parameter: `kind` int / float / bool / str / list (of numbers); `low` / `high` bounds
    (inclusive unless `open_low` / `open_high`; for a list, of each item); `choices` for words; `optional`:
    null is accepted (the method picks a value)."""

    name: str
    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    open_low: bool = False
    open_high: bool = False

    def describe(self) -> str:
        """`n_masks` (a whole number >= 1), for messages."""
        words = TYPE_WORDS[self.kind]
        if self.choices:
            words = "one of " + ", ".join(self.choices)
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        if bounds:
            words += (", each " if self.kind is list else " ") + " and ".join(bounds)
        return words + (", or null" if self.optional else "")

    def check(self, method: str, value: Any) -> Any:
        """`value` as the method takes it (an int for a float parameter becomes a float); InputError otherwise."""
        if value is None and self.optional:
            return None
        if self.kind is list:
            items = value if isinstance(value, (list, tuple)) else [value]
            checked = [self._number(method, value, item, float) for item in items]
            if not checked:
                raise self._error(method, value)
            return checked
        if self.kind in (int, float):
            return self._number(method, value, value, self.kind)
        return self._plain(method, value)

    def _plain(self, method: str, value: Any) -> Any:
        if not isinstance(value, self.kind) or (self.choices and value not in self.choices):
            raise self._error(method, value)
        return value

    def _number(self, method: str, whole: Any, value: Any, kind: type) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._error(method, whole)
        if kind is int and not isinstance(value, int):
            raise self._error(method, whole)
        low_bad = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if low_bad or high_bad:
            raise self._error(method, whole)
        return kind(value)

    def _error(self, method: str, value: Any) -> InputError:
        return InputError(f"--param {self.name}={_shown(value)}: {method} takes {self.name} as {self.describe()}")


def _shown(value: Any) -> str:
    import json

    try:
        return json.dumps(value) if not isinstance(value, str) else value
    except (TypeError, ValueError):
        return repr(value)


def check_against(method: str, schema: tuple[Param, ...], params: dict, *, also: tuple[str, ...] = ()) -> dict:
    """`params` checked against `schema` (values as the method takes them); names in `also` (the run's own
    parameters) pass through unchecked. InputError on the first unknown name or bad value."""
    by_name = {p.name: p for p in schema}
    checked = {}
    for key, value in params.items():
        if key in also:
            checked[key] = value
        elif key in by_name:
            checked[key] = by_name[key].check(method, value)
        else:
            raise InputError(f"--param {key}: {unknown_hint(key, method, schema, also)}")
    return checked


def unknown_hint(key: str, method: str, schema: tuple[Param, ...], also: tuple[str, ...]) -> str:
    import difflib

    names = [p.name for p in schema]
    close = difflib.get_close_matches(key, names + list(also), n=1, cutoff=0.75)
    takes = f"{method} takes {', '.join(names)}" if names else f"{method} takes no parameters"
    run = f"; the run takes {', '.join(also)}" if also else ""
    return f"not a parameter{f' (did you mean {close[0]}?)' if close else ''}; {takes}{run}"
