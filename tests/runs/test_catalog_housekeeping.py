"""Names, versions, rename, delete and human labels in the catalog; labels re-checked on a report."""
import json
import re
import sqlite3

import pytest

from analysis.report.labels import label_checks, model_label
from analysis.store.workspace import Workspace
from explainers.errors import InputError
from tests.dashboard.workspace_builder import build_workspace, write_model


@pytest.fixture
def planted(tmp_path):
    root = tmp_path / "workspace"
    ids = build_workspace(root)
    return Workspace(root), ids


def test_a_staged_file_named_model_takes_the_name_given_never_its_temp_folder(tmp_path):
    staged = tmp_path / "tmpby4c5ilq" / "model.safetensors"
    source = write_model(tmp_path / "src")
    staged.parent.mkdir()
    staged.write_bytes(source.read_bytes())
    card = tmp_path / "src" / "model.json"
    ws = Workspace(tmp_path / "ws")
    model_id = ws.register_model(staged, card, name="cage-net", version="v1")
    row = ws.model(model_id)
    assert (row["name"], row["version"]) == ("cage-net", "v1")
    # The same file again with a card that names it otherwise: the name a person gave stays.
    card.write_text(json.dumps({**json.loads(card.read_text()), "name": "carded", "version": 3}))
    assert ws.register_model(staged, card) == model_id and ws.model(model_id)["name"] == "cage-net"
    # The card's own name and version are the defaults of a model registered without one.
    other_file = write_model(tmp_path / "other")
    other = ws.model(ws.register_model(other_file, card))
    assert (other["name"], other["version"]) == ("carded", "3")
    assert model_label(other["name"], other["version"]) == "carded v3"  # a bare number reads as a version
    assert model_label("net-v2", "v2") == "net-v2"


def test_rename_shows_in_runs_and_in_the_report(planted):
    from analysis.report.build import cached_report

    ws, ids = planted
    run = ws.run(ids["runs"][0])
    before = cached_report(ws.store(run["id"]), ws)  # cached on disk now
    ws.rename_model(run["model_id"], "pets-net", "v1")
    ws.rename_dataset(ids["dataset"], "pets photos")
    ws.rename_run(run["id"], "first audit")
    listed = {r["id"]: r for r in ws.runs()}[run["id"]]
    assert (listed["name"], listed["model_name"], listed["model_version"], listed["dataset_name"]) == \
        ("first audit", "pets-net", "v1", "pets photos")
    after = cached_report(ws.store(run["id"]), ws)
    assert after["run"]["name"] == "first audit" and before["run"]["name"] == "v1"
    assert after["run"]["model"]["name"] == "pets-net" and after["run"]["model"]["version"] == "v1"
    assert after["run"]["dataset"]["name"] == "pets photos"
    with pytest.raises(InputError, match="not empty"):
        ws.rename_run(run["id"], "  ")


def test_delete_refuses_while_a_job_runs_and_removes_files_and_audits(planted, monkeypatch):
    ws, ids = planted
    run_v1, run_v2 = ids["runs"]
    model_v1 = ws.run(run_v1)["model_id"]
    with ws._write() as db:
        db.execute("UPDATE runs SET status='running', pid=? WHERE id=?", (1, run_v1))  # pid 1: alive
    with pytest.raises(InputError, match="still running"):
        ws.delete_model(model_v1)
    with pytest.raises(InputError, match="still running"):
        ws.delete_dataset(ids["dataset"])
    assert ws.model(model_v1) is not None and (ws.run_dir(run_v1)).exists()
    ws.update_run(run_v1, status="done", pid=None)
    assert ws.delete_model(model_v1) == [run_v1]
    assert ws.model(model_v1) is None and not ws.run_dir(run_v1).exists()
    assert not (ws.root / "models" / model_v1).exists()
    assert [r["id"] for r in ws.runs()] == [run_v2]
    ws.set_label(ids["dataset"], "cage", "shortcut")
    assert ws.delete_dataset(ids["dataset"]) == [run_v2]
    assert ws.datasets() == [] and ws.runs() == [] and ws.labels(ids["dataset"]) == []


def test_labels_follow_the_dataset_and_are_rechecked_on_each_version(planted):
    from analysis.report.build import cached_report

    ws, ids = planted
    run_v1, run_v2 = ids["runs"]
    ws.rename_model(ws.run(run_v1)["model_id"], "pets-net", "v1")
    ws.rename_model(ws.run(run_v2)["model_id"], "pets-net", "v2")
    ws.set_label(ids["dataset"], "cage", "shortcut", "bars are not the animal", run_id=run_v1,
                 model_id=ws.run(run_v1)["model_id"])
    with pytest.raises(InputError, match="choose one of"):
        ws.set_label(ids["dataset"], "cage", "maybe")
    v1 = cached_report(ws.store(run_v1), ws)["labels"]
    v2 = cached_report(ws.store(run_v2), ws)["labels"]
    lift_v1 = next(r for r in cached_report(ws.store(run_v1), ws)["regions"]
                   if r["region"] == "cage" and r["class"] is None and r["group"] is None)["lift"]
    assert v1[0]["text"] == f"labelled shortcut on pets-net v1: still {lift_v1:.1f}x attention on pets-net v1"
    assert v1[0]["note"] == "bars are not the animal" and v1[0]["still_attended"] is True
    # v2 attends to the cage with 0.1 of its mass on caged images (area 0.125): less than its size explains.
    assert v2[0]["still_attended"] is False
    assert v2[0]["text"].startswith("labelled shortcut on pets-net v1: no more attention than its size explains on "
                                    "pets-net v2")
    ws.set_label(ids["dataset"], "cage", "legitimate")  # the newest verdict replaces the old one
    assert [(r["region"], r["verdict"]) for r in ws.labels(ids["dataset"])] == [("cage", "legitimate")]


def test_label_for_a_region_the_run_lacks_says_so():
    report = {"run": {"model": {"name": "net", "version": "v3"}}, "regions": [], "flags": []}
    rows = label_checks([{"region": "watermark", "verdict": "shortcut", "model_id": "m-1", "model_name": "net",
                          "model_version": "v1"}], report)
    assert rows[0]["text"] == "labelled shortcut on net v1: this audit has no region watermark to check"


def test_an_old_catalog_gains_the_new_columns(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    conn = sqlite3.connect(root / "catalog.sqlite")
    conn.execute("CREATE TABLE models (id TEXT PRIMARY KEY, name TEXT, path TEXT, sha256 TEXT, card TEXT, "
                 "format TEXT, created REAL)")
    conn.execute("INSERT INTO models VALUES ('m-1', 'old', 'p', 's', '{}', 'pt2', 0)")
    conn.commit()
    conn.close()
    ws = Workspace(root)
    assert ws.model("m-1")["version"] is None
    ws.rename_model("m-1", "old", "v7")
    assert ws.model("m-1")["version"] == "v7"


def test_unreadable_images_are_named_with_their_reason_before_any_run(tmp_path):
    from analysis.data.datasets import open_dataset
    from tests.runs.helpers import write_dataset

    folder = write_dataset(tmp_path / "data", n=6, corrupt=(2,))
    (folder / "images" / "004.png").write_text("this is a text file, not a picture")
    dataset = open_dataset(folder)
    dataset.validate()  # headers only: a truncated PNG passes
    bad = dataset.unreadable_images()
    assert [b["image"] for b in bad] == ["images/002.png", "images/004.png"]
    assert "truncated" in bad[0]["reason"].lower() or "broken" in bad[0]["reason"].lower(), bad[0]


def test_cli_runs_lists_the_names_a_person_gave(planted, capsys, monkeypatch):
    from analysis.cli import main

    ws, ids = planted
    ws.rename_model(ws.run(ids["runs"][0])["model_id"], "pets-net", "v1")
    monkeypatch.setenv("SALIENCY_AUDIT_WORKSPACE", str(ws.root))
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "name", "model", "dataset_name"]
    assert "pets-net v1" in next(line for line in lines if ids["runs"][0] in line)
    assert main(["runs", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (rows[0]["model_name"], rows[0]["model_version"]) == ("pets-net", "v1")


def test_the_estimate_learns_from_finished_runs_on_this_machine():
    from analysis.store.jobs import estimate_seconds

    typical = {"gradcam": 0.05, "rise": 4.0}
    runs = [{"method": "gradcam", "n_done": 100, "created": 0, "updated": 39},   # 39 s for 100 images
            {"method": "gradcam", "n_done": 200, "created": 100, "updated": 169}]  # 69 s for 200
    seconds, basis = estimate_seconds(runs, "gradcam", 300, typical)
    assert seconds == pytest.approx(99.0)  # 9 s fixed + 0.3 s per image
    assert "2 earlier gradcam audit(s)" in basis
    seconds, _ = estimate_seconds(runs[:1], "gradcam", 100, typical)
    assert seconds == pytest.approx(39.0)
    seconds, basis = estimate_seconds(runs, "rise", 10, typical)  # this machine is ~6x slower than the table
    assert seconds == pytest.approx(10 * 4.0 * (39 / 5 + 69 / 10) / 2) and "scaled" in basis
    assert estimate_seconds([], "rise", 10, typical)[0] == pytest.approx(40.0)


def test_the_worker_starts_from_the_checkout_root():
    """The dashboard's job runs `python -m analysis.cli` from PROJECT_ROOT: it must be the checkout, not the
    `analysis/` package folder a move into `analysis/store/` left it pointing at."""
    from analysis.store.jobs import PROJECT_ROOT

    assert (PROJECT_ROOT / "analysis" / "cli.py").is_file()


def test_cli_compare_orders_by_version_and_names_the_flagged_ones(planted, capsys, monkeypatch):
    """Given newest first, and with v10 audited before v9, `compare` still reads v9 -> v10 (natural sort)."""
    from analysis.cli import main

    ws, ids = planted
    first, second = ids["runs"]  # planted v1 looks at the cage (flagged), v2 does not
    ws.rename_model(ws.run(first)["model_id"], "pets-net", "v9")
    ws.rename_model(ws.run(second)["model_id"], "pets-net", "v10")
    ws.rename_run(first, "older")
    ws.rename_run(second, "newer")
    monkeypatch.setenv("SALIENCY_AUDIT_WORKSPACE", str(ws.root))
    assert main(["compare", second, first]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == ["older", "newer"] and result["run_ids"] == [first, second]
    assert result["flagged"] == {"older": ["cage"], "newer": []}
    assert result["summary"].endswith("flagged: older on cage; no flag: newer")


def test_cli_check_prints_the_lift_rounded(planted, capsys, monkeypatch):
    from analysis.cli import main

    ws, ids = planted
    monkeypatch.setenv("SALIENCY_AUDIT_WORKSPACE", str(ws.root))
    # the planted audit's flags rest on attention alone (no intervention on 12 images): not a verdict of flagged
    assert main(["check", ids["runs"][0], "--fail-on-flags"]) == 4
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "verdict: cannot judge"
    findings = [line for line in lines if " on region " in line]
    assert findings and all(re.search(r", lift (\d+\.\d\d|not measured): ", line) for line in findings), lines
    assert any("on region 'cage'" in line and "lift 5.6" in line for line in findings), lines
