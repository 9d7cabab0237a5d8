"""One set of boat/car scenes written in the layouts teams export: COCO three ways (images beside the JSON's
`images/`, CVAT's annotations/ + images/, a JSON with the images elsewhere), Ultralytics YOLO (labels written
by Ultralytics' own `convert_coco`, boxes and polygons) and Pascal VOC (as the VOC devkit and CVAT lay it out)."""
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from sample_models.detection import CLASSES, SIZE, write_coco

REGION_NAMES = ("water", "road")


def rename_images(doc: dict, strip: str = "images/") -> dict:
    return {**doc, "images": [{**img, "file_name": img["file_name"].removeprefix(strip)} for img in doc["images"]]}


def coco_layouts(scenes, folder: Path) -> dict:
    """{"reference": write_coco's folder, "beside": file_name 00000.png with the files in images/, "cvat":
    annotations/instances_default.json + images/, "json": (a JSON alone, the --images root)}."""
    ref = write_coco(scenes, folder / "reference")
    objects, context = (json.loads((ref / n).read_text()) for n in ("instances.json", "context.json"))
    out = {"reference": ref}
    beside = folder / "beside"
    shutil.copytree(ref / "images", beside / "images")
    (beside / "result.json").write_text(json.dumps(rename_images(objects)))  # Label Studio's name
    (beside / "context.json").write_text(json.dumps(rename_images(context)))
    out["beside"] = beside
    cvat = folder / "cvat"
    shutil.copytree(ref / "images", cvat / "images")
    (cvat / "annotations").mkdir()
    (cvat / "annotations" / "instances_default.json").write_text(json.dumps(rename_images(objects)))
    out["cvat"] = cvat
    apart = folder / "apart"
    shutil.copytree(ref / "images", apart / "pictures")
    (apart / "labels").mkdir()
    (apart / "labels" / "instances.json").write_text(json.dumps(rename_images(objects)))
    (apart / "labels" / "context.json").write_text(json.dumps(rename_images(context)))
    out["json"] = (apart / "labels" / "instances.json", apart / "pictures")
    return out


def band_rectangles(scene) -> list[tuple[int, list[float]]]:
    """(region index 0 water / 1 road, [x0, y0, x1, y1]) of the scene's two bands, in pixels."""
    out = []
    for rid in (0, 1):
        rows = np.flatnonzero(((scene.regions == rid) | (scene.regions == 2)).numpy().all(1)
                              & (scene.regions == rid).numpy().any(1))
        out.append((rid, [0.0, float(rows.min()), float(SIZE), float(rows.max() + 1)]))
    return out


def rectangle_reference(scenes, folder: Path) -> Path:
    """The COCO layout the YOLO files are converted from: objects as write_coco writes them, the water and road
    bands as rectangle polygons (YOLO has no RLE and no holes)."""
    ref = write_coco(scenes, folder)
    context = json.loads((ref / "context.json").read_text())
    anns = []
    for i, scene in enumerate(scenes):
        for rid, (x0, y0, x1, y1) in band_rectangles(scene):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": rid + 1, "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                         "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    (ref / "context.json").write_text(json.dumps({**context, "annotations": anns}))
    return ref


def yolo_layout(reference: Path, folder: Path, polygons: bool) -> Path:
    """An Ultralytics dataset made by Ultralytics' converter from the reference's objects and regions (one
    category list: boat, car, water, road), data.yaml naming the regions under `context`."""
    import yaml

    from explainers.loading.yolo import import_ultralytics

    import_ultralytics()  # offline, and PIL's Image.open left as it was
    from ultralytics.data.converter import convert_coco

    objects, context = (json.loads((reference / n).read_text()) for n in ("instances.json", "context.json"))
    offset = len(CLASSES)
    combined = {"images": rename_images(objects)["images"],
                "categories": [*objects["categories"],
                               *({"id": c["id"] + offset, "name": c["name"]} for c in context["categories"])],
                "annotations": [*objects["annotations"],
                                *({**a, "id": a["id"] + 10_000, "category_id": a["category_id"] + offset}
                                  for a in context["annotations"])]}
    source = folder / "coco_for_converter"
    source.mkdir(parents=True)
    (source / "instances_val.json").write_text(json.dumps(combined))
    converted = folder / "converted"
    convert_coco(str(source), str(converted), use_segments=polygons, cls91to80=False)
    out = folder / "yolo"
    shutil.copytree(converted / "labels" / "val", out / "labels" / "val")
    shutil.copytree(reference / "images", out / "images" / "val")
    names = {c["id"] - 1: c["name"] for c in combined["categories"]}
    (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/val", "val": "images/val",
                                                   "names": names, "context": list(REGION_NAMES)}))
    return out


def voc_layout(scenes, reference: Path, folder: Path) -> Path:
    """Annotations/*.xml (1-based boxes), JPEGImages/, SegmentationClass/*.png (palette: 1 water, 2 road, 3 boat,
    4 car) and CVAT's labelmap.txt, from the same images as write_coco's reference."""
    out = folder / "voc"
    for sub in ("Annotations", "JPEGImages", "SegmentationClass"):
        (out / sub).mkdir(parents=True)
    palette = {"background": (0, 0, 0), "water": (40, 90, 200), "road": (120, 120, 120), "boat": (200, 0, 0),
               "car": (0, 200, 0)}
    (out / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in palette.items()))
    flat_palette = [v for rgb in palette.values() for v in rgb]
    for i, scene in enumerate(scenes):
        stem = f"{i:05d}"
        shutil.copyfile(reference / "images" / f"{stem}.png", out / "JPEGImages" / f"{stem}.png")
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "VOC"
        ET.SubElement(root, "filename").text = f"{stem}.png"
        size = ET.SubElement(root, "size")
        for tag, value in (("width", SIZE), ("height", SIZE), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        ET.SubElement(root, "segmented").text = "1"
        classes = np.full((SIZE, SIZE), 255, np.uint8)
        regions = scene.regions.numpy()
        classes[regions == 0], classes[regions == 1] = 1, 2
        for (x0, y0, x1, y1), label in zip(scene.boxes.int().tolist(), scene.labels.tolist()):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = CLASSES[label]
            for tag, value in (("pose", "Unspecified"), ("truncated", 0), ("difficult", 0)):
                ET.SubElement(obj, tag).text = str(value)
            box = ET.SubElement(obj, "bndbox")
            for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
                ET.SubElement(box, tag).text = str(value)
            inside = np.zeros_like(classes, bool)
            inside[y0:y1, x0:x1] = True
            classes[inside & (regions == 2)] = 3 + label
        ET.ElementTree(root).write(out / "Annotations" / f"{stem}.xml")
        png = Image.fromarray(classes, mode="P")
        png.putpalette(flat_palette)
        png.save(out / "SegmentationClass" / f"{stem}.png")
    return out
