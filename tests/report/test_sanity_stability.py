"""The model-randomisation decision is stable by sample (`analysis.evidence.sanity.judge`): the interval of the
cascade mean decides when it clears the threshold, the sample doubles while it does not, and an explainer the
cascade mean cannot place is judged on the fully randomised model.

The demo's watermark v5 (a four-block CNN) with Grad-CAM is the case that flipped: its cascade mean is 0.51 over
200 images (0.95 once only the head is random), so 8-image samples read either side of 0.5 and the verdict went
from clear to cannot judge with the sample."""
import numpy as np
import pytest
import torch

from analysis.evidence.sanity import judge, model_randomisation


def _cascade(per_stage: list[list[float]]) -> dict:
    values = np.asarray(per_stage, dtype=np.float64)  # (stages, images)
    return {"layers": [f"s{k}" for k in range(len(values))], "n_randomised": list(range(1, len(values) + 1)),
            "abs": values, "signed": values, "ssim": values}


def test_a_decisive_cascade_decides_and_an_undecided_one_waits_then_reads_the_fully_randomised_model():
    low = _cascade([[0.3, 0.2, 0.25, 0.35], [0.1, 0.0, 0.05, 0.15]])  # per-image means 0.2 .. 0.25
    result = judge([low], method="m")
    assert (result["passed"], result["decided_by"], result["n"]) == (True, "cascade mean", 4)
    assert result["similarity"] == pytest.approx(0.175) and result["similarity_ci"][1] < 0.5
    high = _cascade([[1.0, 0.98, 0.99, 0.97], [0.9, 0.95, 0.92, 0.93]])  # an edge detector: nothing changes
    assert (judge([high], method="m")["passed"], judge([high], method="m")["decided_by"]) == (False, "cascade mean")
    # per-image cascade means 0.3 and 0.7 around 0.5: no decision before the last look
    straddle = _cascade([[0.5, 0.9, 0.5, 0.9], [0.1, 0.5, 0.1, 0.5]])
    assert judge([straddle], method="m", looks=3, last=False)["passed"] is None
    final = judge([straddle, straddle], method="m", looks=3, last=True)
    assert (final["passed"], final["decided_by"], final["n"]) == (False, "fully randomised model", 8)
    assert final["level"] == pytest.approx(1 - 0.05 / 3)
    # per-image cascade means 0.52, 0.35, 0.58, 0.42 (interval around 0.5); the fully randomised model: ~0
    unrelated = _cascade([[1.0, 0.8, 1.0, 0.8], [0.5, 0.3, 0.7, 0.5], [0.05, -0.05, 0.05, -0.05]])
    settled = judge([unrelated], method="m", looks=1, last=True)
    assert settled["similarity_ci"][0] < 0.5 < settled["similarity_ci"][1]
    assert (settled["passed"], settled["decided_by"]) == (True, "fully randomised model")
    assert settled["final_similarity"] == pytest.approx(0.0)


def test_the_verdict_says_what_the_decision_rests_on():
    from analysis.report.verdict import sanity_check

    result = judge([_cascade([[1.0, 0.8, 1.0, 0.8], [0.5, 0.3, 0.7, 0.5], [0.05, -0.05, 0.05, -0.05]])],
                   method="gradcam")
    check = sanity_check({"sanity": {"model_randomization": result}})
    assert check.status == "passed" and check.value == pytest.approx(0.4667, abs=1e-4)
    assert check.detail == ("gradcam's maps change when the weights are randomised (similarity 0.47 [0.30, 0.63], "
                            "n = 4; the cascade mean's interval holds 0.50, so the fully randomised model decided: "
                            "similarity 0.00)")


@pytest.mark.slow
def test_demo_watermark_v5_gradcam_gets_the_same_decision_on_two_samples(tmp_path):
    from analysis.data.datasets import open_dataset
    from analysis.demo.build import DATA_LEAK, DATA_SEED
    from analysis.evidence.stage import module_layer_name
    from explainers.loading.models import load_model
    from explainers.preprocess import to_input
    from sample_models.scenes import generate
    from sample_models.train import WEIGHTS_DIR

    torch.set_num_threads(1)
    loaded = load_model(WEIGHTS_DIR / "watermark" / "v5" / "model.pt2")
    dataset = open_dataset(generate("watermark", tmp_path / "val", n=64, leak=DATA_LEAK, seed=DATA_SEED))
    images = torch.stack([to_input(dataset.load(item)[0], loaded.card) for item in dataset.items])
    with torch.no_grad():
        targets = loaded.module(images).argmax(dim=1)
    layer = module_layer_name(loaded, loaded.target_layer_name())
    results = [model_randomisation(loaded.module, images[rows], "gradcam", layer_name=layer, targets=targets[rows],
                                   seed=0, max_stages=8) for rows in (slice(0, 32), slice(32, 64))]
    for r in results:
        assert r["stages"][0]["spearman_abs"] > 0.9  # the head stage: Grad-CAM's channel weights only
        # the cascade mean cannot be placed on either side of 0.5 at 32 images: the fully randomised model decides
        assert r["n"] == 32 and r["similarity_ci"][0] < 0.5 <= r["similarity_ci"][1]
        assert r["decided_by"] == "fully randomised model" and r["final_ci"][1] < 0.5
    assert [r["passed"] for r in results] == [True, True]
