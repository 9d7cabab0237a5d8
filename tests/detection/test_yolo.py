"""Ultralytics YOLO through D-RISE: the adapter keeps what Ultralytics' own NMS keeps (with every class
probability), the checkpoint loads only with the card's opt-in and then only through the restricted loader,
and a YOLO built from its yaml is audited end to end by the CLI, as a checkpoint and as its ONNX export."""
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from analysis.store.workspace import Workspace
from detection_helpers import cli
from explainers.errors import InputError
from explainers.loading.models import load_model, read_card
from explainers.loading.yolo import CONF, IOU, YoloDetector, yolo_detections
from sample_models.detection import make_scenes

pytestmark = pytest.mark.slow  # builds, saves and exports a YOLOv8n once per session (about 40 s)


@pytest.fixture(scope="module")
def scenes():
    return torch.stack([s.image for s in make_scenes(6, seed=5, biased=True)])


def test_adapter_keeps_what_ultralytics_nms_keeps(yolo_files, scenes):
    from ultralytics.utils.nms import non_max_suppression

    with torch.no_grad():
        raw = yolo_files["model"](scenes)[0]
        ours = yolo_detections(raw, scenes.shape[-2:])
        theirs = non_max_suppression(raw, conf_thres=CONF, iou_thres=IOU, max_det=300)
    assert sum(len(d["boxes"]) for d in ours) > 6  # the random head detects: a real comparison
    for det, ref in zip(ours, theirs):
        ref_boxes = ref[:, :4].clamp(min=0, max=64)
        torch.testing.assert_close(det["boxes"], ref_boxes)
        torch.testing.assert_close(det["scores"], ref[:, 4])
        assert det["labels"].tolist() == ref[:, 5].long().tolist()
        assert det["probs"].shape == (len(ref), 2)  # the full class distribution, not one-hot
        torch.testing.assert_close(det["probs"].max(1).values, det["scores"])


def test_checkpoint_and_onnx_export_give_the_same_detections(yolo_files, scenes):
    pt, onnx = load_model(yolo_files["pt"]), load_model(yolo_files["onnx"])
    assert (pt.format, onnx.format) == ("ultralytics", "onnx")
    assert isinstance(pt.net, YoloDetector) and "normalize" not in dict(pt.module.named_children())
    with torch.no_grad():
        a, b = pt.module(scenes), onnx.module(scenes)
    for da, db in zip(a, b):
        assert len(da["boxes"]) == len(db["boxes"]) > 0
        torch.testing.assert_close(da["boxes"], db["boxes"], atol=2e-3, rtol=1e-4)
        torch.testing.assert_close(da["probs"], db["probs"], atol=1e-4, rtol=1e-4)


def _payload_checkpoint(path, sentinel):
    """A torch.save zip that names Ultralytics classes and would run `touch sentinel` when unpickled."""
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {sentinel}",)

    torch.save({"model": Payload(), "note": "ultralytics.nn.tasks.DetectionModel"}, path, pickle_protocol=2)
    return path


def test_checkpoint_without_opt_in_is_refused_unread(yolo_files, tmp_path):
    with pytest.raises(InputError, match=r"yolo\.pt is an Ultralytics checkpoint.*yolo export.*trust_pickle"):
        load_model(yolo_files["pt_untrusted"])
    sentinel = tmp_path / "ran"
    path = _payload_checkpoint(tmp_path / "evil.pt", sentinel)
    (tmp_path / "evil.json").write_text((yolo_files["pt_untrusted"].with_suffix(".json")).read_text())
    with pytest.raises(InputError, match="trust_pickle"):
        load_model(path)
    assert not sentinel.exists()


def test_opted_in_checkpoint_still_loads_only_known_classes(yolo_files, tmp_path):
    sentinel = tmp_path / "ran"
    path = _payload_checkpoint(tmp_path / "evil.pt", sentinel)
    (tmp_path / "evil.json").write_text((yolo_files["pt"].with_suffix(".json")).read_text())
    with pytest.raises(InputError, match=r"evil\.pt: not a loadable Ultralytics checkpoint"):
        load_model(path)
    assert not sentinel.exists()
    with pytest.raises(pickle.UnpicklingError):  # the payload is real: an unrestricted load would run it
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("kind", ["pt", "onnx"])
def test_cli_audits_yolo_with_drise_end_to_end(yolo_files, coco_scenes, tmp_path, capsys, kind):
    ws = tmp_path / "ws"
    code, out, err = cli(capsys, "run", "--model", yolo_files[kind], "--data", coco_scenes[1], "--n", 6,
                         "--param", "n_masks=64", "--param", "cells=8", "--workspace", ws, "--batch-size", 3,
                         "--no-progress")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    store = Workspace(ws).store(run_id)
    detections = store.table("detections")
    assert len(detections) > 0 and set(detections["class"]) <= {"boat", "car"}
    assert (detections["score"] >= 0.5).all()
    maps = store.arrays("detection_maps")["maps"]
    assert len(maps) == len(detections) and float(abs(maps).max()) > 0  # every detection explained
    code, report, _ = cli(capsys, "report", run_id, "--workspace", ws, "--format", "json")
    assert code == 0 and '"task": "detection"' in report


def test_cli_refuses_a_checkpoint_without_opt_in_in_one_line(yolo_files, coco_scenes, tmp_path, capsys):
    code, _, err = cli(capsys, "run", "--model", yolo_files["pt_untrusted"], "--data", coco_scenes[1], "--n", 2,
                       "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "trust_pickle" in err and "onnx" in err


def test_cli_takes_the_card_from_an_ultralytics_onnx_export(yolo_files, coco_scenes, tmp_path, capsys):
    """`yolo export format=onnx` writes names and imgsz into the file's metadata: no model.json needed."""
    import onnx

    model = onnx.load(str(yolo_files["onnx"]))
    for key, value in (("author", "Ultralytics"), ("task", "detect"), ("imgsz", "[64, 64]"),
                       ("names", "{0: 'boat', 1: 'car'}")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "export" / "best.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    ws = tmp_path / "ws"
    code, out, err = cli(capsys, "run", "--model", path, "--data", coco_scenes[1], "--n", 2, "--param", "n_masks=16",
                         "--workspace", ws, "--no-progress")
    assert code == 0, err
    (registered,) = Workspace(ws).models()
    assert registered["card"]["classes"] == ["boat", "car"] and registered["card"]["input_size"] == [64, 64]
    assert registered["format"] == "onnx"


def test_cli_audits_an_ultralytics_export_made_without_onnxslim(coco_scenes, tmp_path, capsys, monkeypatch):
    """`model.export(format="onnx", dynamic=True, simplify=False)`, by Ultralytics itself (offline): the output is
    (batch, Concatoutput0_dim_1, anchors), a symbol where the class count would be; the metadata's names give it."""
    import onnx
    from yolo_helpers import build_yolo
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)  # Ultralytics writes the export beside the yaml's name, in the working folder
    yolo = YOLO("yolov8n.yaml")
    net = build_yolo()
    net.args, net.task, net.names = yolo.model.args, yolo.model.task, {0: "boat", 1: "car"}
    yolo.model = net
    path = Path(yolo.export(format="onnx", dynamic=True, simplify=False, imgsz=64, verbose=False))
    exported = onnx.load(str(path))
    (output,) = exported.graph.output
    dims = [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]
    assert isinstance(dims[1], str) and not dims[1].isdigit(), dims  # the layout this test is about
    ws = tmp_path / "ws"
    code, out, err = cli(capsys, "run", "--model", path, "--data", coco_scenes[1], "--n", 6, "--param", "n_masks=64",
                         "--param", "cells=8", "--workspace", ws, "--batch-size", 3, "--no-progress")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    (registered,) = Workspace(ws).models()
    assert registered["card"]["classes"] == ["boat", "car"] and registered["format"] == "onnx"
    detections = Workspace(ws).store(run_id).table("detections")
    assert len(detections) > 0 and set(detections["class"]) <= {"boat", "car"}
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def card(classes):
        out = tmp_path / f"card{len(classes)}.json"
        out.write_text(json.dumps({"task": "detection", "classes": classes, "input_size": [64, 64],
                                   "mean": [0, 0, 0], "std": [1, 1, 1]}))
        return out
    with torch.no_grad():  # the network it was exported from, decoded the same way
        got = load_model(path, card=read_card(path, card(["boat", "car"]))).module(images)
        want = yolo_detections(net(images)[0], (64, 64))
    assert [len(d["boxes"]) for d in got] == [len(d["boxes"]) for d in want] and len(got[0]["boxes"]) > 0
    for g, w in zip(got, want):
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-2, rtol=1e-3)
        torch.testing.assert_close(g["probs"], w["probs"], atol=1e-3, rtol=1e-3)
    with pytest.raises(InputError, match="2 classes.*lists 3"):  # the symbol's value, checked against the card
        load_model(path, card=read_card(path, card(["boat", "car", "bus"])))


def test_importing_ultralytics_leaves_a_corrupt_image_an_image_error(tmp_path):
    """Ultralytics swaps PIL's Image.open on import (a HEIF fallback that pip-installs); once imported through
    `import_ultralytics`, an unidentifiable file is still the ImageError the runner skips."""
    from analysis.data.images import ImageError, read_image
    from explainers.loading.yolo import import_ultralytics

    import_ultralytics()
    import ultralytics.utils.patches  # noqa: F401  (already imported: no second swap)

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError):
        read_image(bad)
