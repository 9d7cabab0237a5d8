"""Ultralytics YOLO datasets (data.yaml + images/ + labels/*.txt) as a `DetectionDataset`.

The layout Ultralytics trains from, and Roboflow / CVAT export:
```
data.yaml        names: {0: boat, 1: car, 2: water, 3: road}  (or a list); val: images/val  (train, test)
                 context: [water, road]    optional: classes that are context regions, not objects
images/val/*.png
labels/val/*.txt one line per object: `class cx cy w h` (boxes) or `class x1 y1 x2 y2 ...` (polygons),
                 coordinates normalised by the image's width and height; no file = no objects
```
The audited split is `val`, else `test`, else `train`: a folder, a list of folders, or a .txt of image paths,
relative to the yaml's folder (Roboflow's `../valid/images` resolves as Ultralytics resolves it: without the
`../`). An image's label file is found by Ultralytics' rule (`label_paths`). Ultralytics itself is not
imported to read: its dataset class verifies every image and writes a `labels.cache` into the user's folder,
and importing it patches PIL process-wide; the tests check this reader against Ultralytics' own functions.
Classes named under `context` become region masks (polygons rasterised by pycocotools, boxes as boxes),
category = region; the rest are the objects.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from analysis.data.coco import CocoDataset, CocoImage
from analysis.data.detection_data import DetectionDataset
from analysis.data.images import ImageError, image_header
from analysis.data.layouts import YAML_SUFFIXES
from analysis.data.types import DatasetError

SPLITS = ("val", "test", "train")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def data_yaml(root: Path) -> Path:
    """The dataset's yaml: data.yaml, else the only yaml at the top."""
    found = sorted(p for p in Path(root).iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
    named = [p for p in found if p.stem == "data"]
    if named or len(found) == 1:
        return (named or found)[0]
    raise DatasetError(f"{root}: several yaml files ({', '.join(p.name for p in found[:4])}); keep the dataset's "
                       "one, named data.yaml")


def read_yaml(path: Path) -> dict:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); write it as Ultralytics does "
                           "(names: [...], val: images/val)") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: expected a mapping with names and val/train, e.g. names: [boat, car]")
    return doc


def class_names(doc: dict, where: Path) -> list[str]:
    names = doc.get("names")
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        if sorted(names) != list(range(len(names))):
            raise DatasetError(f"{where}: names keys must be 0..{len(names) - 1}, got {sorted(names)}")
        return [str(names[k]) for k in range(len(names))]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise DatasetError(f"{where}: needs 'names', the class names in label order (a list, or {{0: name, ...}})")


def split_images(doc: dict, root: Path, where: Path) -> list[Path]:
    """The audited split's image files, sorted."""
    split = next((s for s in SPLITS if doc.get(s)), None)
    if split is None:
        raise DatasetError(f"{where}: names no split; add val: images/val (a folder of images under {root})")
    entries = doc[split] if isinstance(doc[split], list) else [doc[split]]
    base = _base(doc, root)
    images: list[Path] = []
    for entry in entries:
        path = _inside(base, str(entry), root, where, split)
        if path.is_dir():
            images += [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        elif path.suffix == ".txt" and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    images.append(_inside(base, line.strip(), root, where, split))
        else:
            raise DatasetError(f"{where}: {split}: {entry} is not a folder or a .txt list under {root}; "
                               "fix the path (relative to data.yaml)")
    return sorted(set(images))


def _base(doc: dict, root: Path) -> Path:
    """`path:` when it names a folder inside the dataset (`path: .`); an exported absolute or `../datasets/...`
    path from another machine is ignored: splits then resolve against the yaml's folder."""
    given = doc.get("path")
    if isinstance(given, str) and given and not Path(given).is_absolute():
        candidate = (root / given).resolve()
        if candidate.is_dir() and candidate.is_relative_to(root.resolve()):
            return candidate
    return root


def _inside(base: Path, entry: str, root: Path, where: Path, split: str) -> Path:
    path = (base / entry).resolve()
    if not path.exists() and entry.startswith("../"):  # Roboflow's data.yaml; Ultralytics drops the ../ too
        path = (base / entry[3:]).resolve()
    if Path(entry).is_absolute() or not path.is_relative_to(root.resolve()):
        raise DatasetError(f"{where}: {split}: {entry} points outside {root}; give a path inside the dataset "
                           "folder, relative to data.yaml")
    return path


def label_paths(images: list[Path]) -> list[Path]:
    """Ultralytics' image -> label file rule (`ultralytics.data.utils.img2label_paths`: the last `images` folder
    of the path becomes `labels`, the suffix `.txt`), restated rather than imported: importing Ultralytics
    replaces PIL's `Image.open` process-wide with one that tries to pip-install a HEIF plugin on an
    unreadable file, and one bad image must stay one skipped image. The tests hold the two rules equal."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [Path(sb.join(str(p).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt") for p in images]


def read_labels(path: Path, n_classes: int) -> list[tuple[int, np.ndarray, bool]]:
    """(class, normalised points (P, 2), is a polygon) per line: a box gives two corners."""
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(values[0]), np.array([float(v) for v in values[1:]], np.float64)
        except ValueError:
            raise DatasetError(f"{path} line {number}: expected `class cx cy w h` or `class x1 y1 x2 y2 ...` "
                               f"(numbers), got {line[:60]!r}") from None
        if not 0 <= cls < n_classes:
            raise DatasetError(f"{path} line {number}: class {cls} is not in data.yaml's names (0..{n_classes - 1})")
        if len(coords) == 4:
            cx, cy, w, h = coords
            points = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
            out.append((cls, points, False))
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            out.append((cls, coords.reshape(-1, 2), True))
        else:
            raise DatasetError(f"{path} line {number}: {len(coords)} coordinates; a box has 4, a polygon an even "
                               "number >= 6")
        if (coords < -0.01).any() or (coords > 1.01).any():
            raise DatasetError(f"{path} line {number}: coordinates must be normalised to 0..1 by the image size")
    return out


def open_yolo_dataset(root: Path, name: str) -> DetectionDataset:
    root = Path(root)
    yaml_path = data_yaml(root)
    doc = read_yaml(yaml_path)
    names = class_names(doc, yaml_path)
    context = doc.get("context") or []
    unknown = [c for c in context if c not in names] if isinstance(context, list) else [context]
    if unknown:
        raise DatasetError(f"{yaml_path}: context {unknown} are not among names {names}; list the class names "
                           "that are context regions")
    images = split_images(doc, root, yaml_path)
    if not images:
        raise DatasetError(f"{yaml_path}: the split lists no images; put the images under images/val")
    region_ids = {i for i, n in enumerate(names) if n in context}
    objects, regions = [], []
    labels_of = label_paths(images)
    for image_id, (image, labels) in enumerate(zip(images, labels_of)):
        try:
            (width, height), _ = image_header(image)
        except (ImageError, OSError):
            width = height = 0  # validate() and the runner report the unreadable image
        obj, reg = CocoImage(image_id, image.resolve(), width, height), CocoImage(image_id, image.resolve(), width,
                                                                                  height)
        for cls, points, polygon in read_labels(labels, len(names)):
            pixels = points * np.array([width, height])
            box = [*pixels.min(0), *pixels.max(0)]
            seg = [pixels.reshape(-1).tolist()] if polygon else None
            target = reg if cls in region_ids else obj
            target.boxes = np.concatenate([target.boxes, np.array([box], np.float32)])
            target.labels.append(names[cls])
            target.category_ids.append(cls)
            target.segmentations.append(seg)
        objects.append(obj)
        regions.append(reg)
    object_names = {i: n for i, n in enumerate(names) if i not in region_ids}
    label_files = [p for p in labels_of if p.is_file()]
    return DetectionDataset(
        root, name, CocoDataset(yaml_path, object_names, objects, root),
        CocoDataset(yaml_path, {i: names[i] for i in sorted(region_ids)}, regions, root) if region_ids else None,
        objects_file=yaml_path.name, annotation_files=[yaml_path, *label_files])
