"""What a model file (or Hugging Face folder) is, from its bytes alone (nothing unpickled), and its content hash.

Kept free of torch so the catalog can sniff and hash uploads cheaply, in any process.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from pathlib import Path

from explainers.errors import InputError
from explainers.loading.hf_card import CONFIG as HF_CONFIG


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
    from explainers.loading.onnx_files import external_data_files

    return external_data_files(path)


def embedded_card(path: Path) -> dict | None:
    """The model card an Ultralytics ONNX export carries in its metadata (classes, image size), else None."""
    if path.suffix.lower() != ".onnx":
        return None
    from explainers.loading.onnx_files import ultralytics_card

    return ultralytics_card(path)


def tree_files(root: str | Path) -> list[tuple[str, str]]:
    """(relative posix path, absolute path) of every file under `root`, in `sorted(Path.rglob)` order.

    One `os.scandir` walk over strings: `Path.rglob` + `sorted` of Path objects cost more than hashing a
    10,000-file folder of small images. Same files as `rglob("*")` + `is_file()`: symlinked files are
    listed, symlinked folders are not entered, unreadable folders are skipped."""
    top = str(Path(root).absolute())
    out: list[tuple[tuple[str, ...], str]] = []
    stack = [((), top)]
    while stack:
        parts, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            here = (*parts, entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((here, entry.path))
                elif entry.is_file():
                    out.append((here, entry.path))
            except OSError:
                continue
    out.sort(key=lambda row: row[0])  # Path ordering compares the parts
    return [("/".join(parts), path) for parts, path in out]


def tree_sha256(root: Path, hash_file=file_sha256) -> str:
    """Content hash of a folder: relative paths and file contents, order-independent of the filesystem.
    `hash_file` may be a cache of file hashes (the workspace's `HashCache`)."""
    digest = hashlib.sha256()
    for rel, path in tree_files(root):
        digest.update(rel.encode() + b"\0")
        digest.update(hash_file(path).encode() + b"\0")
    return digest.hexdigest()


def model_sha256(path: str | Path) -> str:
    """A model file's hash, or a model folder's (a Hugging Face folder, wherever it was unpacked)."""
    return tree_sha256(Path(path)) if Path(path).is_dir() else file_sha256(path)


def hf_folder_in_zip(path: Path) -> str | None:
    """The folder inside a zip that holds a Hugging Face model ("" for the zip's root), or None."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    folders = sorted(folder for folder, _, base in (name.rpartition("/") for name in names)
                     if base == HF_CONFIG and "/" not in folder and folder != "__MACOSX")
    return folders[0] if folders else None


def sniff_format(path: Path) -> str:
    """`pt2`, `torchscript`, `state_dict`, `safetensors`, `onnx`, `ultralytics` or `hf_folder`, from the bytes
    (zip member names, headers, the names a pickle would import), never by unpickling; a folder by its
    config.json."""
    if path.is_dir():
        if (path / HF_CONFIG).is_file():
            return "hf_folder"
        raise InputError(f"{path.name}: a model folder must be a Hugging Face save_pretrained folder "
                         "(config.json + model.safetensors); for other models pass the model file")
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
    elif suffix == ".safetensors":
        if _looks_like_safetensors(head, path):
            return "safetensors"
        from explainers.safetensors_check import message

        raise InputError(message(path))
    elif suffix in (".pt", ".pth") and head[:1] == b"\x80":  # legacy (non-zip) torch.save pickle
        return "state_dict"
    raise InputError(
        f"{path.name}: not a model file this tool can read; accepted: a torch.export .pt2, a state dict "
        "(.pt/.pth saved with torch.save(model.state_dict()), or .safetensors) with 'architecture' in the "
        "model card, a TorchScript .ts, an ONNX .onnx, or a Hugging Face save_pretrained folder (or a .zip of it)"
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
