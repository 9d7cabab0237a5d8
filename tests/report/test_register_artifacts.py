"""Register artifacts (Darcet et al.): a ViT's outlier-norm tokens on background patches draw saliency the
decision does not use. The report says where they are and how much of each region's mass they carry, and
a region is never flagged on their strength alone: its lift must hold with them taken out, else only its
interventions can flag it. Planted: the clean tiny ViT with artifacts written into the top-left corner,
which the model cannot see (`planted_artifacts`)."""
from __future__ import annotations

from html import escape

import pandas as pd
import pytest

from analysis.report.build import build_report
from analysis.report.flags import shortcut_flags
from analysis.report.html import render_html
from analysis.stats.aggregate import region_table
from analysis.stats.artifacts import without_artifacts
from analysis.store.workspace import Workspace
from sample_models import architectures
from tests.report import planted_artifacts, samples_audit

N = 48
pytestmark = pytest.mark.slow  # one ViT audit with its evidence stage (about a minute on a laptop core)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    from analysis.runs.engine import execute_run

    root = tmp_path_factory.mktemp("artifacts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(architectures.ARCHITECTURES, planted_artifacts.ARCHITECTURE,
                      planted_artifacts.PlantedRegistersViT)
        model = planted_artifacts.write_model(root / "model", planted_artifacts.calibration_images())
        data = samples_audit.image_folder_copy(samples_audit.make_dataset("watermark", root / "masked", N),
                                               root / "plain")  # no masks: the 3x3 grid, as a user's folder
        ws = Workspace(root / "ws")
        run_id = ws.create_run(ws.register_model(model), ws.register_dataset(data), "gradcam", n=N, seed=0)
        execute_run(ws, run_id, progress=False)
        yield ws, run_id, build_report(run_id, ws)


def test_the_report_names_the_artifacts_and_where_they_are(planted_run):
    _, _, report = planted_run
    artifacts = report["artifacts"]
    assert artifacts["images_with_artifacts"] == 1.0 and artifacts["tokens_per_image"] >= 4
    assert artifacts["mostly_in"] == "top-left"
    corner = next(r for r in artifacts["regions"] if r["region"] == "top-left")
    assert corner["share_of_artifacts"] > 0.8  # measured 0.88 (the rest: the half patch around them)
    assert corner["artifact_share_of_mass"] > 0.95  # the corner's saliency is the artifacts' (measured 99.6%)
    assert corner["lift_ci_low"] > 1.5 and corner["lift_without_artifacts_ci_low"] < 1.0  # 6.0 -> 0.65
    assert "register-like artifact tokens" in artifacts["text"] and "mostly in region top-left" in artifacts["text"]
    assert f"<p class='artifacts'>{escape(artifacts['text'])}." in render_html(report)  # the HTML report's line


def test_artifact_attention_alone_flags_nothing(planted_run):
    ws, run_id, report = planted_run
    assert "top-left" not in {f["region"] for f in report["flags"]}
    # Without interventions, attention alone used to flag (low confidence) any high-lift region; on artifact
    # tokens it no longer does.
    store = ws.store(run_id)
    images, regions = store.images(), store.regions()
    table = region_table(images, regions, n_boot=200)
    clean = region_table(images, without_artifacts(images, regions), n_boot=200)
    assert "top-left" in {f["region"] for f in shortcut_flags(table, {})}  # the rule without artifacts
    assert "top-left" not in {f["region"] for f in shortcut_flags(table, {}, artifact_free=clean)}


def test_the_model_does_not_use_the_corner(planted_run):
    _, _, report = planted_run
    corner = report["interventions"]["top-left"]
    assert corner["flip_rate"] == 0 and corner["accuracy_drop"] == 0 and corner["p_value"] == 1.0, corner


def test_interventions_still_flag_a_region_whose_attention_rests_on_artifacts():
    """The rule demotes artifact-driven attention to 'intervention only'; it does not ignore the region."""
    rows = []
    for image_id in range(40):  # tag: lift 3 with the artifacts, 1 without
        rows += [{"image_id": image_id, "region": "tag", "role": None, "mass": 0.3, "area": 0.1,
                  "artifact_mass": 0.2, "artifact_area": 0.0},
                 {"image_id": image_id, "region": "object", "role": "core", "mass": 0.7, "area": 0.9,
                  "artifact_mass": 0.0, "artifact_area": 0.0}]
    regions = pd.DataFrame(rows)
    images = pd.DataFrame({"image_id": range(40), "label": ["a", "b"] * 20, "correct": True,
                           "artifact_tokens": 2, "artifact_mass": 0.2, "artifact_area": 0.0})
    table, clean = (region_table(images, r, n_boot=100) for r in (regions, without_artifacts(images, regions)))
    overall = clean[clean["class"].isna() & clean["group"].isna()].set_index("region")
    assert overall.loc["tag", "lift"] == pytest.approx(0.125 / 0.1)  # (0.3 - 0.2) / (1 - 0.2) of the mass, 10% of the area
    strong = {"p_value": 1e-9, "n": 200, "flip_rate": 0.5, "accuracy_drop": 0.5,  # a fill's effect: answers lost
              "control": {"flip_rate": 0.0, "accuracy_drop": 0.0},
              "tests": [{"variant": "fill", "class": None, "group": None, "n": 200, "effect": 0.5,
                         "p_value": 1e-9}]}
    (flag,) = shortcut_flags(table, {"interventions": {"tag": strong}}, artifact_free=clean)
    assert flag["region"] == "tag" and flag["basis"] == "intervention"
    assert any("artifact tokens" in reason for reason in flag["reasons"])
