"""A classifier audited on a dataset with boxes (YOLO here): the boxes are the object, the core region, so the
object is never a shortcut candidate (issue 25)."""
import numpy as np
import pytest

from sample_models import shapes_tag


def write_yolo(scenes, folder):
    """The scenes as an Ultralytics YOLO folder: one box per image around its shape (class = the label)."""
    from PIL import Image

    (folder / "images" / "val").mkdir(parents=True)
    (folder / "labels" / "val").mkdir(parents=True)
    (folder / "data.yaml").write_text("names: [rectangle, cross]\nval: images/val\n")
    size = scenes.images.shape[1]
    for i, (image, label, mask) in enumerate(zip(scenes.images, scenes.labels, scenes.masks)):
        Image.fromarray(image, "RGB").save(folder / "images" / "val" / f"{i:04d}.png")
        ys, xs = np.nonzero(mask == 1)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        (folder / "labels" / "val" / f"{i:04d}.txt").write_text(
            f"{label} {(x0 + x1) / 2 / size} {(y0 + y1) / 2 / size} {(x1 - x0) / size} {(y1 - y0) / size}\n")
    return folder


def test_the_boxes_of_the_labels_class_are_the_core_region(tmp_path):
    from analysis.data.box_core import as_classification
    from analysis.data.datasets import open_dataset
    from analysis.runs.tasks import TASKS, task_of_dataset

    scenes = shapes_tag.render(6, 0.5, seed=3)
    folder = write_yolo(scenes, tmp_path / "yolo")
    assert task_of_dataset(folder).name == "detection" and TASKS["classification"].takes_dataset(folder)
    data = as_classification(open_dataset(folder))
    assert {k: (r.name, r.role) for k, r in data.regions.items()} == {0: ("background", None), 1: ("object", "core")}
    for item, label, mask in zip(data.items, scenes.labels, scenes.masks):
        assert item.label == shapes_tag.CLASSES[label]
        _, regions = data.load(item)
        ys, xs = np.nonzero(mask == 1)
        box = np.zeros_like(regions, dtype=bool)
        box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        assert np.array_equal(regions == 1, box) and np.array_equal(regions == 0, ~box)
    data.validate(list(shapes_tag.CLASSES))


def test_an_image_without_an_object_is_refused_for_a_classifier(tmp_path):
    from analysis.data.box_core import as_classification
    from analysis.data.datasets import open_dataset
    from explainers.errors import InputError

    folder = write_yolo(shapes_tag.render(3, 0.5, seed=3), tmp_path / "yolo")
    (folder / "labels" / "val" / "0001.txt").write_text("")
    with pytest.raises(InputError, match=r"(?s)1 image\(s\) have no object.*images/val/0001.png: no object"):
        as_classification(open_dataset(folder)).validate(list(shapes_tag.CLASSES))


@pytest.mark.slow
def test_a_classifier_audited_on_boxes_never_tests_the_object(tmp_path):
    """The shape moves about the image, the tag is uncorrelated: without masks the shape's area was a
    candidate (and was flagged on clean models before the look test); with boxes it is the core."""
    from analysis.store.workspace import Workspace
    from tests.report import power_audit

    model = shapes_tag.save_model(shapes_tag.train(0.5, 0, n=400, epochs=4), tmp_path / "model")
    folder = write_yolo(shapes_tag.render(200, 0.5, seed=7), tmp_path / "yolo")
    ws = Workspace(tmp_path / "ws")
    report = power_audit.audit(ws, model, ws.register_dataset(folder), n=200)
    roles = {r["region"]: r.get("role") for r in report["regions"] if r.get("class") is None}
    assert roles["object"] == "core" and "middle-centre" not in roles  # annotated regions, no grid
    assert "object" not in report["interventions"] and "background" in report["interventions"]
    assert all(f["region"] != "object" for f in report["flags"])
