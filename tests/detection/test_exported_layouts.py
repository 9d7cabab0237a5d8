"""Datasets as teams export them: the same boat/car scenes written as COCO three ways (images/ beside the JSON,
CVAT's annotations/ + images/, a JSON with --images elsewhere), as an Ultralytics YOLO dataset (labels by
Ultralytics' own converter, boxes and polygons) and as Pascal VOC, each read to the same boxes and region maps
as the COCO folder, and audited by the CLI to the same region masses, recall and flags."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.data.datasets import open_dataset
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from detection_helpers import cli
from layout_helpers import coco_layouts, rectangle_reference, voc_layout, yolo_layout
from sample_models.detection import WEIGHTS_DIR, make_scenes

N_IMAGES = 16


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    pytest.importorskip("ultralytics", reason="the YOLO labels are written by Ultralytics' converter")
    folder = tmp_path_factory.mktemp("layouts")
    scenes = make_scenes(N_IMAGES, seed=11, biased=True)
    out = coco_layouts(scenes, folder / "coco")
    out["rectangles"] = rectangle_reference(scenes, folder / "rectangles")
    out["yolo_boxes"] = yolo_layout(out["rectangles"], folder / "yolo_boxes", polygons=False)
    out["yolo_polygons"] = yolo_layout(out["rectangles"], folder / "yolo_polygons", polygons=True)
    out["voc"] = voc_layout(scenes, out["reference"], folder)
    return out


def contents(dataset):
    """Per image: (id, first class, boxes, classes, region map as names)."""
    out = []
    for item in dataset.items:
        _, regions = dataset.load(item)
        names = np.full(regions.shape, "", object) if regions is not None else None
        for rid, region in dataset.regions.items():
            names[regions == rid] = region.name
        boxes, classes = dataset.ground_truth(item)
        out.append((int(item.image_id), item.label, boxes, classes, names))
    return out


def assert_same_contents(got, want, *, box_tol=1e-3, regions=True):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[:2] == w[:2] and g[3] == w[3]
        np.testing.assert_allclose(g[2], w[2], atol=box_tol)
        if regions:
            assert (g[4] == w[4]).all()


def test_coco_resolves_images_where_exporters_put_them(layouts, tmp_path):
    want = contents(open_dataset(layouts["reference"]))
    assert want[0][4] is not None and {"water", "road"} <= set(np.unique(want[0][4]))
    assert_same_contents(contents(open_dataset(layouts["beside"])), want)  # "file_name": "00000.png" in images/
    assert_same_contents(contents(open_dataset(layouts["cvat"])), want, regions=False)  # no context file
    roboflow = tmp_path / "train"  # _annotations.coco.json among the images
    roboflow.mkdir()
    doc = json.loads((layouts["beside"] / "result.json").read_text())
    (roboflow / "_annotations.coco.json").write_text(json.dumps(doc))
    for img in doc["images"]:
        (roboflow / img["file_name"]).write_bytes((layouts["beside"] / "images" / img["file_name"]).read_bytes())
    assert_same_contents(contents(open_dataset(roboflow)), want, regions=False)


def test_yolo_and_voc_read_as_the_coco_layout_of_the_same_images(layouts):
    rectangles = contents(open_dataset(layouts["rectangles"]))
    boxes = open_dataset(layouts["yolo_boxes"])
    assert boxes.classes == ("boat", "car") and [r.name for r in boxes.regions.values()] == ["water", "road"]
    assert_same_contents(contents(boxes), rectangles)  # 6 significant digits in the txt: 3e-5 px
    polygons = contents(open_dataset(layouts["yolo_polygons"]))
    assert_same_contents(polygons, rectangles, box_tol=1.0, regions=True)  # boxes from the outline's extent
    outline_narrower = [p[2][:, 2:] - w[2][:, 2:] for p, w in zip(polygons, rectangles)]
    assert all(((d > -1.001) & (d <= 0.001)).all() for d in outline_narrower)
    voc = open_dataset(layouts["voc"])
    assert [r.name for r in voc.regions.values()] == ["background", "water", "road"]  # not boat / car pixels
    assert_same_contents(contents(voc), contents(open_dataset(layouts["reference"])))


def test_yolo_labels_parse_as_ultralytics_parses_them(layouts):
    """Our reader against Ultralytics' own label path rule and label check, file by file."""
    from ultralytics.data.utils import img2label_paths, verify_image_label

    from analysis.data.yolo_data import label_paths

    folder = layouts["yolo_polygons"]
    dataset = open_dataset(folder)
    images = [str(folder / item.image) for item in dataset.items] + ["/x/images/a/images/b.c.jpg", "/x/y.png"]
    assert [str(p) for p in label_paths([Path(i) for i in images])] == img2label_paths(images)
    for item in dataset.items[:4]:
        image = folder / item.image
        label = folder / "labels" / "val" / (image.stem + ".txt")
        result = verify_image_label((str(image), str(label), "", False, 4, 0, 0, False))
        ours_boxes, ours_classes = dataset.ground_truth(item)
        classes = [c for c in result[1][:, 0].astype(int).tolist() if c < 2]
        assert [("boat", "car")[c] for c in classes] == ours_classes
        xywh = result[1][result[1][:, 0] < 2, 1:] * 64
        theirs = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        np.testing.assert_allclose(theirs, ours_boxes, atol=1e-3)


def _audit(capsys, ws, data, *extra):
    code, out, err = cli(capsys, "run", "--model", WEIGHTS_DIR / "biased" / "model.safetensors", "--data", data,
                         *extra, "--n", N_IMAGES, "--param", "n_masks=96", "--param", "sanity_images=0",
                         "--workspace", ws, "--batch-size", 8, "--no-progress")
    assert code == 0, err
    return cached_report(out.strip().splitlines()[-1], Workspace(ws))


def _numbers(report, regions=("box", "water", "road")):
    rows = {(r["class"], r["region"]): (r["mass_mean"], r["area_mean"], r["lift"]) for r in report["regions"]
            if r["region"] in regions}
    flags = sorted((f["class"], f["region"], f["severity"]) for f in report["flags"])
    return rows, flags


def _assert_same(got, want):
    (rows_got, flags_got), (rows_want, flags_want) = got, want
    assert set(rows_got) == set(rows_want) and len(rows_want) >= 9
    for key, values in rows_want.items():
        for a, b in zip(rows_got[key], values):
            assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (key, rows_got[key], values)
    assert flags_got == flags_want


@pytest.mark.slow  # eight D-RISE audits of 16 images
def test_every_layout_audits_to_the_numbers_of_its_coco_folder(layouts, tmp_path, capsys):
    ws = tmp_path / "ws"
    reference = _audit(capsys, ws, layouts["reference"])
    assert ("boat", "water", "high") in _numbers(reference)[1] or ("boat", "water", "medium") in _numbers(reference)[1]
    _assert_same(_numbers(_audit(capsys, ws, layouts["beside"])), _numbers(reference))
    json_path, images = layouts["json"]
    apart = _audit(capsys, ws, json_path, "--images", images)
    _assert_same(_numbers(apart), _numbers(reference))
    assert apart["metrics"]["recall"] == reference["metrics"]["recall"]
    voc = _audit(capsys, ws, layouts["voc"])
    _assert_same(_numbers(voc), _numbers(reference))
    assert voc["metrics"]["recall"] == reference["metrics"]["recall"]
    rectangles = _audit(capsys, ws, layouts["rectangles"])
    for kind in ("yolo_boxes", "yolo_polygons"):
        yolo = _audit(capsys, ws, layouts[kind])
        _assert_same(_numbers(yolo), _numbers(rectangles))
    assert _audit(capsys, ws, layouts["yolo_boxes"])["metrics"]["recall"] == rectangles["metrics"]["recall"]


def test_images_root_errors_name_the_users_files(layouts, tmp_path, capsys):
    json_path, images = layouts["json"]
    ws = tmp_path / "ws"
    code, _, err = cli(capsys, "run", "--model", WEIGHTS_DIR / "biased" / "model.safetensors", "--data", json_path,
                       "--images", tmp_path / "nowhere", "--workspace", ws, "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--images" in err and "nowhere" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "run", "--model", WEIGHTS_DIR / "biased" / "model.safetensors", "--data", json_path,
                       "--images", empty, "--workspace", ws, "--no-progress")
    assert code == 2 and "00000.png" in err and str(json_path) in err
    assert not any((ws / "datasets").glob("d-*"))  # nothing registered


@pytest.mark.parametrize("kind", ["yolo_polygons", "voc", "cvat"])
def test_a_zip_of_each_layout_is_a_detection_dataset(layouts, tmp_path, kind):
    """Zipped with their folder at the top (as a download is): told apart by names, opened to the same items."""
    import shutil

    from analysis.data.detection_data import is_detection_dataset
    from analysis.runs.tasks import task_of_dataset

    archive = Path(shutil.make_archive(str(tmp_path / kind), "zip", layouts[kind].parent, layouts[kind].name))
    assert is_detection_dataset(archive) and task_of_dataset(archive).name == "detection"
    opened = open_dataset(archive, workdir=tmp_path / "work")
    assert_same_contents(contents(opened), contents(open_dataset(layouts[kind])), regions=kind != "cvat")


def test_bad_yolo_and_voc_files_are_one_line_naming_the_file(layouts, tmp_path, capsys):
    import shutil

    yolo = tmp_path / "yolo"
    shutil.copytree(layouts["yolo_boxes"], yolo)
    label = sorted((yolo / "labels" / "val").glob("*.txt"))[2]
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n")
    voc = tmp_path / "voc"
    shutil.copytree(layouts["voc"], voc)
    (voc / "Annotations" / "00001.xml").write_text("<annotation><filename>00001.png</filename></annotation>")
    for data, expected in ((yolo, f"{label.name} line"), (voc, "00001.xml: no <size>")):
        code, _, err = cli(capsys, "run", "--model", WEIGHTS_DIR / "biased" / "model.safetensors", "--data", data,
                           "--workspace", tmp_path / "ws", "--no-progress")
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not any((tmp_path / "ws" / "datasets").glob("d-*"))


def test_a_corrupt_image_in_a_yolo_dataset_is_skipped_not_fatal(layouts, tmp_path):
    """Reading a YOLO folder does not import Ultralytics, whose import swaps PIL's Image.open (process-wide) for
    one that tries to install a HEIF plugin on an unidentifiable file: in a fresh process (this one has
    imported Ultralytics to write the labels), the broken image is one skipped row."""
    import os
    import shutil
    import subprocess
    import sys

    yolo = tmp_path / "yolo"
    shutil.copytree(layouts["yolo_boxes"], yolo)
    (yolo / "images" / "val" / "00003.png").write_bytes(b"not an image at all")
    command = ["run", "--model", WEIGHTS_DIR / "biased" / "model.safetensors", "--data", yolo, "--n", 6, "--param",
               "n_masks=32", "--param", "sanity_images=0", "--workspace", tmp_path / "ws", "--batch-size", 8,
               "--no-progress"]
    done = subprocess.run([sys.executable, "-c", "import sys; from analysis.cli import main; sys.exit(main())",
                           *map(str, command)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    skipped = Workspace(tmp_path / "ws").store(done.stdout.strip().splitlines()[-1]).skipped()
    assert skipped["image"].tolist() == ["images/val/00003.png"]


def test_a_coco_json_given_alone_is_gathered_with_its_images(layouts, tmp_path):
    """--data annotations/instances_default.json (CVAT) or --data labels.json --images ROOT: the JSON and the
    images it lists are copied in as the folder layout; the same items, boxes and regions as the reference."""
    ws = Workspace(tmp_path / "ws")
    want = contents(open_dataset(layouts["reference"]))
    cvat = ws.register_dataset(layouts["cvat"] / "annotations" / "instances_default.json")
    assert_same_contents(contents(ws.open_dataset(cvat)), want, regions=False)
    json_path, images = layouts["json"]
    apart = ws.register_dataset(json_path, images=images)
    assert_same_contents(contents(ws.open_dataset(apart)), want)  # context.json beside the JSON came along
    assert ws.dataset(apart)["source"] == f"{json_path} with images under {images}"
    assert ws.register_dataset(json_path, images=images) == apart  # the same files: the same dataset
    assert not list((tmp_path / "ws" / "datasets").glob(".gather*"))  # the staging folder is gone


def test_roboflow_yolo_splits_and_cvat_colour_masks(layouts, tmp_path):
    """Roboflow's YOLO export (train/ valid/ folders, data.yaml with ../valid/images) and CVAT's VOC masks (RGB in
    labelmap.txt's colours instead of a palette) read as the layouts above."""
    import shutil

    import yaml
    from PIL import Image

    roboflow = tmp_path / "roboflow"
    source = layouts["yolo_polygons"]
    shutil.copytree(source / "images" / "val", roboflow / "valid" / "images")
    shutil.copytree(source / "labels" / "val", roboflow / "valid" / "labels")
    doc = yaml.safe_load((source / "data.yaml").read_text())
    names = [doc["names"][k] for k in sorted(doc["names"])]
    (roboflow / "data.yaml").write_text(yaml.safe_dump({"train": "../train/images", "val": "../valid/images",
                                                        "nc": len(names), "names": names,
                                                        "context": doc["context"]}))
    want = contents(open_dataset(source))
    got = contents(open_dataset(roboflow))
    assert [g[0] for g in got] == [w[0] for w in want]
    assert_same_contents(got, want)
    voc = tmp_path / "voc"
    shutil.copytree(layouts["voc"], voc)
    for png in (voc / "SegmentationClass").glob("*.png"):
        Image.open(png).convert("RGB").save(png)  # each class in its labelmap colour
    assert_same_contents(contents(open_dataset(voc)), contents(open_dataset(layouts["voc"])))
