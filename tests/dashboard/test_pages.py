"""Every page under `streamlit.testing.v1.AppTest` on the planted workspace of `workspace_builder`."""
import pytest


from tests.dashboard.apptest import app_opener  # noqa: E402
from workspace_builder import N_IMAGES, build_workspace  # noqa: E402


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash") / "workspace"
    return root, build_workspace(root)


@pytest.fixture
def app(planted, monkeypatch):
    return app_opener(planted[0], monkeypatch)


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [s.value for s in at.success] + [w.value for w in at.warning] + [t.value for t in at.title]
    return "\n".join(str(p) for p in parts)


def test_overview_lists_catalog_and_runs(app, planted):
    at = app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Models": "2", "Datasets": "1", "Audits": "2"}
    listed = {value for frame in at.dataframe for value in frame.value.get("id", [])}
    assert set(planted[1]["runs"]) <= listed
    assert planted[1]["dataset"] in listed


def test_report_page_reads_run_from_url_and_shows_numbers(app, planted):
    run_v1 = planted[1]["runs"][0]
    at = app("app_pages/report.py", run=run_v1)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images explained"] == str(N_IMAGES)
    assert metrics["Accuracy"] == "75.0%"  # 9 of 12 planted correct
    assert at.selectbox(key="report_run").value == run_v1
    assert len(at.get("plotly_chart")) >= 2  # region chart + accuracy chart
    assert any(b.label == "Report as JSON" for b in at.get("download_button"))


def test_overlay_toggle_changes_the_gallery_images(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    with_overlay = [img.value[0] for img in at.image]
    assert len(with_overlay) == N_IMAGES
    at.toggle(key="overlay_on").set_value(False).run()
    without = [img.value[0] for img in at.image]
    assert len(without) == N_IMAGES
    assert with_overlay != without


def test_opacity_slider_changes_the_images(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    before = [img.value[0] for img in at.image]
    at.slider(key="overlay_opacity").set_value(0.2).run()
    assert [img.value[0] for img in at.image] != before


def test_class_and_correct_filters_change_the_gallery_count(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    at.selectbox(key="gallery_class").set_value("cat").run()
    assert len(at.image) == 6
    assert "6 of 12 images match" in _texts(at)
    at.selectbox(key="gallery_correct").set_value("incorrect").run()
    assert len(at.image) == 1  # image 4 is the only misclassified cat


def test_sort_by_region_puts_caged_images_first(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    at.selectbox(key="gallery_sort_region").set_value("cage").run()
    captions = [img.captions[0] for img in at.image]
    assert all("cage 0.70" in c for c in captions[:6]) and all("cage 0.00" in c for c in captions[6:])


def test_enlarge_shows_full_size_overlay_with_region_legend(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    at.button(key="enlarge_0").click().run()
    assert not at.exception
    assert len(at.image) == N_IMAGES + 1
    legend = _texts(at)
    assert "cage" in legend and "animal" in legend
    assert "**images/000\\.png**" in [m.value for m in at.markdown]  # in the dialog, above the gallery


def test_compare_page_draws_both_versions(app, planted):
    runs = ",".join(planted[1]["runs"])
    at = app("app_pages/compare.py", runs=runs)
    assert at.multiselect(key=f"compare_runs_{planted[1]['dataset']}").value == planted[1]["runs"]
    assert len(at.get("plotly_chart")) == 2  # regions and subgroup accuracy across versions
    assert len(at.image) == 2  # the same image under v1 and v2
    from analysis.report.compare import compare_runs
    from analysis.store.workspace import Workspace

    workspace = Workspace(planted[0])
    from analysis.report.build import cached_report
    from analysis.report.verdict import with_verdicts

    stores, names = [workspace.store(r) for r in planted[1]["runs"]], ["v1 (gradcam)", "v2 (gradcam)"]
    expected = compare_runs(stores, names)["summary"]
    summary = [m.value.replace("\\", "") for m in at.markdown if expected in m.value.replace("\\", "")]
    assert len(summary) == 1 and summary[0].endswith(f"{expected}; flagged: v1 (gradcam) on cage; no flag: v2 (gradcam)")
    verdicts = with_verdicts({}, names, [cached_report(s, workspace) for s in stores])["verdicts"]
    for row in verdicts:  # a version that cannot be judged is named first, with why
        assert (f"{row['run']} cannot be judged" in summary[0]) == (row["status"] == "cannot_judge")


def test_trust_page_explains_checks(app, planted):
    at = app("app_pages/trust.py", run=planted[1]["runs"][0])
    assert "Sanity checks" in _texts(at) and "Faithfulness" in _texts(at)


def test_new_audit_page_estimates_time(app):
    at = app("app_pages/new_audit.py")
    assert "Estimated time: about" in _texts(at)
    before = [c.value for c in at.caption if "Estimated" in c.value]
    at.number_input(key="audit_n").set_value(5000).run()
    after = [c.value for c in at.caption if "Estimated" in c.value]
    assert before != after


def test_upload_page_reports_bad_card_fields_beside_them(app):
    at = app("app_pages/upload.py")
    at.file_uploader(key="upload_model").set_value(("m.pt2", b"bytes", "application/octet-stream")).run()
    at.text_input(key="card_mean").set_value("0.5, x").run()
    at.button(key="register_model").click().run()
    errors = [e.value for e in at.error]
    assert any("List the class names" in e for e in errors)
    assert any("Give 3 numbers" in e for e in errors)


def test_upload_page_rejects_a_zip_that_is_not_a_dataset(app):
    at = app("app_pages/upload.py")
    at.file_uploader(key="upload_dataset").set_value(("data.zip", b"not a zip at all", "application/zip")).run()
    at.button(key="register_dataset").click().run()
    assert at.error, "a bad dataset must be explained next to its field"


@pytest.mark.slow  # two subprocesses that import torch and load the model
def test_upload_lists_layers_in_a_subprocess_and_registers_the_model(app, planted, tmp_path):
    from workspace_builder import write_real_model

    model_path = write_real_model(tmp_path / "real")
    at = app("app_pages/upload.py")
    at.file_uploader(key="upload_model").set_value((model_path.name, model_path.read_bytes(), "application/octet-stream"))
    at.text_area(key="card_classes").set_value("cat\ndog")
    at.number_input(key="card_h").set_value(32)
    at.number_input(key="card_w").set_value(32).run()
    at.button(key="list_layers").click().run(timeout=120)
    assert not at.exception and not at.error, [e.value for e in at.error]
    layer_box = at.selectbox(key="card_layer")
    assert layer_box.options == ["detect automatically", "0", "1", "2", "3"]
    assert layer_box.value == "3"  # the detected default, preselected
    layer_box.set_value("1").run()
    at.button(key="register_model").click().run(timeout=120)
    assert any("Registered model" in s.value for s in at.success)
    from analysis.store.workspace import Workspace

    cards = [m["card"] for m in Workspace(planted[0]).models()]
    assert {"classes": ["cat", "dog"], "target_layer": "1"}.items() <= cards[-1].items()


def test_upload_shows_a_model_that_does_not_load_as_a_field_error(app, tmp_path):
    at = app("app_pages/upload.py")
    at.file_uploader(key="upload_model").set_value(("broken.pt2", b"PK not an export", "application/octet-stream"))
    at.text_area(key="card_classes").set_value("cat\ndog").run()
    at.button(key="register_model").click().run(timeout=120)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "broken" in errors[0] and "torch" in errors[0].lower()


def test_new_audit_page_follows_the_run_in_the_url_after_a_reload(app, planted):
    at = app("app_pages/new_audit.py", run=planted[1]["runs"][1])
    assert any("v2 · tiny v2 · gradcam · done" in t.value for t in at.text)
    links = at.get("page_link")
    assert len(links) == 1 and links[0].proto.label == "Open report"


@pytest.mark.parametrize("page", [None, "app_pages/report.py", "app_pages/compare.py", "app_pages/trust.py",
                                  "app_pages/new_audit.py", "app_pages/upload.py"])
def test_every_page_opens_on_an_empty_workspace(page, tmp_path, monkeypatch):
    """A new user's first visit: no model, no dataset, no run yet. Each page says what to do, none raises."""
    at = app_opener(tmp_path / "empty", monkeypatch)(page)
    assert _texts(at).strip()


def test_compare_page_opens_on_the_version_series_without_warnings(app, planted):
    at = app("app_pages/compare.py")
    assert at.multiselect(key=f"compare_runs_{planted[1]['dataset']}").value == planted[1]["runs"]  # v1, v2
    assert not at.warning


def test_report_page_names_register_artifacts_in_one_line(tmp_path, monkeypatch):
    root = tmp_path / "workspace"
    run_id = build_workspace(root, artifacts=True)["runs"][0]
    at = app_opener(root, monkeypatch)("app_pages/report.py", run=run_id)
    assert not at.exception
    (line,) = [i.value.replace("\\", "") for i in at.info if "artifact" in i.value]  # unescaped markdown
    assert "register-like artifact tokens" in line and "on 100% of images" in line
    assert "mostly in region background (100% of their area)" in line


def test_report_page_of_an_unfinished_audit_says_so(tmp_path, monkeypatch):
    """The page unpacked three of `data.progress`'s four values and raised on any run not done."""
    from analysis.store.workspace import Workspace

    root = tmp_path / "workspace"
    source = build_workspace(root)
    ws = Workspace(root)
    run = ws.run(source["runs"][0])
    pending = ws.create_run(run["model_id"], run["dataset_id"], "saliency", n=N_IMAGES, seed=1)
    at = app_opener(root, monkeypatch)("app_pages/report.py", run=pending)
    assert not at.exception
    assert any(f"0 of {N_IMAGES} images explained" in w.value for w in at.warning)


def test_the_report_page_leads_with_the_verdict(app, planted):
    at = app("app_pages/report.py", run=planted[1]["runs"][0])
    boxes = [b.value for b in [*at.error, *at.warning, *at.success]]
    assert any(str(b).startswith("**Verdict: ") for b in boxes), boxes


def test_compare_orders_versions_not_audits_and_keeps_the_series_on_another_dataset(tmp_path, monkeypatch):
    """Audited v10 first, then v9: the page compares v9 -> v10, marks the flagged v9 on the chart and in the
    summary, and a second dataset with audits of the same models opens on the same two versions."""
    import json

    from analysis.store.workspace import Workspace
    from workspace_builder import write_dataset, write_finished_run

    root = tmp_path / "workspace"
    first, second = build_workspace(root)["runs"]  # planted v1 (looks at the cage) audited first, then v2
    workspace = Workspace(root)
    workspace.rename_model(workspace.run(first)["model_id"], "pets-net", "v9")  # the flagged one: older
    workspace.rename_model(workspace.run(second)["model_id"], "pets-net", "v10")
    other = write_dataset(tmp_path / "sources" / "pets-again")
    (other / "regions.json").write_text(json.dumps({"regions": {**json.loads((other / "regions.json").read_text())[
        "regions"]}, "note": "a second copy"}))  # other bytes: another dataset
    dataset_b = workspace.register_dataset(other, name="pets-again")
    b10 = write_finished_run(workspace, workspace.run(second)["model_id"], dataset_b, 2, "b v10")
    b9 = write_finished_run(workspace, workspace.run(first)["model_id"], dataset_b, 1, "b v9")
    dataset_a = workspace.run(first)["dataset_id"]
    workspace.close()

    at = app_opener(root, monkeypatch)("app_pages/compare.py", runs=f"{second},{first}")
    assert at.selectbox(key="compare_dataset").value == dataset_a
    assert at.multiselect(key=f"compare_runs_{dataset_a}").value == [first, second]  # v9 before v10
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["xaxis"]["categoryarray"] == ["v9 (gradcam)", "v10 (gradcam)"]
    ticks = chart["layout"]["xaxis"]["ticktext"]
    assert "flagged: cage" in ticks[0] and ticks[1] == "v10 (gradcam)"
    summary = " ".join(m.value.replace("\\", "") for m in at.markdown)
    assert "flagged: v9 (gradcam) on cage; no flag: v10 (gradcam)" in summary

    at.selectbox(key="compare_dataset").set_value(dataset_b).run()
    assert not at.exception
    assert at.multiselect(key=f"compare_runs_{dataset_b}").value == [b9, b10]  # the same series, kept
