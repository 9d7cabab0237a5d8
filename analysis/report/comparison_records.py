"""A version comparison (`compare`, the Compare page) as typed records, read once.

Three producers write comparisons (`compare.compare_runs`, `detection_compare`, `target_compare`), with their
runs as names or as `{"name", "id"}` and their regions keyed by name or listed per target; the HTML report
and the dashboard read them here, through one record, instead of each probing the dict with `.get(`. The
JSON is unchanged (docs/FORMATS.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from analysis.report.records import JsonRecord, ParsedOnce, as_text, key


@dataclass(frozen=True)
class RunPoint(JsonRecord):
    """One version's attention on a region: share of saliency with its interval, lift."""
    run: str = ""
    mass_mean: float | None = None
    mass_ci: tuple[float | None, float | None] | None = None
    area_mean: float | None = None
    lift: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class MassChange(JsonRecord):
    """The change of a region's share of saliency from one version to the next, with its interval and p."""
    from_run: str = key("from", "")
    to_run: str = key("to", "")
    diff: float | None = None
    diff_ci: tuple[float | None, float | None] | None = None
    p_value: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class RegionSeries:
    """A region across versions (per target for taggers and segmenters): a point per version (None where
    that version has no such region) and the changes between successive versions."""
    region: str
    role: str | None
    target: str | None
    points: tuple[RunPoint | None, ...]
    changes: tuple[MassChange, ...]

    @classmethod
    def from_json(cls, region: str, data: dict, names: list[str], target_key: str | None = None) -> "RegionSeries":
        points = []
        for k, point in enumerate(data.get("runs") or []):
            if isinstance(point, dict):
                run = point.get("run") or (names[k] if k < len(names) else "")
                points.append(RunPoint.from_json({**point, "run": run}))
            else:
                points.append(None)
        return cls(str(region), as_text(data.get("role")), as_text(data.get(target_key)) if target_key else None,
                   tuple(points), tuple(MassChange.from_json(c) for c in data.get("changes") or []))

    @property
    def label(self) -> str:
        return f"{self.target} / {self.region}" if self.target is not None else self.region


@dataclass(frozen=True)
class MapSimilarity(JsonRecord):
    from_run: str = key("from", "")
    to_run: str = key("to", "")
    n: int | None = None
    spearman: float | None = None
    topk_iou: float | None = None


@dataclass(frozen=True)
class AccuracyRow(JsonRecord):
    """A version's accuracy on a slice (whole sample, a class, a subgroup) with its Wilson interval."""
    run: str = ""
    target: str | None = key("class")
    group: str | None = None
    n: int | None = None
    correct: int | None = None
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class ContextRow(JsonRecord):
    """A detector version's context fill of one (class, region), flagged or not."""
    run: str = ""
    target: str = key("class", "")
    region: str = ""
    score_drop: float | None = None
    control_drop: float | None = None
    excess_drop: float | None = None
    excess_drop_ci: tuple[float | None, float | None] | None = None
    flagged: bool = False
    severity: str | None = None


@dataclass(frozen=True)
class RecallRow(JsonRecord):
    run: str = ""
    target: str = key("class", "")
    recall: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_objects: int | None = None


@dataclass(frozen=True)
class TargetEffect(JsonRecord):
    """A tagger's or segmenter's version: a (target, region) fill's excess drop beyond its control."""
    excess_drop: float | None = None
    excess_drop_ci: tuple[float | None, float | None] | None = None
    p_value: float | None = None
    n: int | None = None
    flagged: bool = False


@dataclass(frozen=True)
class TargetEffectSeries:
    target: str
    region: str
    effects: tuple[TargetEffect | None, ...]


@dataclass(frozen=True)
class Comparison:
    """What every comparison view reads: the versions in order, the summary, each region's series, and
    the task's own rows (accuracy, map similarity; detectors' context fills, per-class series and recall;
    taggers' and segmenters' per-target effects, `target_key` naming the target: "tag" or "class")."""
    task: str | None = None
    runs: tuple[str, ...] = ()
    summary: str = ""
    regions: tuple[RegionSeries, ...] = ()
    map_similarity: tuple[MapSimilarity, ...] = ()
    accuracy: tuple[AccuracyRow, ...] = ()
    flagged: dict = field(default_factory=dict)
    context: tuple[ContextRow, ...] = ()
    classes: tuple[tuple[str, tuple[RegionSeries, ...]], ...] = ()
    recall: tuple[RecallRow, ...] = ()
    target_key: str | None = None
    effects: tuple[TargetEffectSeries, ...] = ()

    @classmethod
    def from_json(cls, data: dict) -> "Comparison":
        data = data if isinstance(data, dict) else {}
        names = [str(r.get("name")) if isinstance(r, dict) else str(r) for r in data.get("runs") or []]
        target_key = as_text(data.get("target"))

        def series(regions) -> tuple[RegionSeries, ...]:
            if isinstance(regions, dict):
                return tuple(RegionSeries.from_json(name, entry, names) for name, entry in regions.items())
            return tuple(RegionSeries.from_json(entry.get("region"), entry, names, target_key)
                         for entry in regions or [] if isinstance(entry, dict))

        effects = tuple(TargetEffectSeries(str(entry.get(target_key)), str(entry.get("region")), tuple(
            TargetEffect.from_json(run) if isinstance(run, dict) else None for run in entry.get("runs") or []))
            for entry in data.get("interventions") or [] if target_key and isinstance(entry, dict))
        return cls(task=as_text(data.get("task")), runs=tuple(names), summary=str(data.get("summary") or ""),
                   regions=series(data.get("regions")),
                   map_similarity=tuple(MapSimilarity.from_json(s) for s in data.get("map_similarity") or []),
                   accuracy=tuple(AccuracyRow.from_json(a) for a in data.get("accuracy") or []),
                   flagged={str(name): tuple(map(str, regions or []))
                            for name, regions in (data.get("flagged") or {}).items()},
                   context=tuple(ContextRow.from_json(c) for c in data.get("context") or []),
                   classes=tuple((str(name), series(regions)) for name, regions in (data.get("classes") or {}).items()),
                   recall=tuple(RecallRow.from_json(r) for r in data.get("recall") or []),
                   target_key=target_key, effects=effects)

    def flagged_in(self, run: str) -> tuple[str, ...]:
        """What the version's audit flagged (regions or properties), empty when nothing."""
        return self.flagged[run] if run in self.flagged else ()

    def class_regions(self, target: str) -> tuple[RegionSeries, ...]:
        return next((regions for name, regions in self.classes if name == target), ())


# The typed view of a comparison dict, parsed once per dict object.
read_comparison = ParsedOnce(Comparison.from_json, Comparison, size=8)
