"""A registry entry cannot point anywhere on this machine: against a live `mlflow server` on 127.0.0.1.

A version whose source is a local path outside the registry's artifact store (`file:///etc`, `/proc/self`,
`file:///`) is refused before a byte is copied; so is a run folder holding a symbolic link, and a version over
the download cap. Sources the server would not accept are written straight into its backend database, as an
older server, a migration or anyone with database access could have left them. After every refusal the
workspace's temp area is empty and no model is registered.
"""
import shutil
import sqlite3

import pytest
from mlflow import MlflowClient

from analysis.cli import main
from analysis.store import mlflow_registry
from analysis.store.workspace import Workspace
from explainers.errors import InputError
from tests.ecosystem.mlflow_server import mlflow_server
from tests.runs.helpers import write_dataset, write_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(uri, client, backend database, artifact folder of a run with a real model)."""
    root = tmp_path_factory.mktemp("mlflow")
    model = write_model(tmp_path_factory.mktemp("model"))
    with mlflow_server(root) as uri:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment("fenced")
        run = client.create_run(experiment)
        client.log_artifact(run.info.run_id, str(model), "model")
        client.log_artifact(run.info.run_id, str(model.parent / "model.json"), "model")
        client.create_registered_model("fenced")
        client.create_model_version("fenced", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)  # v1
        yield uri, client, root / "mlflow.sqlite", run


def _version_with_source(server, source: str, name: str) -> mlflow_registry.RegisteredVersion:
    """A new version of `name` whose stored source (and storage location) is `source`."""
    uri, client, database, run = server
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    created = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    with sqlite3.connect(database) as db:
        db.execute("UPDATE model_versions SET source=?, storage_location=? WHERE name=? AND version=?",
                   (source, source, name, int(created.version)))
    return mlflow_registry.resolve(mlflow_registry.client(uri), f"models:/{name}/{created.version}")


@pytest.fixture
def copies(monkeypatch):
    """Every byte-copying call the fence makes for a local source, recorded."""
    calls = []
    real = shutil.copyfileobj
    monkeypatch.setattr(mlflow_registry.shutil, "copyfileobj", lambda *a, **k: (calls.append(a), real(*a, **k)))
    return calls


def _assert_left_nothing(ws: Workspace):
    assert ws.models() == []
    assert not (ws.root / "tmp").exists() or list((ws.root / "tmp").iterdir()) == []


@pytest.mark.parametrize("source", ["file:///etc", "/proc/self", "file:///", "file:///proc/self/environ"])
def test_a_local_source_outside_the_artifact_store_is_refused_before_copying(server, tmp_path, copies, source):
    version = _version_with_source(server, source, "outside")
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError) as refused:
        mlflow_registry.register(ws, mlflow_registry.client(server[0]), version)
    message = str(refused.value)
    assert "outside the registry's artifact store" in message and mlflow_registry.ROOTS_ENV in message
    assert "nothing was copied" in message and "\n" not in message
    assert copies == []
    _assert_left_nothing(ws)


def test_a_symlink_inside_a_trusted_store_is_refused(server, tmp_path, copies, monkeypatch):
    store = tmp_path / "store"
    folder = store / "model"
    folder.mkdir(parents=True)
    (folder / "weights").symlink_to("/etc")
    version = _version_with_source(server, folder.as_uri(), "linked")
    monkeypatch.setenv(mlflow_registry.ROOTS_ENV, str(store))
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="is a symbolic link, not a plain file; nothing was copied"):
        mlflow_registry.register(ws, mlflow_registry.client(server[0]), version)
    assert copies == []
    _assert_left_nothing(ws)


def test_a_plain_folder_in_a_named_store_is_read(server, tmp_path, monkeypatch):
    store = tmp_path / "store"
    model = write_model(store / "model")
    version = _version_with_source(server, model.parent.as_uri(), "named")
    monkeypatch.setenv(mlflow_registry.ROOTS_ENV, str(store))
    ws = Workspace(tmp_path / "ws")
    model_id = mlflow_registry.register(ws, mlflow_registry.client(server[0]), version)
    assert ws.model(model_id)["sha256"] == ws.model(ws.register_model(model))["sha256"]
    assert list((ws.root / "tmp").iterdir()) == []


def test_a_version_over_the_download_cap_is_refused_with_the_setting(server, tmp_path, monkeypatch):
    uri, client = server[0], mlflow_registry.client(server[0])
    version = mlflow_registry.resolve(client, "models:/fenced/1")  # served through mlflow-artifacts:/
    size = sum(int(f.file_size) for f in server[1].list_artifacts(server[3].info.run_id, "model"))
    monkeypatch.setenv(mlflow_registry.MAX_BYTES_ENV, str(size - 1))
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError) as refused:
        mlflow_registry.register(ws, client, version)
    assert f"its files are {size:,} bytes, over the download cap of {size - 1:,}" in str(refused.value)
    assert mlflow_registry.MAX_BYTES_ENV in str(refused.value)
    _assert_left_nothing(ws)
    monkeypatch.setenv(mlflow_registry.MAX_BYTES_ENV, str(size))  # exactly the cap: read
    model_id = mlflow_registry.register(ws, client, version)
    assert ws.model(model_id)["source"]["uri"] == "models:/fenced/1"
    assert list((ws.root / "tmp").iterdir()) == []


def test_the_cli_refuses_in_one_line_with_exit_2(server, tmp_path, capsys):
    version = _version_with_source(server, "file:///etc", "cli")
    data = write_dataset(tmp_path / "data", n=4)
    capsys.readouterr()  # MLflow's own log lines from creating the version
    code = main(["run", "--model", version.uri, "--data", str(data), "--mlflow-uri", server[0],
                 "--workspace", str(tmp_path / "ws"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "outside the registry's artifact store" in err and len(err.strip().splitlines()) == 1
    ws = Workspace(tmp_path / "ws")
    _assert_left_nothing(ws)
    assert ws.runs() == []


def test_a_local_backend_reads_its_runs_own_folder_but_no_link_out_of_it(tmp_path, monkeypatch):
    """No server: a SQLite tracking store whose artifacts live in a local folder. The version's run folder is
    the artifact store, so its plain files are read; a symbolic link planted in it is refused."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.sqlite'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("local", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    model = write_model(tmp_path / "model")
    client.log_artifact(run.info.run_id, str(model), "model")
    client.log_artifact(run.info.run_id, str(model.parent / "model.json"), "model")
    client.create_registered_model("local")
    client.create_model_version("local", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    registry = mlflow_registry.client(uri)
    ws = Workspace(tmp_path / "ws")
    model_id = mlflow_registry.register(ws, registry, mlflow_registry.resolve(registry, "models:/local/1"))
    assert ws.model(model_id)["sha256"] == ws.model(ws.register_model(model))["sha256"]

    (tmp_path / "artifacts" / run.info.run_id / "artifacts" / "model" / "extra").symlink_to("/etc")
    client.create_model_version("local", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    other = Workspace(tmp_path / "ws2")
    with pytest.raises(InputError, match="extra in its source .* is a symbolic link"):
        mlflow_registry.register(other, registry, mlflow_registry.resolve(registry, "models:/local/2"))
    _assert_left_nothing(other)
