"""The pages as a person reads them (AppTest): names, findings, labels, housekeeping, errors in view."""
import io
import json
import re
import zipfile

import pytest

from tests.dashboard.apptest import app_opener
from workspace_builder import build_workspace, write_dataset

RAW = re.compile(r"\bNone\b|\bnan\b|\{\"|\[(\d+\.\d+), \1\]|tmp[a-z0-9_]{8}")


@pytest.fixture
def planted(tmp_path):
    root = tmp_path / "workspace"
    ids = build_workspace(root)
    from analysis.store.workspace import Workspace

    workspace = Workspace(root)
    for k, run_id in enumerate(ids["runs"]):
        workspace.rename_model(workspace.run(run_id)["model_id"], "pets-net", f"v{k + 1}")
    return root, ids


@pytest.fixture
def app(planted, monkeypatch):
    return app_opener(planted[0], monkeypatch)


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [s.value for s in at.success] + [w.value for w in at.warning] + [t.value for t in at.title]
    parts += [e.value for e in at.error] + [str(frame.value.to_dict()) for frame in at.dataframe]
    return "\n".join(str(p) for p in parts).replace("\\", "")


def test_overview_says_the_finding_in_a_sentence_per_series(app):
    at = app()
    text = _texts(at)
    assert "pets-net on pets" in text
    assert "v2" in text and "Across versions" in text
    assert re.search(r"cage: v1 5\.6x → v2 0\.8x", text), text
    assert not RAW.search("\n".join(m.value for m in at.markdown)), RAW.search(text)
    assert len(at.image) == 0 or all(img.value for img in at.image)


def test_report_evidence_is_a_panel_and_the_header_names_the_model(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    text = _texts(at)
    assert "Model pets-net v1 · dataset pets" in text
    text = text.replace("\\", "")
    assert "draws 5.6x its area's share of attention, but no intervention tested it" in text
    assert "No intervention tested this region: attention alone, not evidence of use" in text
    assert "Note: no intervention evidence was computed for this region" in text
    assert at.get("json") == [] or len(at.get("json")) == 0
    assert not RAW.search("\n".join(m.value for m in at.markdown))


def test_a_label_set_on_v1_is_rechecked_on_v2(app, planted):
    run_v1, run_v2 = planted[1]["runs"]
    at = app("app_pages/report.py", run=run_v1)
    at.selectbox(key="label_region").set_value("cage")
    at.radio(key="label_verdict").set_value("shortcut")
    at.text_input(key="label_note").set_value("bars are not the animal")
    at.button(key="label_save").click().run()
    assert "labelled shortcut on pets-net v1: still 5.6x attention on pets-net v1" in _texts(at)
    v2 = app("app_pages/report.py", run=run_v2)
    assert ("labelled shortcut on pets-net v1: no more attention than its size explains on pets-net v2"
            in _texts(v2))
    assert "bars are not the animal" in _texts(v2)
    overview = app()
    assert ("Your label:* labelled shortcut on pets-net v1: no more attention than its size explains on "
            "pets-net v2" in _texts(overview))  # the series' latest version, re-checked


def test_the_uploaded_card_fills_the_form_and_the_name_defaults_to_the_file(app):
    at = app("app_pages/upload.py")
    card = {"task": "classification", "classes": ["circle", "square"], "input_size": [48, 48],
            "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "name": "shapes-net", "version": "v3"}
    at.file_uploader(key="upload_model").set_value(("model.pt2", b"bytes", "application/octet-stream"))
    at.file_uploader(key="upload_card").set_value(("model.json", json.dumps(card).encode(), "application/json")).run()
    assert at.text_area(key="card_classes").value == "circle\nsquare"
    assert (at.number_input(key="card_h").value, at.number_input(key="card_w").value) == (48, 48)
    assert at.text_input(key="card_mean").value == "0.1, 0.2, 0.3"
    assert (at.text_input(key="model_name").value, at.text_input(key="model_version").value) == ("shapes-net", "v3")


def test_a_broken_card_and_a_failed_check_show_beside_the_button(app):
    at = app("app_pages/upload.py")
    at.file_uploader(key="upload_model").set_value(("net.pt2", b"PK not an export", "application/octet-stream"))
    at.text_area(key="card_classes").set_value("a\nb\nc").run()
    at.button(key="register_model").click().run(timeout=120)
    tree = [node for node in at.main]  # top-level order: the error comes right after the button
    kinds = [type(node).__name__ for node in tree]
    button = next(i for i, n in enumerate(tree) if getattr(n, "key", None) == "register_model")
    assert kinds[button + 1] == "Error", kinds[button - 2:button + 3]
    assert "net.pt2: not a model file" in at.error[0].value.replace("\\", "")


def _zip_of(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def test_unreadable_images_are_named_when_the_dataset_is_registered(app, tmp_path):
    folder = write_dataset(tmp_path / "shapes")
    data = (folder / "images" / "003.png").read_bytes()
    (folder / "images" / "003.png").write_bytes(data[: len(data) // 2])
    (folder / "images" / "005.png").write_text("not a picture")
    at = app("app_pages/upload.py")
    at.file_uploader(key="upload_dataset").set_value(("shapes.zip", _zip_of(folder), "application/zip"))
    at.text_input(key="dataset_name").set_value("my shapes").run()
    at.button(key="register_dataset").click().run(timeout=60)
    assert any("Registered dataset my shapes with 12 images, of which 10 can be audited" in s.value.replace("\\", "")
               for s in at.success), [s.value for s in at.success]
    (warning,) = [w.value.replace("\\", "") for w in at.warning]
    assert "2 image(s) cannot be read" in warning
    assert "images/003.png (truncated PNG)" in warning and "images/005.png (not an image" in warning


def test_rename_then_delete_with_confirmation(app, planted):
    from analysis.store.workspace import Workspace

    run_v1 = planted[1]["runs"][0]
    at = app("app_pages/upload.py")
    at.radio(key="manage_kind").set_value("run").run()
    at.selectbox(key="manage_run").set_value(run_v1).run()
    at.text_input(key=f"manage_name_run_{run_v1}").set_value("first look").run()
    at.button(key="manage_rename").click().run()
    assert Workspace(planted[0]).run(run_v1)["name"] == "first look"
    assert any("Renamed to first look" in s.value for s in at.success)
    at.button(key="manage_delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert run_v1 in [r["id"] for r in Workspace(planted[0]).runs()]  # asked, not yet done
    at.button(key="manage_confirm").click().run()
    assert run_v1 not in [r["id"] for r in Workspace(planted[0]).runs()]


def test_trust_gives_a_verdict_per_method_with_the_random_baseline(app, planted):
    from analysis.store.workspace import Workspace

    store = Workspace(planted[0]).store(planted[1]["runs"][0])
    store.write_evidence({"sanity": {"model_randomization": {"method": "gradcam", "similarity": 0.12,
                                                             "threshold": 0.5, "passed": True}},
                          "faithfulness": {"method": "gradcam", "deletion_auc": 0.639, "random_deletion_auc": 0.650,
                                           "insertion_auc": 0.8, "random_insertion_auc": 0.5}})
    at = app("app_pages/trust.py", run=planted[1]["runs"][0])
    text = _texts(at)
    assert "Doubtful" in text
    assert "deletion score 0.639 against 0.650 for a random pixel order (lower is better): no better than random" in text
    assert "insertion score 0.800 against 0.500" in text and "better than random" in text


def test_a_running_audit_shows_no_nan_and_a_failed_one_names_the_uploaded_dataset(tmp_path, monkeypatch):
    """A running audit beside a failed one (pandas made the running one's missing error NaN: a red "nan" box);
    the failed one's message names the dataset as registered from an upload, not the staging path."""
    import os

    from analysis.store.workspace import Workspace
    from workspace_builder import write_model

    root = tmp_path / "workspace"
    ids = build_workspace(root)
    workspace = Workspace(root)
    staged = root / "uploads" / "tmpw0xdwdgm" / "shapes_masks.zip"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(_zip_of(write_dataset(tmp_path / "shapes_masks")))
    dataset_id = workspace.register_dataset(staged, name="my shapes")
    model_id = workspace.run(ids["runs"][0])["model_id"]
    with pytest.raises(Exception) as failure:  # what a worker's prepare meets: labels the card does not name
        workspace.open_dataset(dataset_id).validate(["circle", "square"])
    assert str(failure.value).startswith("dataset my shapes has") and "tmpw0xdwdgm" not in str(failure.value)
    failed = workspace.create_run(model_id, dataset_id, "saliency", {}, n=12, seed=0, name="broken")
    workspace.update_run(failed, status="failed", error=str(failure.value).splitlines()[0])
    running = workspace.create_run(model_id, ids["dataset"], "saliency", {}, n=12, seed=1, name="going")
    workspace.update_run(running, status="running", pid=os.getpid(), n_total=12)
    other = workspace.register_model(write_model(tmp_path / "later"), name="later-net")  # newest, not uploaded here
    workspace.close()

    at = app_opener(root, monkeypatch)("app_pages/new_audit.py", run=failed)
    errors = [e.value for e in at.error]
    assert errors == ["dataset my shapes has 2 problem(s); fix them and retry:"], errors  # no "nan" box
    assert "going" in " ".join(t.value for t in at.text)
    assert at.multiselect(key="audit_models").value == [other]  # the newest model no audit has used yet
    at.session_state["uploaded_models"] = [model_id]
    at.session_state["uploaded_datasets"] = [dataset_id]
    at.multiselect(key="audit_models").set_value([model_id]).run()
    assert at.selectbox(key="audit_dataset").value == dataset_id  # the dataset this tab uploaded


def test_new_audit_starts_on_the_model_and_dataset_this_tab_uploaded(tmp_path, monkeypatch):
    from analysis.store.workspace import Workspace
    from workspace_builder import write_model

    root = tmp_path / "workspace"
    ids = build_workspace(root)
    workspace = Workspace(root)
    planted_name = workspace.model(workspace.run(ids["runs"][0])["model_id"])["name"]
    mine = workspace.register_model(write_model(tmp_path / "mine"), name=planted_name, version="v3")  # its v3
    demo = workspace.register_model(write_model(tmp_path / "demo"), name="demo-net")  # registered after mine
    other = write_dataset(tmp_path / "other")
    (other / "regions.json").write_text(json.dumps({"regions": json.loads((other / "regions.json").read_text())[
        "regions"], "copy": 2}))
    demo_data = workspace.register_dataset(other, name="demo-data")
    done = workspace.create_run(demo, demo_data, "gradcam", {}, n=12, seed=0)
    workspace.update_run(done, status="done", n_total=12)  # the demo audits what it registers
    workspace.close()

    make = app_opener(root, monkeypatch)
    at = make("app_pages/new_audit.py")
    assert at.multiselect(key="audit_models").value == [mine]  # not the newer, audited demo model
    assert at.selectbox(key="audit_dataset").value == ids["dataset"]  # where its v1 and v2 were audited
