"""Load a user's model file safely, with its model card, into one uniform `LoadedModel`.

Formats (docs/FORMATS.md), recognised by content, never by unpickling to find out:
- torch.export `.pt2` (recommended): `torch.export.load`, then `torch.export.unflatten`, which rebuilds
  the original submodule tree (`layer4`, `features.3`, ...) as modules whose forward hooks fire and
  through which gradients flow, so CAM methods work exactly as on the original network. (`ep.module()`
  also runs, but drops modules that own no parameters, e.g. resnet's `relu`, and its leaves are not
  called as modules.) A dynamic batch dimension is best; one exported for batch 1 (mlflow.pytorch's default
  input example) runs image by image without layer hooks, a larger fixed batch is refused. `torch.export.load` itself unpickles
  some members unrestricted (it runs a crafted payload), so those members are checked first and refused.
- state dict `.pt`/`.pth` (`torch.load(weights_only=True)` only: a pickled full model is refused, never
  executed) or `.safetensors`, plus the card's `architecture` (`explainers.loading.architectures`).
- TorchScript `.ts` (or a `.pt` that is a TorchScript archive): no layer hooks. `torch.jit.load` runs
  the archive's TorchScript code, so it is only ever called in the worker process, never in Streamlit.
- ONNX `.onnx` (`explainers.loading.onnx_model`): onnxruntime, black-box methods only; no Python runs.
- Ultralytics YOLO checkpoints (`explainers.loading.yolo`): pickles, loaded only with the card's `"trust_pickle": true`.
- a Hugging Face `save_pretrained` folder (`explainers.loading.hf_card`, `explainers.loading.hf_loader`): the card comes
  from its config, safetensors weights only.
"""
from __future__ import annotations

import difflib
import io
import json
import logging
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from explainers.loading.card import (CARD_KEYS, IMAGENET_MEAN, IMAGENET_STD, MINIMAL_CARD, ModelCard,  # noqa: F401
                             card_warnings)
from explainers.errors import InputError
from explainers.layers import LIST_LAYERS_HINT, detect_target_layer
from explainers.loading.hf_card import hf_card_dict, is_hf_folder
from explainers.loading.model_files import model_sha256, sniff_format
from explainers.loading.model_tasks import MODEL_TASKS, TASK_NAMES, check_loads_from

logger = logging.getLogger(__name__)

TASKS = TASK_NAMES
EXPORT_HINT = ("export it with torch.export.save(torch.export.export(model.eval(), (x,), "
               "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}), 'model.pt2')")
MLFLOW_BATCH_HINT = ("mlflow.pytorch.log_model(model, ..., serialization_format='pt2', input_example=x) with x "
                     "a batch of 2 images, so the export's batch stays dynamic")


def read_card(model_path: str | Path, card_path: str | Path | None = None) -> ModelCard:
    """The card of a model: `card_path`, else the one beside the file (`find_card`); for a Hugging Face
    folder, the card its config implies, with the folder's model.json and then `card_path` overriding."""
    model_path = Path(model_path)
    if is_hf_folder(model_path):
        override = None
        if card_path is not None:
            override = json.loads(Path(card_path).read_text(encoding="utf-8")) if Path(card_path).is_file() else None
            if not isinstance(override, dict):
                raise InputError(f"{Path(card_path).name}: must be a JSON object whose fields override config.json")
        return ModelCard.from_dict(hf_card_dict(model_path, override), source=f"{model_path.name} (card)")
    return ModelCard.from_json(card_path if card_path is not None else find_card(model_path))


def find_card(model_path: str | Path) -> Path:
    """`<stem>.json` beside the model (one card per model version), else `model.json` in its folder."""
    model_path = Path(model_path)
    for candidate in (model_path.with_suffix(".json"), model_path.parent / "model.json"):
        if candidate.is_file() and candidate != model_path:
            return candidate
    raise InputError(
        f"{model_path.name}: no model card found; write {model_path.with_suffix('.json').name} or model.json "
        f"beside it, or pass --card, e.g. {MINIMAL_CARD}"
    )


class Normalize(nn.Module):
    """(x - mean) / std on [0, 1] images: the model owns its normalisation, explainers work in pixel space."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@dataclass(eq=False)
class LoadedModel:
    module: nn.Module  # Sequential(normalize, net): [0, 1] images in, raw outputs (logits) out
    net: nn.Module  # the user's network; layer names are relative to it
    card: ModelCard
    format: str  # pt2 | state_dict | safetensors | torchscript | onnx | ultralytics | hf_folder
    supports_hooks: bool
    sha256: str
    path: Path
    device: torch.device
    _detected_layer: str | None = field(default=None, repr=False)

    def layer(self, name: str) -> nn.Module:
        """The submodule `name` of `net`; an InputError with the closest names when there is none."""
        if not self.supports_hooks:
            kind, methods = (("ONNX", "occlusion, rise or drise") if self.format == "onnx"
                             else ("batch-1 .pt2", "a gradient or perturbation method") if self.format == "pt2"
                             else ("TorchScript", "a gradient or perturbation method"))
            fix = f"{EXPORT_HINT} (MLflow: {MLFLOW_BATCH_HINT})" if self.format == "pt2" else EXPORT_HINT
            raise InputError(
                f"{self.path.name}: {kind} models have no hookable layers, so layer {name!r} cannot be "
                f"used; use {methods}, or {fix}"
            )
        modules = dict(self.net.named_modules())
        modules.pop("", None)
        if name in modules:
            return modules[name]
        close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise InputError(f"{self.path.name}: the model has no layer {name!r}; {hint}({LIST_LAYERS_HINT})")

    def target_layer_name(self) -> str:
        """The card's `target_layer`, else the detected default (computed once)."""
        if self.card.target_layer:
            return self.card.target_layer
        if not self.supports_hooks:
            self.layer("<target layer>")  # raises the TorchScript explanation
        if self._detected_layer is None:
            self._detected_layer = detect_target_layer(self.net, self.card.input_size, self.device)
        return self._detected_layer


def load_model(path: str | Path, card: ModelCard | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load, wrap with the card's normalisation, and check one probe forward against the card."""
    path = Path(path)
    if not path.is_file() and not is_hf_folder(path):
        raise InputError(f"{path}: model file not found" if not path.is_dir() else
                         f"{path}: a model folder must be a Hugging Face save_pretrained folder with config.json")
    if card is None:
        card = read_card(path)
    device = torch.device(device)
    kind = sniff_format(path)
    task = MODEL_TASKS[card.task]
    check_loads_from(task, kind, path.name)
    takes_raw_pixels = task.normalises_inside(card.architecture)
    if kind == "onnx":
        from explainers.loading.onnx_model import load_onnx

        net, takes_raw_pixels = load_onnx(path, card, device)
    elif kind == "ultralytics":
        from explainers.loading.yolo import load_ultralytics

        net, takes_raw_pixels = load_ultralytics(path, card.trust_pickle, device), True  # YOLO takes [0, 1] images
    elif kind == "pt2":
        net = _load_pt2(path, device)
    elif kind == "torchscript":
        net = _load_torchscript(path, device)
    elif kind == "hf_folder":
        from explainers.loading.hf_loader import load_hf_classifier

        net = load_hf_classifier(path, device)
    else:
        state = _read_safetensors(path) if kind == "safetensors" else _read_state_dict(path, device)
        net = _build_with_state(path, card, state)
    net = net.to(device).eval()
    module = nn.Sequential()
    if not takes_raw_pixels:
        module.add_module("normalize", Normalize(card.mean, card.std))
    module.add_module("net", task.wrap(net))
    module = module.to(device).eval()
    if kind in CHANNELS_LAST_FORMATS and task.name in CHANNELS_LAST_TASKS:
        channels_last(module)
    hookable = kind not in ("torchscript", "onnx") and not isinstance(net, OneAtATime)
    loaded = LoadedModel(module=module, net=net, card=card, format=kind, supports_hooks=hookable,
                         sha256=model_sha256(path), path=path, device=device)
    _check_probe(loaded)
    if card.target_layer and loaded.supports_hooks:
        loaded.layer(card.target_layer)
    return loaded


CHANNELS_LAST_FORMATS = ("state_dict", "safetensors", "pt2", "hf_folder")  # eager modules we own the weights of
# measured on classifiers (and taggers, the same networks); segmenters and detectors keep NCHW: their loading
# tests hold our loader to the reference model bit for bit, and their heads were not measured
CHANNELS_LAST_TASKS = ("classification", "multilabel")


def channels_last(module: nn.Module) -> nn.Module:
    """A CNN's conv weights in channels-last (NHWC) memory, in place; other models unchanged.

    Why: oneDNN's (CPU) and cuDNN's fast convolution kernels are NHWC; with NCHW weights every conv pays a
    layout conversion. A random-weight resnet18 at 224 px on 2 CPU cores, batch 32: forward 24 -> 16 ms per
    image, forward + backward to the input 50 -> 30 ms; outputs equal to 7e-7, input gradients to 4e-9 (a
    user's dozen-line loop gets this by accident when it permutes HWC arrays without `.contiguous()`).
    Inputs stay NCHW: a conv with NHWC weights runs NHWC and its outputs follow. Only models with at least
    two 4-D weights (conv kernels, also in an exported graph, which has no `Conv2d` modules; a ViT's one
    patch-embedding conv gains nothing)."""
    if sum(p.dim() == 4 for p in module.parameters()) >= 2:
        module.to(memory_format=torch.channels_last)
    return module


def folded_for_prediction(module: nn.Module, probe: torch.Tensor, *, tolerance: float = 1e-4) -> nn.Module:
    """A copy of `module` with each eval-mode BatchNorm folded into the conv (or linear) before it, for the
    forwards that only predict (the evidence's interventions and faithfulness curves); `module` itself when
    there is nothing to fold, torch.fx cannot trace it, or the copy's outputs on `probe` differ from the
    original's by more than `tolerance` (relative to their largest magnitude).

    Why: an eval BatchNorm is an affine map, yet it costs a pass over every activation. Folded
    (`torch.fx.experimental.optimization.fuse`), a resnet18's forward at 224 px on 2 CPU cores went from 13.8
    to 11.8 ms per image, logits equal to 4e-6. The evidence's interventions are ~1,000 such forwards at
    1,000 images. Explainers keep the original: hooks, LRP rules and the sanity cascade address its modules."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return module
    try:
        from torch.fx.experimental.optimization import fuse

        folded = fuse(module)  # a deep copy
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        with torch.no_grad():
            x = probe.to(device)
            expected, got = module(x), folded(x)
        if not (torch.is_tensor(expected) and torch.is_tensor(got) and expected.shape == got.shape):
            return module
        scale = float(expected.abs().max().clamp_min(1e-12))
        return folded if float((expected - got).abs().max()) <= tolerance * scale else module
    except Exception:  # not traceable by torch.fx (control flow on values, custom wrappers): run it as it is
        return module


def _load_pt2(path: Path, device: torch.device) -> nn.Module:
    _refuse_pickled_pt2_members(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # a damaged or foreign archive: report, don't crash
        raise InputError(f"{path.name}: not a loadable torch.export program ({_first_line(exc)}); {EXPORT_HINT}") from exc
    fixed = _fixed_batch(path, program)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    net = torch.export.unflatten(program)
    if fixed is None:
        return net
    logger.warning("%s: exported with a fixed batch size of 1; running it image by image (slower than one "
                   "batched forward, and no layer hooks: CAM methods need a dynamic batch). For speed: %s "
                   "(MLflow: %s)", path.name, EXPORT_HINT, MLFLOW_BATCH_HINT)
    return OneAtATime(net)


def _refuse_pickled_pt2_members(path: Path) -> None:
    """`torch.export.load` unpickles some members without `weights_only` (weights/constants flagged
    `use_pickle`, opaque and custom objects, and a fallback for sample inputs), so a crafted `.pt2` could run
    code. Refuse those before loading: payload configs must list plain tensors only, and every pickled
    member must load with the restricted (weights-only) unpickler."""
    def refuse(member: str) -> InputError:
        return InputError(f"{path.name}: member {member} holds pickled objects, refused without running them; "
                          f"only plain-tensor programs are accepted: {EXPORT_HINT}")

    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            inner = member.split("/", 1)[-1]
            if not inner.startswith("data/"):
                continue
            if inner.endswith("_config.json"):
                try:
                    entries = json.loads(archive.read(member)).get("config", {})
                except (ValueError, AttributeError):
                    raise refuse(member) from None
                for entry in entries.values():
                    name = str(entry.get("path_name", ""))
                    if entry.get("use_pickle") or not name.startswith(("weight_", "tensor_")):
                        raise refuse(member)
            elif inner.endswith(".pt"):  # sample inputs, legacy weight/constant files: torch.save blobs
                try:
                    torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
                except Exception:
                    raise refuse(member) from None


def _fixed_batch(path: Path, program: Any) -> int | None:
    """The batch size a program was exported for, None when its batch is dynamic. Explainers tile and chunk
    batches freely: a fixed batch of 1 runs image by image (`OneAtATime`); a larger one is refused."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and value.dim() > 0 and isinstance(value.shape[0], int):
                if value.shape[0] != 1:
                    raise InputError(
                        f"{path.name}: exported with a fixed batch size of {value.shape[0]}; re-export with a "
                        f"dynamic batch dimension: {EXPORT_HINT} (MLflow: {MLFLOW_BATCH_HINT})"
                    )
                return 1
    return None


def hooks_fix(fmt: str) -> str:
    """What gives a model of format `fmt` hookable layers, in the user's own tool."""
    if fmt == "pt2":  # only a fixed-batch-1 export lacks them
        return f"re-export it with a dynamic batch: {EXPORT_HINT} (MLflow: {MLFLOW_BATCH_HINT})"
    return "export the model with torch.export (.pt2)"


class OneAtATime(nn.Module):
    """A program exported for batch 1, run on each image of a batch and the outputs concatenated: it serves
    every method that does not hook a layer (a hook would see one image per call), at one forward per image."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor):
        outputs = [self.net(image[None]) for image in images]
        if all(isinstance(o, torch.Tensor) for o in outputs):
            return torch.cat(outputs)
        if all(isinstance(o, dict) for o in outputs):
            return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
        return [o for out in outputs for o in out]  # detectors: one list entry per image


def _load_torchscript(path: Path, device: torch.device) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": the user's choice
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise InputError(f"{path.name}: damaged TorchScript archive ({_first_line(exc)})") from exc


def _read_state_dict(path: Path, device: torch.device) -> Mapping[str, torch.Tensor]:
    """`weights_only=True` only: the restricted unpickler refuses any object but tensors and containers."""
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as exc:
        raise InputError(
            f"{path.name}: only state dicts are accepted, and this file holds something else (a pickled model "
            "or other objects, refused without running them); save it with torch.save(model.state_dict(), "
            f"'{path.name}') or {EXPORT_HINT}"
        ) from exc
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise InputError(
            f"{path.name}: expected a state dict (parameter name -> tensor), or a checkpoint with one under "
            "'state_dict' or 'model'; save it with torch.save(model.state_dict(), PATH)"
        )
    return loaded


def _read_safetensors(path: Path) -> Mapping[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))  # loaded on CPU; moved with the network afterwards
    except (SafetensorError, OSError, ValueError) as exc:
        from explainers.safetensors_check import message

        raise InputError(message(path, _first_line(exc))) from exc


def _build_with_state(path: Path, card: ModelCard, state: Mapping[str, torch.Tensor]) -> nn.Module:
    if not card.architecture:
        raise InputError(
            f"{path.name} is a bare state dict: set \"architecture\" in the model card (a torchvision name such "
            f"as \"resnet18\" or a sample model), or {EXPORT_HINT}"
        )
    task = MODEL_TASKS[card.task]
    net, wrapped = task.build(card.architecture, len(card.classes), card.input_size)  # the state dict fits `net`
    state = _strip_prefix(state, "module.")  # saved from DataParallel / DistributedDataParallel
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise InputError(
            f"{path.name} does not fit architecture {card.architecture!r} with {len(card.classes)} classes: "
            + _keys_summary("missing", missing) + ("; " if missing and unexpected else "")
            + _keys_summary("unexpected", unexpected)
            + "; check \"architecture\" in the model card"
        )
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if tuple(state[k].shape) != tuple(v.shape)]
    if mismatched and task.head_hint is not None:
        raise InputError(f"{path.name}: {task.head_hint(card.architecture, len(card.classes), mismatched)}")
    if mismatched:
        raise InputError(
            f"{path.name} does not fit architecture {card.architecture!r} with {len(card.classes)} classes: "
            f"shape mismatch in {', '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''} (file vs "
            "architecture); check \"architecture\" and \"classes\" in the model card"
        )
    net.load_state_dict(state, strict=True)
    return wrapped


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> Mapping[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _keys_summary(kind: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return f"{len(keys)} {kind} keys ({', '.join(keys[:4])}{more})"


def _check_probe(loaded: LoadedModel) -> None:
    """One forward on zeros: the output must match what the card promises."""
    card = loaded.card
    height, width = card.input_size
    try:
        with torch.no_grad():
            output = loaded.module(torch.zeros(1, 3, height, width, device=loaded.device))
    except Exception as exc:
        raise InputError(
            f"{loaded.path.name}: the model fails on a 1x3x{height}x{width} input ({_first_line(exc)}); check "
            "'input_size' in the model card"
        ) from exc
    MODEL_TASKS[card.task].check_output(loaded, output)
    if isinstance(output, torch.Tensor) and not torch.isfinite(output).all():
        logger.warning("%s: non-finite output on an all-zero probe image", loaded.path.name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
