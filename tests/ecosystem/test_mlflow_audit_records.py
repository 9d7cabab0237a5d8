"""One MLflow record per audit: two audits of one registered version (two methods, two datasets) are two nested
runs under the version's run, neither overwriting the other, filterable by params and metrics, linked to the
version's LoggedModel; auditing again logs nothing new. Against a live `mlflow server` on 127.0.0.1."""
import json
import shutil

import mlflow
import pytest
from mlflow import MlflowClient

from analysis.cli import main
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from tests.ecosystem.mlflow_server import mlflow_server
from tests.report import samples_audit

pytestmark = pytest.mark.slow
N = 24
AUDITS = (("gradcam", "cage_a", 11), ("saliency", "cage_b", 22))  # (method, dataset folder, dataset seed)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A version logged as an MLflow 3 LoggedModel (weights + card), registered, then audited twice."""
    root = tmp_path_factory.mktemp("mlflow")
    with mlflow_server(root) as uri:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment("cage-training")
        train = client.create_run(experiment, run_name="train v1").info.run_id
        logged = client.create_logged_model(experiment, name="cage", source_run_id=train)
        files = tmp_path_factory.mktemp("model")
        source = samples_audit.model_file("cage", "v1").parent
        for name in ("model.pt", "model.json"):
            shutil.copy(source / name, files / name)
        client.log_model_artifacts(logged.model_id, str(files))
        client.finalize_logged_model(logged.model_id, "READY")
        mlflow.set_tracking_uri(uri)  # what a team runs: register the LoggedModel by its models:/m-... URI
        assert mlflow.register_model(f"models:/{logged.model_id}", "cage").version == "1"
        workspace = tmp_path_factory.mktemp("ws")
        data = tmp_path_factory.mktemp("data")
        run_ids = []
        for method, folder, seed in AUDITS:
            dataset = samples_audit.make_dataset("cage", data / folder, N, seed=seed)
            code = main(["run", "--model", "models:/cage/1", "--data", str(dataset), "--method", method,
                         "--n", str(N), "--mlflow-uri", uri, "--workspace", str(workspace), "--no-progress"])
            assert code == 0
            run_ids.append(Workspace(workspace).runs()[-1]["id"])
        yield uri, client, train, logged.model_id, workspace, data, run_ids


def _records(client, train, extra=""):
    experiment = client.get_run(train).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{train}'" + (f" and {extra}" if extra else "")
    return client.search_runs([experiment], query)


def test_two_audits_are_two_records_under_the_versions_run(audited):
    _, client, train, _, workspace, _, run_ids = audited
    ws = Workspace(workspace)
    records = {r.data.params["method"]: r for r in _records(client, train)}
    assert sorted(records) == ["gradcam", "saliency"]
    for (method, folder, _), run_id in zip(AUDITS, run_ids):
        record, report = records[method], cached_report(run_id, ws)
        assert record.info.run_name == f"{method} · {folder} · n={N}"
        assert record.info.status == "FINISHED"
        assert record.data.params["dataset"] == folder
        assert record.data.params["dataset_hash"] == ws.dataset(ws.run(run_id)["dataset_id"])["sha256"]
        assert record.data.params["n"] == str(N) and record.data.params["seed"] == "0"
        assert record.data.tags["saliency_audit.audit_id"] == run_id
        assert record.data.metrics[f"saliency_audit.{method}.flags"] == len(report["flags"])
        lifts = {k for k in record.data.metrics if k.startswith(f"saliency_audit.{method}.lift.")}
        assert f"saliency_audit.{method}.lift.cage" in lifts
        assert not any(k.startswith("saliency_audit.") and not k.startswith(f"saliency_audit.{method}.")
                       for k in record.data.metrics)  # the other method's numbers are in the other record
        logged = json.loads(open(mlflow.artifacts.download_artifacts(
            run_id=record.info.run_id, artifact_path="saliency_audit/report.json",
            tracking_uri=client.tracking_uri)).read())
        assert logged["run"]["id"] == run_id and logged["run"]["method"] == method  # not overwritten
        assert {a.path for a in client.list_artifacts(record.info.run_id, "saliency_audit")} == {
            "saliency_audit/report.json", "saliency_audit/report.html"}
    assert client.get_run(train).data.metrics == {}  # nothing on the training run itself


def test_records_filter_by_params_and_metrics(audited):
    _, client, train, _, workspace, _, run_ids = audited
    (only,) = _records(client, train, "params.method = 'saliency' and params.dataset = 'cage_b'")
    assert only.data.tags["saliency_audit.audit_id"] == run_ids[1]
    flags = cached_report(run_ids[0], Workspace(workspace))["flags"]
    found = _records(client, train, f"metrics.`saliency_audit.gradcam.flags` = {len(flags)}")
    assert [r.data.tags["saliency_audit.audit_id"] for r in found] == [run_ids[0]]
    assert _records(client, train, f"metrics.`saliency_audit.gradcam.flags` = {len(flags) + 1}") == []


def test_version_tags_summarise_the_latest_audit_per_method(audited):
    _, client, train, _, workspace, _, run_ids = audited
    ws = Workspace(workspace)
    tags = client.get_model_version("cage", "1").tags
    records = {r.data.params["method"]: r.info.run_id for r in _records(client, train)}
    for (method, folder, _), run_id in zip(AUDITS, run_ids):
        report = cached_report(run_id, ws)
        assert tags[f"saliency_audit.{method}.run"] == run_id
        assert tags[f"saliency_audit.{method}.mlflow_run"] == records[method]
        assert tags[f"saliency_audit.{method}.flags"] == str(len(report["flags"]))
        assert tags[f"saliency_audit.{method}.dataset"] == folder
    assert tags["saliency_audit.method"] == "saliency" and tags["saliency_audit.run"] == run_ids[1]  # the latest


def test_the_logged_model_page_lists_both_audits_metrics(audited):
    _, client, train, model_id, _, _, _ = audited
    metrics = {(m.key, m.dataset_name) for m in client.get_logged_model(model_id).metrics or []}
    assert ("saliency_audit.gradcam.flags", "cage_a") in metrics
    assert ("saliency_audit.saliency.flags", "cage_b") in metrics
    for record in _records(client, train):
        assert [m.model_id for m in client.get_run(record.info.run_id).inputs.model_inputs] == [model_id]


def test_auditing_again_logs_nothing_new(audited, capsys):
    uri, client, train, _, workspace, data, run_ids = audited
    before = {r.info.run_id for r in _records(client, train)}
    code = main(["run", "--model", "models:/cage/1", "--data", str(data / "cage_a"), "--method", "gradcam",
                 "--n", str(N), "--mlflow-uri", uri, "--workspace", str(workspace), "--no-progress"])
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == run_ids[0]  # the audit is reused
    assert {r.info.run_id for r in _records(client, train)} == before
    gradcam = next(r for r in _records(client, train) if r.data.params["method"] == "gradcam")
    assert len(client.get_metric_history(gradcam.info.run_id, "saliency_audit.gradcam.flags")) == 1
    assert client.get_model_version("cage", "1").tags["saliency_audit.method"] == "saliency"  # unchanged
