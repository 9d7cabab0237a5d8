"""The evidence stage wired after a real run: workspace -> execute_run -> compute_evidence -> flags."""
import json

import pytest

from analysis.stats.aggregate import region_table
from analysis.evidence.stage import compute_evidence
from analysis.report.flags import shortcut_flags
from tests.report import planted


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from analysis.runs.engine import execute_run
    from analysis.runs.tasks import get_task
    from analysis.store.workspace import Workspace

    root = tmp_path_factory.mktemp("evidence")
    model = planted.write_model(root / "model")
    data = planted.write_dataset(root / "data")
    ws = Workspace(root / "ws")
    run_id = ws.create_run(ws.register_model(model), ws.register_dataset(data), "gradcam", n=48, seed=0)
    execute_run(ws, run_id, progress=False)
    prepared = get_task("classification").prepare(ws, ws.run(run_id), "cpu")
    loaded, dataset, layer_name = prepared.loaded, prepared.dataset, prepared.target_layer
    return loaded, dataset, ws.store(run_id), layer_name


def test_tag_shortcut_is_flagged_with_causal_evidence_and_core_is_not(finished_run):
    loaded, dataset, store, layer_name = finished_run
    evidence = compute_evidence(loaded, dataset, store, method="gradcam", layer_name=layer_name, seed=0,
                                n_boot=200, sanity_images=4, faithfulness_images=8)
    json.dumps(evidence)  # JSON-able, as the store writes it
    tag = evidence["interventions"]["tag"]
    # mean fill turns every cat's bright tag into the mean colour -> predicted dog; dogs stay dogs
    assert tag["accuracy_before"] == 1.0
    assert tag["flip_rate"] == pytest.approx(0.5) and tag["control"]["flip_rate"] == 0.0
    assert tag["p_value"] == pytest.approx(0.5 ** 24)
    assert "animal" not in evidence["interventions"]  # core: never a candidate
    assert evidence["second_explainer"]["method"] == "saliency"
    assert evidence["second_explainer"]["regions"]["tag"]["lift"] > 5
    assert evidence["faithfulness"]["deletion_auc"] < evidence["faithfulness"]["random_deletion_auc"]

    table = region_table(store.images(), store.regions(), n_boot=200)
    flags = shortcut_flags(table, evidence)
    assert [f["region"] for f in flags] == ["tag"]
    assert flags[0]["evidence"]["flip_rate"] == pytest.approx(0.5)
    # the window is hard-wired, so the maps survive weight randomisation: the sanity check says so
    sanity = evidence["sanity"]["model_randomization"]
    assert sanity["passed"] is False and flags[0]["confidence"] == "low" and flags[0]["severity"] == "medium"


def test_a_second_audit_of_the_same_model_reuses_its_interventions(finished_run, tmp_path, monkeypatch):
    """Interventions depend on the model and the sample, not on the explainer: the second method's evidence
    reads them from the cache, equal to computing them; another model id or seed computes them again."""
    import analysis.evidence.stage as stage

    loaded, dataset, store, layer_name = finished_run
    options = dict(seed=0, n_boot=200, sanity_images=2, faithfulness_images=4)
    fresh = compute_evidence(loaded, dataset, store, method="gradcam", layer_name=layer_name, **options)
    first = compute_evidence(loaded, dataset, store, method="gradcam", layer_name=layer_name, cache_dir=tmp_path,
                             model_key="m-1", **options)
    assert len(list(tmp_path.glob("*.json"))) == 1
    calls = []
    real = stage.run_trials
    monkeypatch.setattr(stage, "run_trials", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = compute_evidence(loaded, dataset, store, method="saliency", cache_dir=tmp_path, model_key="m-1",
                              **options)
    assert calls == []  # no fill or swap ran again
    as_stored = json.loads(json.dumps(fresh["interventions"], default=float))
    assert second["interventions"] == as_stored == json.loads(json.dumps(first["interventions"], default=float))
    assert second["interventions"]["tag"]["flip_rate"] == pytest.approx(0.5)
    assert second["sequential"]["n_used"] == fresh["sequential"]["n_used"]
    compute_evidence(loaded, dataset, store, method="saliency", cache_dir=tmp_path, model_key="m-2", **options)
    compute_evidence(loaded, dataset, store, method="saliency", cache_dir=tmp_path, model_key="m-1",
                     **{**options, "seed": 1})
    assert len(calls) == 2 and len(list(tmp_path.glob("*.json"))) == 3


def test_the_default_evidence_sample_fits_its_memory_bound():
    """Every image while the decoded inputs (float32 x 3) and masks (int64) fit 2 GiB; beyond, as many as fit:
    a 10,000-image audit at 224 px decoded ~10 GB on the driver and was killed."""
    from analysis.evidence.stage import EVIDENCE_MEMORY, evidence_sample_size

    assert EVIDENCE_MEMORY == 2 * 1024 ** 3
    assert evidence_sample_size(1_000, (224, 224)) == 1_000
    assert evidence_sample_size(10_000, (224, 224)) == 2 * 1024 ** 3 // (224 * 224 * 20) == 2_139
    assert evidence_sample_size(100_000, (64, 64)) == 26_214
    assert evidence_sample_size(10, (64, 64), memory=1) == 1
