"""The checks registry (`analysis.evidence.checks`): each check declares the tasks and models it applies to, a task
runs what applies, and what does not comes back as "not judged" with its reason, which the verdict reads."""
import importlib

import numpy as np
import pandas as pd
import pytest

from analysis.evidence.checks import CHECKS, REPORT, Check, EvidenceContext, Subject, plan, run_checks
from analysis.report.records import NotJudged, not_judged
from analysis.report.trust import explainer_trust
from analysis.report.verdict import prediction_summary, run_verdict


def _names(checks):
    return [c.name if isinstance(c, Check) else c.check for c in checks]


def _reasons(subject):
    return {n.key: n.reason for n in plan(subject)[1]}


def test_every_runner_the_registry_names_exists():
    for check in CHECKS:
        for task, path in check.runners.items():
            if path == REPORT:
                continue
            module, _, function = path.partition(":")
            assert callable(getattr(importlib.import_module(module), function)), (check.name, task)


def test_a_classifier_with_weights_gets_every_check_but_the_opt_in_one():
    applies, left_out = plan(Subject("classification"))
    assert [c.key for c in applies] == ["interventions", "properties", "second_explainer", "sanity", "faithfulness",
                                        "power"]
    assert [(n.key, n.limits_verdict) for n in left_out] == [("region_shapley", False)]
    assert "region_shapley=N" in left_out[0].reason
    applies, left_out = plan(Subject("classification", wants={"region_shapley": 16}))
    assert "region_shapley" in [c.key for c in applies] and not left_out


def test_a_black_box_is_not_judged_for_randomisation_and_says_why():
    reasons = _reasons(Subject("classification", model_format="onnx", black_box=True))
    assert list(reasons) == ["sanity", "region_shapley"]
    assert reasons["sanity"] == "the model (onnx) is a black box: it has no weights to randomise"


def test_switches_and_one_class_samples_leave_property_interventions_out_with_the_reason():
    assert "properties=false" in _reasons(Subject("classification", wants={"properties": False}))["properties"]
    assert "one class only" in _reasons(Subject("classification", n_classes=1))["properties"]


@pytest.mark.parametrize("task", ["multilabel", "segmentation"])
def test_taggers_and_segmenters_get_the_trust_checks_and_are_told_what_they_lack(task):
    applies, left_out = plan(Subject(task))
    assert [c.key for c in applies] == ["interventions", "second_explainer", "sanity", "faithfulness", "power"]
    reasons = {n.key: n.reason for n in left_out}
    assert list(reasons) == ["properties", "region_shapley"]
    assert f"not available for {task} models" in reasons["properties"]


def test_a_detector_gets_the_full_battery_and_its_switches_say_so():
    applies, left_out = plan(Subject("detection", wants={"sanity_images": 4}))
    assert [c.key for c in applies] == ["interventions", "second_explainer", "sanity", "faithfulness", "power"]
    assert [n.key for n in left_out] == ["properties", "region_shapley"]
    reasons = _reasons(Subject("detection", region_masks=False, black_box=True, model_format="onnx",
                               wants={"sanity_images": 0}))
    assert reasons["interventions"] == reasons["second_explainer"] == "the dataset annotates no context regions to fill"
    assert reasons["sanity"].endswith("no weights to randomise")  # the first unmet need is the reason
    assert reasons["faithfulness"] == "switched off by the run parameter sanity_images=0"


def record_first(ctx):
    ctx.state["order"].append("first")
    return {"first": ctx.seed}


def record_second(ctx):
    ctx.state["order"].append("second")
    return {"second": ctx.state["order"][:]}


def test_run_checks_runs_what_applies_in_order_and_records_the_rest():
    here = __name__
    checks = (Check("first", "first", {"classification": f"{here}:record_first"}, stage="one"),
              Check("needs weights", "sanity", {"classification": f"{here}:record_second"},
                    needs=CHECKS[3].needs, stage="two"),
              Check("second", "second", {"classification": f"{here}:record_second"}, stage="three"),
              Check("detectors only", "other", {"detection": f"{here}:record_first"}))
    subject = Subject("classification", model_format="onnx", black_box=True)
    ctx = EvidenceContext(subject, None, None, None, "rise", {}, 7, 4, state={"order": []})
    stages = []
    out = run_checks(ctx, {"kept": 1}, stages.append, checks)
    assert out["first"] == 7 and out["second"] == ["first", "second"] and out["kept"] == 1
    assert stages == ["one", "three"]
    assert [n["key"] for n in out["not_judged"]] == ["sanity", "other"]
    assert out["not_judged"][1]["reason"] == "not available for classification models"


def _clear_report(**extra) -> dict:
    images = pd.DataFrame({"label": ["cat", "dog"] * 100, "pred": ["cat", "dog"] * 100})
    bounds = {key: [-0.02, 0.03] for key in ("fill_accuracy_drop", "swap_towards_donor", "swap_accuracy_drop")}
    return {"run": {"method": "rise"}, "metrics": {"n_images": 200}, "flags": [],
            "predictions": {**prediction_summary(images, "label", "pred"), "correct": 180},
            "interventions": {"patch": {"sequential": {"decision": "excluded", "n": 200, "bounds": bounds}}},
            "sanity": {}, **extra}


def test_the_verdict_reads_what_was_not_judged():
    subject = Subject("classification", model_format="onnx", black_box=True)
    report = _clear_report(not_judged=[n.to_json() for n in plan(subject)[1]])
    maps = np.random.default_rng(0).random((16, 8, 8))
    verdict = run_verdict(report, "classification", maps)
    assert verdict.status == "clear"  # a black box needs no randomisation to be judged
    sanity = {c.name: c for c in verdict.checks}["model randomisation"]
    assert sanity.status == "not_applicable" and sanity.detail == \
        "rise: the model (onnx) is a black box: it has no weights to randomise"
    assert "model randomisation: not judged (the model (onnx) is a black box: it has no weights to randomise)" \
        in verdict.not_tested
    assert not any("region Shapley" in line for line in verdict.not_tested)  # descriptive: no blind spot
    # without the record (a run from before the registry) the same report reads "not run"
    old = run_verdict(_clear_report(), "classification", maps)
    assert {c.name: c.status for c in old.checks}["model randomisation"] == "not_run"


def test_the_trust_page_names_what_was_not_judged():
    report = _clear_report(not_judged=[NotJudged("model randomisation", "sanity", "no weights").to_json()])
    (row,) = explainer_trust(report)
    assert row["method"] == "rise" and row["verdict"] == "not checked"
    assert row["checks"] == [{"name": "model randomisation", "passed": None, "text": "not judged: no weights"}]


def test_not_judged_records_round_trip():
    record = NotJudged("power", "power", "why", limits_verdict=True)
    assert not_judged({"not_judged": [record.to_json()]}) == (record,)
    assert record.sentence() == "power: not judged (why)"
