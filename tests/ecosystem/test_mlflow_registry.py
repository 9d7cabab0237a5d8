"""Retraining iterations from a live MLflow model registry: versions as `--model models:/...`, a registered
model's versions compared with `compare --registered`, and the results written back to each version."""
import json

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from analysis.cli import main
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from tests.dashboard.apptest import app_opener
from tests.ecosystem.mlflow_server import mlflow_server
from tests.report import samples_audit

pytestmark = pytest.mark.slow
VERSIONS = ("v1", "v3", "v5")  # the cage series: v1 trained on biased data, v5 with every counter-example
N = 48


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    with mlflow_server(root) as uri:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_registered_model("cage")
        experiment = client.create_experiment("cage-training")
        for version in VERSIONS:  # what a training pipeline logs: weights + card, then registers the folder
            run = client.create_run(experiment, run_name=f"train {version}")
            folder = samples_audit.model_file("cage", version).parent
            client.log_artifact(run.info.run_id, str(folder / "model.pt"), "model")
            client.log_artifact(run.info.run_id, str(folder / "model.json"), "model")
            client.create_model_version("cage", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("cage", "champion", "3")
        yield uri, client


@pytest.fixture(scope="module")
def cage_data(tmp_path_factory):
    return samples_audit.make_dataset("cage", tmp_path_factory.mktemp("data") / "cage", N, seed=123)


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def compared(registry, cage_data, tmp_path_factory):
    uri, _ = registry
    workspace = tmp_path_factory.mktemp("ws")
    out = workspace / "compare.json"  # module-scoped, so no capsys: the JSON goes to a file
    code = main(["compare", "--registered", "cage", "--data", str(cage_data), "--n", str(N), "--mlflow-uri", uri,
                 "--workspace", str(workspace), "--out", str(out)])
    assert code == 0
    return workspace, json.loads(out.read_text())


def test_compare_registered_audits_every_version_in_order(compared):
    workspace, result = compared
    assert result["runs"] == ["cage v1", "cage v2", "cage v3 @champion"]
    ws = Workspace(workspace)
    sources = [ws.model(ws.run(run_id)["model_id"])["source"] for run_id in result["run_ids"]]
    assert [s["uri"] for s in sources] == ["models:/cage/1", "models:/cage/2", "models:/cage/3"]
    cage = result["regions"]["cage"]["runs"]
    assert cage[0]["lift"] > cage[-1]["lift"]  # attention on the cage falls from the biased to the clean version


def test_flags_and_report_are_on_each_version(registry, compared):
    _, client = registry
    workspace, result = compared
    ws = Workspace(workspace)
    for number, run_id in zip(("1", "2", "3"), result["run_ids"]):
        version = client.get_model_version("cage", number)
        report = cached_report(run_id, ws)
        assert version.tags["saliency_audit.run"] == run_id
        assert version.tags["saliency_audit.flags"] == str(len(report["flags"]))
        record = version.tags["saliency_audit.mlflow_run"]  # the audit's own run, nested under the version's
        assert client.get_run(record).data.tags["mlflow.parentRunId"] == version.run_id
        artifacts = {a.path for a in client.list_artifacts(record, "saliency_audit")}
        assert artifacts == {"saliency_audit/report.json", "saliency_audit/report.html"}
        logged = json.loads(open(mlflow.artifacts.download_artifacts(
            run_id=record, artifact_path="saliency_audit/report.json",
            tracking_uri=client.tracking_uri)).read())
        assert logged["run"]["id"] == run_id and logged["flags"] == report["flags"]
        method = report["run"]["method"]
        assert client.get_run(record).data.metrics[f"saliency_audit.{method}.flags"] == len(report["flags"])
    v1, v3 = client.get_model_version("cage", "1"), client.get_model_version("cage", "3")
    assert int(v1.tags["saliency_audit.flags"]) >= 1 and "cage" in v1.tags["saliency_audit.flagged_regions"]
    assert v3.tags["saliency_audit.flags"] == "0" and v3.tags["saliency_audit.flagged_regions"] == "none"


def test_auditing_again_duplicates_nothing(registry, compared, cage_data, capsys):
    uri, client = registry
    workspace, result = compared
    code, out, err = _cli(capsys, "compare", "--registered", "cage", "--data", cage_data, "--n", N,
                          "--mlflow-uri", uri, "--workspace", workspace)
    assert code == 0, err
    assert json.loads(out)["run_ids"] == result["run_ids"]  # the audits are reused, not redone
    assert "auditing" not in err
    version = client.get_model_version("cage", "1")
    record = version.tags["saliency_audit.mlflow_run"]
    assert len(client.get_metric_history(record, f"saliency_audit.{version.tags['saliency_audit.method']}.flags")) == 1
    experiment = client.get_run(version.run_id).info.experiment_id
    assert len(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{version.run_id}'")) == 1


def test_run_takes_an_alias_and_reuses_the_registered_model(registry, compared, cage_data, capsys):
    uri, _ = registry
    workspace, result = compared
    code, out, err = _cli(capsys, "run", "--model", "models:/cage@champion", "--data", cage_data, "--n", N,
                          "--name", "cage v3 @champion", "--mlflow-uri", uri, "--workspace", workspace,
                          "--no-progress")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == result["run_ids"][2]  # same model, data, method: the same run


@pytest.mark.parametrize("uri,message", [
    ("models:/cage/9", "cage"),
    ("models:/nobody/1", "nobody"),
    ("models:/cage@nightly", "nightly"),
    ("models:/cage", "models:/NAME/VERSION"),
])
def test_bad_registry_uris_are_one_line_errors(registry, cage_data, tmp_path, capsys, uri, message):
    code, _, err = _cli(capsys, "run", "--model", uri, "--data", cage_data, "--mlflow-uri", registry[0],
                        "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_compare_page_offers_the_registered_models_versions(registry, compared, monkeypatch):
    uri, _ = registry
    workspace, result = compared
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = app_opener(workspace, monkeypatch, timeout=180)("app_pages/compare.py")
    at.radio(key="compare_source").set_value("an MLflow model registry").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="compare_registered").value == "cage"
    table = at.dataframe[0].value
    assert table["version"].tolist() == ["v1", "v2", "v3"] and table["aliases"].tolist() == ["", "", "champion"]
    assert table["audited"].tolist() == ["yes"] * 3
    assert table["flags"].tolist() == [str(len(cached_report(r, Workspace(workspace))["flags"]))
                                       for r in result["run_ids"]]
    (versions,) = [m for m in at.multiselect if m.label.startswith("Versions")]
    assert versions.value == result["run_ids"]  # the page compares exactly the registry's versions, in order
    assert any("cage" in m.value for m in at.markdown)  # the summary of the comparison is on the page


def test_a_pickled_mlflow_pytorch_model_is_refused(registry, cage_data, tmp_path, capsys):
    uri, client = registry
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("pickles")
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="model", registered_model_name="pickled",
                                        serialization_format="pickle")
    assert str(info.registered_model_version) == "1"
    code, _, err = _cli(capsys, "run", "--model", "models:/pickled/1", "--data", cage_data, "--mlflow-uri", uri,
                        "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 2 and "mlflow.pytorch model" in err and "runs code" in err
    assert "serialization_format='pt2'" in err and "batch of 2" in err  # the fix, in MLflow's own terms
    assert not (tmp_path / "ws" / "models").exists() or not any((tmp_path / "ws" / "models").iterdir())
