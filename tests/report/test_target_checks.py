"""A tagger's or segmenter's finding carries the classifier's trust checks on its own target, and a failed or
missing check lowers it as the classifier's rule does (`analysis.report.tag_report.shortcut_flags`)."""
import pytest

from analysis.report.tag_report import shortcut_flags

# boat / water: 40 of 100 boats lost their tag under the water fill, 2 under the control fill
RECORD = {"tag": "boat", "region": "water", "excess_drop": 0.38, "excess_drop_ci": [0.27, 0.49], "p_value": 1e-9,
          "n": 100, "control_kind": "equal-area", "drop": 0.4, "control_drop": 0.02}
CAR = {**RECORD, "tag": "car", "excess_drop": 0.01, "excess_drop_ci": [-0.03, 0.05], "p_value": 0.6}


def evidence(boat_lift, sanity=True):
    regions = {"water": {"lift": boat_lift, "lift_ci": [boat_lift - 0.2, boat_lift + 0.2]}}
    return {"second_explainer": {"method": "saliency", "n": 32,
                                 "targets": {"boat": regions, "car": {"water": {"lift": 2.0}}}},
            "sanity": {"model_randomization": {"method": "gradcam", "passed": sanity, "similarity": 0.05}}}


def checks_of(flag):
    return {c["name"]: c for c in flag["checks"]}


def test_a_finding_whose_checks_pass_keeps_its_severity_and_high_confidence():
    (flag,) = shortcut_flags([RECORD, CAR], {}, "tag", evidence(1.8))
    checks = checks_of(flag)
    assert checks["second explainer"]["status"] == "passed" and checks["second explainer"]["value"] == 1.8
    assert "water" in checks["second explainer"]["detail"] and "saliency" in checks["second explainer"]["detail"]
    assert checks["model randomisation"]["status"] == "passed"
    assert (flag["severity"], flag["confidence"], flag["reasons"]) == ("high", "high", [])
    assert flag["evidence"]["second_explainer_lift"] == 1.8


@pytest.mark.parametrize("lift, sanity, failed", [(0.7, True, "second explainer"), (1.8, False, "model randomisation")])
def test_a_failed_check_lowers_the_finding_to_low_confidence(lift, sanity, failed):
    (flag,) = shortcut_flags([RECORD, CAR], {}, "tag", evidence(lift, sanity))
    assert checks_of(flag)[failed]["status"] == "failed"
    assert flag["confidence"] == "low" and flag["severity"] == "medium"  # 38 points: high, one level lower
    assert len(flag["reasons"]) == 1


def test_without_the_evidence_of_a_second_explainer_the_check_says_not_run():
    (flag,) = shortcut_flags([RECORD], {}, "tag", {"sanity": evidence(1.8)["sanity"]})
    assert checks_of(flag)["second explainer"]["status"] == "not_run"
    assert flag["confidence"] == "low"
