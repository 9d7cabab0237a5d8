"""Discovered regions on the report and compare pages: name, description, attention, fill and swap evidence,
the verdict, and exemplars that open in the gallery (AppTest on the planted workspace plus evidence files)."""
import pytest

from tests.dashboard.apptest import app_opener
from workspace_builder import build_workspace


def _evidence(flagged: bool) -> dict:
    """An evidence file as the engine writes it: one region discovered in images 0-5 (exemplars 3, 0, 5)."""
    towards, p = (0.75, 1e-6) if flagged else (0.0, 1.0)
    bounds = {"fill_flips": [0.2, 0.8] if flagged else [-0.1, 0.02], "fill_accuracy_drop": [-0.1, 0.03],
              "swap_towards_donor": [0.4, 0.95] if flagged else [-0.1, 0.02], "swap_accuracy_drop": [-0.1, 0.03]}
    iv = {"n": 12, "fill": "mean", "control_kind": "equal-area", "discovered": True,
          "flip_rate": 0.5 if flagged else 0.0, "accuracy_drop": 0.5 if flagged else 0.0, "p_value": 2e-4 if flagged else 1.0,
          "control": {"flip_rate": 0.0, "accuracy_drop": 0.0},
          "swap": {"n": 12, "towards_donor_rate": towards, "accuracy_drop": towards, "p_value": p,
                   "control": {"towards_donor_rate": 0.0, "accuracy_drop": 0.0}},
          "sequential": {"n": 12, "decision": "shown" if flagged else "excluded", "level": 0.95, "bounds": bounds}}
    found = {"name": "discovered-1", "description": "small uniform patch, in one of 4 corners, 50% of images, all classes",
             "share": 0.5, "image_ids": [0, 1, 2, 3, 4, 5], "exemplars": [3, 0, 5], "n_images": 12,
             "attention": {"lift": 4.2, "lift_ci": [3.1, 5.6], "mass_mean": 0.3, "area_mean": 0.07, "n": 6}}
    return {"interventions": {"discovered-1": iv}, "discovered_regions": [found],
            "sanity": {"model_randomization": {"passed": True}}}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from analysis.store.workspace import Workspace

    root = tmp_path_factory.mktemp("dash-discovered") / "workspace"
    ids = build_workspace(root)
    workspace = Workspace(root)
    for run_id, flagged in zip(ids["runs"], (True, False)):  # v1 uses the discovered cue, v2 does not
        workspace.store(run_id).write_evidence(_evidence(flagged))
    workspace.close()
    return root, ids


@pytest.fixture
def app(planted, monkeypatch):
    return app_opener(planted[0], monkeypatch)


def test_report_page_lists_the_discovered_region_with_its_evidence_and_verdict(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    table = at.dataframe
    shown = [f.value for f in table if "description" in f.value.columns]
    assert len(shown) == 1, [list(f.value.columns) for f in table]
    row = shown[0].iloc[0]
    assert row["region"] == "discovered-1" and "in one of 4 corners" in row["description"]
    assert row["lift"].startswith("4.20 [3.10, 5.60]") and row["images"] == "50% (6 of 12)"
    assert row["fill: flips (control)"] == "50% (0%)" and row["swap: towards donor (control)"] == "75% (0%)"
    assert row["verdict"].startswith("flagged") and "swap" in row["verdict"] and "Holm p" in row["verdict"]
    sentences = [m.value.replace("\\", "") for m in at.markdown if "depend on discovered" in m.value]
    assert sentences and "depend on discovered-1 (small uniform patch, in one of 4 corners" in sentences[0]
    assert "swapping it for another class's changes 75% more predictions (towards that class, or away from the " \
        "right one) than a control swap" in sentences[0]
    assert [b.key for b in at.button if b.label == "Open"] == [f"exemplar_discovered-1_{i}" for i in (3, 0, 5)]


def test_an_exemplar_opens_in_the_gallery_filtered_to_the_region(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    at.button(key="exemplar_discovered-1_3").click().run()
    assert not at.exception
    assert at.selectbox(key="gallery_discovered_region").value == "discovered-1"
    assert at.session_state["selected_image"] == 3
    gallery = [c for c in at.caption if "images match" in c.value]
    assert gallery and gallery[0].value.startswith("6 of 12 images match"), [c.value for c in at.caption]


def test_report_page_of_an_unflagged_discovery_says_what_its_test_could_have_detected(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][1])
    (frame,) = [f.value for f in at.dataframe if "description" in f.value.columns]
    verdict = frame.iloc[0]["verdict"]
    assert verdict.startswith("not flagged: swapping `discovered-1`") and "n = 12" in verdict


def test_compare_page_shows_each_versions_discovered_regions(app, planted):
    at = app("app_pages/compare.py", runs=",".join(planted[1]["runs"]))
    assert "Discovered regions" in [h.value for h in at.subheader]
    (frame,) = [f.value for f in at.dataframe if "flagged" in f.value.columns]
    assert frame["version"].tolist() == ["v1 (gradcam)", "v2 (gradcam)"]
    assert frame["cue"].tolist() == ["cue 1", "cue 1"]  # the same images, the same place: one cue
    assert frame["flagged"].tolist() == ["yes (medium, swap, Holm p 2e-06)", "no"]
    assert frame["swap: towards donor (control)"].tolist() == ["75% (0%)", "0% (0%)"]
