"""The evidence checks as plug-ins: each declared once, with the tasks and models it applies to, and the one judge
(`analysis.report.verdict`) reads what they return and what they could not judge.

Why a registry: each task used to hard-code its own list (the classifier's evidence stage ran sanity, second
explainer, faithfulness, properties and region Shapley in a row; the tagger and segmenter ran three of them; the
detector two), so a check missing for a task was silently absent from its report. Here a check declares, as
Quantus metrics declare their data and model applicability, which tasks it has a runner for and what it needs
of the model and the data (sanity needs weights to randomise; region Shapley needs to be asked for; property
interventions need a classifier's images of several classes). A task's evidence asks `plan` what applies and
runs it in the declared order (`run_checks`); everything that does not apply comes back as a `NotJudged` record
with its reason, which the report carries (`not_judged`) and the verdict's "what was not tested" reads.

Runners are named as "module:function" and imported when a check runs: the registry is pure data, cheap for the
report's process to read, and no runner module imports it back (no import cycle). A runner takes the
`EvidenceContext` and returns the evidence keys it fills (e.g. {"sanity": {...}}).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from analysis.report.records import NotJudged

TASKS = ("classification", "multilabel", "segmentation", "detection")


@dataclass(frozen=True)
class Subject:
    """What the checks' needs are judged on: the task, the model (a black box has no weights), the data (annotated
    region masks, how many classes the sample holds) and the run's own switches (`wants`: properties on or off,
    the number of region-Shapley images asked for, the detector's sanity images)."""
    task: str
    model_format: str = "pt2"
    black_box: bool = False
    region_masks: bool = True
    n_classes: int = 2
    wants: Mapping[str, Any] = field(default_factory=dict)


def has_weights(module) -> bool:
    """Whether a model exposes parameters to randomise (an ONNX black box, or a graph without any, does not)."""
    return any(True for _ in module.parameters())


@dataclass(frozen=True)
class Need:
    """A condition a check needs of the subject, and the reason given (with the subject's fields) when it fails."""
    met: Callable[[Subject], bool]
    reason: str

    def unmet(self, subject: Subject) -> str | None:
        return None if self.met(subject) else self.reason.format(task=subject.task, format=subject.model_format,
                                                                  **dict(subject.wants))


WEIGHTS = Need(lambda s: not s.black_box, "the model ({format}) is a black box: it has no weights to randomise")
CONTEXT_REGIONS = Need(lambda s: s.task != "detection" or s.region_masks,  # the others fall back to grid regions
                       "the dataset annotates no context regions to fill")
SEVERAL_CLASSES = Need(lambda s: s.n_classes > 1, "the evidence sample holds one class only: no other class's "
                                                  "images to move towards it")
PROPERTIES_ON = Need(lambda s: s.wants.get("properties", True) is not False,
                     "switched off by the run parameter properties=false")
SHAPLEY_ASKED = Need(lambda s: int(s.wants.get("region_shapley", 0) or 0) > 0,
                     "not asked for (run parameter region_shapley=N computes it on N images)")
DETECTION_SAMPLE = Need(lambda s: s.task != "detection" or int(s.wants.get("sanity_images", 1) or 0) > 0,
                        "switched off by the run parameter sanity_images=0")


@dataclass(frozen=True)
class Check:
    """One check: `name` in words, `key` the evidence / report key it fills, `runners` task -> "module:function"
    (the tasks it applies to), `needs` what it asks of the model and data, `elsewhere` the reason given for a task
    it has no runner for, `stage` the progress line a person watches while it runs (None: computed by the report
    from the evidence, not by a runner), and `limits_verdict` whether a "clear" verdict is blind where it is not
    judged (False for descriptive checks such as region Shapley)."""
    name: str
    key: str
    runners: Mapping[str, str]
    needs: tuple[Need, ...] = ()
    elsewhere: str = "not available for {task} models"
    stage: str | None = None
    limits_verdict: bool = True

    def reason_not_judged(self, subject: Subject) -> str | None:
        """None when the check applies to `subject`, else why not."""
        if subject.task not in self.runners:
            return self.elsewhere.format(task=subject.task)
        return next((r for r in (need.unmet(subject) for need in self.needs) if r), None)

    def runner(self, task: str) -> Callable[["EvidenceContext"], dict] | None:
        path = self.runners.get(task)
        if not path or path == REPORT:
            return None
        module, _, function = path.partition(":")
        return getattr(importlib.import_module(module), function)


REPORT = "report"  # a runner that is the report's own computation over the stored evidence (no model needed)
_STAGE = "analysis.evidence.stage"
_DETECTION = "analysis.runs.tasks.detection"
_PER_TARGET = "analysis.evidence.target_checks"

CHECKS: tuple[Check, ...] = (
    Check("interventions (fill and swap against controls)", "interventions",
          {"classification": f"{_STAGE}:run_interventions", "multilabel": f"{_PER_TARGET}:run_tag_interventions",
           "segmentation": f"{_PER_TARGET}:run_segment_interventions",
           "detection": f"{_DETECTION}:run_interventions"},
          needs=(CONTEXT_REGIONS,), stage="interventions"),
    Check("image properties (blur, brightness, colour cast, noise) as cues", "properties",
          {"classification": f"{_STAGE}:run_properties"}, needs=(PROPERTIES_ON, SEVERAL_CLASSES),
          elsewhere="image-property interventions move a classifier's answers; not available for {task} models",
          stage="image properties"),
    Check("second explainer", "second_explainer",
          {"classification": f"{_STAGE}:run_second_explainer",
           "multilabel": f"{_PER_TARGET}:run_second_explainer", "segmentation": f"{_PER_TARGET}:run_second_explainer",
           "detection": f"{_DETECTION}:run_second_explainer"},
          needs=(CONTEXT_REGIONS,), stage="second explainer"),
    Check("model randomisation", "sanity",
          {"classification": f"{_STAGE}:run_sanity", "multilabel": f"{_PER_TARGET}:run_sanity",
           "segmentation": f"{_PER_TARGET}:run_sanity", "detection": f"{_DETECTION}:run_sanity"},
          needs=(WEIGHTS, DETECTION_SAMPLE), stage="sanity"),
    Check("faithfulness", "faithfulness",
          {"classification": f"{_STAGE}:run_faithfulness", "multilabel": f"{_PER_TARGET}:run_faithfulness",
           "segmentation": f"{_PER_TARGET}:run_faithfulness", "detection": f"{_DETECTION}:run_faithfulness"},
          needs=(DETECTION_SAMPLE,), stage="faithfulness"),
    Check("power", "power", {task: REPORT for task in TASKS}),  # every task's report bounds each unflagged test
    Check("region Shapley", "region_shapley", {"classification": f"{_STAGE}:run_region_shapley"},
          needs=(SHAPLEY_ASKED,), elsewhere="region Shapley values are computed for classifiers only",
          stage="region Shapley", limits_verdict=False),
)


def plan(subject: Subject, checks: tuple[Check, ...] = CHECKS) -> tuple[list[Check], list[NotJudged]]:
    """(the checks that apply to `subject`, in declared order; a `NotJudged` for each one that does not)."""
    applies, not_judged = [], []
    for check in checks:
        reason = check.reason_not_judged(subject)
        if reason is None:
            applies.append(check)
        else:
            not_judged.append(NotJudged(check.name, check.key, reason, check.limits_verdict))
    return applies, not_judged


@dataclass
class EvidenceContext:
    """What a runner reads: the loaded model, the dataset, the run store, the run's method, explainer parameters
    and seed, the task's own settings (`options`), and `state`, where an earlier check leaves what a later one
    reuses (the classifier's evidence sample and its candidate masks; the detector's sanity images)."""
    subject: Subject
    loaded: Any
    dataset: Any
    store: Any
    method: str
    params: dict
    seed: int
    batch_size: int
    layer_name: str | None = None
    options: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


def run_checks(context: EvidenceContext, out: dict, on_stage: Callable[[str], None] | None = None,
               checks: tuple[Check, ...] = CHECKS) -> dict:
    """Run every check that applies to the context's subject into `out` (the evidence dict, with the task's
    empty defaults), in declared order, and record the others under `out["not_judged"]`."""
    on_stage = on_stage or (lambda name: None)
    applies, not_judged = plan(context.subject, checks)
    for check in applies:
        runner = check.runner(context.subject.task)
        if runner is None:
            continue
        if check.stage and check.key != "interventions":  # the task announces its interventions itself
            on_stage(check.stage)
        out.update(runner(context))
    out["not_judged"] = [n.to_json() for n in not_judged]
    return out
