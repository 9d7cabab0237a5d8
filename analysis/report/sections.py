"""The report's task sections as typed records, read once: what the HTML report and the dashboard show
beside the findings and the verdict (`analysis.report.records`).

Why: each renderer probed the report dict with `.get(` and a fallback of its own, so an older report (a key
missing) rendered differently in the HTML and the dashboard, and a renamed key failed silently. Here every
section a renderer reads has one record whose parser holds the defaults; `read_report` parses a report dict
once (the same dict object is parsed once however many views ask) and every renderer reads attributes.
The JSON contract is unchanged: docs/FORMATS.md names each record's keys (tests/report/test_records.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from analysis.report.records import (Finding, JsonRecord, NotJudged, ParsedOnce, RegionStat, Report, as_text, key,
                                     not_judged)


# --- the run and its metrics ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef(JsonRecord):
    name: str = ""
    version: str | None = None
    sha256: str = ""


@dataclass(frozen=True)
class DatasetRef(JsonRecord):
    name: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class RunInfo(JsonRecord):
    """`run`: what was audited, how."""
    id: str | None = None
    name: str | None = None
    task: str | None = None
    method: str | None = None
    params: dict = field(default_factory=dict)
    n_images: int | None = None
    seed: int | None = None
    model: ModelRef = field(default_factory=ModelRef)
    dataset: DatasetRef = field(default_factory=DatasetRef)

    @property
    def title(self) -> str:
        return self.name or self.id or "run"


@dataclass(frozen=True)
class Budget(JsonRecord):
    """An early-stopping explainer's per-image budget (`metrics.masks_used` / `windows_used`)."""
    median: float | None = None
    p90: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ClassRecall(JsonRecord):
    """A detected class's recall (`metrics.recall[class]`) with its interval."""
    target: str = ""
    recall: float | None = None
    ci: tuple[float | None, float | None] | None = None
    n_objects: int = 0
    n_detections: int = 0


@dataclass(frozen=True)
class Metrics(JsonRecord):
    """`metrics`: accuracy (classifiers, taggers' exact sets), mean IoU (segmenters), detections and recall
    (detectors), the explainer's budget."""
    accuracy: float | None = None
    mean_iou: float | None = None
    masks_used: Budget | None = None
    windows_used: Budget | None = None
    n_detections_total: int = 0
    recall_overall: float | None = None
    recall: tuple[ClassRecall, ...] = ()

    @classmethod
    def from_json(cls, data) -> "Metrics":
        data = data if isinstance(data, dict) else {}
        plain = super().from_json({k: v for k, v in data.items() if k != "recall"})
        counts = data.get("n_detections") or {}
        recall = tuple(ClassRecall.from_json({**(entry or {}), "target": target, "n_detections": counts.get(target)})
                       for target, entry in (data.get("recall") or {}).items())
        return cls(**{**plain.__dict__, "recall": recall})

    def budgets(self) -> list[tuple[str, Budget]]:
        return [(name, budget) for name, budget in (("masks used", self.masks_used),
                                                    ("windows used", self.windows_used)) if budget is not None]

    def recall_of(self, target: str) -> ClassRecall:
        return next((r for r in self.recall if r.target == target), ClassRecall(target=target))


# --- people's labels, notes, skipped images --------------------------------------------------------------
@dataclass(frozen=True)
class Label(JsonRecord):
    """A person's label on a region (`labels`), re-checked on this run; `text` says it in words."""
    region: str = ""
    verdict: str = ""
    text: str = ""
    note: str | None = None


@dataclass(frozen=True)
class Skipped(JsonRecord):
    image: str = ""
    reason: str = "unknown reason"


@dataclass(frozen=True)
class Cluster(JsonRecord):
    """A SpRAy attention strategy of one class (`clusters`)."""
    target: str = key("class", "")
    cluster: int | None = None
    size: int | None = None
    share: float | None = None
    distance: float | None = None
    top_region: str = key(("top_region", "region"), "")
    exemplars: tuple[int, ...] = ()


# --- explainer checks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SanityStage(JsonRecord):
    layer: str = ""
    n_randomised: int | None = None
    spearman_abs: float | None = None
    spearman: float | None = None
    ssim: float | None = None


@dataclass(frozen=True)
class SanityCheck(JsonRecord):
    """One sanity check (`sanity[name]`; today `model_randomization`): `passed` None when not judged."""
    name: str = ""
    method: str | None = None
    n: int | None = None
    threshold: float | None = None
    similarity: float | None = None
    final_similarity: float | None = None
    ssim: float | None = None
    passed: bool | None = None
    criterion: str = ""
    stages: tuple[SanityStage, ...] = ()

    @property
    def outcome(self) -> str:
        return {True: "passed", False: "failed"}.get(self.passed, "not judged")


@dataclass(frozen=True)
class Faithfulness(JsonRecord):
    """`faithfulness`: deletion and insertion AUCs of the maps' pixel order against a random order."""
    method: str | None = None
    deletion_auc: float | None = None
    random_deletion_auc: float | None = None
    insertion_auc: float | None = None
    random_insertion_auc: float | None = None


@dataclass(frozen=True)
class SecondLift(JsonRecord):
    """One region's lift under the second explainer (`second_explainer.regions[region]`)."""
    region: str = ""
    lift: float | None = None


@dataclass(frozen=True)
class SecondExplainer(JsonRecord):
    """`second_explainer`: the explainer of another family that cross-checks the flags, and its lifts."""
    method: str | None = None
    n: int | None = None
    lifts: tuple[SecondLift, ...] = ()

    @classmethod
    def read(cls, data: dict | None) -> "SecondExplainer | None":
        if not isinstance(data, dict) or not data.get("method"):
            return None
        regions = data.get("regions") if isinstance(data.get("regions"), dict) else {}
        return cls(as_text(data.get("method")), data.get("n") if isinstance(data.get("n"), int) else None,
                   tuple(SecondLift.from_json({**(entry or {}), "region": region}) for region, entry in regions.items()
                         if isinstance(entry, dict)))


# --- a classifier's interventions, power, discovered regions -------------------------------------------------
@dataclass(frozen=True)
class RegionIntervention(JsonRecord):
    """Fill and swap of one region (`interventions[region]`), each beside its control, and the sequential
    sample's decision."""
    region: str = ""
    n: int | None = key(("sequential", "n"))
    n_all: int | None = key("n")
    n_fill: int | None = key(("sequential", "n_fill"))
    n_swap: int | None = key(("sequential", "n_swap"))
    decision: str = key(("sequential", "decision"), "")
    accuracy_drop: float | None = None
    control_accuracy_drop: float | None = key(("control", "accuracy_drop"))
    flip_rate: float | None = None
    control_flip_rate: float | None = key(("control", "flip_rate"))
    p_value: float | None = None
    swap_towards_donor: float | None = key(("swap", "towards_donor_rate"))
    swap_control_towards_donor: float | None = key(("swap", "control", "towards_donor_rate"))
    swap_accuracy_drop: float | None = key(("swap", "accuracy_drop"))
    swap_p_value: float | None = key(("swap", "p_value"))

    @property
    def images(self) -> str | int | None:
        """The images tested: one number, or "98 filled, 100 swapped" when the two samples differ."""
        if self.n_fill is not None and self.n_fill != self.n_swap:
            return f"{self.n_fill} filled, {self.n_swap} swapped"
        return self.n if self.n is not None else self.n_all


@dataclass(frozen=True)
class SequentialDesign(JsonRecord):
    design: str = ""
    bounds: str = ""
    chunk: int | None = None
    cap: int | None = None


@dataclass(frozen=True)
class MultipleTesting(JsonRecord):
    method: str = ""
    n_tests: int | None = None
    family: str = ""
    alpha: float | None = None

    def sentence(self) -> str | None:
        """The correction in words, the same in the HTML report and the dashboard; None when none is recorded."""
        if not self.method:
            return None
        return (f"Multiple testing: {self.method} over {self.n_tests} tests "
                f"({self.family or 'all tests of the run'}), family-wise error at most {self.alpha}.")


@dataclass(frozen=True)
class PowerStatement(JsonRecord):
    """What an unflagged candidate's test could have detected (`power`), in words."""
    region: str = ""
    text: str = ""


@dataclass(frozen=True)
class DiscoveredRegion(JsonRecord):
    """A salient component found in the maps (`discovered_regions`)."""
    name: str = ""
    description: str = ""
    share: float | None = None
    lift: float | None = key(("attention", "lift"))
    lift_ci: tuple[float | None, float | None] | None = key(("attention", "lift_ci"))
    exemplars: tuple[int, ...] = ()
    image_ids: tuple[int, ...] = ()
    n_images: int | None = None


# --- detectors, taggers and segmenters -----------------------------------------------------------------------
@dataclass(frozen=True)
class ContextIntervention(JsonRecord):
    """A detector's context fill of one (class, region) against an equal-area fill (`detection.interventions`)."""
    target: str = key("class", "")
    region: str = ""
    score_drop: float | None = None
    control_drop: float | None = None
    excess_drop: float | None = None
    excess_drop_ci: tuple[float | None, float | None] | None = None
    recall_before: float | None = None
    recall_after: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class DetectionSection(JsonRecord):
    """`detection`: the detected classes, the context regions, every context fill."""
    classes: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    interventions: tuple[ContextIntervention, ...] = ()


@dataclass(frozen=True)
class TargetIntervention(JsonRecord):
    """A tagger's (tag) or segmenter's (class) fill of one region against an equal-area fill."""
    target: str = ""
    region: str = ""
    n: int | None = None
    drop: float | None = None
    control_drop: float | None = None
    excess_drop: float | None = None
    excess_drop_ci: tuple[float | None, float | None] | None = None
    flip_rate: float | None = None
    control_flip_rate: float | None = None
    p_value: float | None = None
    iou_before: float | None = None
    iou_after: float | None = None
    iou_control: float | None = None


@dataclass(frozen=True)
class TargetSection:
    """`multilabel` / `segmentation`: the targets (tags or classes) and every fill, the target under `key`."""
    key: str
    names: tuple[str, ...] = ()
    interventions: tuple[TargetIntervention, ...] = ()

    @classmethod
    def from_json(cls, data, key_: str) -> "TargetSection":
        data = data if isinstance(data, dict) else {}
        names = data.get("tags" if key_ == "tag" else "classes") or []
        return cls(key_, tuple(str(n) for n in names),
                   tuple(TargetIntervention.from_json({**row, "target": row.get(key_)})
                         for row in data.get("interventions") or [] if isinstance(row, dict)))


TARGET_SECTIONS = {"multilabel": "tag", "segmentation": "class"}


# --- a finding's detailed numbers (the flags tables) ---------------------------------------------------------
@dataclass(frozen=True)
class FlagEvidence(JsonRecord):
    """The task's detailed numbers of a finding (`flags[].evidence`) that the flags tables show."""
    flip_rate: float | None = None
    control_flip_rate: float | None = None
    accuracy_drop: float | None = None
    p_value: float | None = None
    shown_by: str | None = None
    p_value_holm: float | None = None
    second_explainer: str | None = None
    second_explainer_lift: float | None = None
    sanity_passed: bool | None = None
    mass_outside: float | None = None
    score_drop: float | None = None
    control_drop: float | None = None
    excess_drop_ci: tuple[float | None, float | None] | None = None
    recall_before: float | None = None
    recall_after: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class FlagRow:
    """A finding with its detailed numbers and, for a discovered region, its description."""
    finding: Finding
    evidence: FlagEvidence
    description: str | None

    @classmethod
    def from_json(cls, data: dict, finding: Finding | None = None) -> "FlagRow":
        """`finding`: the flag already read as a Finding (the report's `findings`), not parsed again."""
        return cls(finding or Finding.from_json(data), FlagEvidence.from_json(data.get("evidence")),
                   as_text(data.get("description")))


# --- the whole report ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportView(Report):
    """A report as every renderer reads it: the findings, verdict and regions (`Report`) and each section."""
    meta: RunInfo = field(default_factory=RunInfo)
    metrics: Metrics = field(default_factory=Metrics)
    flag_rows: tuple[FlagRow, ...] = ()
    labels: tuple[Label, ...] = ()
    subgroups: tuple[str, ...] = ()
    artifacts: str | None = None
    skipped: tuple[Skipped, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    sanity: tuple[SanityCheck, ...] = ()
    faithfulness: Faithfulness | None = None
    second_explainer: SecondExplainer | None = None
    not_judged: tuple[NotJudged, ...] = ()
    interventions: tuple[RegionIntervention, ...] = ()
    sequential: SequentialDesign | None = None
    multiple_testing: MultipleTesting | None = None
    power: tuple[PowerStatement, ...] = ()
    discovered: tuple[DiscoveredRegion, ...] = ()
    detection: DetectionSection = field(default_factory=DetectionSection)
    targets: TargetSection | None = None

    @classmethod
    def from_json(cls, data: dict) -> "ReportView":
        base = Report.from_json(data)
        task = next((name for name in TARGET_SECTIONS if isinstance(data.get(name), dict)), None)
        return cls(
            run=base.run, findings=base.findings, verdict=base.verdict, regions=base.regions, raw=data,
            meta=RunInfo.from_json(data.get("run")), metrics=Metrics.from_json(data.get("metrics")),
            flag_rows=tuple(FlagRow.from_json(flag, finding) for flag, finding in zip(data.get("flags") or [],
                                                                                      base.findings)),
            labels=tuple(Label.from_json(label) for label in data.get("labels") or []),
            subgroups=tuple(str(s.get("text") or "") for s in data.get("subgroups") or [] if isinstance(s, dict)),
            artifacts=as_text((data.get("artifacts") or {}).get("text")),
            skipped=tuple(Skipped.from_json(s) for s in data.get("skipped") or []),
            clusters=tuple(Cluster.from_json(c) for c in data.get("clusters") or []),
            sanity=tuple(SanityCheck.from_json({**result, "name": name})
                         for name, result in (data.get("sanity") or {}).items() if isinstance(result, dict) and result),
            faithfulness=Faithfulness.from_json(data["faithfulness"]) if data.get("faithfulness") else None,
            second_explainer=SecondExplainer.read(data.get("second_explainer")),
            not_judged=not_judged(data),
            interventions=tuple(RegionIntervention.from_json({**(iv or {}), "region": region})
                                for region, iv in (data.get("interventions") or {}).items())
            if isinstance(data.get("interventions"), dict) else (),
            sequential=SequentialDesign.from_json(data["sequential"]) if data.get("sequential") else None,
            multiple_testing=(MultipleTesting.from_json(data["multiple_testing"]) if data.get("multiple_testing")
                              else None),
            power=tuple(p for p in (PowerStatement.from_json(p) for p in data.get("power") or []) if p.text),
            discovered=tuple(DiscoveredRegion.from_json(d) for d in data.get("discovered_regions") or []),
            detection=DetectionSection.from_json(data.get("detection")),
            targets=TargetSection.from_json(data[task], TARGET_SECTIONS[task]) if task else None)

    @property
    def model_randomization(self) -> SanityCheck | None:
        return next((s for s in self.sanity if s.name == "model_randomization"), None)

    def overall_regions(self) -> list[RegionStat]:
        """The whole sample's rows (no class, no subgroup)."""
        return [r for r in self.regions if r.slice.target is None and r.slice.group is None]

    def overall_lift(self, region: str) -> float | None:
        return next((r.lift for r in self.overall_regions() if r.region == region), None)

    def legitimate_regions(self) -> set[str]:
        """Regions a person labelled legitimate: their findings are not open."""
        return {label.region for label in self.labels if label.verdict == "legitimate"}

    def open_findings(self) -> list[Finding]:
        legitimate = self.legitimate_regions()
        return [f for f in self.findings if f.region not in legitimate]

    def intervention(self, region: str) -> RegionIntervention | None:
        return next((iv for iv in self.interventions if iv.region == region), None)

    def power_of(self, region: str) -> str | None:
        return next((p.text for p in self.power if p.region == region), None)

    def flag_on(self, region: str) -> FlagRow | None:
        return next((row for row in self.flag_rows if row.finding.region == region), None)

    def discovered_verdict(self, name: str) -> tuple[str, str]:
        """(flagged in short, the verdict in words) of a discovered region, for the HTML and the dashboard:
        flagged by which test (Holm-corrected), or not flagged and what its test could have detected."""
        flag = self.flag_on(name)
        if flag is None:
            power = self.power_of(name)
            return "no", "not flagged" + (f": {power}" if power is not None else "")
        severity, ev = flag.finding.severity, flag.evidence
        shown_by = ev.shown_by or "intervention"
        holm = f"Holm p {ev.p_value_holm:.2g}" if ev.p_value_holm is not None else None
        return (f"yes ({severity}" + (f", {shown_by}, {holm})" if holm else ")"),
                f"flagged ({severity})" + (f": shown by the {shown_by}, {holm}" if holm else ""))


# The typed view of a report dict, parsed once per dict object (a page's views share it).
read_report = ParsedOnce(ReportView.from_json, ReportView, size=16)
