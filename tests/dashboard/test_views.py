"""The overview's flag table: every finished run's flags, most severe first, intervals readable."""
import pandas as pd

from dashboard.views import open_flags

REPORTS = {
    "r-1": {"flags": [{"region": "cage", "class": None, "severity": "medium", "lift": 1.01,
                       "lift_ci": [0.9973100375, 1.0312], "evidence": {"flip_rate": 0.47}}]},
    "r-2": {"flags": [{"region": "water", "class": "boat", "severity": "high", "lift": 1.6716, "kind": "context",
                       "evidence": {"score_drop": 0.79, "score_drop_ci": [0.75, 0.81]}}]},
    "r-3": {"flags": []},
}


def test_flags_of_finished_runs_most_severe_first_with_intervals_as_text():
    runs = pd.DataFrame({"id": ["r-1", "r-2", "r-3", "r-4"], "name": ["cage v1", "boats", "clean", "running"],
                         "status": ["done", "done", "done", "running"]})
    table = open_flags(runs, REPORTS.__getitem__)
    assert table["run"].tolist() == ["r-2", "r-1"]  # high before medium; r-3 has none; r-4 is not finished
    assert list(table.columns[:6]) == ["run_name", "run", "severity", "region", "class", "lift"]
    assert table.loc[table.run == "r-1", "lift_ci"].item() == "[1.00, 1.03]"
    assert table.loc[table.run == "r-2", "lift_ci"].isna().item()  # a context flag has no lift interval
    assert table.loc[table.run == "r-2", "evidence.score_drop"].item() == 0.79


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
