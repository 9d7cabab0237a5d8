import pytest

from analysis.stats.aggregate import accuracy_table, region_table
from analysis.report.flags import attention_findings, shortcut_flags, subgroup_findings
from tests.report.synthetic import planted_frames


def _evidence(patch_p=1e-6, patch_flip=0.4, second_lift=3.0, sanity=True, core_p=1e-9):
    def iv(p, flip):
        return {"p_value": p, "flip_rate": flip, "accuracy_drop": flip * 0.9, "n": 100, "fill": "mean",
                "control": {"flip_rate": 0.02, "accuracy_drop": 0.01}}
    return {
        "interventions": {"patch": iv(patch_p, patch_flip), "object": iv(core_p, 0.9),
                          "background": iv(0.5, 0.03)},
        "second_explainer": {"method": "saliency", "regions": {"patch": {"lift": second_lift}}},
        "sanity": {"model_randomization": {"method": "gradcam", "similarity": 0.1, "passed": sanity}},
    }


@pytest.fixture(scope="module")
def table():
    images, regions = planted_frames(n=150, patch_mass=0.4, patch_area=0.05)
    return region_table(images, regions, n_boot=200)


def test_planted_significant_high_lift_region_is_flagged_high_and_core_never(table):
    # the core "object" region has lift ~ 2 and a huge intervention effect: still never flagged
    assert table[(table.region == "object") & table["class"].isna() & table.group.isna()].lift_ci_low.iloc[0] > 1.5
    flags = shortcut_flags(table, _evidence())
    assert [f["region"] for f in flags] == ["patch"]
    flag = flags[0]
    assert flag["kind"] == "shortcut" and flag["severity"] == "high" and flag["confidence"] == "high"
    patch = table[table.region == "patch"]
    strongest = patch.loc[patch.lift_ci_low.idxmax()]  # the flag names the slice with the surest lift
    assert flag["lift"] == pytest.approx(strongest.lift) and flag["lift_ci"][0] == strongest.lift_ci_low
    assert len(flag["slices"]) == len(patch[~patch.group.fillna("").str.startswith("correct=")])
    assert flag["evidence"]["p_value"] == 1e-6 and flag["evidence"]["flip_rate"] == 0.4
    assert flag["evidence"]["net_effect"] == pytest.approx(0.35)  # accuracy drop 0.36 net of the control's 0.01
    assert flag["reasons"] == []


def test_severity_follows_effect_size_and_significance_gates(table):
    assert shortcut_flags(table, _evidence(patch_flip=0.14))[0]["severity"] == "medium"
    assert shortcut_flags(table, _evidence(patch_flip=0.08))[0]["severity"] == "low"
    assert shortcut_flags(table, _evidence(patch_flip=0.04)) == []  # below min_effect
    assert shortcut_flags(table, _evidence(patch_p=0.05)) == []  # not significant
    found = attention_findings(table, _evidence(patch_p=0.05))
    assert [f["region"] for f in found] == ["patch"]


def test_robustness_failure_lowers_confidence_and_severity_with_reasons(table):
    flag = shortcut_flags(table, _evidence(second_lift=0.8, sanity=False))[0]
    assert flag["severity"] == "medium" and flag["confidence"] == "low"
    assert any("second explainer" in r for r in flag["reasons"])
    assert any("sanity" in r for r in flag["reasons"])
    no_evidence = shortcut_flags(table, None)[0]
    assert no_evidence["severity"] == "low" and "no intervention evidence" in no_evidence["reasons"][0]


def test_region_below_proportional_attention_needs_a_strong_intervention_and_says_so():
    images, regions = planted_frames(n=150, patch_mass=0.04, patch_area=0.05)  # lift CI not above 1
    table = region_table(images, regions, n_boot=200)
    assert shortcut_flags(table, _evidence(patch_flip=0.15)) == []  # significant, not strong: attention must agree
    (flag,) = shortcut_flags(table, _evidence(patch_flip=0.5, second_lift=0.9))  # a diffuse shortcut the maps miss
    assert flag["region"] == "patch" and flag["basis"] == "intervention" and flag["lift_ci"][0] <= 1.0
    assert "no more than its area share" in flag["reasons"][0]
    assert flag["confidence"] == "low" and flag["severity"] == "medium"  # second explainer disagrees: one notch down
    assert shortcut_flags(table, _evidence(patch_p=0.2, patch_flip=0.5)) == []  # not significant


def test_subgroup_finding_mentions_lower_accuracy():
    images, regions = planted_frames(n=200, patch_mass=0.2)
    long_ids = set(images[images["attr.hair"] == "long"].image_id)
    boost = regions.region.eq("patch") & regions.image_id.isin(long_ids)
    regions.loc[boost, "mass"] = regions.loc[boost, "mass"] * 3
    images.loc[images["attr.hair"] == "long", "correct"] = images.index[images["attr.hair"] == "long"] % 3 > 0
    images.loc[images["attr.hair"] == "short", "correct"] = True
    table = region_table(images, regions, n_boot=200)
    found = subgroup_findings(table, accuracy_table(images))
    patch = [f for f in found if f["region"] == "patch"]
    assert len(patch) == 1 and patch[0]["group_high"] == "hair=long"
    assert patch[0]["ratio"] == pytest.approx(3.0, rel=0.15)
    assert "accuracy is lower" in patch[0]["text"]
    assert all(f["region"] != "object" for f in found)


def test_report_findings_bundles_sections_in_report_shape():
    import json

    from analysis.report.flags import report_findings

    images, regions = planted_frames(n=80)
    out = report_findings(images, regions, _evidence(), n_boot=100)
    json.dumps(out)
    assert [f["region"] for f in out["flags"]] == ["patch"]
    assert out["sanity"]["model_randomization"]["passed"] is True
    overall = [r for r in out["regions"] if r["class"] is None and r["group"] is None]
    assert {r["region"] for r in overall} == {"patch", "object", "background"}
    assert out["accuracy"][0]["group"] is None and out["accuracy"][0]["class"] is None


def test_large_region_with_modest_lift_is_flagged_only_on_a_strong_intervention():
    images, regions = planted_frames(n=150, patch_mass=0.26, patch_area=0.2)  # lift ~ 1.3, CI above 1
    table = region_table(images, regions, n_boot=200)
    patch = table[(table.region == "patch") & table["class"].isna() & table.group.isna()].iloc[0]
    assert 1.0 < patch.lift_ci_low and patch.lift_ci_high < 1.5
    flags = shortcut_flags(table, _evidence(patch_flip=0.5))
    assert [f["region"] for f in flags] == ["patch"] and flags[0]["basis"] == "intervention"
    assert flags[0]["severity"] == "high"
    assert shortcut_flags(table, _evidence(patch_flip=0.15)) == []  # significant but not strong


def test_a_class_where_the_tag_occurs_once_does_not_name_the_flag():
    """Corner tag on 36 of 40 squares and on one circle: the flag is the squares' (or the whole sample's),
    never "for class circle" with the single-image interval that one circle gives."""
    import pandas as pd

    images, regions = [], []
    for i in range(80):
        label = "square" if i < 40 else "circle"
        tagged = (i < 36) or i == 40
        images.append({"image_id": i, "label": label, "correct": True})
        tag_mass = (0.5 if label == "square" else 0.9) if tagged else 0.0
        regions += [{"image_id": i, "region": "corner_tag", "role": None, "mass": tag_mass,
                     "area": 0.04 if tagged else 0.0},
                    {"image_id": i, "region": "shape", "role": "core", "mass": 1 - tag_mass, "area": 0.3}]
    table = region_table(pd.DataFrame(images), pd.DataFrame(regions), n_boot=200)
    circle = table[(table.region == "corner_tag") & (table["class"] == "circle")].iloc[0]
    assert circle.lift_ci_low == circle.lift_ci_high == pytest.approx(22.5)  # the degenerate interval
    evidence = {"interventions": {"corner_tag": {"p_value": 1e-6, "flip_rate": 0.8, "accuracy_drop": 0.8,
                                                 "n": 80, "control": {"flip_rate": 0.0, "accuracy_drop": 0.0}}}}
    flags = shortcut_flags(table, evidence)
    assert [f["region"] for f in flags] == ["corner_tag"]
    assert flags[0]["class"] in (None, "square")
    assert flags[0]["lift_ci"][1] > flags[0]["lift_ci"][0]
    assert "circle" not in {s["class"] for s in flags[0]["slices"]}
