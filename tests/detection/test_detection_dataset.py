"""A COCO detection folder (or its zip) registers like any dataset; bad input is refused before anything is
copied, with messages that name the file and the fix."""
import json
import shutil
import zipfile

import numpy as np
import pytest

from analysis.data.datasets import open_dataset
from analysis.data.detection_data import DetectionDataset
from analysis.store.workspace import Workspace
from explainers.errors import InputError
from sample_models.detection import make_scenes, write_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    scenes = make_scenes(6, seed=3, biased=True)
    return scenes, write_coco(scenes, tmp_path_factory.mktemp("coco") / "scenes")


def _copy(coco, tmp_path):
    return shutil.copytree(coco[1], tmp_path / "data")


def test_registers_folder_and_zip_with_the_same_content_hash(coco, tmp_path):
    scenes, folder = coco
    ws = Workspace(tmp_path / "ws")
    dataset_id = ws.register_dataset(folder)
    row = ws.dataset(dataset_id)
    assert row["n_items"] == 6 and row["has_masks"]
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            zf.write(path, f"scenes/{path.relative_to(folder)}")
    zip_id = ws.register_dataset(archive)
    assert ws.dataset(zip_id)["sha256"] == row["sha256"]
    opened = ws.open_dataset(zip_id)
    assert isinstance(opened, DetectionDataset)
    assert {r.name for r in opened.regions.values()} == {"water", "road"}


def test_context_map_and_ground_truth_match_the_scene(coco):
    scenes, folder = coco
    dataset = open_dataset(folder)
    for item, scene in zip(dataset.items, scenes):
        image, context = dataset.load(item)
        assert image.size == (64, 64)
        names = {rid: r.name for rid, r in dataset.regions.items()}
        water = np.vectorize(lambda v: names.get(int(v)) == "water")(context)
        assert np.array_equal(water, scene.regions.numpy() == 0)  # RLE round trip, pixel exact
        boxes, labels = dataset.ground_truth(item)
        np.testing.assert_array_equal(boxes, scene.boxes.numpy())
        assert labels == [["boat", "car"][c] for c in scene.labels.tolist()]


def test_missing_instances_json(coco, tmp_path):
    data = _copy(coco, tmp_path)
    (data / "instances.json").unlink()
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="has context.json but no instances.json"):
        ws.register_dataset(data)
    assert not any((tmp_path / "ws" / "datasets").glob("*/data")) and ws.datasets() == []


def _edit_instances(data, change):
    doc = json.loads((data / "instances.json").read_text())
    change(doc)
    (data / "instances.json").write_text(json.dumps(doc))


def test_box_outside_the_image(coco, tmp_path):
    data = _copy(coco, tmp_path)
    _edit_instances(data, lambda doc: doc["annotations"][0].update(bbox=[50, 50, 30, 30]))
    with pytest.raises(InputError, match=r"instances.json: annotation 1: box \[50, 50, 30, 30\] lies outside image "
                                         r"00000.png \(64x64\)"):
        Workspace(tmp_path / "ws").register_dataset(data)


def test_path_traversal_in_file_name(coco, tmp_path):
    data = _copy(coco, tmp_path)
    _edit_instances(data, lambda doc: doc["images"][0].update(file_name="../../etc/passwd"))
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="'../../etc/passwd' points outside"):
        ws.register_dataset(data)
    assert ws.datasets() == []


def test_missing_image_file_and_unknown_class(coco, tmp_path):
    data = _copy(coco, tmp_path)
    (data / "images" / "00002.png").unlink()
    with pytest.raises(InputError, match=r"image 'images/00002.png' \(id 2\) not found"):
        Workspace(tmp_path / "ws").register_dataset(data)
    with pytest.raises(InputError, match=r"categories 'boat', 'car' are not among the model's classes \['cat'\]"):
        open_dataset(coco[1]).validate(["cat"])
