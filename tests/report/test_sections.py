"""The report's sections as typed records (`analysis.report.sections`, `comparison_records`): read from the
documented JSON with its numbers, an older report (keys missing) read with the parsers' defaults and
rendered by the HTML report and every dashboard view, one parse per dict, and the JSON written back."""
import json
import re
from pathlib import Path

import pandas as pd

from analysis.report.comparison_records import Comparison, read_comparison
from analysis.report.sections import RegionIntervention, ReportView, SanityCheck, read_report

DOC = (Path(__file__).resolve().parents[2] / "docs" / "FORMATS.md").read_text()


def _documented_report() -> dict:
    block = DOC[DOC.index("## Report JSON"):]
    start = block.index("```json") + len("```json")
    return json.loads(block[start:block.index("```", start)].replace("...", ""))


def test_the_documented_report_reads_with_its_numbers():
    view = read_report(_documented_report())
    assert (view.meta.method, view.meta.n_images, view.meta.seed) == ("gradcam", 200, 0)
    assert (view.meta.model.version, view.meta.title) == ("v2", "run")  # the example's id "..." is empty here
    assert view.metrics.accuracy == 0.97 and view.metrics.budgets() == []
    (row,) = view.regions
    assert (row.region, row.mass_ci, row.lift, row.n) == ("patch", (0.11, 0.15), 3.7, 200)
    assert view.overall_lift("patch") == 3.7 and view.overall_lift("cage") is None
    (sanity,) = view.sanity
    assert sanity.name == "model_randomization" and sanity.similarity == 0.12 and sanity.outcome == "passed"
    assert [(s.image, s.reason) for s in view.skipped] == [("images/00042.png", "truncated PNG")]
    (label,) = view.labels
    assert label.verdict == "shortcut" and label.text.startswith("labelled shortcut on net v1")
    (flag,) = view.flag_rows
    assert (flag.evidence.accuracy_drop, flag.evidence.flip_rate, flag.evidence.p_value) == (0.39, 0.41, 0.0001)
    assert [f.subject for f in view.open_findings()] == ["patch"]


def test_an_older_report_renders_with_the_parsers_defaults():
    """A report from before most sections existed: no verdict, no sanity, no metrics, flags with the old keys.
    Every renderer shows it; none needs a fallback of its own."""
    from analysis.report.html import render_html
    from dashboard import detection_views, views
    from dashboard.task_views import multilabel, per_target

    old = {"run": {"name": "old run", "method": "gradcam"},
           "regions": [{"region": "patch", "class": None, "group": None, "mass_mean": 0.3, "mass_ci": [0.2, 0.4],
                        "area_mean": 0.1, "lift": 3.0, "n": 40}],
           "flags": [{"region": "patch", "severity": "high", "lift": 3.0,
                      "evidence": {"flip_rate": 0.4, "p_value": 0.001, "p_value_holm": 0.004, "shown_by": "fill"}}]}
    view = read_report(old)
    assert view.verdict is None and view.sanity == () and view.model_randomization is None
    assert view.metrics.accuracy is None and view.meta.n_images is None and view.meta.model.name == ""
    assert view.meta.params == {} and view.detection.classes == () and view.targets is None
    html = render_html(old)
    assert "Sanity check not run." in html and "<td>40.0%</td>" in html and "fill (Holm p 0.004)" in html
    assert "None" not in re.sub(r"<[^>]+>", " ", html)
    assert views.region_rows(old, "overall")["lift"].tolist() == [3.0]
    assert views.sanity_verdicts(old).empty and views.power_lines(old) == ([], None)
    assert views.skipped_summary(old) is None and views.discovered_rows(old).empty
    assert detection_views.recall_rows(old).empty and detection_views.intervention_rows(old).empty
    assert per_target.intervention_rows(old, multilabel.WORDS).empty
    assert render_html({}).count("<h1>Saliency audit: run</h1>") == 1  # nothing at all still renders


def test_nested_keys_missing_numbers_and_nan_read_as_none_and_write_back():
    iv = {"n": 100, "flip_rate": 0.02, "control": {"flip_rate": 0.01}, "p_value": float("nan"),
          "swap": {"towards_donor_rate": 0.3, "control": {"towards_donor_rate": 0.05}},
          "sequential": {"n_fill": 98, "n_swap": 100, "decision": "undecided"}}
    record = RegionIntervention.from_json({**iv, "region": "patch"})
    assert (record.flip_rate, record.control_flip_rate, record.p_value) == (0.02, 0.01, None)
    assert (record.swap_towards_donor, record.swap_control_towards_donor) == (0.3, 0.05)
    assert record.images == "98 filled, 100 swapped" and record.decision == "undecided"
    assert RegionIntervention.from_json(record.to_json()) == record
    assert record.to_json()["swap"]["control"]["towards_donor_rate"] == 0.05
    black_box = SanityCheck.from_json({"name": "model_randomization", "passed": None, "similarity": None})
    assert black_box.outcome == "not judged" and black_box.stages == ()


def test_a_report_dict_is_parsed_once_and_a_copy_again():
    report = _documented_report()
    first = read_report(report)
    assert read_report(report) is first and read_report(first) is first
    copy = json.loads(json.dumps(report))
    assert read_report(copy) is not first and read_report(copy) == first
    assert isinstance(first, ReportView) and first.raw is report


def test_every_comparison_shape_reads_as_one_record():
    """compare_runs names its runs and keys regions by name; the per-target comparison lists runs as
    {"name", "id"} and regions per target; the detection comparison adds per-class series and context rows."""
    classifier = Comparison.from_json({
        "runs": ["v1", "v2"], "summary": "s", "flagged": {"v1": ["cage"], "v2": []},
        "regions": {"cage": {"role": None, "runs": [{"run": "v1", "mass_mean": 0.6, "mass_ci": [0.5, 0.7]}, None],
                             "changes": [{"from": "v1", "to": "v2", "diff": -0.5, "diff_ci": [-0.6, -0.4],
                                          "p_value": 0.001, "n": 50}]}},
        "accuracy": [{"run": "v1", "class": None, "group": None, "n": 50, "accuracy": 0.9, "ci_low": 0.8,
                      "ci_high": 0.95}]})
    (cage,) = classifier.regions
    assert cage.points[1] is None and cage.points[0].mass_ci == (0.5, 0.7)
    assert (cage.changes[0].from_run, cage.changes[0].to_run, cage.changes[0].diff) == ("v1", "v2", -0.5)
    assert classifier.flagged_in("v1") == ("cage",) and classifier.flagged_in("v3") == ()
    tagger = Comparison.from_json({
        "runs": [{"name": "a", "id": "r1"}, {"name": "b", "id": "r2"}], "target": "tag",
        "regions": [{"tag": "boat", "region": "water", "role": None,
                     "runs": [{"mass_mean": 0.4, "mass_ci": [0.3, 0.5], "lift": 2.0, "n": 8}, None]}],
        "interventions": [{"tag": "boat", "region": "water", "runs": [
            {"excess_drop": 0.7, "excess_drop_ci": [0.4, 0.9], "p_value": 0.01, "n": 8, "flagged": True}, None]}]})
    assert tagger.runs == ("a", "b") and tagger.regions[0].label == "boat / water"
    assert tagger.regions[0].points[0].run == "a"  # a point without its run's name takes it from `runs`
    assert tagger.effects[0].effects[0].flagged is True and tagger.effects[0].effects[1] is None
    detector = read_comparison({"task": "detection", "runs": ["v1"], "classes": {"boat": {"water": {
        "role": None, "runs": [{"run": "v1", "mass_mean": 0.5}], "changes": []}}},
        "context": [{"run": "v1", "class": "boat", "region": "water", "excess_drop": 0.7, "flagged": True,
                     "severity": "high"}]})
    assert detector.class_regions("boat")[0].region == "water" and detector.class_regions("car") == ()
    assert detector.context[0].target == "boat" and detector.context[0].flagged
    assert Comparison.from_json({}).runs == () and Comparison.from_json({}).flagged == {}


def test_comparison_views_read_the_record():
    from dashboard import views
    from dashboard.task_views import per_target

    comparison = {"runs": [{"name": "a"}, {"name": "b"}], "target": "class", "interventions": [
        {"class": "boat", "region": "water", "runs": [
            {"excess_drop": 0.7, "excess_drop_ci": [0.4, 0.9], "p_value": 0.01, "n": 8, "flagged": True},
            {"excess_drop": 0.05, "excess_drop_ci": [-0.1, 0.2], "p_value": 0.6, "n": 8, "flagged": False}]}]}
    rows = per_target.comparison_rows(comparison)
    assert rows[["class", "run", "version", "ci_low", "flagged"]].values.tolist() == [
        ["boat", "a", 0, 0.4, True], ["boat", "b", 1, -0.1, False]]
    assert views.comparison_regions({"runs": ["v1"], "regions": {}}).empty
    assert isinstance(views.comparison_accuracy({}), pd.DataFrame)


def test_the_html_and_the_dashboard_say_the_correction_and_a_discovered_verdict_in_the_same_words():
    """Worded once in analysis/ (MultipleTesting.sentence, ReportView.discovered_verdict): the HTML said
    "alpha 0.01" where the dashboard said "family-wise error at most 0.01", and only the dashboard said why a
    discovered region was not flagged."""
    from html import escape

    from analysis.report.html import render_html
    from dashboard import views

    power = "swapping `discovered-1` for another class's changes accuracy by less than 4 points (n = 200, excluded)"
    report = {"run": {"name": "r"}, "interventions": {"discovered-1": {"n": 200, "p_value": 0.5}},
              "power": [{"region": "discovered-1", "text": power}],
              "multiple_testing": {"method": "Holm", "n_tests": 8, "family": "regions x (fill, swap)", "alpha": 0.01},
              "discovered_regions": [{"name": "discovered-1", "description": "a corner patch", "share": 0.3}],
              "flags": []}
    _, note = views.power_lines(report)
    verdict = views.discovered_rows(report)["verdict"].tolist()
    assert note == "Multiple testing: Holm over 8 tests (regions x (fill, swap)), family-wise error at most 0.01."
    assert verdict == [f"not flagged: {power}"]
    html = render_html(report)
    assert escape(note) in html and f"<td>{escape(verdict[0])}</td>" in html


def test_every_tasks_power_lines_and_not_judged_checks_reach_the_html_and_the_trust_view():
    """Taggers, segmenters and detectors bound their unflagged tests too: the HTML shows those lines and the
    Holm family for every task, and a check the registry did not judge says why (a black box's sanity)."""
    from html import unescape

    from analysis.report.html import render_html
    from analysis.report.trust import explainer_trust

    for task in ("multilabel", "segmentation", "detection", "classification"):
        report = {"run": {"task": task, "method": "gradcam"},
                  "power": [{"region": "water", "text": "filling water could still remove at most 4% of boat "
                                                        "detections (95% upper bound, n = 120)"}],
                  "multiple_testing": {"method": "Holm", "n_tests": 4, "family": "the run's tests", "alpha": 0.01},
                  "interventions": {"water": {"n": 120}} if task == "classification" else [],
                  "not_judged": [{"check": "model randomisation", "key": "sanity", "reason": "the model (onnx) is "
                                  "a black box: it has no weights to randomise"}]}
        html = unescape(render_html(report))
        assert html.count("filling water could still remove at most 4% of boat detections") == 1, task
        assert "Multiple testing: Holm over 4 tests (the run's tests), family-wise error at most 0.01." in html
        assert "model randomisation: not judged (the model (onnx) is a black box: it has no weights to randomise)" \
            in html and "Sanity check not run" not in html
        (entry,) = explainer_trust(report)
        assert entry["verdict"] == "not checked" and entry["checks"][0]["text"].startswith("not judged: the model")
