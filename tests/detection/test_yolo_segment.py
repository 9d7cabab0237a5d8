"""Ultralytics instance segmenters (`yolov8n-seg`) through D-RISE with their masks: each detection's mask is the
one Ultralytics' own post-processing makes (NMS, then `process_mask`), from the checkpoint and from the ONNX
export Ultralytics writes offline (no onnxslim), and the audit scores overlap by mask IoU, not box IoU."""
from pathlib import Path

import pytest
import torch

import explainers.detection as detection
from analysis.store.workspace import Workspace
from detection_helpers import cli
from explainers.detection import DetectionTarget, detections_above
from explainers.drise import DRISE
from explainers.loading.card import ModelCard
from explainers.loading.models import load_model
from explainers.loading.onnx_files import ultralytics_card
from explainers.loading.yolo import CONF, IOU, YoloDetector
from sample_models.detection import make_scenes

pytestmark = pytest.mark.slow  # builds a YOLOv8n-seg, saves it and has Ultralytics export it (about a minute)


@pytest.fixture(scope="module")
def scenes():
    return torch.stack([s.image for s in make_scenes(4, seed=5, biased=True)])


@pytest.fixture(scope="module")
def seg_files(tmp_path_factory):
    """{"model", "pt": trusted checkpoint, "onnx": `YOLO.export(format="onnx", dynamic=True, simplify=False)`}."""
    import os

    from ultralytics import YOLO
    from yolo_helpers import build_yolo, write_yolo_files

    folder = tmp_path_factory.mktemp("yoloseg")
    model = build_yolo(config="yolov8n-seg.yaml")
    files = write_yolo_files(model, folder, onnx=False)
    here = os.getcwd()
    os.chdir(folder)  # Ultralytics writes the export beside the yaml's name, in the working folder
    try:
        yolo = YOLO("yolov8n-seg.yaml")
        net = build_yolo(config="yolov8n-seg.yaml")
        net.args, net.task, net.names = yolo.model.args, yolo.model.task, {0: "boat", 1: "car"}
        yolo.model = net
        onnx = Path(yolo.export(format="onnx", dynamic=True, simplify=False, imgsz=64, verbose=False)).resolve()
    finally:
        os.chdir(here)
    return {"model": model, "pt": files["pt"], "onnx": onnx}


def test_masks_are_the_ones_ultralytics_makes(seg_files, scenes):
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import process_mask

    model = seg_files["model"]
    with torch.no_grad():
        ours = YoloDetector(model)(scenes)
        (raw, protos), _ = model(scenes)
        theirs = non_max_suppression(raw, conf_thres=CONF, iou_thres=IOU, max_det=300, nc=2)
    for b, (det, ref) in enumerate(zip(ours, theirs)):
        assert len(det["boxes"]) == len(ref) > 0
        torch.testing.assert_close(det["boxes"], ref[:, :4].clamp(min=0, max=64))
        assert det["probs"].shape == (len(ref), 2)  # the classes only, not the 32 mask coefficients
        want = process_mask(protos[b], ref[:, 6:], ref[:, :4], (64, 64), upsample=True).bool()
        assert det["masks"].dtype == torch.bool and det["masks"].equal(want)
        area = det["masks"].flatten(1).sum(1).float()
        box_area = ((det["boxes"][:, 2] - det["boxes"][:, 0]) * (det["boxes"][:, 3] - det["boxes"][:, 1]))
        assert (area > 0).any() and (area <= box_area.ceil() + 64).all()  # inside the box, not all empty


def test_onnx_export_gives_the_checkpoint_masks(seg_files, scenes):
    import onnx

    exported = onnx.load(str(seg_files["onnx"]))
    assert len(exported.graph.output) == 2  # detections + mask coefficients, prototypes
    card = ModelCard.from_dict(ultralytics_card(seg_files["onnx"]))  # the card the CLI takes from the metadata
    assert list(card.classes) == ["boat", "car"] and list(card.input_size) == [64, 64] and card.task == "detection"
    pt, ox = load_model(seg_files["pt"]), load_model(seg_files["onnx"], card=card)
    assert (pt.format, ox.format) == ("ultralytics", "onnx")
    with torch.no_grad():
        a, b = pt.module(scenes), ox.module(scenes)
    for da, db in zip(a, b):
        assert len(da["boxes"]) == len(db["boxes"]) > 0
        torch.testing.assert_close(da["boxes"], db["boxes"], atol=2e-3, rtol=1e-4)
        agree = (da["masks"] == db["masks"]).float().mean().item()
        assert agree > 0.999, agree  # float32 differences flip only pixels whose mask logit is ~0


def test_drise_with_the_masks_differs_from_boxes_alone(seg_files, scenes):
    """The instance path changes the map: with masks, a masked image scores by how much of the object's mask
    the detector still segments, not by its box."""
    detector = YoloDetector(seg_files["model"])
    with torch.no_grad():
        det = detector(scenes[:1])[0]
    best = int(det["masks"].flatten(1).sum(1).argmax())  # the detection with the largest mask
    target = detections_above({k: v[best:best + 1] for k, v in det.items()}, 0.0)
    assert target.masks is not None and len(target) == 1 and target.masks.sum() > 10
    boxes_only = DetectionTarget(target.boxes, target.probs)
    explainer = DRISE(detector, n_masks=64, cells=8, batch_size=32)
    (with_masks,) = explainer.explain_detections(scenes[:1], [target])
    (with_boxes,) = explainer.explain_detections(scenes[:1], [boxes_only])
    assert float(with_masks.abs().max()) > 0 and not torch.allclose(with_masks, with_boxes)


@pytest.mark.parametrize("kind", ["pt", "onnx"])
def test_cli_audits_a_segmenter_with_mask_iou(seg_files, coco_scenes, tmp_path, capsys, monkeypatch, kind):
    calls = []

    def spy(target, dets, width):
        calls.append(int(target.masks.flatten(1).any(1).sum()))
        return mask_ious(target, dets, width)
    mask_ious = detection.mask_ious
    monkeypatch.setattr(detection, "mask_ious", spy)
    ws = tmp_path / "ws"
    code, out, err = cli(capsys, "run", "--model", seg_files[kind], "--data", coco_scenes[1], "--n", 3,
                         "--param", "n_masks=32", "--param", "cells=8", "--workspace", ws, "--batch-size", 3,
                         "--no-progress")
    assert code == 0, err
    assert calls and max(calls) > 0  # D-RISE compared the targets' (non-empty) masks
    store = Workspace(ws).store(out.strip().splitlines()[-1])
    detections = store.table("detections")
    assert len(detections) > 0 and set(detections["class"]) <= {"boat", "car"}
    maps = store.arrays("detection_maps")["maps"]
    assert len(maps) == len(detections) and float(abs(maps).max()) > 0
