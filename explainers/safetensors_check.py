"""What exactly is wrong with a damaged .safetensors file, read from its header: torch-free, nothing loaded.

The safetensors library refuses a damaged file safely but says only "invalid offset for tensor `b`"; the user
needs which tensor, which byte, and how to get a good file back (`FIX`). The format: 8 bytes little-endian
header length N, N bytes of JSON ({name: {dtype, shape, data_offsets: [begin, end]}}, optional
`__metadata__`), then the data section, which the tensors must cover exactly, in order, without gaps.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

FIX = "re-save it from the original weights with safetensors.torch.save_file(state_dict, PATH)"
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER = 100 * 1024 * 1024  # the library's own limit


def damage(path: str | Path) -> str | None:
    """One sentence naming what is damaged (tensor, offsets as file byte positions), or None when the header
    and the file's size agree."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return f"the file is {size} bytes long, shorter than the 8-byte header length"
        (n,) = struct.unpack("<Q", prefix)
        if n > min(MAX_HEADER, size - 8):
            return f"the header length at byte 0 says {n:,} bytes, but only {size - 8:,} bytes follow it"
        raw = handle.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"the JSON header (bytes 8..{8 + n}) does not parse: {exc.msg} at byte {8 + exc.pos}" \
            if isinstance(exc, json.JSONDecodeError) else f"the JSON header (bytes 8..{8 + n}) is not UTF-8"
    if not isinstance(header, dict):
        return f"the header (bytes 8..{8 + n}) is not a JSON object"
    start, data_len = 8 + n, size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        shape = info.get("shape") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            return f"tensor `{name}` has no valid shape and data_offsets in the header"
        begin, end = offsets
        if not 0 <= begin <= end:
            return f"tensor `{name}` has data_offsets [{begin}, {end}], which run backwards"
        width = DTYPE_BYTES.get(info.get("dtype"))
        if width is not None and end - begin != math.prod(shape) * width:
            return (f"tensor `{name}` ({info['dtype']}, shape {shape}) needs {math.prod(shape) * width:,} bytes but "
                    f"its data_offsets [{begin}, {end}] hold {end - begin:,} (file bytes {start + begin}..{start + end})")
        spans.append((begin, end, name))
    expected = 0
    for begin, end, name in sorted(spans):
        if begin != expected:
            what = "overlaps the tensor before it" if begin < expected else "leaves a gap before it"
            return f"tensor `{name}` starts at data offset {begin} (file byte {start + begin}) and {what} " \
                   f"(expected offset {expected})"
        expected = end
    if expected > data_len:
        last = max(spans)[2]
        return (f"the file is truncated: tensor `{last}` ends at file byte {start + expected:,} but the file has "
                f"{size:,} bytes")
    if expected < data_len:
        return f"{data_len - expected:,} bytes follow the last tensor (at file byte {start + expected:,})"
    return None


def message(path: str | Path, library_error: str = "") -> str:
    """The one-line refusal: file, what is damaged, the fix."""
    path = Path(path)
    try:
        found = damage(path)
    except OSError as exc:
        found = f"it cannot be read ({exc.strerror})"
    detail = found or library_error or "the safetensors library cannot read it"
    return f"{path.name}: damaged safetensors file: {detail}; {FIX}"
