"""Detection datasets: images + `instances.json` (COCO objects) + optional `context.json` (COCO regions).

The layout `sample_models.detection.write_coco` writes (also as a .zip):
```
instances.json   COCO: images, annotations (bbox, optional segmentation), categories = object classes
context.json     optional COCO: annotations are context regions (polygons / RLE), category name = region name
images/...       PNG / JPEG, paths relative to the folder (`file_name`)
```
Exporters name and place the JSON otherwise (`analysis.data.coco_layouts` finds it); Ultralytics YOLO folders
(`yolo_data`) and Pascal VOC folders (`voc_data`) are read into the same `DetectionDataset`.
Both JSON files are parsed and checked by `analysis.data.coco.read_coco` when the dataset is opened (boxes inside
the image, ids consistent, no path leaving the folder); `validate()` then checks the image files themselves.
Items look like classification items (`image_id`, `image`, `label` = the image's first object class, used
only to stratify the sample), so the workspace and the sampler treat both kinds alike. `load(item)` returns
the image and its context label map: pixel value = context category id, -1 where no region is annotated
(later annotations win where regions overlap).
"""
from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from analysis.data.coco import CocoDataset, box_pixels, read_coco, segmentation_mask
from analysis.data.coco_layouts import annotation_file, context_file
from analysis.data.layouts import folder_layout, layout_of_names
from analysis.data.types import MAX_LISTED_PROBLEMS, DatasetError, Item, Region
from analysis.data.images import ImageError, image_header, read_image_and_orientation
from explainers.loading.model_files import file_sha256

INSTANCES = "instances.json"
CONTEXT = "context.json"
NO_REGION = -1


class DetectionDataset:
    """A parsed COCO detection dataset; cheap to open, `validate()` and `sha256` read the images."""

    hash_file = staticmethod(file_sha256)  # the workspace swaps in its cache by (path, size, mtime)

    task = "detection"

    def __init__(self, root: Path, name: str, objects: CocoDataset, context=None, *,
                 annotation_files: list[Path] | None = None, objects_file: str = INSTANCES):
        """`context`: a COCO file of regions, or any object with `categories` and `region_map(path, height,
        width)` (VOC's class PNGs); `annotation_files`: what the content hash covers besides the images."""
        self.root, self.name = Path(root), name
        self.objects_file = objects_file  # how messages name the objects' annotations
        self.annotation_files = annotation_files if annotation_files is not None else \
            [self.root / n for n in (INSTANCES, CONTEXT) if (self.root / n).is_file()]
        self.shown_as = str(self.root)  # how messages name the dataset: the user's path, not a workspace copy
        self.objects, self.context = objects, context
        self._images = {img.image_id: img for img in objects.images}
        self._context_by_file = {img.path: img for img in context.images} if isinstance(context, CocoDataset) else {}
        self.items = tuple(Item(img.image_id, img.path.relative_to(self.root.resolve()).as_posix(),
                                img.labels[0] if img.labels else "(no objects)") for img in objects.images)
        self.regions = ({cid: Region(cid, str(cname)) for cid, cname in sorted(context.categories.items())}
                        if context is not None else {})
        self.has_masks = context is not None
        self.attributes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.objects.categories.values())))

    def ground_truth(self, item: Item) -> tuple[np.ndarray, list[str]]:
        """(boxes (K, 4) xyxy in the image's pixels, class names) of one image."""
        img = self._images[int(item.image_id)]
        return img.boxes.copy(), list(img.labels)

    def image_size(self, item: Item) -> tuple[int, int]:
        img = self._images[int(item.image_id)]
        return img.width, img.height

    def load(self, item: Item) -> tuple[Image.Image, np.ndarray | None]:
        """(RGB image, int32 context label map at the image's size, or None without context.json)."""
        img = self._images[int(item.image_id)]
        image, _orientation = read_image_and_orientation(img.path)
        if self.context is None:
            return image, None
        if not isinstance(self.context, CocoDataset):
            out = self.context.region_map(img.path, img.height, img.width)
        else:
            out = self._coco_context(img)
        if out.shape != (image.height, image.width):
            out = np.asarray(Image.fromarray(out).resize(image.size, Image.NEAREST), dtype=np.int32)
        return image, out

    def _coco_context(self, img) -> np.ndarray:
        out = np.full((img.height, img.width), NO_REGION, np.int32)
        ctx = self._context_by_file.get(img.path)
        if ctx is not None:
            for cid, seg, box in zip(ctx.category_ids, ctx.segmentations, ctx.boxes):
                mask = (segmentation_mask(seg, img.height, img.width) if seg
                        else box_pixels(box, img.height, img.width))
                out[mask] = int(cid)
        return out

    def validate(self, classes=None) -> None:
        """Image files present, readable and of the size the JSON says; object classes known to the model."""
        problems: list[str] = []
        readable = 0
        for img in self.objects.images:
            rel = img.path.relative_to(self.root.resolve()).as_posix()
            if not img.path.is_file():
                problems.append(f"{self.objects_file}: image {rel!r} (id {img.image_id}) not found in "
                                f"{self.shown_as}; fix the image's path or add the file")
                continue
            try:
                (width, height), _ = image_header(img.path)
            except ImageError:
                continue  # the runner skips undecodable images and reports them
            readable += 1
            if (width, height) != (img.width, img.height):
                problems.append(f"{self.objects_file}: image {rel!r} is {width}x{height} but the annotations say "
                                f"{img.width}x{img.height}; fix width/height (boxes are read in those pixels)")
        if self.objects.images and not readable and not problems:
            problems.append(f"none of the {len(self.objects.images)} images in {self.objects_file} can be read; "
                            "check that they are PNG or JPEG files")
        if isinstance(self.context, CocoDataset):
            unknown = [img.path.name for img in self.context.images if img.path not in
                       {i.path for i in self.objects.images}]
            if unknown:
                problems.append(f"{CONTEXT}: images {', '.join(unknown[:3])} are not in {INSTANCES}; list the same "
                                "images (file_name) in both files")
        if classes is not None:
            missing = sorted(set(self.objects.categories.values()) - set(classes))
            if missing:
                problems.append(f"{self.objects_file}: categories {', '.join(map(repr, missing))} are not among the "
                                f"model's classes {list(classes)}; rename the categories or fix the model card")
        if problems:
            raise DatasetError(f"dataset {self.shown_as} has {len(problems)} problem(s); fix them and retry:",
                               problems[:MAX_LISTED_PROBLEMS], total=len(problems))

    @cached_property
    def sha256(self) -> str:
        """Content hash of the annotation files and every image they list (a folder and its .zip hash alike)."""
        h = hashlib.sha256(b"saliency-audit detection dataset v1\0")
        for path in self.annotation_files:
            name = path.resolve().relative_to(self.root.resolve()).as_posix()
            h.update(name.encode() + b"\0" + self.hash_file(path).encode())
        for img in sorted(self.objects.images, key=lambda i: str(i.path)):
            try:
                digest = self.hash_file(img.path)
            except OSError as exc:
                raise DatasetError(f"{self.shown_as}: cannot read {img.path.name} ({exc.strerror or exc})") from None
            h.update(img.path.relative_to(self.root.resolve()).as_posix().encode() + b"\0" + digest.encode())
        return h.hexdigest()


def is_detection_folder(root: Path) -> bool:
    """COCO (instances.json, context.json or an exporter's file), Ultralytics YOLO or Pascal VOC (`layouts`)."""
    return folder_layout(root) is not None


def is_detection_dataset(path: Path) -> bool:
    """A detection folder, or a registered zip holding one at its top or one folder down (where `open_dataset`
    looks), told from the zip's directory without extracting anything."""
    import zipfile
    from pathlib import PurePosixPath

    path = Path(path)
    if path.is_dir():
        return is_detection_folder(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = [PurePosixPath(n.replace("\\", "/")) for n in archive.namelist()]
    tops = {n.parts[0] for n in names if len(n.parts) > 1}
    if layout_of_names(names) is not None:
        return True
    return len(tops) == 1 and layout_of_names([PurePosixPath(*n.parts[1:]) for n in names if len(n.parts) > 1]) \
        is not None


def open_detection_dataset(root: Path, name: str) -> DetectionDataset:
    """Parse the objects' COCO file (instances.json or an exporter's, `coco_layouts.annotation_file`) and
    context.json (optional); InputError naming the file and the fix. Images resolve where the exporter put them."""
    root = Path(root)
    objects_path = annotation_file(root)
    objects = read_coco(objects_path, within=root)
    context_path = context_file(objects_path, root)
    context = read_coco(context_path, objects.images_root, within=root) if context_path is not None else None
    if not objects.images:
        raise DatasetError(f"{objects_path}: lists no images; add one entry per image to 'images'")
    return DetectionDataset(root, name, objects, context, objects_file=objects_path.relative_to(root).as_posix(),
                            annotation_files=[p for p in (objects_path, context_path) if p is not None])
