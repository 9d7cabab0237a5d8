"""Pascal VOC folders (Annotations/*.xml + JPEGImages/, optional SegmentationClass/*.png) as a `DetectionDataset`.

The layout of VOC itself and of the CVAT / Datumaro "PASCAL VOC" exports:
```
Annotations/000.xml       <filename>, <size><width><height>, <object><name><bndbox><xmin>...</bndbox>
JPEGImages/000.jpg        (images/ is accepted too)
SegmentationClass/000.png optional: per-pixel class, 255 = void; a palette / grey PNG holds class indices,
                          an RGB PNG the colours of labelmap.txt
labelmap.txt              optional (CVAT, Datumaro): `name:r,g,b::` per class, in index order; without it
                          the class indices are VOC's 21 (background, aeroplane, ...)
```
Boxes are VOC's 1-based inclusive pixel indices (xmin = 1 is the first column): x0 = xmin - 1, x1 = xmax.
Every object is an object (difficult ones too). The segmentation classes that are not object classes
(background, water, road...) are the context regions, category = region; object pixels and void are no region.
No library owns the format (torchvision's VOCDetection reads only the VOCdevkit tree, into dicts): the XML
is read with the standard library.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from analysis.data.coco import CocoDataset, CocoImage
from analysis.data.detection_data import NO_REGION, DetectionDataset
from analysis.data.images import MaskError, read_mask
from analysis.data.types import DatasetError

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
VOID = 255


def labelmap(root: Path) -> tuple[list[str], list[tuple[int, int, int] | None]]:
    """(class names in index order, their colours) from labelmap.txt, else VOC's own classes."""
    path = root / "labelmap.txt"
    if not path.is_file():
        return list(VOC_CLASSES), [None] * len(VOC_CLASSES)
    names, colours = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        colour = rest.split(":", 1)[0].strip()
        try:
            colours.append(tuple(int(v) for v in colour.split(",")) if colour else None)
        except ValueError:
            raise DatasetError(f"{path} line {number}: expected `name:r,g,b::`, got {line[:60]!r}") from None
        names.append(name.strip())
    return names, colours


class SegmentationContext:
    """Context regions from SegmentationClass PNGs: `region_map(image path, h, w)` -> int32, NO_REGION where the
    pixel is an object class, void, or the image has no PNG."""

    def __init__(self, pngs: dict[Path, Path], names: list[str], colours: list, regions: dict[int, str]):
        self.pngs, self.names, self.colours = pngs, names, colours
        self.categories = regions  # index -> region name (what DetectionDataset lists as regions)

    def region_map(self, image_path: Path, height: int, width: int) -> np.ndarray:
        png = self.pngs.get(image_path)
        out = np.full((height, width), NO_REGION, np.int32)
        if png is None:
            return out
        with Image.open(png) as img:
            rgb = img.mode == "RGB"
        if rgb:
            values = self._from_colours(png, (width, height))
        else:
            values = read_mask(png, (width, height), image_path=image_path)
        for index in self.categories:
            out[values == index] = index
        return out

    def _from_colours(self, png: Path, size: tuple[int, int]) -> np.ndarray:
        with Image.open(png) as img:
            if img.size != size:
                raise MaskError(f"mask {png} is {img.size[0]}x{img.size[1]} but its image is {size[0]}x{size[1]}; "
                                "save it at the image's size")
            rgb = np.asarray(img.convert("RGB"), np.int64)
        key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        out = np.full(key.shape, VOID, np.int32)
        for index, colour in enumerate(self.colours):
            if colour is not None:
                out[key == (colour[0] << 16 | colour[1] << 8 | colour[2])] = index
        return out


def _number(node, tag: str, where: str) -> float:
    try:
        return float(node.find(tag).text)
    except (AttributeError, TypeError, ValueError):
        raise DatasetError(f"{where}: <{tag}> missing or not a number; export the annotations as Pascal VOC "
                           "XML") from None


def open_voc_dataset(root: Path, name: str) -> DetectionDataset:
    root = Path(root)
    image_dir = root / "JPEGImages" if (root / "JPEGImages").is_dir() else root / "images"
    xmls = sorted((root / "Annotations").glob("*.xml"))
    if not xmls:
        raise DatasetError(f"{root}: Annotations/ holds no .xml files; export the dataset as Pascal VOC")
    seg_names, colours = labelmap(root)
    images, class_ids = [], {}
    for image_id, xml in enumerate(xmls):
        where = f"{xml.relative_to(root).as_posix()}"
        try:
            doc = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise DatasetError(f"{where}: not valid XML ({exc}); export the annotations as Pascal VOC") from None
        filename = (doc.findtext("filename") or "").strip() or xml.stem + ".jpg"
        path = (image_dir / filename).resolve()
        if Path(filename).is_absolute() or not path.is_relative_to(root.resolve()):
            raise DatasetError(f"{where}: <filename> {filename!r} points outside {root}; give the file's name")
        size = doc.find("size")
        if size is None:
            raise DatasetError(f"{where}: no <size>; VOC annotations give <size><width><height>")
        img = CocoImage(image_id, path, int(_number(size, "width", where)), int(_number(size, "height", where)))
        boxes = []
        for obj in doc.findall("object"):
            label = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            if not label or box is None:
                raise DatasetError(f"{where}: every <object> needs a <name> and a <bndbox>")
            x0, y0 = _number(box, "xmin", where) - 1, _number(box, "ymin", where) - 1
            x1, y1 = _number(box, "xmax", where), _number(box, "ymax", where)
            if not (0 <= x0 < x1 <= img.width + 1 and 0 <= y0 < y1 <= img.height + 1):
                raise DatasetError(f"{where}: box {[x0 + 1, y0 + 1, x1, y1]} of {label!r} lies outside the "
                                   f"{img.width}x{img.height} image; VOC boxes are 1-based pixel indices")
            boxes.append([x0, y0, x1, y1])
            img.labels.append(label)
            img.category_ids.append(class_ids.setdefault(label, len(class_ids)))
            img.segmentations.append(None)
        img.boxes = np.array(boxes, np.float32).reshape(-1, 4)
        images.append(img)
    objects = CocoDataset(root / "Annotations", {i: n for n, i in class_ids.items()}, images, image_dir)
    seg_dir = root / "SegmentationClass"
    pngs = {img.path: seg_dir / (xml.stem + ".png") for img, xml in zip(images, xmls)
            if (seg_dir / (xml.stem + ".png")).is_file()}
    context = None
    if pngs:
        regions = {i: n for i, n in enumerate(seg_names) if n not in class_ids}
        context = SegmentationContext(pngs, seg_names, colours, regions)
    extra = [root / "labelmap.txt"] if (root / "labelmap.txt").is_file() else []
    return DetectionDataset(root, name, objects, context, objects_file="Annotations/",
                            annotation_files=[*xmls, *extra, *sorted(pngs.values())])
