"""The model side of each card task: which file formats load, which network a state dict builds, how the output
is wrapped and what the probe forward must return, how scores are read and what the labels look like.

The one place in `explainers/` that knows the tasks: `explainers.loading.models` and `explainers.loading.onnx_model` look a card's
task up here instead of comparing task strings, and the run engine's registry (`analysis.runs.tasks`, which
`explainers` cannot import) takes the task names from `TASK_NAMES`. A new task is one `ModelTask` row here and
one module there.

torch and the architectures are imported where a model is built or checked, so the table itself stays light: the
dataset readers (which ask a task's `labels`) and the dashboard read it without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from explainers.errors import InputError

FILE_FORMATS = ("pt2", "state_dict", "safetensors", "torchscript", "onnx", "ultralytics", "hf_folder")


def _check_logits(loaded, output: Any) -> None:
    import torch

    n = len(loaded.card.classes)
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(f"{loaded.path.name}: a {loaded.card.task} model must output (batch, classes) logits, "
                         f"this one outputs {shape}")
    if output.shape[1] != n:
        raise InputError(f"{loaded.path.name}: model.json lists {n} classes but the model outputs "
                         f"{output.shape[1]} logits; fix 'classes' in the model card")


def _check_detections(loaded, output: Any) -> None:
    """A detector must answer in the D-RISE format, with one probability column per class it names."""
    from explainers.loading.architectures import detector_class_names

    names = detector_class_names(loaded.card.architecture, loaded.card.classes)
    if (not isinstance(output, (list, tuple)) or len(output) != 1 or not isinstance(output[0], Mapping)
            or not {"boxes", "scores", "probs"} <= set(output[0])):
        raise InputError(f"{loaded.path.name}: a detection model must return, per image, a dict with boxes, "
                         f"scores and probs; got {type(output).__name__}")
    width = output[0]["probs"].shape[-1]
    if width != len(names):
        raise InputError(f"{loaded.path.name}: model.json lists {len(loaded.card.classes)} classes but the "
                         f"detector scores {width} (expected {len(names)}); fix 'classes' in the model card")


def _check_class_maps(loaded, output: Any) -> None:
    import torch

    n = len(loaded.card.classes)
    if not isinstance(output, torch.Tensor) or output.dim() != 4 or output.shape[1] != n:
        raise InputError(f"{loaded.path.name}: model.json lists {n} classes but the segmentation model "
                         f"outputs {tuple(getattr(output, 'shape', ()))} (expected (batch, {n}, H, W))")


def _build_classifier(architecture: str, num_classes: int, input_size: tuple[int, int]):
    from explainers.loading.architectures import build_architecture

    net = build_architecture(architecture, num_classes=num_classes, input_size=input_size)
    return net, net


def _build_segmenter(architecture: str, num_classes: int, input_size: tuple[int, int]):
    from explainers.loading.architectures import build_segmenter

    net = build_segmenter(architecture, num_classes=num_classes)
    return net, net


def _build_detector(architecture: str, num_classes: int, input_size: tuple[int, int]):
    from explainers.loading.architectures import build_detector

    return build_detector(architecture, num_classes=num_classes)  # the bare network; D-RISE gets it wrapped


def _wrap_segmenter(net):
    from explainers.targets import SegmentationLogits

    return SegmentationLogits(net)


def _detector_normalises_inside(architecture: str | None) -> bool:
    from explainers.loading.architectures import TORCHVISION_DETECTORS

    return architecture in TORCHVISION_DETECTORS  # torchvision's detectors normalise their input themselves


def _detector_formats_hint() -> str:
    from explainers.loading.architectures import detector_names

    return ("detection models load from a state dict (.pt/.pth or .safetensors) with \"architecture\" in the model "
            f"card ({', '.join(detector_names())}); save "
            "torch.save(model.state_dict(), 'model.pt')")


def _detector_head_hint(architecture: str | None, num_classes: int, mismatched: list[str]) -> str:
    from explainers.loading.architectures import TORCHVISION_DETECTORS

    background = " plus background" if architecture in TORCHVISION_DETECTORS else ""
    return (f"the detector's head does not fit the {num_classes} classes{background} that model.json lists "
            f"({', '.join(mismatched[:2])}, file vs card); fix 'classes' in the model card (torchvision detectors: "
            "list the object classes only, background is added)")


@dataclass(frozen=True)
class ModelTask:
    """One card task, model side. `output`: what the wrapped module returns ("logits" (B, C), "detections" (D-RISE's
    per-image dicts), "class_maps" (B, C, H, W)); `labels`: a dataset's ground truth for it ("class", "tags" joined
    by `|`, "class_map" (the manifest's `target` PNGs), "boxes" (COCO)); `scores`: how logits become probabilities
    ("softmax", "sigmoid"); `formats`: the model files (`explainers.loading.model_files.sniff_format`) it loads from."""

    name: str
    output: str
    labels: str
    build: Callable[[str, int, tuple[int, int]], tuple[Any, Any]]  # -> (the net the state dict fits, the one run)
    check_output: Callable[[Any, Any], None]  # (LoadedModel, the probe's output): InputError when it is wrong
    formats: tuple[str, ...] = tuple(f for f in FILE_FORMATS if f != "ultralytics")
    formats_hint: Callable[[], str] = lambda: "its model card's task cannot load this kind of file"
    scores: str = "softmax"
    wrap: Callable[[Any], Any] = lambda net: net  # the network -> the module whose output `check_output` reads
    normalises_inside: Callable[[str | None], bool] = lambda architecture: False  # the net takes [0, 1] pixels
    head_hint: Callable[[str | None, int, list[str]], str] | None = None  # a state dict's head misfits: the fix


MODEL_TASKS: dict[str, ModelTask] = {task.name: task for task in (
    ModelTask("classification", output="logits", labels="class", build=_build_classifier, check_output=_check_logits),
    ModelTask("multilabel", output="logits", labels="tags", build=_build_classifier, check_output=_check_logits,
              scores="sigmoid"),
    ModelTask("segmentation", output="class_maps", labels="class_map", build=_build_segmenter,
              check_output=_check_class_maps, formats=("pt2", "state_dict", "safetensors", "torchscript", "onnx"),
              wrap=_wrap_segmenter),
    ModelTask("detection", output="detections", labels="boxes", build=_build_detector, check_output=_check_detections,
              formats=("state_dict", "safetensors", "onnx", "ultralytics"), formats_hint=_detector_formats_hint,
              normalises_inside=_detector_normalises_inside, head_hint=_detector_head_hint),
)}
TASK_NAMES = tuple(MODEL_TASKS)  # what a card's `task` may say (`ModelCard` checks it, so MODEL_TASKS[card.task] is safe)


def check_loads_from(task: ModelTask, kind: str, file_name: str) -> None:
    """InputError, with the fix, when a model of `task` cannot load from a `kind` file."""
    if kind in task.formats:
        return
    takers = [t.name for t in MODEL_TASKS.values() if kind in t.formats]
    if kind == "ultralytics":
        raise InputError(f"{file_name} is an Ultralytics YOLO checkpoint: set \"task\": \"{takers[0]}\" in its "
                         "model card")
    if kind == "hf_folder":
        raise InputError(f"{file_name}: Hugging Face folders load as image classifiers (task "
                         f"{' or '.join(takers)}), not {task.name}")
    raise InputError(f"{file_name}: {task.formats_hint()}")
