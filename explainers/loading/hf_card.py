"""The model card of a Hugging Face `save_pretrained` folder (config.json + model.safetensors).

The card comes from the folder itself: classes from `id2label`, input size and normalisation from
preprocessor_config.json (else `image_size` in config.json), multilabel when `problem_type` says so; a
model.json in the folder overrides any of those fields. Torch-free: the workspace catalog and
the dashboard read cards without importing torch or transformers (loading is `explainers.loading.hf_loader`).
A folder whose weights are only a pickle (`pytorch_model.bin`) is refused here, before anything loads it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from explainers.errors import InputError

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
CARD = "model.json"
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SAVE_HINT = "save it with model.save_pretrained(folder, safe_serialization=True) (model.safetensors)"


def is_hf_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file()


def hf_card_dict(folder: str | Path, override: dict | None = None) -> dict[str, Any]:
    """The model card of a Hugging Face folder: derived fields, then the folder's model.json, then `override`."""
    folder = Path(folder)
    config = _read_json(folder / CONFIG, folder)
    card: dict[str, Any] = {"task": ("multilabel" if config.get("problem_type") == "multi_label_classification"
                                     else "classification")}
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            card["classes"] = [str(id2label[k]) for k in sorted(id2label, key=int)]
        except (TypeError, ValueError):
            raise InputError(f"{folder.name}/{CONFIG}: id2label keys must be class indices") from None
    preprocessor = _read_json(folder / PREPROCESSOR, folder) if (folder / PREPROCESSOR).is_file() else {}
    size = _input_size(preprocessor, config)
    if size is not None:
        card["input_size"] = size
    if preprocessor:
        card["mean"], card["std"] = _normalisation(preprocessor)
    if (folder / CARD).is_file():
        own = _read_json(folder / CARD, folder)
        if not isinstance(own, dict):
            raise InputError(f"{folder.name}/{CARD}: must be a JSON object (fields override config.json)")
        card.update(own)
    card.update(override or {})
    if "classes" not in card:
        raise InputError(f"{folder.name}/{CONFIG} has no id2label: add {CARD} to the folder with "
                         '"classes" in output order, or set config.id2label before save_pretrained')
    if "input_size" not in card:
        raise InputError(f"{folder.name}: no input size in {PREPROCESSOR} or {CONFIG} (image_size); add {CARD} "
                         'with "input_size": [height, width]')
    return card


def refuse_pickled_weights(folder: Path) -> None:
    if any((folder / name).is_file() for name in SAFETENSORS):
        return
    pickled = [name for name in PICKLED_WEIGHTS if (folder / name).is_file()]
    what = f"only {pickled[0]} (a pickle, refused without loading it)" if pickled else "no model.safetensors"
    raise InputError(f"{folder.name}: the Hugging Face folder holds {what}; {SAVE_HINT}")


def _normalisation(preprocessor: dict) -> tuple[list[float], list[float]]:
    """Mean and std for [0, 1] images: the processor computes (255 x * rescale_factor - mean) / std."""
    scale = 255.0 * float(preprocessor.get("rescale_factor", 1 / 255)) if preprocessor.get("do_rescale", True) else 255.0
    if preprocessor.get("do_normalize", True) and "image_mean" in preprocessor:
        mean, std = preprocessor["image_mean"], preprocessor.get("image_std", [1.0, 1.0, 1.0])
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    mean = [mean] * 3 if isinstance(mean, (int, float)) else mean
    std = [std] * 3 if isinstance(std, (int, float)) else std
    return [float(m) / scale for m in mean], [float(v) / scale for v in std]


def _input_size(preprocessor: dict, config: dict) -> list[int] | None:
    """What the model sees: the crop when the processor crops, else the resize (we squash, never crop)."""
    for key in (("crop_size",) if preprocessor.get("do_center_crop") else ()) + ("size",):
        size = preprocessor.get(key)
        if isinstance(size, int):
            return [size, size]
        if isinstance(size, dict):
            if "height" in size and "width" in size:
                return [int(size["height"]), int(size["width"])]
            if "shortest_edge" in size:
                return [int(size["shortest_edge"])] * 2
    image_size = config.get("image_size")
    if isinstance(image_size, int):
        return [image_size, image_size]
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        return [int(v) for v in image_size]
    return None


def _read_json(path: Path, folder: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder.name}/{path.name}: not readable JSON ({exc})") from None
