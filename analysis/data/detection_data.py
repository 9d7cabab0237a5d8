"""Detection datasets: images + `instances.json` (COCO objects) + optional `context.json` (COCO regions).

The layout `sample_models.detection.write_coco` writes (also as a .zip):
```
instances.json   COCO: images, annotations (bbox, optional segmentation), categories = object classes
context.json     optional COCO: annotations are context regions (polygons / RLE), category name = region name
images/...       PNG / JPEG, paths relative to the folder (`file_name`)
```
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

    def __init__(self, root: Path, name: str, objects: CocoDataset, context: CocoDataset | None):
        self.root, self.name = Path(root), name
        self.shown_as = str(self.root)  # how messages name the dataset: the user's path, not a workspace copy
        self.objects, self.context = objects, context
        self._images = {img.image_id: img for img in objects.images}
        self._context_by_file = {img.path: img for img in context.images} if context is not None else {}
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
        out = np.full((img.height, img.width), NO_REGION, np.int32)
        ctx = self._context_by_file.get(img.path)
        if ctx is not None:
            for cid, seg, box in zip(ctx.category_ids, ctx.segmentations, ctx.boxes):
                mask = (segmentation_mask(seg, img.height, img.width) if seg
                        else box_pixels(box, img.height, img.width))
                out[mask] = int(cid)
        if out.shape != (image.height, image.width):
            out = np.asarray(Image.fromarray(out).resize(image.size, Image.NEAREST), dtype=np.int32)
        return image, out

    def validate(self, classes=None) -> None:
        """Image files present, readable and of the size the JSON says; object classes known to the model."""
        problems: list[str] = []
        readable = 0
        for img in self.objects.images:
            rel = img.path.relative_to(self.root.resolve()).as_posix()
            if not img.path.is_file():
                problems.append(f"{INSTANCES}: image {rel!r} (id {img.image_id}) not found in {self.shown_as}; "
                                "fix file_name or add the file")
                continue
            try:
                (width, height), _ = image_header(img.path)
            except ImageError:
                continue  # the runner skips undecodable images and reports them
            readable += 1
            if (width, height) != (img.width, img.height):
                problems.append(f"{INSTANCES}: image {rel!r} is {width}x{height} but the JSON says "
                                f"{img.width}x{img.height}; fix width/height (boxes are read in those pixels)")
        if self.objects.images and not readable and not problems:
            problems.append(f"none of the {len(self.objects.images)} images in {INSTANCES} can be read; "
                            "check that they are PNG or JPEG files")
        if self.context is not None:
            unknown = [img.path.name for img in self.context.images if img.path not in
                       {i.path for i in self.objects.images}]
            if unknown:
                problems.append(f"{CONTEXT}: images {', '.join(unknown[:3])} are not in {INSTANCES}; list the same "
                                "images (file_name) in both files")
        if classes is not None:
            missing = sorted(set(self.objects.categories.values()) - set(classes))
            if missing:
                problems.append(f"{INSTANCES}: categories {', '.join(map(repr, missing))} are not among the "
                                f"model's classes {list(classes)}; rename the categories or fix the model card")
        if problems:
            raise DatasetError(f"dataset {self.shown_as} has {len(problems)} problem(s); fix them and retry:",
                               problems[:MAX_LISTED_PROBLEMS], total=len(problems))

    @cached_property
    def sha256(self) -> str:
        """Content hash of the JSON files and every image they list (a folder and its .zip hash alike)."""
        h = hashlib.sha256(b"saliency-audit detection dataset v1\0")
        for name in (INSTANCES, CONTEXT):
            if (self.root / name).is_file():
                h.update(name.encode() + b"\0" + self.hash_file(self.root / name).encode())
        for img in sorted(self.objects.images, key=lambda i: str(i.path)):
            try:
                digest = self.hash_file(img.path)
            except OSError as exc:
                raise DatasetError(f"{self.shown_as}: cannot read {img.path.name} ({exc.strerror or exc})") from None
            h.update(img.path.relative_to(self.root.resolve()).as_posix().encode() + b"\0" + digest.encode())
        return h.hexdigest()


def is_detection_folder(root: Path) -> bool:
    return (root / INSTANCES).is_file() or (root / CONTEXT).is_file()


def is_detection_dataset(path: Path) -> bool:
    """A COCO folder, or a registered zip holding one at its top or one folder down (where `open_dataset`
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
    return any(n.name in (INSTANCES, CONTEXT) and len(n.parts) <= 2 for n in names)


def open_detection_dataset(root: Path, name: str) -> DetectionDataset:
    """Parse instances.json (required) and context.json (optional); InputError naming the file and the fix."""
    root = Path(root)
    if not (root / INSTANCES).is_file():
        raise DatasetError(f"{root}: has {CONTEXT} but no {INSTANCES}; a detection dataset needs {INSTANCES} "
                           "(COCO: images, annotations with bbox, categories = object classes)")
    objects = read_coco(root / INSTANCES, root)
    context = read_coco(root / CONTEXT, root) if (root / CONTEXT).is_file() else None
    if not objects.images:
        raise DatasetError(f"{root / INSTANCES}: lists no images; add one entry per image to 'images'")
    return DetectionDataset(root, name, objects, context)
