"""Ultralytics YOLO detectors in the D-RISE format, from a PyTorch checkpoint or an ONNX export.

YOLO's head decodes to (B, 4 + C, N): per anchor a box (cx, cy, w, h in input pixels) and C independent
class probabilities (sigmoids). `yolo_detections` keeps anchors whose best class probability reaches
`conf`, applies per-class NMS (torchvision's `batched_nms`, as Ultralytics does) and returns boxes, scores,
the full probability vectors and labels: so D-RISE's cosine term compares real class distributions. The same
decoding serves the ONNX export (`explainers.loading.onnx_model`) and the checkpoint (`YoloDetector`), so an audit of
either gives the same detections. NMS-free (end-to-end) heads export (B, max_det, 6) = box, score, class:
`end2end_detections` turns them into one-hot probability vectors.

Segmentation models (`yolov8n-seg`) add 32 mask coefficients per anchor after the classes and a prototype
output (B, 32, H/4, W/4): each kept detection then also gets its instance mask (`instance_masks`, Ultralytics'
`process_mask` at the input's size: coefficients x prototypes, upsampled, > 0, cropped to the box), and D-RISE
scores overlap by mask IoU (`explainers.detection.DetectionTarget`), as for Mask R-CNN.

Checkpoints (`yolov8n.pt`) are pickles. They load only when the model card opts in (`"trust_pickle": true`),
only in the worker (as every model), and even then through Ultralytics' restricted loader (`weights_only`
with its allow-list of known classes, `torch_safe_load(..., safe_only=True)`): a checkpoint holding other
types is refused, never run. The README recommends the ONNX export instead, which runs no Python at all.
Ultralytics is imported offline (`YOLO_OFFLINE=1`: no update checks, no downloads).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import batched_nms

from explainers.errors import InputError, first_line

CONF = 0.01  # low: D-RISE compares every masked image's proposals with the target, not only confident ones
IOU = 0.7  # Ultralytics' default NMS IoU
MAX_DET = 300
ONNX_EXPORT = "yolo export model=best.pt format=onnx dynamic=True"
TRUST_HINT = (f"export it to ONNX and audit the .onnx (recommended: ONNX runs no Python): {ONNX_EXPORT}; or, if "
              "you trust the file, set \"trust_pickle\": true in its model card")


def yolo_detections(raw: torch.Tensor, size: tuple[int, int], conf: float = CONF, iou: float = IOU,
                    max_det: int = MAX_DET, *, num_classes: int | None = None,
                    protos: torch.Tensor | None = None) -> list[dict]:
    """(B, 4 + C, N) decoded YOLO head output -> per image {boxes xyxy (clipped to `size` (H, W)), scores,
    probs (K, C), labels}. A segmentation head's output (B, 4 + C + M, N) with its `protos` (B, M, h, w) and
    `num_classes` C also gives `masks` (K, H, W) bool."""
    if raw.ndim != 3 or raw.shape[1] < 5:
        raise InputError(f"a YOLO head outputs (batch, 4 + classes, anchors); got {tuple(raw.shape)}")
    nc = num_classes or raw.shape[1] - 4
    preds = raw.float().transpose(1, 2)  # (B, N, 4 + C [+ M])
    result = []
    for b, pred in enumerate(preds):
        probs = pred[:, 4:4 + nc]
        scores, labels = probs.max(1)
        keep = scores >= conf
        xywh, probs, scores, labels = pred[keep, :4], probs[keep], scores[keep], labels[keep]
        boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        kept = batched_nms(boxes, scores, labels, iou)[:max_det]  # then clipped, as Ultralytics does
        boxes = boxes[kept].clamp(min=0).minimum(boxes.new_tensor([size[1], size[0], size[1], size[0]]))
        det = {"boxes": boxes, "scores": scores[kept], "probs": probs[kept], "labels": labels[kept]}
        if protos is not None:
            det["masks"] = instance_masks(protos[b], pred[keep][kept, 4 + nc:], boxes, size)
        result.append(det)
    return result


def instance_masks(protos: torch.Tensor, coefficients: torch.Tensor, boxes: torch.Tensor,
                   size: tuple[int, int]) -> torch.Tensor:
    """(K, H, W) bool instance masks, as Ultralytics' `process_mask(protos, coefficients, boxes, size,
    upsample=True)` makes them (written out here so an ONNX export needs no Ultralytics): the prototypes
    (M, h, w) weighted by each detection's M coefficients, bilinearly upsampled to `size`, > 0, inside the box."""
    m, h, w = protos.shape
    if not len(coefficients):
        return torch.zeros((0, *size), dtype=torch.bool, device=protos.device)
    logits = (coefficients.float() @ protos.float().view(m, -1)).view(-1, h, w)
    inside = torch.nn.functional.interpolate(logits[None], tuple(size), mode="bilinear")[0] > 0
    x0, y0, x1, y1 = boxes[:, :, None].unbind(1)  # each (K, 1)
    cols = torch.arange(size[1], device=boxes.device, dtype=boxes.dtype)[None, :]
    rows = torch.arange(size[0], device=boxes.device, dtype=boxes.dtype)[None, :]
    return inside & ((rows >= y0) & (rows < y1))[:, :, None] & ((cols >= x0) & (cols < x1))[:, None, :]


def end2end_detections(raw: torch.Tensor, num_classes: int, conf: float = CONF) -> list[dict]:
    """(B, K, 6) [x0, y0, x1, y1, score, class] (NMS-free heads) -> the D-RISE format, probs one-hot x score."""
    result = []
    for pred in raw.float():
        pred = pred[pred[:, 4] >= conf]
        labels = pred[:, 5].long()
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise InputError(f"the YOLO model predicts class {int(labels.max())} but the model card lists "
                             f"{num_classes} classes; fix 'classes' in the model card")
        probs = torch.zeros(len(pred), num_classes, device=pred.device)
        probs[torch.arange(len(pred)), labels] = pred[:, 4]
        result.append({"boxes": pred[:, :4], "scores": pred[:, 4], "probs": probs, "labels": labels})
    return result


class YoloDetector(nn.Module):
    """An Ultralytics `DetectionModel` (images (B, 3, H, W) in [0, 1], H and W multiples of its stride) in the
    D-RISE format. End-to-end heads are switched to their one-to-many branch, which keeps per-class
    probabilities (their one-to-one branch gives a single class per box)."""

    def __init__(self, model: nn.Module, conf: float = CONF, iou: float = IOU, max_det: int = MAX_DET):
        super().__init__()
        self.model = model.eval()
        self.conf, self.iou, self.max_det = conf, iou, max_det
        head = model.model[-1]
        if getattr(head, "end2end", False) and getattr(head, "cv2", None) is not None:
            head.end2end = False

    def forward(self, images: torch.Tensor) -> list[dict]:
        out = self.model(images)
        raw = out[0] if isinstance(out, (tuple, list)) else out
        protos = None
        if isinstance(raw, (tuple, list)):  # segmentation heads: (detections + mask coefficients, prototypes)
            raw, protos = raw[0], raw[1]
        return yolo_detections(raw, images.shape[-2:], self.conf, self.iou, self.max_det,
                               num_classes=self.model.model[-1].nc, protos=protos)


def import_ultralytics():
    """Ultralytics, imported offline: no update checks, no asset downloads, settings in their usual folder."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        import ultralytics
    except ModuleNotFoundError:
        raise InputError("Ultralytics YOLO models need the yolo extra: pip install '.[yolo]' (or audit the ONNX "
                         f"export, which needs only the onnx extra: {ONNX_EXPORT})") from None
    _restore_pil_open()
    return ultralytics


def _restore_pil_open() -> None:
    """Importing Ultralytics replaces PIL's `Image.open` for the whole process with one that, on a file PIL
    cannot identify, tries to pip-install a HEIF plugin and raises when it cannot (offline): one corrupt
    image would then end a run instead of being skipped. The tool reads no HEIF, so PIL's own is put back."""
    from PIL import Image

    try:
        from ultralytics.utils import patches
    except ImportError:
        return
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is getattr(patches, "image_open", None):
        Image.open = original


def load_ultralytics(path: Path, trusted: bool, device: torch.device) -> YoloDetector:
    """The checkpoint's model as a `YoloDetector`; InputError without the card's opt-in (nothing unpickled)."""
    if not trusted:
        raise InputError(f"{path.name} is an Ultralytics checkpoint, a pickle that could run code when loaded, "
                         f"so it is not loaded without your opt-in; {TRUST_HINT}")
    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    try:
        checkpoint, _ = torch_safe_load(str(path), safe_only=True)
    except (TypeError, OSError) as exc:
        raise InputError(f"{path.name}: not a loadable Ultralytics checkpoint ({first_line(exc)}); "
                         f"export it with: {ONNX_EXPORT}") from None
    model = (checkpoint.get("ema") or checkpoint.get("model")) if isinstance(checkpoint, dict) else None
    if not isinstance(model, nn.Module) or not hasattr(model, "model"):
        raise InputError(f"{path.name}: an Ultralytics checkpoint without a detection model; export it with: "
                         f"{ONNX_EXPORT}")
    task = getattr(model, "task", "detect")
    if task not in ("detect", "segment"):
        raise InputError(f"{path.name}: an Ultralytics {task!r} model; only detectors and instance segmenters "
                         "are audited")
    return YoloDetector(model.float().to(device).eval())
