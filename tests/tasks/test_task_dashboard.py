"""The tagger and segmenter views: report (flags in words, per-target attention, interventions, gallery of
per-target maps) and version comparison, opened on real audits of the sample series."""
import pytest

from dashboard.state import RUNS_PARAM
from dashboard.task_views import per_target
from analysis.demo.build import build_task_demo
from tests.dashboard.apptest import app_opener


@pytest.fixture(scope="module")
def workspace_runs(tmp_path_factory):
    from analysis.store.workspace import Workspace

    root = tmp_path_factory.mktemp("ws")
    workspace = Workspace(root)
    runs = {"tagger": build_task_demo(workspace, "tagger", versions=(1, 5), n=32, log=lambda _: None),
            "segmenter": build_task_demo(workspace, "segmenter", versions=(1,), n=16, log=lambda _: None)}
    return root, runs


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_tagger_report_says_which_tag_depends_on_which_region(workspace_runs, monkeypatch):
    root, runs = workspace_runs
    at = app_opener(root, monkeypatch)("app_pages/report.py", run=runs["tagger"][0])
    text = markdown(at).replace("\\", "")  # markdown escapes (water\\: -> water:)
    assert "The tag boat depends on water: filling it lowers the tag's probability by" in text and "McNemar" in text
    assert [m.label for m in at.metric][:3] == ["Images explained", "Exact tag sets", "Shortcut flags"]
    assert at.metric[2].value == "1"
    assert at.selectbox[-1].options == ["boat", "car"]  # the gallery's tag picker
    assert any("images with a map for tag boat" in c.value for c in at.caption)


def test_segmenter_report_opens_with_its_own_metrics(workspace_runs, monkeypatch):
    root, runs = workspace_runs
    at = app_opener(root, monkeypatch)("app_pages/report.py", run=runs["segmenter"][0])
    assert [m.label for m in at.metric][1] == "Mean IoU"
    assert ("The class boat depends on water: filling it lowers the class's pixels found by"
            in markdown(at).replace("\\", ""))


def test_compare_page_shows_the_tagger_shift(workspace_runs, monkeypatch):
    root, runs = workspace_runs
    at = app_opener(root, monkeypatch)("app_pages/compare.py", **{RUNS_PARAM: ",".join(runs["tagger"])})
    assert "tag boat / region water: excess drop +0." in markdown(at).replace("\\", "")
    table = at.dataframe[-1].value
    boat = table[(table["tag"] == "boat") & (table["region"] == "water")]
    assert boat["flagged"].tolist() == [True, False]


def test_target_maps():
    import numpy as np

    arrays = {"image_ids": np.array([3, 3, 4]), "tag_idx": np.array([0, 1, 1]), "maps": np.arange(12).reshape(3, 2, 2)}
    assert sorted(per_target.target_maps(arrays, "tag_idx", 1)) == [3, 4]
    np.testing.assert_array_equal(per_target.target_maps(arrays, "tag_idx", 0)[3], np.arange(4).reshape(2, 2))
