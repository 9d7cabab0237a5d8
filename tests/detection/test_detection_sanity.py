"""D-RISE's trust checks. Sanity (cascading model randomisation): passes on the sample detector, an
"explainer" that ignores the detector fails it, the detector comes back with its weights. Faithfulness
(deletion / insertion scored by D-RISE similarity): on deletion D-RISE beats a random order (in the run's
report) and its inverse, and the curves start and end at the untouched image's similarity. The run
parameter that skips both."""
import pytest
import torch
from detection_helpers import cli, run_args

from analysis.evidence.detection_audit import own_detections
from analysis.runs.detection_run import (FAITHFULNESS_DETECTIONS, SANITY_IMAGES, SANITY_STAGES, detection_faithfulness,
                                    detection_sanity)
from analysis.report.build import cached_report
from analysis.evidence.sanity import randomisation_test
from analysis.store.workspace import Workspace
from explainers.drise import DRISE
from sample_models.detection import load_detector, make_scenes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scenes():
    detector = load_detector("biased")
    images = torch.stack([s.image for s in make_scenes(6, seed=3, biased=True)])
    with torch.no_grad():
        targets, _ = own_detections(detector(images), 0.5)
    keep = [k for k, t in enumerate(targets) if len(t)][:3]
    return detector, images[keep], [targets[k] for k in keep]


def test_run_report_records_a_passed_check_with_its_stages(detection_runs):
    report = cached_report(detection_runs["biased"], Workspace(detection_runs["ws"]))
    check = report["sanity"]["model_randomization"]
    assert check["method"] == "drise" and check["n"] == SANITY_IMAGES and len(check["stages"]) == SANITY_STAGES
    assert check["stages"][0]["n_randomised"] == 1  # the output side first
    assert check["similarity"] == pytest.approx(sum(s["spearman_abs"] for s in check["stages"]) / SANITY_STAGES)
    assert check["passed"] and check["similarity"] < 0.5


def test_an_explainer_that_ignores_the_detector_fails(scenes):
    detector, images, _ = scenes
    edges = lambda: (images[:, :, 1:, 1:] - images[:, :, :-1, :-1]).abs().sum(1)
    result = randomisation_test(detector, edges, method="edges", n=len(images), max_stages=SANITY_STAGES)
    assert result["similarity"] == pytest.approx(1.0) and not result["passed"]


def test_the_detector_gets_its_weights_back(scenes):
    detector, images, targets = scenes
    explainer = DRISE(detector, n_masks=100, cells=8, seed=0)
    before = torch.cat(explainer.explain_detections(images, targets))
    weights = {k: v.clone() for k, v in detector.state_dict().items()}
    result = detection_sanity(detector, explainer, images, targets, seed=0)
    assert result["passed"] and result["n"] == len(images)
    assert all(torch.equal(weights[k], v) for k, v in detector.state_dict().items())
    assert torch.equal(torch.cat(explainer.explain_detections(images, targets)), before)


def test_sanity_images_parameter(tmp_path, coco_scenes, capsys):
    code, _, err = cli(capsys, *run_args(tmp_path / "ws", "biased", coco_scenes[1], "--param", "sanity_images=-1"))
    assert code == 2 and "sanity_images" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, *run_args(tmp_path / "ws", "biased", coco_scenes[1], "--n", 8,
                                           "--param", "sanity_images=0"))
    assert code == 0, err
    report = cached_report(out.strip().splitlines()[-1], Workspace(tmp_path / "ws"))
    assert report["sanity"] == {} and report["faithfulness"] == {}


def test_run_report_records_faithfulness_better_than_random(detection_runs):
    faithfulness = cached_report(detection_runs["biased"], Workspace(detection_runs["ws"]))["faithfulness"]
    assert faithfulness["method"] == "drise" and faithfulness["n"] == FAITHFULNESS_DETECTIONS
    assert faithfulness["deletion_auc"] < faithfulness["random_deletion_auc"] - 0.1


def test_faithfulness_curves_start_at_the_detection_and_inverse_maps_do_worse(scenes):
    """Deletion must separate D-RISE from its inverse. Insertion is not asserted: it starts from a heavy blur,
    and this colour-blob detector still finds a blurred boat, so inserting the background first (the inverse
    order) can score higher (seen: 0.29 for D-RISE vs 0.52 inverse here, 0.65 vs 0.49 random on the demo)."""
    detector, images, targets = scenes
    maps = DRISE(detector, n_masks=300, cells=8, seed=0).explain_detections(images, targets)
    good = detection_faithfulness(detector, images, targets, maps)
    inverse = detection_faithfulness(detector, images, targets, [-m for m in maps])
    assert good["deletion_auc"] < inverse["deletion_auc"] - 0.3
    rows = [(i, one) for i, t in enumerate(targets) for one in t.split()][:FAITHFULNESS_DETECTIONS]
    with torch.no_grad():  # untouched image: each detection's D-RISE similarity to the detector's own output
        clean = [float(one(detector(images[i:i + 1]))[0]) for i, one in rows]
    assert good["n"] == len(rows)
    assert good["deletion_curve"][0] == pytest.approx(sum(clean) / len(clean), abs=1e-6)
    assert good["insertion_curve"][-1] == pytest.approx(sum(clean) / len(clean), abs=1e-6)
