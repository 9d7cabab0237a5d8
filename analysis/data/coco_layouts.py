"""COCO files as exporters lay them out: which JSON in a folder holds the objects, and one JSON with its images
somewhere else (`--data annotations.json [--images ROOT]`) gathered into the folder layout the workspace keeps.

CVAT writes `annotations/instances_default.json` beside `images/`; Roboflow `_annotations.coco.json` among the
images; Label Studio `result.json` beside `images/`; FiftyOne `labels.json` beside `data/`. Where the images
sit is `coco.pick_image_root`'s business; here is only which file, and the gathering.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from analysis.data.coco import read_coco
from analysis.data.layouts import COCO_NAMES
from analysis.data.types import DatasetError

INSTANCES, CONTEXT = "instances.json", "context.json"


def annotation_file(root: Path) -> Path:
    """The objects' COCO file of a folder: instances.json, else the one exporter-named JSON (DatasetError,
    naming them, when there are several: the user picks one with --data FILE.json)."""
    root = Path(root)
    if (root / INSTANCES).is_file():
        return root / INSTANCES
    found = [root / n for n in COCO_NAMES[2:] if (root / n).is_file()]
    if (root / "annotations").is_dir():
        found += sorted(p for p in (root / "annotations").glob("*.json") if p.is_file())
    if not found:
        raise DatasetError(f"{root}: has {CONTEXT} but no {INSTANCES}; a detection dataset needs {INSTANCES} "
                           "(COCO: images, annotations with bbox, categories = object classes)")
    if len(found) > 1:
        names = ", ".join(p.relative_to(root).as_posix() for p in found[:4])
        raise DatasetError(f"{root}: holds several COCO files ({names}); pass the one to audit as "
                           f"--data {found[0].relative_to(root).as_posix()} (its images are found beside it)")
    return found[0]


def context_file(objects: Path, root: Path) -> Path | None:
    """context.json beside the objects' file, else at the dataset's top; None without one."""
    for candidate in (objects.parent / CONTEXT, Path(root) / CONTEXT):
        if candidate.is_file():
            return candidate
    return None


def gather(json_path: Path, images_root: Path | None, dest: Path) -> Path:
    """`dest` laid out as `instances.json` (the user's file, unchanged) + `context.json` (if one sits beside it)
    + `images/<file_name>` for every image it lists, found under `images_root` (default: where the exporter
    put them, `coco.image_roots`). Files are hard-linked where the filesystem allows, else copied;
    listed images that are missing are left out (validation reports them against the user's own folders)."""
    json_path, dest = Path(json_path), Path(dest)
    if json_path.suffix.lower() != ".json" or not json_path.is_file():
        raise DatasetError(f"{json_path}: not a COCO .json file; --images goes with --data ANNOTATIONS.json or a "
                           "folder holding one")
    if images_root is not None and not Path(images_root).is_dir():
        raise DatasetError(f"--images {images_root}: not a folder; give the folder the file_name paths start from")
    within = Path(images_root) if images_root is not None else json_path.parent.parent
    coco = read_coco(json_path, images_root, within=within)  # every annotation problem, on the user's file
    root = coco.images_root
    dest.mkdir(parents=True)
    _place(json_path, dest / INSTANCES)
    if (json_path.parent / CONTEXT).is_file() and json_path.name != CONTEXT:
        _place(json_path.parent / CONTEXT, dest / CONTEXT)
    base = root.resolve()
    for img in coco.images:
        if img.path.is_file():
            target = dest / "images" / img.path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            _place(img.path, target)
    return dest


def _place(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
