"""A detection dataset (COCO, Ultralytics YOLO, Pascal VOC) read by a classifier: the boxes are the object.

Without masks an audit has to guess where the label's evidence is (the grid's centre, the look of what the
maps point at), and an object that moves about the image can be taken for a cue beside it. A dataset with
boxes says where the object is. Read for a classifier, each image's label is its first object's class (as
`DetectionDataset` lists it), and its region map is: 1 `object` (role core) under every box of that class, the
context regions the dataset annotates (`context.json`, YOLO's `context:` classes) from 2 on, 0 `background`
elsewhere. The object is then the core, never a shortcut candidate: it is not filled, swapped or searched for
cues, and regions discovered from the maps lie outside it (`analysis.evidence.stage`).
"""
from __future__ import annotations

import numpy as np

from analysis.data.types import Region

BACKGROUND, OBJECT, FIRST_CONTEXT = 0, 1, 2


class BoxCoreDataset:
    """`detection` (a `DetectionDataset`) as a classification dataset whose core region is the label's boxes."""

    task = "classification"

    def __init__(self, detection):
        self.detection = detection
        self.root, self.name, self.items = detection.root, detection.name, detection.items
        self.shown_as = getattr(detection, "shown_as", str(detection.root))
        self.attributes: tuple[str, ...] = ()
        self._context = {cid: FIRST_CONTEXT + k for k, cid in enumerate(sorted(detection.regions))}
        names = {BACKGROUND: "background", OBJECT: "object"}
        if any(r.name in names.values() for r in detection.regions.values()):
            names = {BACKGROUND: "unannotated", OBJECT: "object (boxes)"}
        self.regions = {BACKGROUND: Region(BACKGROUND, names[BACKGROUND]),
                        OBJECT: Region(OBJECT, names[OBJECT], role="core"),
                        **{new: Region(new, detection.regions[cid].name) for cid, new in self._context.items()}}
        self.has_masks = True

    def __len__(self) -> int:
        return len(self.items)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.detection.classes

    def load(self, item):
        """(RGB image, int32 region map at the image's size: the label's boxes 1, context 2.., else 0)."""
        image, context = self.detection.load(item)
        out = np.full((image.height, image.width), BACKGROUND, np.int32)
        if context is not None:
            for cid, new in self._context.items():
                out[context == cid] = new
        boxes, labels = self.detection.ground_truth(item)
        sx, sy = image.width / max(1, self.detection.image_size(item)[0]), \
            image.height / max(1, self.detection.image_size(item)[1])
        for box, label in zip(boxes, labels):
            if label == item.label:
                x0, y0 = int(np.floor(box[0] * sx)), int(np.floor(box[1] * sy))
                x1, y1 = int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy))
                out[max(0, y0):y1, max(0, x0):x1] = OBJECT
        return image, out

    def validate(self, classes=None) -> None:
        """The detection dataset's checks, and every image has an object (its class is the label)."""
        from analysis.data.types import MAX_LISTED_PROBLEMS, DatasetError

        empty = [it.image for it in self.items if not self.detection.ground_truth(it)[1]]
        if empty:
            raise DatasetError(f"dataset {self.shown_as}: {len(empty)} image(s) have no object, and a classifier's "
                               "label is the class of the image's object; annotate them or remove them:",
                               [f"{name}: no object" for name in empty[:MAX_LISTED_PROBLEMS]], total=len(empty))
        self.detection.validate(classes)

    @property
    def sha256(self) -> str:
        return self.detection.sha256


def as_classification(dataset):
    """A detection dataset as `BoxCoreDataset` for a classifier; any other dataset unchanged."""
    return BoxCoreDataset(dataset) if getattr(dataset, "task", None) == "detection" else dataset
