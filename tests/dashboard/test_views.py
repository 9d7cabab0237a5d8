"""Display shaping: intervals, series, sentences, the accuracy chart, evidence panels."""
import pandas as pd


def test_region_rows_show_intervals_as_text_and_keep_numbers_numeric():
    from dashboard.views import readable_intervals

    rows = pd.DataFrame({"region": ["cage", "animal"], "mass_ci": [[0.17499999999, 0.525], [0.38, 0.66]],
                         "lift": [5.6, 2.08]})
    shown = readable_intervals(rows)
    assert shown["mass_ci"].tolist() == ["[0.17, 0.53]", "[0.38, 0.66]"]
    assert shown["lift"].tolist() == [5.6, 2.08] and rows["mass_ci"][0] == [0.17499999999, 0.525]  # input untouched


def _demo_like_runs() -> pd.DataFrame:
    """The demo's catalog order: per model version, a Grad-CAM run then a gradients run, on one dataset."""
    rows = [{"id": f"r-{v}-{m}", "model_id": f"m-{v}", "dataset_id": "d-cage", "method": m, "model_name": "cage",
             "model_version": f"v{v}"} for v in range(1, 7) for m in ("gradcam", "saliency")]
    return pd.DataFrame([{"id": "r-other", "model_id": "m-x", "dataset_id": "d-other", "method": "gradcam",
                          "model_name": "boats", "model_version": None}] + rows)


def test_compare_opens_on_the_newest_audits_series_or_empty():
    from dashboard.views import default_series

    runs = _demo_like_runs()
    assert default_series(runs) == [f"r-{v}-saliency" for v in range(1, 7)]  # the newest run's explainer
    gradcam = runs[runs["method"] == "gradcam"]
    assert default_series(gradcam) == [f"r-{v}-gradcam" for v in range(1, 7)]
    other = pd.concat([runs, runs.iloc[:1]])  # newest: the boats model, alone in its series
    assert default_series(other) == []
    named = runs.assign(model_version=None, model_name=[f"cage-v{v}" if v else "boats" for v in
                                                        [0] + [v for v in range(1, 7) for _ in (1, 2)]])
    assert default_series(named) == [f"r-{v}-saliency" for v in range(1, 7)]  # "cage-v3": series cage, v3
    assert default_series(runs.iloc[:0]) == []


def test_series_warnings_name_what_is_not_a_version_series():
    from dashboard.views import series_warnings

    runs = _demo_like_runs().set_index("id")
    assert series_warnings(runs.loc[["r-1-gradcam", "r-2-gradcam", "r-3-gradcam"]]) == []
    (explainers, same_model) = series_warnings(runs.loc[["r-1-gradcam", "r-1-saliency"]])
    assert "different explainers (gradcam, saliency)" in explainers and "same model" in same_model
    (datasets,) = series_warnings(runs.loc[["r-1-gradcam", "r-other"]])
    assert "different datasets" in datasets


def test_accuracy_chart_has_one_bar_per_slice_and_no_class_nan():
    """The report's accuracy rows carry NaN (not None) where a slice has no class: every bar must still be
    named, overall and subgroups apart, each at most 1."""
    from dashboard.views import accuracy_display, accuracy_figure

    nan = float("nan")
    table = pd.DataFrame({"class": [nan, "cat", "dog", nan, nan], "group": [nan, nan, nan, "in_cage=no", "in_cage=yes"],
                          "n": [12, 6, 6, 6, 6], "correct": [9, 4, 5, 6, 3],
                          "accuracy": [0.75, 4 / 6, 5 / 6, 1.0, 0.5], "ci_low": [0.47, 0.3, 0.44, 0.61, 0.19],
                          "ci_high": [0.91, 0.9, 0.97, 1.0, 0.81]})
    bar = accuracy_figure(table, "t").data[0]
    assert list(bar.x) == ["all images", "class cat", "class dog", "in_cage=no", "in_cage=yes"]
    assert len(set(bar.x)) == len(bar.x) and max(bar.y) <= 1.0
    shown = accuracy_display(table)
    assert shown["accuracy"].tolist() == ["75%", "67%", "83%", "100%", "50%"]
    assert shown["95% interval"].tolist()[0] == "47% to 91%"
    assert "nan" not in shown.to_string().lower() and "none" not in shown.to_string().lower()


def test_a_findings_panel_reads_as_words_deciding_test_first_and_names_its_slice():
    """The panel read "class ellipse" over a test of has_tag=no, a fill's p beside a swap's Holm p, and raw keys:
    now the headline names the test's slice, the deciding test comes first, every line is a sentence."""
    from analysis.report.flags import shortcut_flags
    from analysis.report.records import Finding
    from analysis.stats.aggregate import region_table
    from tests.report.synthetic import planted_frames
    from tests.report.test_flags import _evidence

    images, regions = planted_frames(n=60)
    flags = shortcut_flags(region_table(images, regions, n_boot=50), _evidence())
    finding = Finding.from_json(flags[0])
    lines = finding.evidence_lines()
    test = finding.deciding_test
    assert test.decision == "shown" and lines[0] == f"Shown by: {test.sentence()}; the test: {test.description}"
    assert finding.headline.startswith("Predictions") and f"n = {test.n}" in finding.headline
    if test.slice.target:
        assert f"class {test.slice.target}" in finding.headline
    text = " ".join(lines)
    assert "None" not in text and "nan" not in text and "{" not in text and "_" not in text.replace("not_run", "")


def test_power_statements_and_the_multiple_testing_method_read_as_sentences():
    from dashboard.views import power_lines

    report = {"power": [{"region": "patch", "text": "swapping `patch` for another class's changes accuracy by less "
                                                    "than 3 points (95% upper bounds, n = 400, excluded)"}],
              "multiple_testing": {"method": "Holm", "n_tests": 12, "alpha": 0.01,
                                   "family": "regions x (fill, swap) x (whole sample, classes, subgroups)"}}
    lines, note = power_lines(report)
    assert lines == [report["power"][0]["text"]]
    assert note == ("Multiple testing: Holm over 12 tests (regions x (fill, swap) x (whole sample, classes, "
                    "subgroups)), family-wise error at most 0.01.")
    assert power_lines({}) == ([], None)


def test_one_value_intervals_show_as_one_number():
    from dashboard.views import display_table, value_text

    assert value_text([11.02, 11.02]) == "11"
    assert value_text([0.93, 1.12]) == "0.93 to 1.12"
    shown = display_table(pd.DataFrame({"role": [None, "core"], "lift_ci": [[11.02, 11.02], [1.0, 2.0]],
                                        "mass": [float("nan"), 0.25], "class": [None, None]}))
    assert shown.values.tolist() == [["", "11", ""], ["core", "1 to 2", "0.25"]]  # the empty class column: gone


def test_model_series_groups_versions_and_drops_findings_labelled_legitimate():
    from dashboard.views import model_series, trend_text

    runs = pd.DataFrame([
        {"id": "r1", "status": "done", "model_id": "m1", "model_name": "tagnet", "model_version": "v1",
         "dataset_id": "d", "dataset_name": "shapes", "method": "gradcam"},
        {"id": "r2", "status": "done", "model_id": "m2", "model_name": "tagnet", "model_version": "v2",
         "dataset_id": "d", "dataset_name": "shapes", "method": "gradcam"}])
    flag = {"region": "tag", "lift": 11.0, "severity": "high", "evidence": {"flip_rate": 0.9}}
    reports = {"r1": {"flags": [flag], "regions": [{"region": "tag", "class": None, "group": None, "lift": 11.0}]},
               "r2": {"flags": [dict(flag, lift=2.1)], "labels": [{"region": "tag", "verdict": "legitimate"}],
                      "regions": [{"region": "tag", "class": None, "group": None, "lift": 2.1}]}}
    (entry,) = model_series(runs, reports.__getitem__)
    assert entry["series"] == "tagnet" and [v["version"] for v in entry["versions"]] == ["v1", "v2"]
    assert entry["findings"] == []  # v2's only flag is on a region a person called legitimate
    assert [trend_text(t) for t in entry["trend"]] == ["tag: v1 11.0x → v2 2.1x"]


def test_model_series_orders_numbered_versions_whatever_order_they_were_audited_in():
    """The demo audits v1 and v5 before v3: the series still reads v1, v3, v5 and its latest is v5; versions
    named by words keep the order they were audited in, after the numbered ones."""
    from dashboard.views import model_series

    def run(run_id, version):
        return {"id": run_id, "status": "done", "model_id": f"m-{version}", "model_name": "cage",
                "model_version": version, "dataset_id": "d", "dataset_name": "cage-val", "method": "gradcam"}

    runs = pd.DataFrame([run("r1", "v1"), run("r5", "v5"), run("r3", "v3"), run("rb", "biased"), run("r2", "2")])
    reports = {r: {"flags": [], "regions": []} for r in ("r1", "r5", "r3", "rb", "r2")}
    (entry,) = model_series(runs, reports.__getitem__)
    assert [v["version"] for v in entry["versions"]] == ["v1", "v2", "v3", "v5", "biased"]
    (entry,) = model_series(runs[runs.id != "rb"], reports.__getitem__)
    assert entry["versions"][-1]["run"] == "r5"


def test_a_model_without_a_version_is_never_shown_as_nan():
    """A catalog row without a version reaches the page as pandas NaN: the overview read "audited with gradcam:
    nan" and "nan looks 2.7x more at ...". It is the model's name instead."""
    from dashboard.views import model_series, series_of

    runs = pd.DataFrame([{"id": "r1", "status": "done", "model_id": "m1", "model_name": "cue-net", "model_version": None,
                          "dataset_id": "d", "dataset_name": "val", "method": "gradcam"},
                         {"id": "r2", "status": "done", "model_id": "m2", "model_name": "cage", "model_version": "v2",
                          "dataset_id": "d", "dataset_name": "val", "method": "gradcam"}])
    assert runs.model_version.isna().iloc[0]
    entries = model_series(runs, lambda run_id: {"flags": [], "regions": []})
    assert sorted(v["version"] for e in entries for v in e["versions"]) == ["cue-net", "v2"]
    assert series_of("cue-net", float("nan")) == ("cue-net", "cue-net")


def test_discovered_regions_across_versions_are_grouped_by_cue():
    from dashboard import views

    def report(*names):
        return {"discovered_regions": [{"name": n, "description": f"{n} cue", "image_ids": [0]} for n in names]}

    reports = {"v1": report("discovered-1", "discovered-2"), "v2": report("discovered-1"), "v3": report("discovered-1")}
    tracks = [["discovered-1", None, "discovered-1"], ["discovered-2", "discovered-1", None], [None, None, None]]
    table = views.comparison_discovered(reports, tracks)
    assert table[["cue", "version", "region"]].values.tolist() == [
        ["cue 1", "v1", "discovered-1"], ["cue 1", "v3", "discovered-1"],
        ["cue 2", "v1", "discovered-2"], ["cue 2", "v2", "discovered-1"]]
    untracked = views.comparison_discovered(reports)
    assert untracked["version"].tolist() == ["v1", "v1", "v2", "v3"] and set(untracked["cue"]) == {""}
