"""ONNX models through onnxruntime: black boxes that the perturbation methods (occlusion, RISE, D-RISE) explain.

ONNX Runtime runs a graph of standard operators and no Python, which is why a team can hand an auditor an
`.onnx` file. The wrappers here look like `nn.Module`s (tensors in, tensors or detections out) so every
black-box method runs on them batched and unchanged; they are `explainers.base.BlackBox`es, so gradient and
CAM methods refuse them, with the fix, in one place (`refuse_black_box`).

Before a session is created the file is checked from its protobuf alone (`explainers.loading.onnx_files`).

Inputs: one float image input (B, 3, H, W) (or float16: cast). A dynamic batch dimension is used as is; a
fixed batch of b runs in chunks of b (the last one padded). The card's mean/std are applied in front
(`explainers.loading.models.Normalize`), except for the detector exports below that normalise inside.

Output contract (`task` from the model card):
- classification / multilabel: the first output, (B, classes) logits.
- detection, the native contract: outputs named `boxes` (B, K, 4) xyxy input pixels, `scores` (B, K) and
  `probs` (B, K, classes); per image, proposals with score >= 0.01 are kept and de-duplicated by NMS at IoU 0.5
  (the sample detector's post-processing).
- detection, Ultralytics YOLO exports (`yolo export format=onnx dynamic=True`): one output (B, 4 + classes, N)
  (segmentation exports: plus mask coefficients and a prototype output), decoded by `explainers.loading.yolo`; or the
  NMS-free (B, K, 6). They take [0, 1] images: the card's mean/std are not applied. Exported without onnxslim,
  the channel size is a symbol (`Concatoutput0_dim_1`): the class count then comes from the metadata's `names`.
- detection, torchvision detector exports (`torch.onnx.export(model, ([image],), ...)`): boxes (K, 4), labels
  (K,) int64 with 1..classes (0 is background), scores (K,), one image per call; probs are one-hot x score. They
  normalise inside: the card's mean/std are not applied.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import nms

from explainers.base import BlackBox
from explainers.errors import InputError, first_line
from explainers.loading.model_tasks import MODEL_TASKS
from explainers.loading.onnx_files import EXPORT_HINT, check_onnx_file, require

logger = logging.getLogger(__name__)

CONTRACT_SCORE, CONTRACT_IOU = 0.01, 0.5
DETECTOR_OUTPUTS = ("a detection ONNX model must output boxes (B, K, 4), scores (B, K) and probs (B, K, classes) "
                    "named so, or be an Ultralytics YOLO export ((B, 4 + classes, N)) or a torchvision detector "
                    "export (boxes, labels, scores)")


# ---------------------------------------------------------------- the session as a module

class OnnxSession:
    """One checked onnxruntime session: a (B, 3, H, W) float tensor in, its outputs as tensors on the input's
    device. `batched` is False for exports that take one unbatched image (torchvision detectors)."""

    def __init__(self, path: Path, input_size: tuple[int, int], device: torch.device):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                logger.warning("%s: onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); running "
                               "on CPU", path.name)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            raise InputError(f"{path.name}: onnxruntime cannot load the model ({first_line(exc)}); "
                             f"{EXPORT_HINT}") from None
        self.path = path
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in ("tensor(float)", "tensor(float16)"):
            got = ", ".join(f"{i.name} {i.type}" for i in inputs)
            raise InputError(f"{path.name}: the model must take one float image input (batch, 3, H, W), it takes "
                             f"{got}; {EXPORT_HINT}")
        shape = list(inputs[0].shape)
        self.name, self.dtype = inputs[0].name, np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        if len(shape) not in (3, 4) or shape[-3] not in (3, None) and not isinstance(shape[-3], str):
            raise InputError(f"{path.name}: the image input has shape {shape}, expected (batch, 3, H, W)")
        fixed = [d for d in shape[-2:] if isinstance(d, int)]
        if len(fixed) == 2 and tuple(fixed) != tuple(input_size):
            raise InputError(f"{path.name}: the model takes {fixed[0]}x{fixed[1]} images but the model card says "
                             f"input_size {list(input_size)}; fix 'input_size' in the model card")
        self.batched = len(shape) == 4
        self.batch = shape[0] if self.batched and isinstance(shape[0], int) else None
        self.outputs = self.session.get_outputs()

    def run(self, images: torch.Tensor) -> list[torch.Tensor]:
        """All outputs for a batch, concatenated along the batch (batched exports only)."""
        if self.batch is None:
            return self._run(images)
        parts = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = torch.cat([chunk, chunk.new_zeros(pad, *chunk.shape[1:])])
            parts.append([o[:len(chunk) - pad] for o in self._run(chunk)])
        return [torch.cat(outputs) for outputs in zip(*parts)]

    def run_each(self, images: torch.Tensor) -> list[list[torch.Tensor]]:
        """The outputs of each image on its own (exports with per-image, variable-size outputs)."""
        return [self._run(image if not self.batched else image[None]) for image in images]

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        feed = {self.name: x.detach().to("cpu", torch.float32).numpy().astype(self.dtype, copy=False)}
        try:
            outputs = self.session.run(None, feed)
        except Exception as exc:
            raise InputError(f"{self.path.name}: onnxruntime failed on a {tuple(x.shape)} input "
                             f"({first_line(exc)}); check 'input_size' in the model card") from None
        return [torch.from_numpy(np.asarray(o)).to(x.device) for o in outputs]


class OnnxClassifier(BlackBox):
    """Logits (B, classes) from the first output."""

    def __init__(self, session: OnnxSession):
        super().__init__()
        self.session, self.source = session, session.path.name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.session.run(images)[0].float()


class OnnxDetector(BlackBox):
    """Detections in the D-RISE format ({boxes, scores, probs, labels} per image) from one of the layouts."""

    LAYOUTS = ("contract", "yolo", "yolo_end2end", "torchvision")

    def __init__(self, session: OnnxSession, num_classes: int):
        super().__init__()
        self.session, self.source, self.num_classes = session, session.path.name, num_classes
        self.layout, self.order = detector_layout(session, num_classes)

    @property
    def normalises_inside(self) -> bool:
        return self.layout != "contract"

    def forward(self, images: torch.Tensor) -> list[dict]:
        from explainers.loading import yolo

        if self.layout == "torchvision":
            return [self._torchvision(*(outs[i] for i in self.order)) for outs in self.session.run_each(images)]
        outputs = self.session.run(images)
        if self.layout == "yolo":
            if outputs[0].shape[1] < 4 + self.num_classes:  # a symbolic size, checked on the first real output
                raise InputError(f"{self.source}: the export outputs {outputs[0].shape[1] - 4} classes but the "
                                 f"model card lists {self.num_classes}; fix 'classes' in the model card")
            protos = outputs[1] if len(outputs) == 2 else None  # a segmentation export: instance masks too
            return yolo.yolo_detections(outputs[0], images.shape[-2:], num_classes=self.num_classes, protos=protos)
        if self.layout == "yolo_end2end":
            return yolo.end2end_detections(outputs[0], self.num_classes)
        boxes, scores, probs = (outputs[i].float() for i in self.order)
        result = []
        for b, s, p in zip(boxes, scores, probs):
            keep = s >= CONTRACT_SCORE
            b, s, p = b[keep], s[keep], p[keep]
            kept = nms(b, s, CONTRACT_IOU)
            result.append({"boxes": b[kept], "scores": s[kept], "probs": p[kept], "labels": p[kept].argmax(1)})
        return result

    def _torchvision(self, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor) -> dict:
        labels = labels.long() - 1  # torchvision's 0 is background; the card lists the object classes
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise InputError(f"{self.source}: the detector predicts label {int(labels.max()) + 1} but the model "
                             f"card lists {self.num_classes} classes (labels 1..{self.num_classes}); fix 'classes'")
        probs = torch.zeros(len(labels), self.num_classes, device=scores.device)
        probs[torch.arange(len(labels)), labels] = scores.float()
        return {"boxes": boxes.float(), "scores": scores.float(), "probs": probs, "labels": labels}


def detector_layout(session: OnnxSession, num_classes: int) -> tuple[str, tuple[int, ...]]:
    """(layout, indices of the outputs it reads) from the outputs' names, ranks and shapes."""
    outs = session.outputs
    names = [o.name for o in outs]
    path = session.path.name
    if {"boxes", "scores", "probs"} <= set(names):
        if not session.batched:
            raise InputError(f"{path}: boxes/scores/probs outputs need a batched (B, 3, H, W) input")
        return "contract", tuple(names.index(n) for n in ("boxes", "scores", "probs"))
    first = list(outs[0].shape)
    if session.batched and len(first) == 3 and not isinstance(first[1], int):
        first[1] = exported_channels(session.path)  # an export without onnxslim: the size is a symbol
    if session.batched and len(first) == 3 and (len(outs) == 1 or len(outs) == 2 and len(outs[1].shape) == 4):
        if first[1] == 4 + num_classes or (len(outs) == 2 and isinstance(first[1], int) and first[1] > 4 + num_classes):
            return "yolo", (0,)
        if first[2] == 6 and len(outs) == 1:
            return "yolo_end2end", (0,)
        if isinstance(first[1], int) and first[1] > 4:
            raise InputError(f"{path}: a YOLO export with {first[1] - 4} classes, but the model card lists "
                             f"{num_classes}; fix 'classes' in the model card")
    ranks = [len(o.shape) for o in outs]
    if len(outs) >= 3 and sorted(ranks[:3]) == [1, 1, 2]:
        first3 = outs[:3]
        box = next(i for i, o in enumerate(first3) if len(o.shape) == 2)
        label = next((i for i, o in enumerate(first3) if len(o.shape) == 1 and o.type == "tensor(int64)"), None)
        score = next((i for i, o in enumerate(first3) if len(o.shape) == 1 and i != label), None)
        if label is not None and score is not None:
            return "torchvision", (box, label, score)
    described = ", ".join(f"{o.name} {list(o.shape)}" for o in outs)
    raise InputError(f"{path}: outputs {described}: {DETECTOR_OUTPUTS}")


def exported_channels(path: Path) -> int | None:
    """4 + classes of an Ultralytics detection export, from the `names` in its metadata: exported without
    onnxslim (`simplify=False`, or offline where Ultralytics cannot install it), the output's channel size is a
    symbol (`Concatoutput0_dim_1`), not a number; None for other files."""
    from explainers.loading.onnx_files import ultralytics_card

    card = ultralytics_card(path)
    return 4 + len(card["classes"]) if card else None


def load_onnx(path: Path, card, device: torch.device) -> tuple[BlackBox, bool]:
    """(the model as a module, whether it normalises its input itself) after `check_onnx_file`."""
    check_onnx_file(path)
    session = OnnxSession(path, tuple(card.input_size), device)
    output = MODEL_TASKS[card.task].output
    if output == "detections":
        detector = OnnxDetector(session, len(card.classes))
        return detector, detector.normalises_inside
    if output == "class_maps":
        raise InputError(f"{path.name}: ONNX segmentation models are not supported yet; export a .pt2")
    if not session.batched:
        raise InputError(f"{path.name}: a classifier must take a batched (B, 3, H, W) input; {EXPORT_HINT}")
    return OnnxClassifier(session), False
