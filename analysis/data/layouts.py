"""Which detection layout a folder or a zip holds, from its file names alone (nothing parsed).

One place for the rules, so that opening a dataset (`datasets.open_dataset`) and choosing the task for a
registered zip (`detection_data.is_detection_dataset`) agree:
- `coco`: `instances.json` / `context.json`, or a COCO file as an exporter names it: `_annotations.coco.json`
  (Roboflow), `result.json` (Label Studio), `labels.json` (FiftyOne), any `annotations/*.json` (CVAT, COCO);
- `yolo`: a `*.yaml` at the top (Ultralytics' data.yaml) and a `labels/` folder;
- `voc`: an `Annotations/` folder of `*.xml` (Pascal VOC).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

COCO_NAMES = ("instances.json", "context.json", "_annotations.coco.json", "result.json", "labels.json")
YAML_SUFFIXES = (".yaml", ".yml")


def layout_of_names(names: list[PurePosixPath]) -> str | None:
    """`coco`, `yolo`, `voc` or None, for paths relative to the dataset's top folder."""
    top = {n.name for n in names if len(n.parts) == 1}
    if "manifest.csv" in top:  # the manifest layout wins (`open_dataset` reads it first), whatever sits beside it
        return None
    if any(name in top for name in COCO_NAMES) or any(
            len(n.parts) == 2 and n.parts[0] == "annotations" and n.suffix == ".json" for n in names):
        return "coco"
    if any(Path(name).suffix in YAML_SUFFIXES for name in top) and any("labels" in n.parts[:-1] for n in names):
        return "yolo"
    if any(len(n.parts) == 2 and n.parts[0] == "Annotations" and n.suffix == ".xml" for n in names):
        return "voc"
    return None


def folder_layout(root: Path) -> str | None:
    """The layout of a folder, listing its top level and the folders the rules look into (not the images)."""
    root = Path(root)
    if not root.is_dir():
        return None
    names = [PurePosixPath(p.name) for p in root.iterdir()]
    for sub in ("annotations", "Annotations"):
        if (root / sub).is_dir():
            names += [PurePosixPath(sub, p.name) for p in (root / sub).iterdir()]
    if any(n.suffix in YAML_SUFFIXES for n in names) and _has_labels_folder(root):
        names.append(PurePosixPath("labels", "x.txt"))
    return layout_of_names(names)


def _has_labels_folder(root: Path) -> bool:
    """`labels/` at the top (Ultralytics) or one folder down (`train/labels`, Roboflow)."""
    return (root / "labels").is_dir() or any((p / "labels").is_dir() for p in root.iterdir() if p.is_dir())
