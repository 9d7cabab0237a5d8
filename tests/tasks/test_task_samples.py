"""The tagger and segmenter samples are real ground truth: audited through the engine like a user's run, v1
is flagged on the planted shortcut, v5 is not, and the version comparison shows the shift."""
import hashlib

import pytest

from analysis.report.build import build_report
from analysis.runs.tasks import get_task
from analysis.store.workspace import Workspace
from sample_models import segmenting, tagging
from analysis.demo.build import build_task_demo

N = 48


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    workspace = Workspace(tmp_path_factory.mktemp("ws"))
    runs = {scenario: build_task_demo(workspace, scenario, versions=(1, 5), n=N, log=lambda _: None)
            for scenario in ("tagger", "segmenter")}
    return workspace, runs


def flags_of(report):
    return {(f["class"], f["region"]) for f in report["flags"]}


@pytest.mark.parametrize("module", [tagging, segmenting])
def test_committed_weights_match_their_checksums(module):
    lines = (module.WEIGHTS_DIR / "SHA256SUMS").read_text().splitlines()
    listed = dict(reversed(line.split("  ")) for line in lines)
    assert set(listed) == {f"v{v}/{name}" for v in range(1, 6) for name in ("model.pt", "model.pt2", "model.json")}
    for rel, digest in listed.items():
        assert hashlib.sha256((module.WEIGHTS_DIR / rel).read_bytes()).hexdigest() == digest, rel


def test_tagger_v1_is_flagged_on_the_water_for_boat_and_v5_is_not(audited):
    workspace, runs = audited
    v1, v5 = (build_report(r, workspace) for r in runs["tagger"])
    assert v1["run"]["task"] == "multilabel"
    assert flags_of(v1) == {("boat", "water")}
    flag = v1["flags"][0]
    assert flag["evidence"]["excess_drop"] > 0.5 and flag["evidence"]["p_value"] < 1e-6
    assert flag["evidence"]["flip_rate"] > 0.8 > 0.1 > flag["evidence"]["control_flip_rate"]
    assert flags_of(v5) == set()
    assert_checks_pass(flag, "boat", v1)
    boat_water = next(r for r in v5["multilabel"]["interventions"] if (r["tag"], r["region"]) == ("boat", "water"))
    assert abs(boat_water["excess_drop"]) < 0.1 and boat_water["p_value"] > 0.05
    assert v5["metrics"]["tags"]["boat"]["tag_accuracy"] > 0.85


def test_segmenter_v1_is_flagged_on_the_water_for_boats_and_v5_is_not(audited):
    workspace, runs = audited
    v1, v5 = (build_report(r, workspace) for r in runs["segmenter"])
    assert v1["run"]["task"] == "segmentation"
    assert ("boat", "water") in flags_of(v1)
    flag = next(f for f in v1["flags"] if (f["class"], f["region"]) == ("boat", "water"))
    assert flag["evidence"]["excess_drop"] > 0.5 and flag["evidence"]["p_value"] < 1e-6
    record = next(r for r in v1["segmentation"]["interventions"] if (r["class"], r["region"]) == ("boat", "water"))
    assert record["iou_after"] < 0.5 * record["iou_before"] and record["iou_control"] > 0.8 * record["iou_before"]
    assert flags_of(v5) == set()
    assert_checks_pass(flag, "boat", v1)
    assert v5["metrics"]["classes"]["boat"]["iou"] > v1["metrics"]["classes"]["boat"]["iou"]
    # every (class, region) of the clean v5 gets its power line, and each rules out a 10-point effect
    tested = {(r["class"], r["region"]) for r in v5["segmentation"]["interventions"]}
    assert {(p["class"], p["region"]) for p in v5["power"]} == tested and len(tested) == 4
    assert all(p["excess_drop_upper"] < 0.1 for p in v5["power"])
    assert v5["verdict"]["status"] == "clear"
    rows = {(r["class"], r["region"]) for r in v1["regions"] if r["class"] is not None}
    assert {("boat", "water"), ("boat", "object"), ("car", "road")} <= rows


def test_segmenter_v1_cars_are_flagged_on_the_road_by_the_swap(audited):
    """The car's planted cue (83 points of IoU lost off the road) is what the flat fill misses: the images' mean
    colour is a blue-grey that leaves most car pixels found. Giving the road the look of a boat's surroundings
    (the swap) shows it, in the run's Holm family; the clean v5's car is not flagged on any region."""
    workspace, runs = audited
    v1, v5 = (build_report(r, workspace) for r in runs["segmenter"])
    flag = next(f for f in v1["flags"] if (f["class"], f["region"]) == ("car", "road"))
    swap, fill = flag["tests"][0], flag["tests"][1]
    assert swap["name"] == "swap" and swap["decision"] == "shown" and flag["evidence"]["intervention"] == "swap"
    assert swap["effect"] > 0.3 and swap["interval"][0] > 0.2
    assert swap["p_value_corrected"] < 1e-3 and swap["correction"] == f"Holm over the run's {v1['multiple_testing']['n_tests']} tests"
    assert fill["name"] == "fill" and fill["decision"] != "shown" and fill["effect"] < swap["effect"] / 2
    records = v1["segmentation"]["interventions"]
    assert {r["intervention"] for r in records} == {"fill", "swap"} and v1["multiple_testing"]["n_tests"] == len(records)
    car_swap = next(r for r in records if (r["class"], r["region"], r["intervention"]) == ("car", "road", "swap"))
    assert car_swap["donor"] == "surroundings of boat" and car_swap["iou_after"] < 0.6 * car_swap["iou_before"]
    assert not {f for f in flags_of(v5) if f[0] == "car"}


def assert_checks_pass(flag, target, report):
    """The finding carries the second explainer (plain gradients: another family than Grad-CAM) and the sanity
    check, both passed, so its confidence stays high; the second explainer also sees the core."""
    checks = {c["name"]: c for c in flag["checks"]}
    assert checks["second explainer"]["status"] == "passed" and checks["second explainer"]["value"] > 1.1
    assert checks["model randomisation"]["status"] == "passed"
    assert flag["confidence"] == "high" and flag["severity"] == "high"
    second = report["second_explainer"]
    assert second["method"] == "saliency" and second["n"] >= 16
    assert second["targets"][target][target if report["run"]["task"] == "multilabel" else "object"]["lift"] > 1
    faithful = report["faithfulness"]  # the stored maps, put back first, restore the score faster than chance
    assert faithful["n"] >= 8 and faithful["insertion_auc"] > faithful["random_insertion_auc"] + 0.03


@pytest.mark.parametrize("scenario, task, target", [("tagger", "multilabel", "boat"), ("segmenter", "segmentation", "boat")])
def test_version_comparison_shows_the_shortcut_going_away(audited, scenario, task, target):
    workspace, runs = audited
    comparison = get_task(task).compare([workspace.store(r) for r in runs[scenario]], ["v1", "v5"], n_boot=200)
    entry = next(e for e in comparison["interventions"] if (e[comparison["target"]], e["region"]) == (target, "water"))
    first, last = entry["runs"]
    assert first["flagged"] and not last["flagged"]
    assert first["excess_drop"] - last["excess_drop"] > 0.5
    assert comparison["runs"][0]["id"] == runs[scenario][0]
    summary = comparison["summary"]
    assert f"{comparison['target']} {target} / region water: excess drop" in summary and "* -> " in summary
    if scenario == "tagger":  # the maps move off the water too
        mass = next(e for e in comparison["regions"] if (e["tag"], e["region"]) == ("boat", "water"))["runs"]
        assert mass[0]["mass_mean"] > 2 * mass[1]["mass_mean"]


def test_retraining_tagger_v1_reproduces_its_shortcut():
    """Across CPUs the weights differ in the last bits, the behaviour must not: v1 tags boats by the water."""
    net = tagging.train_version(1)
    assert tagging.tag_accuracy(net, seed=301)["boat"] > 0.95
    assert tagging.tag_accuracy(net, seed=302, flip=True)["boat"] < 0.2
