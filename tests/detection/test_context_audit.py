"""Planted ground truth: the biased detector reads the water behind boats; D-RISE and the audit find it."""
import pytest
import torch

from analysis.evidence.detection_audit import audit_detections, compare_audits, context_flags
from explainers.drise import DRISE
from sample_models.detection import CLASSES, load_detector, make_scenes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audits():
    scenes = make_scenes(12, seed=21, biased=True)
    images = torch.stack([s.image for s in scenes])
    regions = torch.stack([s.regions for s in scenes])
    def audit(version, reference=None):
        detector = load_detector(version)
        explainer = DRISE(detector, n_masks=300, cells=8, chunk=100, batch_size=100, seed=0)
        return audit_detections(detector, images, regions, {0: "water", 1: "road"}, list(CLASSES), explainer,
                                score_threshold=0.5, reference=reference)

    debiased = audit("debiased")
    biased = audit("biased", reference=debiased)
    # each version is judged against the other: only a drop beyond the other model's drop counts
    debiased.flags = context_flags(debiased, reference=biased)
    return {"biased": biased, "debiased": debiased}


def test_biased_boats_rest_on_water_debiased_do_not(audits):
    def boat_water(version):
        s = audits[version].summary
        return float(s[s["class"] == "boat"]["mass.water"].iloc[0])

    assert boat_water("biased") > boat_water("debiased") + 0.1
    assert any(f["class"] == "boat" and f["region"] == "water" for f in audits["biased"].flags)
    assert audits["debiased"].flags == []
    table = compare_audits(audits)
    assert set(table["version"]) == {"biased", "debiased"} and "mass.water" in table


def test_intervention_costs_the_biased_detector_more(audits):
    def drop(version):
        i = audits[version].interventions
        return float(i[(i["class"] == "boat") & (i["region"] == "water")]["score_drop"].iloc[0])

    assert drop("biased") > drop("debiased") + 0.1
