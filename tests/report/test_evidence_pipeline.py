"""The evidence stage wired after a real run: workspace -> execute_run -> compute_evidence -> flags."""
import json

import pytest

from analysis.stats.aggregate import region_table
from analysis.evidence.stage import compute_evidence
from analysis.report.flags import shortcut_flags
from tests.report import planted


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from analysis.runs.runner import execute_run, prepare
    from analysis.store.workspace import Workspace

    root = tmp_path_factory.mktemp("evidence")
    model = planted.write_model(root / "model")
    data = planted.write_dataset(root / "data")
    ws = Workspace(root / "ws")
    run_id = ws.create_run(ws.register_model(model), ws.register_dataset(data), "gradcam", n=48, seed=0)
    execute_run(ws, run_id, progress=False)
    loaded, dataset, _, layer_name, _ = prepare(ws, ws.run(run_id))
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
