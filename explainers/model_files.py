"""What a model file is, from its bytes alone (nothing unpickled), and its content hash.

Kept free of torch so the catalog can sniff and hash uploads cheaply, in any process.
"""
from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

from explainers.errors import InputError


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def companion_files(path: Path, fmt: str) -> list[Path]:
    """Files a model needs beside itself (an ONNX model's external weights), inside its folder; else []."""
    if fmt != "onnx":
        return []
    from explainers.onnx_files import external_data_files

    return external_data_files(path)


def embedded_card(path: Path) -> dict | None:
    """The model card an Ultralytics ONNX export carries in its metadata (classes, image size), else None."""
    if path.suffix.lower() != ".onnx":
        return None
    from explainers.onnx_files import ultralytics_card

    return ultralytics_card(path)


def sniff_format(path: Path) -> str:
    """`pt2`, `torchscript`, `state_dict`, `safetensors`, `onnx` or `ultralytics`, from the bytes (zip member
    names, headers, the names a pickle would import), never by unpickling."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if head[:1] != b"\x08":  # a ModelProto starts with field 1 (ir_version) as a varint
            raise InputError(f"{path.name}: not an ONNX model (it does not start like an ONNX protobuf); export "
                             "it with torch.onnx.export(model, (x,), 'model.onnx', dynamic_shapes=...)")
        return "onnx"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{path.name}: damaged archive ({exc})") from None
        inner = {name.split("/", 1)[1] for name in members if "/" in name}
        if "archive_format" in inner or any(n.startswith("models/") for n in inner):
            return "pt2"
        if "constants.pkl" in inner and any(n.startswith("code/") for n in inner):
            return "torchscript"
        if "data.pkl" in inner:
            return "ultralytics" if _pickle_imports_ultralytics(path, members) else "state_dict"
    elif suffix == ".safetensors" and _looks_like_safetensors(head, path):
        return "safetensors"
    elif suffix in (".pt", ".pth") and head[:1] == b"\x80":  # legacy (non-zip) torch.save pickle
        return "state_dict"
    raise InputError(
        f"{path.name}: not a model file this tool can read; accepted: a torch.export .pt2, a state dict "
        "(.pt/.pth saved with torch.save(model.state_dict()), or .safetensors) with 'architecture' in the "
        "model card, a TorchScript .ts, or an ONNX .onnx"
    )


def _pickle_imports_ultralytics(path: Path, members: list[str]) -> bool:
    """An Ultralytics checkpoint (`yolov8n.pt`) is a torch.save zip whose pickle names `ultralytics.nn` classes:
    found by reading the bytes, so the pickle is never run to find out."""
    name = next(m for m in members if m.endswith("/data.pkl") or m == "data.pkl")
    with zipfile.ZipFile(path) as archive:
        return b"ultralytics.nn" in archive.read(name)


def _looks_like_safetensors(head: bytes, path: Path) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + header_len <= path.stat().st_size
