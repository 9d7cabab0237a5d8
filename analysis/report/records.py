"""The report's typed records: what every task's judge produces and every reader (HTML, dashboard, `check`,
`compare`, MLflow) consumes.

Why records and not dicts: a finding was a dict each task built its own way, and every renderer probed it
with `.get(` and printed what it found (a fill's p-value beside a swap's Holm value, "decision undecided",
raw keys). Here a finding carries its deciding test first, each test names its slice and is worded once
(`TestResult.sentence`), and the run's verdict is one of three words for every task.

The JSON shape is the report contract (docs/FORMATS.md): `Finding.to_json` keeps every key a flag had
(`region`, `class`, `group`, `kind`, `severity`, `lift`, `evidence`, ...) and adds `headline`, `effect`,
`tests` and `checks`; `from_json` reads both the new and the older shape, so cached reports still render.
`tests/report/test_records.py` holds FORMATS.md's documented keys against these fields.
"""
from __future__ import annotations

import functools
import math
import types
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterable, Union, get_args, get_origin, get_type_hints

SEVERITIES = ("low", "medium", "high")
STATUSES = ("flagged", "clear", "cannot_judge")
DECISIONS = ("shown", "excluded", "undecided", "not_run")
CHECK_STATUSES = ("passed", "failed", "not_applicable", "not_run")


def as_number(value: Any) -> float | None:
    """A finite float, or None (NaN, inf, missing and non-numbers read as 'no value')."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def as_pair(value: Any) -> tuple[float | None, float | None] | None:
    """An interval: two numbers (either may be None), or None when the value is not a pair."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    return as_number(value[0]), as_number(value[1])


def as_text(value: Any) -> str | None:
    """Text, or None for a missing value (None, pandas NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def lower(interval: tuple[float | None, float | None] | None) -> float | None:
    """An interval's lower end; None when there is no interval."""
    return interval[0] if interval else None


def upper(interval: tuple[float | None, float | None] | None) -> float | None:
    """An interval's upper end; None when there is no interval."""
    return interval[1] if interval else None


_number, _pair, _text = as_number, as_pair, as_text


@dataclass(frozen=True)
class Slice:
    """Which images a number is about: the whole sample (both None), one class / tag / target, or a subgroup."""
    target: str | None = None
    group: str | None = None

    def words(self) -> str:
        parts = [f"class {self.target}" if self.target is not None else None, self.group]
        named = [p for p in parts if p]
        return ", ".join(named) if named else "all images"

    def to_json(self) -> dict:
        return {"class": self.target, "group": self.group}

    @classmethod
    def from_json(cls, data: dict | None) -> "Slice":
        data = data or {}
        return cls(_text(data.get("class")), _text(data.get("group")))


@dataclass(frozen=True)
class TestResult:
    """One statistical test behind a finding (or behind a 'no flag').

    `effect` is the net effect (region minus control, as a rate: 0.39 = 39 points), `interval` its interval at
    the run's level, `p_value` the test's own, `p_value_corrected` after the run's multiplicity correction
    (`correction` says which). `decision`: `shown` (the effect is there), `excluded` (an effect of the policy's
    size is ruled out), `undecided` (the sample could do neither), `not_run`."""
    __test__ = False  # not a pytest class, whatever its name

    name: str
    description: str
    effect: float | None = None
    interval: tuple[float | None, float | None] | None = None
    p_value: float | None = None
    p_value_corrected: float | None = None
    correction: str | None = None
    n: int | None = None
    slice: Slice = field(default_factory=Slice)
    decision: str = "not_run"
    control: str | None = None

    def __post_init__(self):
        if self.decision not in DECISIONS:
            raise ValueError(f"decision {self.decision!r} is not one of {DECISIONS}")

    def sentence(self) -> str:
        """The test in one line a person reads: what moved, by how much, on which images, how sure."""
        parts = [f"{self.name} on {self.slice.words()}"]
        if self.effect is not None:
            parts.append(f"net effect {self.effect:+.0%}")
        if self.interval and None not in self.interval:
            parts.append(f"interval [{self.interval[0]:+.0%}, {self.interval[1]:+.0%}]")
        p = self.p_value_corrected if self.p_value_corrected is not None else self.p_value
        if p is not None:
            label = "corrected p" if self.p_value_corrected is not None else "p"
            parts.append(f"{label} = {_p_text(p)}")
        if self.n is not None:
            parts.append(f"n = {self.n}")
        words = {"shown": "shown", "excluded": "an effect of that size is ruled out",
                 "undecided": "undecided: the sample neither shows nor rules out an effect",
                 "not_run": "not run"}
        return f"{'; '.join(parts)} ({words[self.decision]})"

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "effect": self.effect,
                "interval": list(self.interval) if self.interval else None, "p_value": self.p_value,
                "p_value_corrected": self.p_value_corrected, "correction": self.correction, "n": self.n,
                "slice": self.slice.to_json(), "decision": self.decision, "control": self.control}

    @classmethod
    def from_json(cls, data: dict) -> "TestResult":
        n = _number(data.get("n"))
        return cls(name=str(data["name"]), description=str(data.get("description") or ""),
                   effect=_number(data.get("effect")), interval=_pair(data.get("interval")),
                   p_value=_number(data.get("p_value")), p_value_corrected=_number(data.get("p_value_corrected")),
                   correction=_text(data.get("correction")), n=None if n is None else int(n),
                   slice=Slice.from_json(data.get("slice")), decision=str(data.get("decision") or "not_run"),
                   control=_text(data.get("control")))


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


@dataclass(frozen=True)
class CheckResult:
    """A trust check of the run or of a finding: model randomisation, second explainer, faithfulness,
    predictions, maps, power. `status` is one of `passed`, `failed`, `not_applicable` (with the reason: a black
    box has no weights to randomise), `not_run`; `detail` says it in words, `value` the number it rests on."""
    name: str
    status: str
    detail: str
    value: float | None = None

    def __post_init__(self):
        if self.status not in CHECK_STATUSES:
            raise ValueError(f"check status {self.status!r} is not one of {CHECK_STATUSES}")

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "value": self.value}

    @classmethod
    def from_json(cls, data: dict) -> "CheckResult":
        return cls(str(data["name"]), str(data["status"]), str(data.get("detail") or ""), _number(data.get("value")))


@dataclass(frozen=True)
class NotJudged:
    """A check the registry (`analysis.evidence.checks`) did not run on this audit, and why: a black box has no
    weights to randomise, a detector has no second explainer of another family, region Shapley was not asked for.
    The report lists them under `not_judged`; `limits_verdict` says whether a "clear" verdict is blind where the
    check did not look (the verdict's `not_tested` names those)."""
    check: str
    key: str
    reason: str
    limits_verdict: bool = True

    def sentence(self) -> str:
        return f"{self.check}: not judged ({self.reason})"

    def to_json(self) -> dict:
        return {"check": self.check, "key": self.key, "reason": self.reason, "limits_verdict": self.limits_verdict}

    @classmethod
    def from_json(cls, data: dict) -> "NotJudged":
        return cls(str(data["check"]), str(data.get("key") or ""), str(data.get("reason") or ""),
                   bool(data.get("limits_verdict", True)))


def not_judged(report: dict) -> tuple[NotJudged, ...]:
    """The report's (or the evidence's) `not_judged` records; none in a report from before the registry."""
    return tuple(NotJudged.from_json(d) for d in report.get("not_judged") or [])


# Keys a flag carried before findings were typed; `Finding.to_json` keeps writing them (the contract).
_LEGACY_KEYS = ("region", "class", "group", "kind", "severity", "confidence", "lift", "lift_ci", "mass_mean",
                "evidence", "reasons", "basis")


@dataclass(frozen=True)
class Finding:
    """One flagged shortcut: a region (or an image property) that a target's predictions depend on.

    `tests` holds the deciding test first, then the others; `checks` the trust checks that qualify it
    (sanity, second explainer, ...). `headline` is the sentence every renderer shows first. `evidence`
    keeps the task's detailed numbers under their documented keys (docs/FORMATS.md) for exports; no renderer
    needs to read it."""
    kind: str
    subject: str
    slice: Slice
    severity: str
    confidence: str
    headline: str
    effect: float | None
    tests: tuple[TestResult, ...] = ()
    checks: tuple[CheckResult, ...] = ()
    reasons: tuple[str, ...] = ()
    basis: str = "attention+intervention"
    lift: float | None = None
    lift_ci: tuple[float | None, float | None] | None = None
    mass_mean: float | None = None
    evidence: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")

    @property
    def deciding_test(self) -> TestResult | None:
        return self.tests[0] if self.tests else None

    @property
    def region(self) -> str | None:
        return self.subject if self.kind != "property" else None

    def evidence_lines(self) -> list[str]:
        """The finding's evidence in the order a reader needs it, worded once for the HTML and the dashboard:
        the deciding test, the other tests, then the checks and the reasons that qualify it."""
        lines = []
        if self.tests:
            first = self.tests[0]
            lines.append(f"Shown by: {first.sentence()}" + (f"; the test: {first.description}" if first.description
                                                             else ""))
            lines.extend(f"Also tested: {t.sentence()}" for t in self.tests[1:])
        else:
            lines.append("No intervention tested this region: attention alone, not evidence of use")
        words = {"passed": "passed", "failed": "failed", "not_applicable": "not applicable", "not_run": "not run"}
        lines.extend(f"Check, {c.name}: {words[c.status]} ({c.detail})" for c in self.checks)
        lines.extend(f"Note: {reason}" for reason in self.reasons)
        return lines

    def to_json(self) -> dict:
        out = {"region" if self.kind != "property" else "property": self.subject,
               "class": self.slice.target, "group": self.slice.group, "kind": self.kind, "severity": self.severity,
               "confidence": self.confidence, "lift": self.lift,
               "lift_ci": list(self.lift_ci) if self.lift_ci else None, "mass_mean": self.mass_mean,
               "evidence": dict(self.evidence), "reasons": list(self.reasons), "basis": self.basis,
               "headline": self.headline, "effect": self.effect,
               "tests": [t.to_json() for t in self.tests], "checks": [c.to_json() for c in self.checks]}
        if self.kind == "property":
            out["region"] = None
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, data: dict) -> "Finding":
        kind = str(data.get("kind") or "shortcut")
        subject = data.get("property") if kind == "property" else data.get("region")
        tests = tuple(TestResult.from_json(t) for t in data.get("tests") or [])
        if not tests:
            tests = _legacy_tests(data)
        known = {*_LEGACY_KEYS, "headline", "effect", "tests", "checks", "property"}
        effect = _number(data.get("effect"))
        if effect is None:
            effect = _number((data.get("evidence") or {}).get("net_effect"))
        return cls(kind=kind, subject=str(subject), slice=Slice.from_json(data),
                   severity=str(data.get("severity") or "low"), confidence=str(data.get("confidence") or "low"),
                   headline=str(data.get("headline") or _legacy_headline(data, tests)), effect=effect,
                   tests=tests, checks=tuple(CheckResult.from_json(c) for c in data.get("checks") or []),
                   reasons=tuple(map(str, data.get("reasons") or [])), basis=str(data.get("basis") or ""),
                   lift=_number(data.get("lift")), lift_ci=_pair(data.get("lift_ci")),
                   mass_mean=_number(data.get("mass_mean")), evidence=dict(data.get("evidence") or {}),
                   extra={k: v for k, v in data.items() if k not in known})


def _legacy_tests(data: dict) -> tuple[TestResult, ...]:
    """A cached report from before typed findings: its one deciding test, from the evidence keys it had."""
    ev = data.get("evidence") or {}
    if ev.get("p_value") is None and ev.get("p_value_holm") is None:
        return ()
    return (TestResult(name=str(ev.get("shown_by") or "fill"), description=str(ev.get("test") or ""),
                       effect=_number(ev.get("net_effect")), p_value=_number(ev.get("p_value")),
                       p_value_corrected=_number(ev.get("p_value_holm")), correction=_text(ev.get("correction")),
                       n=int(ev["n"]) if _number(ev.get("n")) is not None else None,
                       slice=Slice.from_json(ev.get("test_slice")), decision="shown"),)


def _legacy_headline(data: dict, tests: tuple[TestResult, ...]) -> str:
    subject = data.get("property") or data.get("region")
    where = Slice.from_json(data).words()
    test = f": {tests[0].sentence()}" if tests else ""
    return f"{where} depend on {subject}{test}"


@dataclass(frozen=True)
class Verdict:
    """The run's answer, the same three words for every task: `flagged` (at least one finding with
    intervention evidence), `clear` (every candidate tested and an effect of the policy's size ruled out, with
    an explainer and a model that can be judged), `cannot_judge` (the reasons say why: constant or chance
    predictions, degenerate maps, no explainer that passed its sanity check, too few images for the power
    promised, candidates left undecided). `not_tested` names what a 'clear' could have missed."""
    status: str
    reasons: tuple[str, ...] = ()
    not_tested: tuple[str, ...] = ()
    checks: tuple[CheckResult, ...] = ()

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"verdict {self.status!r} is not one of {STATUSES}")

    @property
    def label(self) -> str:
        return {"flagged": "Flagged", "clear": "Clear", "cannot_judge": "Cannot judge"}[self.status]

    @property
    def summary(self) -> str:
        """One sentence for a manager: what the verdict means for this run."""
        return {"flagged": "The model relies on at least one shortcut; the findings below show which and how "
                           "much.",
                "clear": "No shortcut found, and the audit could have seen one of the size it rules out; "
                         "see what it could not test.",
                "cannot_judge": "This audit cannot say whether the model uses a shortcut; the reasons say why "
                                "and what to change."}[self.status]

    def to_json(self) -> dict:
        return {"status": self.status, "reasons": list(self.reasons), "not_tested": list(self.not_tested),
                "checks": [c.to_json() for c in self.checks]}

    @classmethod
    def from_json(cls, data: dict | None) -> "Verdict | None":
        if not data:
            return None
        return cls(str(data["status"]), tuple(map(str, data.get("reasons") or [])),
                   tuple(map(str, data.get("not_tested") or [])),
                   tuple(CheckResult.from_json(c) for c in data.get("checks") or []))


@dataclass(frozen=True)
class RegionStat:
    """One row of the region table: a region's saliency share on a slice, with its interval."""
    region: str
    role: str | None
    slice: Slice
    mass_mean: float | None
    mass_ci: tuple[float | None, float | None] | None
    area_mean: float | None
    lift: float | None
    n: int | None
    lift_ci: tuple[float | None, float | None] | None = None

    @classmethod
    def from_json(cls, data: dict) -> "RegionStat":
        n = _number(data.get("n"))
        ci = _pair(data.get("mass_ci"))
        if ci is None and "mass_ci_low" in data:
            ci = (_number(data.get("mass_ci_low")), _number(data.get("mass_ci_high")))
        return cls(str(data["region"]), _text(data.get("role")), Slice.from_json(data),
                   _number(data.get("mass_mean")), ci, _number(data.get("area_mean")), _number(data.get("lift")),
                   None if n is None else int(n), _pair(data.get("lift_ci")))

    def to_json(self) -> dict:
        return {"region": self.region, "role": self.role, **self.slice.to_json(), "mass_mean": self.mass_mean,
                "mass_ci": list(self.mass_ci) if self.mass_ci else None, "area_mean": self.area_mean,
                "lift": self.lift, "lift_ci": list(self.lift_ci) if self.lift_ci else None, "n": self.n}


@dataclass(frozen=True)
class Report:
    """The typed view of a report dict: what every renderer needs, the same for every task. The dict itself
    stays the stored and exported form (`raw`), with the task's own sections beside these."""
    run: dict
    findings: tuple[Finding, ...]
    verdict: Verdict | None
    regions: tuple[RegionStat, ...]
    raw: dict

    @classmethod
    def from_json(cls, data: dict) -> "Report":
        return cls(run=dict(data.get("run") or {}),
                   findings=tuple(Finding.from_json(f) for f in data.get("flags") or []),
                   verdict=Verdict.from_json(data.get("verdict")),
                   regions=tuple(RegionStat.from_json(r) for r in data.get("regions") or [] if "region" in r),
                   raw=data)

    @property
    def method(self) -> str | None:
        return self.run.get("method")


def field_names(record: type) -> list[str]:
    return [f.name for f in fields(record)]


def findings_json(findings: Iterable[Finding]) -> list[dict]:
    return [f.to_json() for f in findings]


# --- records read by their field names ---------------------------------------------------------------------
def key(path: str | tuple[str, ...], default: Any = None) -> Any:
    """A `JsonRecord` field read from another JSON key than its name, or from a nested one (`("control",
    "flip_rate")`)."""
    return field(default=default, metadata={"key": path})


class JsonRecord:
    """A frozen dataclass read from a report's JSON by its annotations, once: numbers as finite floats or
    None, texts, pairs as intervals, nested records and tuples of them. A key that is missing (an older report)
    gives the field's default, so no reader needs a fallback of its own. `to_json` writes the same keys back."""

    @classmethod
    def from_json(cls, data: Any):
        data = data if isinstance(data, dict) else {}
        values = {}
        for name, hint, path, default in _schema(cls):
            value = _convert(hint, _at(data, path))
            values[name] = default() if value is None and default is not None else value
        return cls(**values)

    def to_json(self) -> dict:
        out: dict = {}
        for f in fields(self):
            path = f.metadata.get("key", f.name)
            path = (path,) if isinstance(path, str) else path
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = _plain(getattr(self, f.name))
        return out


@functools.cache
def _schema(record: type) -> tuple[tuple[str, Any, Any, Any], ...]:
    """(name, type, JSON key, default maker or None) of each field: read once per record class, not per row."""
    hints = get_type_hints(record)

    def default(f):
        if f.default_factory is not MISSING:
            return f.default_factory
        return None if f.default is MISSING or f.default is None else (lambda: f.default)

    return tuple((f.name, hints[f.name], f.metadata.get("key", f.name), default(f)) for f in fields(record))


def _at(data: dict, path: str | tuple[str, ...]) -> Any:
    for part in (path,) if isinstance(path, str) else path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _convert(hint, raw: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and isinstance(inner[0], type) and issubclass(inner[0], JsonRecord):
            return inner[0].from_json(raw) if raw else None
        return None if raw is None else _convert(inner[0], raw) if len(inner) == 1 else raw
    if hint is float:
        return as_number(raw)
    if hint is int:
        number = as_number(raw)
        return None if number is None else int(number)
    if hint is str:
        return as_text(raw)
    if hint is bool:
        return bool(raw) if isinstance(raw, (bool, int)) and not isinstance(raw, float) else None
    if hint is dict or origin is dict:
        return dict(raw) if isinstance(raw, dict) else None
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(args[0], item) for item in raw] if isinstance(raw, (list, tuple)) else []
            return tuple(item for item in items if item is not None)
        return as_pair(raw)
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_json(raw)
    return raw


def _plain(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class ParsedOnce:
    """`parse(data)` once per dict object: the views of a page each ask for the typed report, and the same
    dict is parsed once (a small cache keyed by the dict's identity; the dict is held so its id is not
    reused). Reports are not changed once built (`cached_report` gives a new dict per read), so the parse
    stays true. A record passed in (already typed) comes back as it is."""

    def __init__(self, parse, record_type: type, size: int = 16):
        self.parse, self.record_type, self.size = parse, record_type, size
        self._cache: dict[int, tuple[Any, Any]] = {}

    def __call__(self, data):
        if isinstance(data, self.record_type):
            return data
        hit = self._cache.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1]
        typed = self.parse(data)
        self._cache[id(data)] = (data, typed)
        while len(self._cache) > self.size:
            self._cache.pop(next(iter(self._cache)))
        return typed
