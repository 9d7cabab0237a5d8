"""COCO JSON (boxes, polygons, RLE) -> per-image boxes, labels and instance masks.

Polygons and both RLE forms (uncompressed `counts` lists, compressed strings) are decoded by pycocotools, the
COCO API's own rasteriser, so masks match what COCO evaluation sees pixel for pixel. One thing stays ours:
pycocotools' C decoder writes runs without a bounds check, so a hostile RLE whose counts add up to more than
height x width would write past its buffer; `rle_counts` reads the counts first and the sum is checked before
pycocotools sees them. Every problem a user can fix raises `InputError` naming the JSON file and the annotation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from explainers.errors import InputError

BOX_TOLERANCE = 1.0  # pixels a box may poke out of the image (rounding in exporters)


@dataclass
class CocoImage:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (K, 4) xyxy
    labels: list = field(default_factory=list)  # category names
    category_ids: list = field(default_factory=list)
    segmentations: list = field(default_factory=list)  # raw COCO segmentation per annotation (or None)

    def masks(self) -> np.ndarray:
        """(K, H, W) bool instance masks; an annotation without a segmentation gets its box."""
        out = np.zeros((len(self.labels), self.height, self.width), bool)
        for k, seg in enumerate(self.segmentations):
            out[k] = segmentation_mask(seg, self.height, self.width) if seg else box_pixels(self.boxes[k], self.height,
                                                                                            self.width)
        return out

    def region_map(self) -> np.ndarray:
        """(H, W) int label map: annotation k (1-based, later ones on top); 0 where nothing is annotated."""
        out = np.zeros((self.height, self.width), np.int32)
        for k, m in enumerate(self.masks()):
            out[m] = k + 1
        return out


@dataclass
class CocoDataset:
    source: Path
    categories: dict  # id -> name
    images: list  # list[CocoImage]
    images_root: Path | None = None  # the folder `file_name`s were resolved against


def read_coco(json_path: str | Path, images_root: str | Path | None = None, *,
              within: str | Path | None = None) -> CocoDataset:
    """Read and validate a COCO JSON file. Image paths (`file_name`) are relative to `images_root`; without it,
    to the folder among `image_roots` that holds them (exporters differ); none may leave `within` (default:
    the images root)."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{json_path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{json_path}: not valid JSON ({exc}); export the annotations as COCO JSON") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise InputError(f"{json_path}: a COCO file needs lists 'images', 'annotations' and 'categories'")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{json_path}: every category needs an integer 'id' and a 'name'") from None
    images: dict[int, CocoImage] = {}
    root = Path(images_root) if images_root is not None else \
        pick_image_root(json_path, [str(e.get("file_name", "")) for e in data["images"] if isinstance(e, dict)],
                        within)
    resolved_root = Path(within if within is not None else root).resolve()
    for entry in data["images"]:
        try:
            image_id, name = int(entry["id"]), str(entry["file_name"])
            width, height = int(entry["width"]), int(entry["height"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{json_path}: image entry {entry!r} needs id, file_name, width, height") from None
        path = (root / name).resolve()
        if Path(name).is_absolute() or not path.is_relative_to(resolved_root):
            raise InputError(f"{json_path}: image {name!r} points outside {within if within is not None else root}; "
                             "use a path relative to that folder")
        if image_id in images:
            raise InputError(f"{json_path}: image id {image_id} appears twice")
        images[image_id] = CocoImage(image_id, path, width, height)
    per_image: dict[int, list] = {i: [] for i in images}
    for ann in data["annotations"]:
        where = f"{json_path}: annotation {ann.get('id', '?')}"
        if ann.get("image_id") not in images:
            raise InputError(f"{where} refers to unknown image id {ann.get('image_id')!r}")
        if ann.get("category_id") not in categories:
            raise InputError(f"{where} has unknown category id {ann.get('category_id')!r}; "
                             f"known: {sorted(categories)}")
        img = images[ann["image_id"]]
        box = _xyxy(ann, img, where)
        per_image[img.image_id].append((box, ann["category_id"], ann.get("segmentation")))
    for image_id, anns in per_image.items():
        img = images[image_id]
        img.boxes = np.array([a[0] for a in anns], np.float32).reshape(-1, 4)
        img.category_ids = [a[1] for a in anns]
        img.labels = [categories[a[1]] for a in anns]
        img.segmentations = [a[2] for a in anns]
    return CocoDataset(json_path, categories, list(images.values()), root)


def image_roots(json_path: Path, within: str | Path | None = None) -> list[Path]:
    """Where exporters put the images a COCO file names, in the order tried: the JSON's folder (Roboflow, COCO
    itself), `images/` beside it (Label Studio), `data/` beside it (FiftyOne), `images/` beside the JSON's
    folder (CVAT: annotations/instances_default.json + images/). Only folders inside `within`."""
    folder = json_path.parent
    limit = Path(within if within is not None else folder).resolve()
    candidates = [folder, folder / "images", folder / "data", folder.parent / "images"]
    return [c for c in candidates if c.is_dir() and c.resolve().is_relative_to(limit)] or [folder]


def pick_image_root(json_path: Path, names: list[str], within: str | Path | None = None) -> Path:
    """The first of `image_roots` holding every listed file, else the one holding the most (so a missing file
    is reported against the folder that holds the others)."""
    best, best_found = None, -1
    for root in image_roots(json_path, within):
        found = sum((root / name).is_file() for name in names if name and not Path(name).is_absolute())
        if found == len(names):
            return root
        if found > best_found:
            best, best_found = root, found
    return best


def _xyxy(ann: dict, img: CocoImage, where: str) -> list[float]:
    bbox = ann.get("bbox")
    if bbox is None and ann.get("segmentation"):
        m = segmentation_mask(ann["segmentation"], img.height, img.width)
        ys, xs = np.nonzero(m)
        return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)] if len(xs) else [0.0] * 4
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}") from None
    if w < 0 or h < 0 or x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > img.width + BOX_TOLERANCE \
            or y + h > img.height + BOX_TOLERANCE:
        raise InputError(f"{where}: box {bbox} lies outside image {img.path.name} ({img.width}x{img.height}); "
                         f"boxes are [x, y, width, height] in pixels")
    return [x, y, x + w, y + h]


def segmentation_mask(seg, height: int, width: int) -> np.ndarray:
    """(H, W) bool from a COCO segmentation: a list of polygons, or an RLE dict (list or string counts)."""
    if isinstance(seg, list):
        polygons = [[float(v) for v in poly] for poly in seg if isinstance(poly, list) and len(poly) >= 6]
        if not polygons:
            return np.zeros((height, width), bool)
        return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))).astype(bool)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        h, w = (int(v) for v in seg["size"])
        if (h, w) != (height, width):
            raise InputError(f"RLE size {h}x{w} differs from the image size {height}x{width}")
        counts = rle_counts(seg["counts"])
        if sum(counts) != h * w or min(counts, default=0) < 0:
            raise InputError(f"RLE counts sum to {sum(counts)}, expected {h}x{w}={h * w}")
        raw = seg["counts"]
        rle = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w) if isinstance(raw, list) else \
            {"size": [h, w], "counts": raw.encode() if isinstance(raw, str) else raw}
        return coco_mask.decode(rle).astype(bool)
    raise InputError(f"unreadable segmentation {str(seg)[:80]!r}: use polygons or RLE")


def rle_counts(counts) -> list[int]:
    """The run lengths of an RLE, list or compressed string (the COCO API's rleFrString: 5-bit groups with a
    continuation bit, deltas from the count two back after the third), for the bounds check above."""
    if not isinstance(counts, (str, bytes)):
        return [int(c) for c in counts]
    s = counts.decode() if isinstance(counts, bytes) else counts
    out: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise InputError(f"RLE string {s[:40]!r} ends inside a count; export the mask again")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def box_pixels(box, height: int, width: int) -> np.ndarray:
    """(height, width) bool: an xyxy box's pixels, its corners rounded to whole pixels (an annotation's region)."""
    m = np.zeros((height, width), bool)
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return m
