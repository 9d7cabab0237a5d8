"""Comparing detector versions: biased -> debiased shows the context flag gone, with the numbers of each run's
report, paired mass changes recomputed here by hand, recall per class; CLI JSON and HTML, and the Compare page."""
import json

import pytest
from detection_helpers import cli

from analysis.report.detection_compare import compare_detection_runs
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from sample_models.detection import WEIGHTS_DIR
from tests.dashboard.apptest import app_opener
from tests.runs.helpers import write_dataset, write_model

pytestmark = pytest.mark.slow  # needs the session's two D-RISE runs


@pytest.fixture(scope="module")
def comparison(detection_runs):
    ws = Workspace(detection_runs["ws"])
    return compare_detection_runs([ws.store(detection_runs[v]) for v in ("biased", "debiased")],
                                  ["biased", "debiased"])


def test_the_context_flag_of_the_biased_version_is_gone_in_the_debiased_one(comparison, detection_runs):
    context = {(c["run"], c["class"], c["region"]): c for c in comparison["context"]}
    assert context[("biased", "boat", "water")]["flagged"] and context[("biased", "boat", "water")]["severity"]
    assert not any(c["flagged"] for c in comparison["context"] if c["run"] == "debiased")
    ws = Workspace(detection_runs["ws"])
    for name in ("biased", "debiased"):  # the same intervention numbers as each run's own report
        report = cached_report(detection_runs[name], ws)
        for row in report["detection"]["interventions"]:
            mine = context[(name, row["class"], row["region"])]
            assert mine["excess_drop"] == row["excess_drop"] and mine["excess_drop_ci"] == row["excess_drop_ci"]
        for cls, value in report["metrics"]["recall"].items():
            (recall,) = [r for r in comparison["recall"] if (r["run"], r["class"]) == (name, cls)]
            assert (recall["recall"], recall["ci_low"], recall["ci_high"]) == (value["recall"], *value["ci"])
    assert "boat no longer depends on water" in comparison["summary"]


def test_class_masses_match_the_reports_and_changes_are_paired_per_image(comparison, detection_runs):
    ws = Workspace(detection_runs["ws"])
    reports = {name: cached_report(detection_runs[name], ws) for name in ("biased", "debiased")}
    entry = comparison["classes"]["boat"]["water"]
    for k, name in enumerate(("biased", "debiased")):
        row = next(r for r in reports[name]["regions"] if (r["class"], r["region"]) == ("boat", "water"))
        assert entry["runs"][k]["mass_mean"] == row["mass_mean"] and entry["runs"][k]["mass_ci"] == row["mass_ci"]
    # The change, by hand: each version's boat masses on water averaged per image, differenced on shared images.
    per_image = {}
    for name in ("biased", "debiased"):
        dets = ws.store(detection_runs[name]).table("detections")
        per_image[name] = dets[dets["class"] == "boat"].groupby("image_id")["mass.water"].mean()
    shared = per_image["biased"].index.intersection(per_image["debiased"].index)
    expected = float((per_image["debiased"][shared] - per_image["biased"][shared]).mean())
    (change,) = entry["changes"]
    assert change["paired"] and change["n"] == len(shared) > 5
    assert change["diff"] == pytest.approx(expected, abs=1e-12)
    assert change["diff"] < 0 and change["diff_ci"][1] < 0 and change["p_value"] < 0.01
    # `regions` keeps the compare contract: per region the per-run mass_mean, mass_ci and lift, in order.
    overall = {r["region"]: r for r in reports["biased"]["regions"] if r["class"] is None}
    for region, value in comparison["regions"].items():
        assert [r["run"] for r in value["runs"]] == ["biased", "debiased"]
        assert value["runs"][0]["mass_mean"] == overall[region]["mass_mean"]
        assert value["runs"][0]["lift"] == overall[region]["lift"]


def test_reversed_order_reads_as_a_new_dependence(detection_runs):
    ws = Workspace(detection_runs["ws"])
    result = compare_detection_runs([ws.store(detection_runs[v]) for v in ("debiased", "biased")],
                                    ["debiased", "biased"], n_boot=200, n_perm=500)
    assert "boat now depends on water" in result["summary"]


def test_cli_compare_json_and_html(detection_runs, comparison, capsys, tmp_path):
    args = ["compare", detection_runs["biased"], detection_runs["debiased"], "--workspace", detection_runs["ws"]]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    result = json.loads(out)
    assert result["task"] == "detection" and len(result["runs"]) == 2
    assert result["run_ids"] == [detection_runs["biased"], detection_runs["debiased"]]
    assert {(c["class"], c["region"]) for c in result["context"] if c["flagged"]} == \
        {(c["class"], c["region"]) for c in comparison["context"] if c["flagged"]}
    code, _, err = cli(capsys, *args, "--format", "html", "--out", tmp_path / "cmp.html")
    html = (tmp_path / "cmp.html").read_text()
    assert code == 0 and "Context dependence per version" in html and "Recall per class" in html
    assert html.count("<tr>") >= 1 + len(result["context"])


def test_cli_refuses_to_compare_a_detector_with_a_classifier(tmp_path, coco_scenes, capsys):
    ws = Workspace(tmp_path / "ws")
    detector = ws.register_model(WEIGHTS_DIR / "biased" / "model.safetensors", WEIGHTS_DIR / "biased" / "model.json")
    detection_run = ws.create_run(detector, ws.register_dataset(coco_scenes[1]), "drise", {}, n=4, seed=0)
    classifier = ws.register_model(write_model(tmp_path / "model"))
    classification_run = ws.create_run(classifier, ws.register_dataset(write_dataset(tmp_path / "data", n=4)),
                                       "gradcam", {}, n=4, seed=0)
    code, _, err = cli(capsys, "compare", detection_run, classification_run, "--workspace", tmp_path / "ws")
    assert code == 2 and "one task" in err and detection_run in err and len(err.strip().splitlines()) == 1


def test_compare_page_shows_detection_versions(detection_runs, monkeypatch):
    app = app_opener(detection_runs["ws"], monkeypatch, timeout=120)
    at = app("app_pages/compare.py")
    (picker,) = [m for m in at.multiselect if m.label.startswith("Versions")]
    picker.set_value([detection_runs["biased"], detection_runs["debiased"]]).run()
    assert not at.exception, [e.message for e in at.exception]
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "boat no longer depends on water" in text
    context = next(f.value for f in at.dataframe if "excess_drop" in f.value.columns)
    flagged = context[context["flagged"] != "no"]
    biased, debiased = list(dict.fromkeys(context["run"]))  # the versions' labels, oldest first
    assert (biased, "boat", "water") in set(zip(flagged["run"], flagged["class"], flagged["region"]))
    assert debiased not in set(flagged["run"])
    assert at.selectbox(key="det_compare_class").value == "boat"  # the first flagged class
    assert len(at.get("plotly_chart")) == 2 and len(at.get("image")) == 2
    at.selectbox(key="det_compare_class").set_value("car").run()
    assert not at.exception


class _Store:
    """A run store reduced to what a detection comparison reads: detections, ground truth, evidence."""

    def __init__(self, detections, truth, interventions=()):
        import pandas as pd

        self._tables = {"detections": pd.DataFrame(detections), "ground_truth": pd.DataFrame(truth)}
        self._evidence = {"task": "detection", "settings": {}, "interventions": list(interventions)}

    def table(self, name, columns=None):
        import pandas as pd

        frame = self._tables[name]
        return frame if len(frame) else pd.DataFrame(columns=columns or [])

    def evidence(self):
        return self._evidence


def _boat(image_id, water):
    return {"image_id": image_id, "det": 0, "class": "boat", "mass_box": 1 - water, "area_box": 0.1,
            "mass_outside": water, "mass.water": water, "area.water": 0.5}


def test_a_class_no_version_detected_and_a_version_with_no_detection_at_all():
    truth = [{"image_id": i, "object": 0, "class": c, "found": c == "boat"} for i in range(12) for c in ("boat", "car")]
    v1 = _Store([_boat(i, 0.7 + 0.1 * (i % 3)) for i in range(12)], truth)
    v2 = _Store([], [{**t, "found": False} for t in truth])  # a version that detects nothing
    result = compare_detection_runs([v1, v2], ["v1", "v2"], n_boot=100, n_perm=200)
    assert list(result["classes"]) == ["boat"]  # car: ground truth only, nothing to compare
    (water_v1, water_v2) = result["classes"]["boat"]["water"]["runs"]
    assert water_v1["mass_mean"] == pytest.approx(0.8) and water_v2 is None
    assert result["classes"]["boat"]["water"]["changes"] == []
    recall = {(r["run"], r["class"]): r["recall"] for r in result["recall"]}
    assert recall == {("v1", "boat"): 1.0, ("v1", "car"): 0.0, ("v2", "boat"): 0.0, ("v2", "car"): 0.0}
    assert "recall on boat fell from 100% to 0%" in result["summary"]  # 12/12 vs 0/12: Wilson CIs apart


def test_duplicate_names_and_a_run_given_twice_are_refused(detection_runs, capsys):
    ws = Workspace(detection_runs["ws"])
    with pytest.raises(ValueError, match="unique"):
        compare_detection_runs([ws.store(detection_runs["biased"])] * 2, ["a", "a"])
    code, _, err = cli(capsys, "compare", detection_runs["biased"], detection_runs["biased"],
                       "--workspace", detection_runs["ws"])
    assert code == 2 and "given twice" in err and len(err.strip().splitlines()) == 1
