"""The run verdict (`analysis.report.verdict`): flagged, clear or cannot judge, from the report's numbers.

Hand-built reports and maps, so each rule is tested on its own; tests/report/test_verdict_models.py runs the
same rules end to end on models built to be broken."""
import numpy as np
import pandas as pd
import pytest

from analysis.report.records import CheckResult, Finding, Slice, TestResult, Verdict
from analysis.report.verdict import (MIN_IMAGES, maps_check, prediction_summary, run_verdict)

RNG = np.random.default_rng(0)
GOOD_MAPS = RNG.random((16, 8, 8)).astype(np.float16)


def _finding(decision="shown") -> dict:
    test = TestResult(name="swap", description="d", effect=0.4, interval=(0.3, 0.5), p_value=1e-6,
                      p_value_corrected=1e-5, correction="Holm", n=200, slice=Slice("dog"), decision=decision)
    return Finding(kind="shortcut", subject="cage", slice=Slice("dog"), severity="high", confidence="high",
                   headline="Predictions of class dog depend on cage", effect=0.4, tests=(test,)).to_json()


def _report(*, flags=(), correct=180, n=200, majority=0.5, distinct=2, sanity=True, decisions=("excluded",)):
    images = pd.DataFrame({"label": ["cat", "dog"] * (n // 2),
                           "pred": (["cat", "dog"] * (n // 2)) if distinct > 1 else ["cat"] * n})
    summary = prediction_summary(images, "label", "pred")
    summary.update(correct=correct, majority=majority)
    return {"run": {"method": "gradcam"}, "metrics": {"n_images": n}, "flags": list(flags), "predictions": summary,
            "sanity": {"model_randomization": {"method": "gradcam", "passed": sanity, "similarity": 0.1}},
            "interventions": {f"r{i}": _sequential(d) for i, d in enumerate(decisions)}}


def _sequential(decision: str) -> dict:
    """A region's sequential sample: its upper bounds 4 points (excluded), 20 (undecided), or shown."""
    upper = {"excluded": 0.04, "undecided": 0.2, "shown": 0.5}[decision]
    bounds = {key: [upper - 0.1, upper] for key in ("fill_accuracy_drop", "swap_towards_donor",
                                                    "swap_accuracy_drop")}
    return {"sequential": {"decision": decision, "n": 200, "bounds": bounds}}


def test_a_clean_model_with_every_candidate_ruled_out_is_clear():
    verdict = run_verdict(_report(), "classification", GOOD_MAPS)
    assert verdict.status == "clear", verdict
    assert verdict.reasons == ("r0: its fill and swap change at most 4% of predictions (n = 200): effects of 10% or "
                               "more ruled out",)
    assert any("core region" in line for line in verdict.not_tested)
    assert {c.name: c.status for c in verdict.checks} == {"predictions": "passed", "usable images": "passed",
                                                            "maps": "passed", "model randomisation": "passed"}


def test_a_finding_the_interventions_showed_is_flagged_even_when_the_explainer_failed_its_sanity_check():
    assert run_verdict(_report(flags=[_finding()]), "classification", GOOD_MAPS).status == "flagged"
    verdict = run_verdict(_report(flags=[_finding()], sanity=False), "classification", GOOD_MAPS)
    assert verdict.status == "flagged" and "failed its sanity check" in verdict.reasons[-1]


def test_a_finding_whose_test_did_not_decide_is_no_flag():
    verdict = run_verdict(_report(flags=[_finding("undecided")], decisions=("undecided",)), "classification",
                          GOOD_MAPS)
    assert verdict.status == "cannot_judge"
    assert verdict.reasons == ("r0: filling or swapping it could change up to 20% of predictions at n = 200, so an "
                               "effect of 10% is not ruled out (the evidence used all 200 images of the audit: "
                               "audit more images to decide)",)


def test_constant_predictions_cannot_be_judged_even_with_a_finding():
    verdict = run_verdict(_report(flags=[_finding()], distinct=1, correct=100), "classification", GOOD_MAPS)
    assert verdict.status == "cannot_judge"
    assert verdict.reasons[0] == ("the model predicts the same class for every image (cat): its output does not "
                                  "depend on the input")


def test_accuracy_no_better_than_the_majority_class_cannot_be_judged():
    verdict = run_verdict(_report(correct=108), "classification", GOOD_MAPS)  # 54% vs 50%: p = 0.14
    assert verdict.status == "cannot_judge"
    assert verdict.reasons[0].startswith("accuracy 54% is not better than always answering the most common class")
    assert run_verdict(_report(correct=125), "classification", GOOD_MAPS).status == "clear"  # 62.5%: p = 2e-4


@pytest.mark.parametrize("maps, words", [
    (np.zeros((16, 8, 8), np.float16), "every map is zero"),
    (np.ones((16, 8, 8), np.float16) * np.arange(1, 17, dtype=np.float16)[:, None, None], "every map is flat"),
    (np.broadcast_to(GOOD_MAPS[0], (16, 8, 8)), "all 16 maps are the same"),
])
def test_degenerate_maps_cannot_be_judged(maps, words):
    assert maps_check(maps).status == "failed" and words in maps_check(maps).detail
    verdict = run_verdict(_report(), "classification", maps)
    assert verdict.status == "cannot_judge" and any(words in r for r in verdict.reasons)


def test_failed_sanity_without_a_finding_cannot_be_judged():
    verdict = run_verdict(_report(sanity=False), "classification", GOOD_MAPS)
    assert verdict.status == "cannot_judge"
    assert "barely change when the model's weights are randomised" in verdict.reasons[0]


def test_a_black_box_needs_no_randomisation_and_too_few_images_block_clear():
    report = _report()
    report["sanity"]["model_randomization"]["passed"] = None
    assert run_verdict(report, "classification", GOOD_MAPS).status == "clear"
    small = _report(n=MIN_IMAGES - 2, correct=MIN_IMAGES - 4)
    verdict = run_verdict(small, "classification", GOOD_MAPS)
    assert verdict.status == "cannot_judge" and f"at least {MIN_IMAGES} are needed" in verdict.reasons[0]


@pytest.mark.parametrize("task, key", [("multilabel", "tag"), ("segmentation", "class"), ("detection", "class")])
def test_per_target_candidates_are_decided_at_ten_points(task, key):
    def report(ci, p):
        section = {"interventions": [{key: "boat", "region": "water", "excess_drop": sum(ci) / 2,
                                      "excess_drop_ci": list(ci), "p_value": p, "n": 80}]}
        metrics = {"n_images": 80, "mean_iou": 0.6, "classes": {"background": {"iou": 0.9}, "boat": {"iou": 0.5}},
                   "recall_overall": 0.8, "n_detections_total": 90}
        images = pd.DataFrame({"label": ["boat", "car"] * 40, "pred": ["boat", "car"] * 40})
        return {"run": {"method": "gradcam"}, "metrics": metrics, "flags": [], task: section,
                "predictions": prediction_summary(images, "label", "pred") if task == "multilabel" else {},
                "sanity": {"model_randomization": {"method": "gradcam", "passed": True, "similarity": 0.1}}}

    assert run_verdict(report((-0.02, 0.04), 0.9), task, GOOD_MAPS).status == "clear"
    undecided = run_verdict(report((-0.05, 0.3), 0.4), task, GOOD_MAPS)
    assert undecided.status == "cannot_judge" and undecided.reasons == (
        "boat / water: the excess drop's interval [-5%, 30%] at n = 80 neither shows an effect of 10% nor rules it "
        "out; the exact test on flips gives p = 0.4",)


def test_a_segmenter_that_finds_one_class_and_a_detector_that_finds_nothing_cannot_be_judged():
    seg = {"metrics": {"n_images": 50, "classes": {"background": {"iou": 0.9}, "boat": {"iou": 0.0},
                                                   "car": {"iou": 0.0}}}, "flags": []}
    assert run_verdict(seg, "segmentation", GOOD_MAPS).reasons[0].startswith("the segmenter finds one class at most")
    det = {"metrics": {"n_images": 50, "n_detections_total": 0}, "flags": []}
    assert run_verdict(det, "detection", GOOD_MAPS).reasons[0] == "the detector made no detection on the sample"


def test_records_round_trip_through_json():
    finding = Finding.from_json(_finding())
    assert Finding.from_json(finding.to_json()) == finding
    assert finding.to_json()["region"] == "cage" and finding.to_json()["class"] == "dog"
    verdict = Verdict("clear", ("a",), ("b",), (CheckResult("maps", "passed", "ok", 1.0),))
    assert Verdict.from_json(verdict.to_json()) == verdict
    with pytest.raises(ValueError):
        Verdict("clean")


def test_a_flag_from_before_typed_findings_reads_as_a_finding_with_its_deciding_test():
    legacy = {"region": "patch", "class": None, "group": None, "kind": "shortcut", "severity": "high",
              "confidence": "high", "lift": 3.7, "evidence": {"shown_by": "swap", "test": "swap: exact McNemar",
                                                              "p_value": 1e-4, "p_value_holm": 1e-3, "n": 200,
                                                              "net_effect": 0.39,
                                                              "test_slice": {"class": "cat", "group": None}}}
    finding = Finding.from_json(legacy)
    assert finding.effect == 0.39 and finding.deciding_test.slice == Slice("cat")
    assert finding.deciding_test.sentence() == ("swap on class cat; net effect +39%; corrected p = 0.001; n = 200 "
                                                "(shown)")
