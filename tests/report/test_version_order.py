"""Versions in order: the card's or a person's version, else the name's suffix, natural sort, audit time last."""
import math

from analysis.report.compare import flags_sentence, with_flags
from analysis.report.version_order import in_version_order, natural_key, same_series, version_of


def _run(run_id, name, version=None, created=0.0, **more):
    return {"id": run_id, "model_name": name, "model_version": version, "created": created, **more}


def test_versions_sort_naturally_not_by_audit_time():
    # the demo's background series was audited v1, v5, v2, v3, v4; a v10 must come after v9
    runs = [_run("a", "background v1", created=1), _run("e", "background v5", created=2),
            _run("b", "background v2", created=3), _run("c", "background v3", created=4),
            _run("d", "background v4", created=5), _run("j", "background v10", created=0.5),
            _run("i", "background v9", created=6)]
    assert [r["id"] for r in in_version_order(runs)] == ["a", "b", "c", "d", "e", "i", "j"]


def test_the_models_own_version_wins_over_its_name_and_digits_read_as_v():
    runs = [_run("x", "tagnet", "2", created=1), _run("y", "tagnet-v7", "v1", created=2),
            _run("z", "tagnet", "v1.10", created=3), _run("w", "tagnet", "v1.9", created=4)]
    assert [r["id"] for r in in_version_order(runs)] == ["y", "w", "z", "x"]
    assert version_of("tagnet", "2") == "v2" and version_of("shapes_v10", None) == "v10"
    assert version_of("plain", math.nan) is None  # pandas' NaN for a catalog row without a version
    assert natural_key("v10") > natural_key("v9")


def test_audit_time_breaks_ties_and_unversioned_models_come_last():
    runs = [_run("late", "net v1", created=9), _run("none", "resnet", created=0), _run("early", "net v1", created=1),
            _run("v2", "net v2", created=5)]
    assert [r["id"] for r in in_version_order(runs)] == ["early", "late", "v2", "none"]


def test_same_series_finds_the_models_and_explainers_on_another_dataset():
    chosen = [_run("a1", "net v2", model_id="m2", method="gradcam"), _run("a0", "net v1", model_id="m1", method="gradcam")]
    other = [_run("b1", "net v1", model_id="m1", method="gradcam", created=1),
             _run("b1new", "net v1", model_id="m1", method="gradcam", created=3),
             _run("b2", "net v2", model_id="m2", method="gradcam", created=2),
             _run("b3", "net v2", model_id="m2", method="saliency", created=4),
             _run("b4", "other v1", model_id="m9", method="gradcam", created=5)]
    assert [r["id"] for r in same_series(chosen, other)] == ["b1new", "b2"]


def test_flagged_versions_end_the_summary():
    result = {"runs": ["v1", "v2", "v3"], "summary": "attention on cage fell from 60% to 10% between v1 and v3"}
    reports = [{"flags": [{"region": "cage"}, {"region": "cage", "class": "cat"}, {"region": "watermark"}]},
               {"flags": [{"region": "cage"}]}, {"flags": []}]
    out = with_flags(result, reports)
    assert out["flagged"] == {"v1": ["cage", "watermark"], "v2": ["cage"], "v3": []}
    assert out["summary"] == ("attention on cage fell from 60% to 10% between v1 and v3; "
                              "flagged: v1 on cage and watermark, v2 on cage; no flag: v3")
    lines = with_flags({"runs": [{"name": "v1"}], "summary": "1 runs: v1\nno run is flagged"}, [{"flags": []}])
    assert lines["summary"] == "1 runs: v1\nno run is flagged\nno flag: v1"
    assert flags_sentence({}) == ""


def test_series_and_version_come_from_one_place_for_the_dashboard_too():
    """The dashboard's Overview and Compare read a model's series and version through version_order (they had
    a parser of their own that ordered "v1.10" before "v1.9" by audit time)."""
    import pandas as pd

    from analysis.report.version_order import series_of
    from dashboard import views

    assert views.series_of is series_of
    assert series_of("cage-v2", None) == ("cage", "v2") and series_of("cage", "3") == ("cage", "v3")
    assert series_of("cue-net", math.nan) == ("cue-net", "cue-net") and series_of(None, None)[0] == "unnamed model"
    for name, version in [("shapes_v10", None), ("tagnet", "v1.9"), ("resnet", None), ("net", " 2 ")]:
        label = version_of(name, version)
        assert series_of(name, version)[1] == (label if label is not None else name)

    def run(run_id, version, created):
        return {"id": run_id, "status": "done", "model_id": f"m-{run_id}", "model_name": "net",
                "model_version": version, "dataset_id": "d", "dataset_name": "val", "method": "gradcam",
                "created": created}

    runs = pd.DataFrame([run("a", "v1.10", 1), run("b", "v1.9", 2), run("c", "biased", 0), run("d", "v2", 3)])
    (entry,) = views.model_series(runs, lambda run_id: {"flags": [], "regions": []})
    assert [v["version"] for v in entry["versions"]] == ["v1.9", "v1.10", "v2", "biased"]
    assert [r["id"] for r in in_version_order(runs.to_dict("records"))] == ["b", "a", "d", "c"]
