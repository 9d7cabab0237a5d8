"""The dashboard on a workspace with detection runs: the report page shows the context flag with its
evidence, the per-class masses and a gallery with boxes; New audit offers only D-RISE for a detector;
the overview lists the detection flag with the others. (Compare: test_detection_compare.py.)"""
import pytest

from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from dashboard import detection_views, views
from tests.dashboard.apptest import app_opener

pytestmark = pytest.mark.slow  # needs the session's two D-RISE runs


@pytest.fixture
def app(detection_runs, monkeypatch):
    return app_opener(detection_runs["ws"], monkeypatch, timeout=120)


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def test_report_page_shows_flag_masses_and_gallery(app, detection_runs):
    at = app("app_pages/report.py", run=detection_runs["biased"])
    metrics = {m.label: m.value for m in at.metric}
    report = cached_report(detection_runs["biased"], Workspace(detection_runs["ws"]))
    assert metrics["Context flags"] == str(len(report["flags"])) and len(report["flags"]) >= 1
    assert metrics["Detections"] == str(report["metrics"]["n_detections_total"])
    text = _texts(at)
    assert "Detections of boat depend on water: filling it loses" in text.replace("\\", "") and "corrected p " in text
    flag = next(f for f in report["flags"] if f["region"] == "water")
    assert f"net effect +{flag['effect']:.0%}" in text.replace("\\", "")  # the evidence lines carry the numbers
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("image")) == 24  # the gallery: six per row, the first 24 images
    at.toggle(key="det_overlay_on").set_value(True).run()
    assert not at.exception
    assert any(b.label == "Report as HTML" for b in at.get("download_button"))


def test_debiased_report_page_says_nothing_flagged(app, detection_runs):
    at = app("app_pages/report.py", run=detection_runs["debiased"])
    assert {m.label: m.value for m in at.metric}["Context flags"] == "0"
    assert "No context shortcut flagged" in _texts(at)


def test_new_audit_offers_drise_for_detectors(app, detection_runs):
    at = app("app_pages/new_audit.py")
    methods = at.multiselect(key="audit_methods_detection")
    assert methods.options == ["drise"] and methods.value == ["drise"]


def test_overview_lists_the_detection_flag(app, detection_runs):
    at = app()
    findings = [str(m.value) for m in at.markdown if str(m.value).startswith("- **")]
    assert any("boat" in line and "water" in line for line in findings), findings


def test_gallery_rows_sort_by_context_mass():
    import pandas as pd

    dets = pd.DataFrame({"image_id": [1, 1, 2, 3], "class": ["boat", "car", "boat", "car"],
                         "mass.water": [0.2, 0.9, 0.5, 0.1], "mass_outside": [0.5, 0.9, 0.6, 0.7]})
    images = pd.DataFrame({"image_id": [1, 2, 3, 4], "image": ["a", "b", "c", "d"]})
    assert detection_views.gallery_rows(dets, images, "boat", "water")["image_id"].tolist() == [2, 1]
    assert detection_views.gallery_rows(dets, images, None, "water")["image_id"].tolist() == [1, 2, 3, 4]


def _zip(folder, rewrite=None) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                payload = path.read_bytes()
                if rewrite and path.name in rewrite:
                    payload = rewrite[path.name](payload)
                archive.writestr(f"boats/{path.relative_to(folder)}", payload)
    return buffer.getvalue()


def test_upload_page_registers_a_coco_zip_and_refuses_one_that_climbs_out(coco_scenes, tmp_path, monkeypatch):
    import json

    from detection_helpers import N_IMAGES

    app = app_opener(tmp_path / "ws", monkeypatch, timeout=120)

    def climbing(payload: bytes) -> bytes:
        instances = json.loads(payload)
        instances["images"][0]["file_name"] = "../../outside.png"
        return json.dumps(instances).encode()

    at = app("app_pages/upload.py")
    at.file_uploader(key="upload_dataset").set_value(
        ("bad.zip", _zip(coco_scenes[1], {"instances.json": climbing}), "application/zip")).run()
    at.button(key="register_dataset").click().run()
    (error,) = [e.value for e in at.error]  # named from the upload, not from the staging folder
    assert error == views.plain("bad.zip/boats/instances.json: image '../../outside.png' points outside "
                                "bad.zip/boats; use a path relative to that folder")
    assert Workspace(tmp_path / "ws").datasets() == []

    at.file_uploader(key="upload_dataset").set_value(("boats.zip", _zip(coco_scenes[1]), "application/zip")).run()
    at.button(key="register_dataset").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any(f"with {N_IMAGES} images" in s.value for s in at.success)
    (dataset,) = Workspace(tmp_path / "ws").datasets()
    opened = Workspace(tmp_path / "ws").open_dataset(dataset["id"])
    assert len(opened) == N_IMAGES and {r.name for r in opened.regions.values()} >= {"water", "road"}


def test_new_audit_offers_only_datasets_that_fit_the_model(coco_scenes, tmp_path, monkeypatch):
    """A detector is offered COCO folders only; a classifier every folder (a COCO folder's boxes are its object)
    with its own kind preselected: the demo used to pair the last model (a detector) with the first dataset (a
    classification folder), an audit bound to fail."""
    from sample_models.detection import WEIGHTS_DIR
    from tests.runs.helpers import write_dataset, write_model

    ws = Workspace(tmp_path / "ws")
    classifier = ws.register_model(write_model(tmp_path / "model"))
    folders = ws.register_dataset(write_dataset(tmp_path / "data", n=4))
    detector = ws.register_model(WEIGHTS_DIR / "biased" / "model.safetensors", WEIGHTS_DIR / "biased" / "model.json")
    coco = ws.register_dataset(coco_scenes[1])
    (tmp_path / "boats.zip").write_bytes(_zip(coco_scenes[1]))
    coco_zip = ws.register_dataset(tmp_path / "boats.zip")  # how the Upload page registers it
    at = app_opener(tmp_path / "ws", monkeypatch)("app_pages/new_audit.py")
    assert at.multiselect(key="audit_models").value == [detector]
    # only the two COCO datasets are offered; the default is one of them (the newest fitting one)
    assert at.selectbox(key="audit_dataset").value in (coco, coco_zip)
    assert len(at.selectbox(key="audit_dataset").options) == 2
    at.multiselect(key="audit_models").set_value([classifier]).run()
    assert not at.exception
    assert len(at.selectbox(key="audit_dataset").options) == 3  # its folder and both COCO uploads
    # a fresh choice for a classifier preselects the folder made for classifiers, not the newest COCO upload
    from dashboard import audit_defaults, data

    datasets = data.datasets()
    fitting = datasets[datasets["id"].isin([folders, coco, coco_zip])]
    index = audit_defaults.default_dataset(fitting, data.runs(), [classifier], [], data.models(), task="classification")
    assert fitting["id"].tolist()[index] == folders
    assert fitting["id"].tolist()[audit_defaults.default_dataset(fitting, data.runs(), [detector], [], data.models(),
                                                                  task="detection")] == coco_zip
    assert at.multiselect(key="audit_methods_classification").value == ["gradcam"]
