"""The model card: one schema for every way a model comes in (CLI `--card`, the Upload form, the workspace's
registry, a Hugging Face folder's override, an MLflow version's card). Torch-free: the dashboard's process
checks a card without importing torch.

`ModelCard.from_dict` refuses a card it cannot use (the message starts with the card file's name, the file the
user gave); a field it does not know is not an error: `card_warnings` names it (with the closest known field)
and it is ignored.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from explainers.errors import InputError
from explainers.loading.model_tasks import TASK_NAMES

TASKS = TASK_NAMES
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CARD_KEYS = ("task", "classes", "input_size", "mean", "std", "target_layer", "architecture", "name", "description",
             "version", "trust_pickle")
MINIMAL_CARD = ('{"task": "classification", "classes": ["cat", "dog"], "input_size": [224, 224], '
                '"architecture": "resnet18"}')


@dataclass(frozen=True)
class ModelCard:
    """What the model file cannot say about itself: task, class names, input size, normalisation."""

    task: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    target_layer: str | None = None
    architecture: str | None = None
    name: str | None = None
    description: str | None = None
    version: str | None = None  # "v2", or 2: what pages and exports show beside the name
    trust_pickle: bool = False  # the user's opt-in to load a pickled model (Ultralytics checkpoints)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "model card") -> "ModelCard":
        src = Path(source).name if isinstance(source, Path) or "/" in str(source) else str(source)

        def fail(message: str) -> InputError:
            return InputError(f"{src}: {message}")

        if not isinstance(data, Mapping):
            raise fail(f"must be a JSON object like {MINIMAL_CARD}")

        task = data.get("task", "classification")
        if task not in TASKS:
            raise fail(f"'task' must be one of {', '.join(TASKS)}, not {task!r}")
        classes = data.get("classes")
        if (not isinstance(classes, (list, tuple)) or not classes
                or not all(isinstance(c, str) and c.strip() for c in classes)):
            raise fail("'classes' must be a non-empty list of names")
        classes = list(classes)
        duplicates = sorted({c for c in classes if classes.count(c) > 1})
        if duplicates:
            raise fail(f"'classes' lists {duplicates[0]!r} more than once")
        if "input_size" not in data:
            raise fail("'input_size' is missing: give [height, width] the model was trained on, e.g. [224, 224]")
        input_size = _int_pair(data["input_size"], fail)
        mean = _channel_values(data.get("mean", IMAGENET_MEAN), "mean", fail)
        std = _channel_values(data.get("std", IMAGENET_STD), "std", fail)
        if any(s <= 0 for s in std):
            raise fail("'std' values must be positive")
        optional = {}
        for key in ("target_layer", "architecture", "name", "description"):
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise fail(f"'{key}' must be a non-empty string")
            optional[key] = value
        version = data.get("version")
        if version is not None and (isinstance(version, (bool, dict, list)) or not str(version).strip()):
            raise fail("'version' must be a version such as \"v2\" or 2")
        optional["version"] = None if version is None else str(version).strip()
        trust = data.get("trust_pickle", False)
        if not isinstance(trust, bool):
            raise fail("'trust_pickle' must be true or false")
        optional["trust_pickle"] = trust
        return cls(task=task, classes=tuple(classes), input_size=input_size, mean=mean, std=std, **optional)

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{path}: model card not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the model card ({exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["input_size"] = list(self.input_size)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return {k: v for k, v in data.items() if v is not None and (k != "trust_pickle" or v)}




def _int_pair(value: Any, fail) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 8192 for v in value)):
        raise fail(f"'input_size' must be [height, width] in pixels (8 to 8192), e.g. [224, 224], not {value!r}")
    return int(value[0]), int(value[1])


def _channel_values(value: Any, key: str, fail) -> tuple[float, ...]:
    if (not isinstance(value, (list, tuple)) or len(value) not in (1, 3)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise fail(f"'{key}' must be a list of 3 numbers (one per RGB channel), e.g. {list(IMAGENET_MEAN if key == 'mean' else IMAGENET_STD)}")
    return tuple(float(v) for v in value)


def card_warnings(data: Any, source: str | Path = "model card") -> list[str]:
    """One line per field the card schema does not know: "my_card.json: unknown field 'target-layer' (did you
    mean 'target_layer'?) is ignored; known fields: ..."."""
    if not isinstance(data, Mapping):
        return []
    src = Path(source).name if isinstance(source, Path) or "/" in str(source) else str(source)
    lines = []
    for key in [k for k in data if k not in CARD_KEYS]:
        close = difflib.get_close_matches(str(key), CARD_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"{src}: unknown field {key!r}{hint} is ignored; known fields: {', '.join(CARD_KEYS)}")
    return lines
