"""Dataset formats of the tagger and segmenter: tags joined by `|`, class-index target maps (255 = ignore).
Every problem is reported before any compute, naming the manifest line, the user's file and the fix."""
import numpy as np
import pytest
from PIL import Image

from analysis.data.datasets import DatasetError, open_dataset, parse_manifest, split_tags


def write(root, manifest: str, images=("a.png", "b.png"), size=(8, 6), targets: dict | None = None):
    root.mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.new("RGB", size, (10, 20, 30)).save(root / name)
    for name, values in (targets or {}).items():
        Image.fromarray(np.asarray(values, np.uint8), "L").save(root / name)
    (root / "manifest.csv").write_text(manifest)
    return open_dataset(root)


def problems(dataset, classes, task):
    with pytest.raises(DatasetError) as info:
        dataset.validate(classes, task=task)
    return str(info.value)


def test_tags_are_split_on_the_bar_and_an_empty_label_is_no_tag(tmp_path):
    assert split_tags("boat|car") == ("boat", "car") and split_tags(" boat ") == ("boat",) and split_tags("") == ()
    ds = write(tmp_path / "d", "image,label\na.png,boat|car\nb.png,\n")
    ds.validate(["boat", "car"], task="multilabel")
    assert [it.label for it in ds.items] == ["boat|car", ""]


def test_unknown_and_empty_tags_are_listed_with_the_line(tmp_path):
    ds = write(tmp_path / "d", "image,label\na.png,boat|plane\nb.png,boat||car\n")
    text = problems(ds, ["boat", "car"], "multilabel")
    assert "manifest.csv line 2: tag 'plane' (1 row(s)) is not one of the model's tags ['boat', 'car']" in text
    assert "manifest.csv line 3: tags 'boat||car' have an empty tag" in text
    assert str(tmp_path / "d") in text


def test_a_classifier_refuses_empty_labels_and_tag_lists(tmp_path):
    ds = write(tmp_path / "d", "image,label\na.png,cat|dog\nb.png,\n")
    text = problems(ds, ["cat", "dog"], "classification")
    assert "line 3: 'b.png' has an empty label; fill it in or delete the row" in text
    assert "line 2: label 'cat|dog' (1 row(s)) is not one of the model's classes" in text


def test_segmentation_target_maps_validate(tmp_path):
    good = np.zeros((6, 8), np.uint8)
    good[2:4, 2:5] = 1
    good[0, 0] = 255  # ignore
    (tmp_path / "d" / "t").mkdir(parents=True)
    ds = write(tmp_path / "d", "image,target\na.png,t/a.png\nb.png,t/b.png\n",
               targets={"t/a.png": good, "t/b.png": good * 0 + 2})
    ds.validate(["bg", "boat", "car"], task="segmentation")
    assert ds.has_targets and ds.items[0].label == ""
    np.testing.assert_array_equal(ds.load_target(ds.items[0]), good)


def test_segmentation_target_problems_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "d" / "t").mkdir(parents=True)
    ds = write(tmp_path / "d", "image,label,target\na.png,x,t/a.png\nb.png,x,t/missing.png\n",
               targets={"t/a.png": np.full((6, 8), 7)})
    text = problems(ds, ["bg", "boat", "car"], "segmentation")
    assert "line 2: target map" in text and "t/a.png has values 7, but the model has 3 classes (0..2) and 255 means ignore" in text
    assert "line 3: target file 't/missing.png' not found" in text

    (tmp_path / "e" / "t").mkdir(parents=True)
    ds = write(tmp_path / "e", "image,target\na.png,t/a.png\n", images=("a.png",), targets={"t/a.png": np.zeros((5, 5))})
    assert "target t/a.png is 5x5 but image" in problems(ds, ["bg", "boat"], "segmentation").replace(str(tmp_path / "e") + "/", "")


def test_segmentation_needs_a_target_column_and_a_map_on_every_row(tmp_path):
    ds = write(tmp_path / "d", "image,label\na.png,x\n", images=("a.png",))
    assert "has no 'target' column; a segmentation audit needs one class-index map" in problems(ds, ["bg"], "segmentation")
    with pytest.raises(DatasetError, match="line 3: 'b.png' has no target map"):
        parse_manifest("image,target\na.png,t.png\nb.png,\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) label"):
        parse_manifest("image,mask\na.png,m.png\n")


def test_a_segmentation_folder_is_recognised_and_a_tag_manifest_stays_a_classifiers(tmp_path):
    """The dashboard's dataset filter: a `target` column makes a segmentation dataset; a tagger reads the
    classifier's manifest, so such a folder is named classification but offered to taggers too."""
    from analysis.runs.tasks import TASKS, task_of_dataset
    from sample_models import segmenting, tagging

    segments = segmenting.generate(tmp_path / "seg", n=2)
    tags = tagging.generate(tmp_path / "tags", n=2)
    assert task_of_dataset(segments).name == "segmentation"
    assert task_of_dataset(tags).name == "classification"
    assert TASKS["multilabel"].takes_dataset(tags) and not TASKS["segmentation"].takes_dataset(tags)
