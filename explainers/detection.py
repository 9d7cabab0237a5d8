"""Detector adapters and the targets for detectors, taggers and segmenters.

Every detector is seen through one format, per image a dict:
    boxes (K, 4) xyxy pixels, scores (K,) objectness / confidence, probs (K, C) class probabilities
(plus `labels` (K,) when the detector gives them). D-RISE needs nothing else, so any model that can be
wrapped to produce it is explainable.

Targets stay small callables (`explainers.targets`): `DetectionTarget` scores a detector output the D-RISE way
(the segmenter and tagger targets live in `explainers.targets`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from explainers.errors import InputError

Detections = dict  # {"boxes": (K,4), "scores": (K,), "probs": (K,C)[, "labels": (K,)]}


# ---------------------------------------------------------------- detection targets / similarity

class DetectionTarget:
    """Target detections: boxes (T, 4) xyxy and class probability vectors (T, C); for instance segmentation
    also `masks` (T, H, W) bool, and then overlap is mask IoU instead of box IoU (D-RISE for segmenters).

    As a callable on a batch's detector output (one target per image, T == B) it returns (B,) D-RISE scores.
    """

    def __init__(self, boxes: torch.Tensor, probs: torch.Tensor, masks: torch.Tensor | None = None):
        boxes, probs = torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(probs, dtype=torch.float32)
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or probs.ndim != 2 or len(probs) != len(boxes):
            raise InputError(f"detection target: need boxes (T, 4) and probs (T, C) with equal T; got "
                             f"{tuple(boxes.shape)} and {tuple(probs.shape)}")
        if masks is not None:
            masks = torch.as_tensor(masks).bool()
            if masks.ndim != 3 or len(masks) != len(boxes):
                raise InputError(f"detection target: masks must be (T, H, W) with T = {len(boxes)}, "
                                 f"got {tuple(masks.shape)}")
        self.boxes, self.probs, self.masks = boxes, probs, masks

    def __len__(self) -> int:
        return len(self.boxes)

    def to(self, device) -> "DetectionTarget":
        masks = None if self.masks is None else self.masks.to(device)
        return DetectionTarget(self.boxes.to(device), self.probs.to(device), masks)

    def split(self) -> list["DetectionTarget"]:
        return [DetectionTarget(self.boxes[i:i + 1], self.probs[i:i + 1],
                                None if self.masks is None else self.masks[i:i + 1]) for i in range(len(self))]

    def __call__(self, outputs: Sequence[Detections]) -> torch.Tensor:
        if len(outputs) != len(self):
            raise ValueError(f"DetectionTarget has {len(self)} boxes for a batch of {len(outputs)}")
        return torch.stack([detection_similarity(t, d)[0] for t, d in zip(self.split(), outputs)])


def detection_similarity(target: DetectionTarget, det: Detections) -> torch.Tensor:
    """(T,) best match over proposals: IoU(box) x cosine(class probs) x objectness (Petsiuk et al. 2021)."""
    return similarities(target, [det])[0]


def similarities(target: DetectionTarget, dets: Sequence[Detections]) -> torch.Tensor:
    """(n, T): `detection_similarity` against each of n detector outputs, computed for all of them at once.

    D-RISE scores thousands of masked images per target; one padded tensor expression instead of a call per
    masked image. Padding proposals have objectness 0, so they never win the max (all terms are >= 0).
    """
    boxes = torch.nn.utils.rnn.pad_sequence([d["boxes"].to(target.boxes) for d in dets], batch_first=True)
    if boxes.shape[1] == 0:
        return target.boxes.new_zeros(len(dets), len(target))
    probs = torch.nn.utils.rnn.pad_sequence([d["probs"].to(target.probs) for d in dets], batch_first=True)
    scores = torch.nn.utils.rnn.pad_sequence([d["scores"].to(target.boxes) for d in dets], batch_first=True)
    if target.masks is not None:
        iou = mask_ious(target, dets, boxes.shape[1])
    else:
        iou = box_ious(target.boxes, boxes)
    tp = torch.nn.functional.normalize(target.probs, dim=1)
    dp = torch.nn.functional.normalize(probs, dim=2)
    cos = torch.einsum("tc,nkc->ntk", tp, dp)
    return (iou * cos * scores[:, None, :]).amax(dim=2)


def box_ious(targets: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(n, T, K) IoU of T target boxes with each output's K (padded) boxes; 0 where the union is empty."""
    t, p = targets[None, :, None, :], boxes[:, None, :, :]  # (1, T, 1, 4), (n, 1, K, 4)
    wh = (torch.minimum(t[..., 2:], p[..., 2:]) - torch.maximum(t[..., :2], p[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_t = ((t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1]))
    area_p = ((p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1]))
    union = area_t + area_p - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def mask_ious(target: DetectionTarget, dets: Sequence[Detections], width: int) -> torch.Tensor:
    """(n, T, width) IoU of the target instance masks with each output's masks (`masks` (K, H, W) or Mask R-CNN's
    (K, 1, H, W) probabilities, thresholded at 0.5). One output at a time: a padded (n, K, H*W) tensor of
    full-resolution masks would not fit in memory for real images."""
    tm = target.masks.flatten(1).float()  # (T, P)
    out = tm.new_zeros(len(dets), len(target), width)
    for k, det in enumerate(dets):
        if len(det["boxes"]) == 0:
            continue
        if "masks" not in det:
            raise InputError("drise: the targets have instance masks but the detector returns none; return "
                             "`masks` (K, H, W) per image (Mask R-CNN does), or explain boxes without masks")
        dm = det["masks"].to(tm.device).reshape(len(det["boxes"]), -1)
        dm = (dm > 0.5).float() if dm.dtype.is_floating_point else dm.float()
        if dm.shape[1] != tm.shape[1]:
            raise InputError(f"drise: detector masks have {dm.shape[1]} pixels, the target masks {tm.shape[1]}; "
                             f"give both at the image's size")
        inter = tm @ dm.T
        union = tm.sum(1)[:, None] + dm.sum(1)[None, :] - inter
        out[k, :, :len(dm)] = torch.where(union > 0, inter / union.clamp(min=1), 0.0)
    return out


def detections_above(det: Detections, score_threshold: float) -> DetectionTarget:
    """The detector's own detections above a score threshold, as targets (what an audit explains)."""
    keep = det["scores"] >= score_threshold
    masks = det.get("masks")
    if masks is not None:
        masks = masks[keep].reshape(int(keep.sum()), *masks.shape[-2:])
        masks = masks > 0.5 if masks.dtype.is_floating_point else masks.bool()
    return DetectionTarget(det["boxes"][keep], det["probs"][keep], masks)


def targets_from_classes(outputs: Sequence[Detections], classes) -> list[DetectionTarget]:
    """Per image, the top-scoring detection whose class is `classes[b]` (empty target when there is none)."""
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1).tolist()
    if len(classes) != len(outputs):
        raise InputError(f"drise: {len(classes)} class indices for {len(outputs)} images; give one per image")
    result = []
    for c, det in zip(classes, outputs):
        if det["probs"].shape[-1] <= c:
            raise InputError(f"drise: class index {c} but the detector gives {det['probs'].shape[-1]} classes")
        keep = det["probs"].argmax(1) == c if len(det["probs"]) else torch.zeros(0, dtype=torch.bool)
        if keep.any():
            best = torch.where(keep, det["scores"], torch.full_like(det["scores"], -1)).argmax()
            result.append(DetectionTarget(det["boxes"][best:best + 1], det["probs"][best:best + 1]))
        else:
            result.append(DetectionTarget(torch.zeros(0, 4), torch.zeros(0, det["probs"].shape[-1])))
    return result


# ---------------------------------------------------------------- detector adapters

class CallableDetector(nn.Module):
    """Wraps `f(images) -> list[dict(boxes, scores, probs)]` and checks the format once per call."""

    def __init__(self, fn: Callable[[torch.Tensor], Sequence[Detections]]):
        super().__init__()
        self.fn = fn

    def forward(self, images: torch.Tensor) -> list[Detections]:
        outputs = list(self.fn(images))
        if len(outputs) != len(images):
            raise InputError(f"detector returned {len(outputs)} results for {len(images)} images")
        for det in outputs:
            missing = {"boxes", "scores", "probs"} - set(det)
            if missing:
                raise InputError(f"detector output lacks {sorted(missing)}; return dicts with boxes (K,4) xyxy, "
                                 f"scores (K,) and probs (K,C) (wrap torchvision models in TorchvisionDetector)")
        return outputs


class TorchvisionDetector(nn.Module):
    """torchvision detection models (Faster R-CNN, RetinaNet, FCOS, SSD) in the D-RISE format.

    torchvision returns boxes, labels, scores. The class-probability vector is one-hot(label) x score, over
    `num_classes` entries (torchvision's indices: 0 is background), since these models do not return the full
    distribution; cosine similarity then compares labels only. For Faster R-CNN, `full_probs=True` recovers
    the softmax over all classes of the RoI each detection came from (hooks on `roi_heads`): the detection's
    score is that softmax's entry for its label, which identifies the RoI exactly.
    """

    def __init__(self, model: nn.Module, num_classes: int | None = None, full_probs: bool = False):
        super().__init__()
        self.model = model.eval()
        self.full_probs = full_probs
        if full_probs and not hasattr(model, "roi_heads"):
            raise InputError(f"full_probs needs a two-stage model with roi_heads (Faster R-CNN), "
                             f"not {type(model).__name__}; use full_probs=False")
        self.num_classes = num_classes or _torchvision_num_classes(model)

    def forward(self, images: torch.Tensor) -> list[Detections]:
        if not self.full_probs:
            out = self.model(list(images))
            return [self._one_hot(o) for o in out]
        captured: dict[str, object] = {}
        heads = self.model.roi_heads
        h1 = heads.register_forward_pre_hook(lambda _m, args: captured.__setitem__("proposals", args[1]))
        h2 = heads.box_predictor.register_forward_hook(lambda _m, _a, out: captured.__setitem__("logits", out[0]))
        try:
            out = self.model(list(images))
        finally:
            h1.remove()
            h2.remove()
        probs = torch.softmax(captured["logits"], -1).split([len(p) for p in captured["proposals"]])
        result = []
        for o, roi_probs in zip(out, probs):
            # the RoI a detection came from is the one whose softmax entry for its label equals its score
            rows = (roi_probs[:, o["labels"]] - o["scores"][None, :]).abs().argmin(0)
            result.append({"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"], "probs": roi_probs[rows]}
                          | ({"masks": o["masks"]} if "masks" in o else {}))
        return result

    def _one_hot(self, o: dict) -> Detections:
        probs = torch.zeros(len(o["labels"]), self.num_classes, device=o["scores"].device)
        probs[torch.arange(len(o["labels"])), o["labels"]] = o["scores"]
        return {"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"], "probs": probs} | (
            {"masks": o["masks"]} if "masks" in o else {})  # Mask R-CNN: instance masks for mask IoU


def _torchvision_num_classes(model: nn.Module) -> int:
    heads = getattr(model, "roi_heads", None)
    if heads is not None:
        return heads.box_predictor.cls_score.out_features
    head = getattr(model, "head", None)
    cls_head = getattr(head, "classification_head", None)
    if cls_head is not None and hasattr(cls_head, "num_classes"):
        return cls_head.num_classes
    raise InputError(f"cannot tell the number of classes of {type(model).__name__}; pass num_classes=")
