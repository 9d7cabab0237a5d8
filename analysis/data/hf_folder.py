"""Hugging Face `datasets` folders (`Dataset.save_to_disk`, or a `DatasetDict` of splits) as dataset sources.

`datasets.load_from_disk` reads the Arrow files (no code from the folder runs). The rows are written out once
into the manifest layout (images and masks as the bytes they were stored as, `manifest.csv`, `regions.json`),
in a folder keyed by the dataset's content hash, so every later step (validation, decoding, skipping a bad
image with its reason) is the one the manifest format already has.

Columns, found by their feature types:
- the image: the first `Image` column (or one named `image` / `img`);
- the label: a `ClassLabel` (names from the feature) or string column named `label` / `labels`; a
  `Sequence(ClassLabel)` column is a tagger's labels, joined by `|` (docs/FORMATS.md);
- an optional mask: an `Image` column named `mask`, `segmentation` or `regions` (pixel value = region id), with
  region names and the core role from a `regions.json` (the manifest format's) saved beside the Arrow files;
- every other string / integer / bool column is a subgroup attribute.
A `DatasetDict` is read from its `validation` split, else `test`, else `train` (an audit wants held-out data).
"""
from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from pathlib import Path

from analysis.store.temps import publish, remove, temp_beside
from explainers.errors import InputError

SPLITS = ("validation", "test", "train")
MASK_NAMES = ("mask", "segmentation", "regions")
LABEL_NAMES = ("label", "labels")


def is_hf_folder(root: Path) -> bool:
    return (root / "dataset_dict.json").is_file() or ((root / "state.json").is_file()
                                                      and (root / "dataset_info.json").is_file())


def to_manifest_folder(root: Path, workdir: Path | None) -> Path:
    """The manifest-layout copy of the saved dataset at `root` (made once per content)."""
    try:
        import datasets
    except ImportError:
        raise InputError(f"{root}: a Hugging Face datasets folder needs `pip install 'saliency-audit[hf]'`") from None
    split_root = _split(root)
    digest = _content_hash(split_root)
    out = Path(workdir or tempfile.mkdtemp(prefix="hf-dataset-")) / f"hf-{digest[:16]}"
    if (out / "manifest.csv").is_file():
        return out
    try:
        table = datasets.load_from_disk(str(split_root))
    except Exception as exc:  # FileNotFoundError, pyarrow errors, datasets' own: all "this folder is not readable"
        raise InputError(f"{root}: not a readable Hugging Face datasets folder ({exc}); save it with "
                         "Dataset.save_to_disk") from None
    image_col, label_col, mask_col, attributes, tag_names = _columns(table.features, root)
    raw = table.cast_column(image_col, datasets.Image(decode=False))
    if mask_col:
        raw = raw.cast_column(mask_col, datasets.Image(decode=False))
    tmp = temp_beside(out)  # its own name: two registrations of one folder may write at once
    try:
        _write_manifest_folder(tmp, raw, root, split_root, image_col, label_col, mask_col, attributes, tag_names)
    except BaseException:
        remove(tmp)
        raise
    publish(tmp, out)  # the loser of a race drops its copy and reads the winner's (same content)
    return out


def _write_manifest_folder(tmp: Path, raw, root: Path, split_root: Path, image_col: str, label_col: str,
                           mask_col: str | None, attributes: list, tag_names) -> None:
    (tmp / "images").mkdir(parents=True)
    if mask_col:
        (tmp / "masks").mkdir()
    header = ["image", "label"] + (["mask"] if mask_col else []) + attributes
    with open(tmp / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, row in enumerate(raw):
            image = f"images/{i:06d}{_suffix(row[image_col])}"
            (tmp / image).write_bytes(_bytes(row[image_col], root, i))
            cells = [image, _label(row[label_col], tag_names)]
            if mask_col:
                mask = f"masks/{i:06d}.png"
                (tmp / mask).write_bytes(_bytes(row[mask_col], root, i))
                cells.append(mask)
            writer.writerow(cells + ["" if row[a] is None else str(row[a]) for a in attributes])
    if mask_col:
        (tmp / "regions.json").write_text(json.dumps(_regions(root, split_root, mask_col)))


def _split(root: Path) -> Path:
    if not (root / "dataset_dict.json").is_file():
        return root
    splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
    for name in SPLITS:
        if name in splits:
            return root / name
    if splits:
        return root / splits[0]
    raise InputError(f"{root}/dataset_dict.json lists no splits; save one split with Dataset.save_to_disk")


def _columns(features, root: Path):
    from datasets import ClassLabel, Image, Sequence

    images = [name for name, f in features.items() if isinstance(f, Image)]
    masks = [name for name in images if name in MASK_NAMES]
    pictures = [name for name in images if name not in masks]
    if not pictures:
        raise InputError(f"{root}: no image column (a datasets.Image feature); columns: {', '.join(features)}")
    image_col = next((n for n in pictures if n in ("image", "img")), pictures[0])
    label_col = next((n for n in LABEL_NAMES if n in features), None)
    if label_col is None:
        raise InputError(f"{root}: no label column; name the class column `label` (ClassLabel or string)")
    feature, tag_names = features[label_col], None
    if isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel):
        tag_names = feature.feature.names
    elif isinstance(feature, ClassLabel):
        tag_names = feature.names
    attributes = [name for name, f in features.items()
                  if name not in (image_col, label_col, *masks) and getattr(f, "dtype", None) in
                  ("string", "large_string", "bool", "int8", "int16", "int32", "int64", "uint8")]
    return image_col, label_col, (masks[0] if masks else None), attributes, tag_names


def _label(value, names) -> str:
    if isinstance(value, list):  # a tagger's tags
        return "|".join(str(names[v]) if names else str(v) for v in value)
    if names is not None and isinstance(value, int):
        return str(names[value])
    return "" if value is None else str(value)


def _bytes(cell: dict, root: Path, index: int) -> bytes:
    if cell.get("bytes"):
        return cell["bytes"]
    raise InputError(f"{root}: row {index} stores its image as a path ({cell.get('path')!r}), not bytes; save the "
                     "dataset with the images embedded (datasets' default for save_to_disk)")


def _suffix(cell: dict) -> str:
    suffix = Path(cell.get("path") or "").suffix.lower()
    return suffix if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff") else ".png"


def _regions(root: Path, split_root: Path, mask_col: str) -> dict:
    for folder in (split_root, root):
        if (folder / "regions.json").is_file():
            try:
                return json.loads((folder / "regions.json").read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"{folder / 'regions.json'} is not valid JSON ({exc}); fix the file") from None
    raise InputError(f"{root}: column {mask_col!r} holds region masks but no regions.json names them; save "
                     'regions.json beside the Arrow files, e.g. {"regions": {"0": {"name": "background"}, '
                     '"1": {"name": "animal", "role": "core"}}}')


def _content_hash(split_root: Path) -> str:
    digest = hashlib.sha256(b"hf-dataset v1\0")
    for path in sorted(p for p in split_root.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
