"""A synthetic detection scenario with a planted context shortcut, and a tiny detector trained on it.

Scenes (64 x 64): the image is split into two horizontal bands, one blue "water", one grey "road". 1-3 objects
of two classes sit inside the bands: "boat" (a hull wider at the top, with a mast) and "car" (a body with a
cabin and two dark wheels), in colours drawn from the same palette. In the *biased* version a boat sits on
water and a car on road with probability `p_context` (0.95), so the band colour predicts the class; in the
*debiased* version the band is chosen at random. A detector trained on the biased scenes learns to read the
background: D-RISE should put boat saliency on the water and a neutral fill of the water should cost boats
their score, while the debiased detector looks at the objects.

The detector is CenterNet/YOLO-like on an 8 x 8 grid (stride 8): per cell an objectness logit, class logits,
and a box (centre offset in the cell, log width/height). `GridDetector` decodes it to the D-RISE format
(boxes, scores, probs, labels) with NMS. Training is deterministic on CPU and takes well under a minute.

Region ids in the masks: 0 water, 1 road, 2 object.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torchvision.ops import nms

CLASSES = ("boat", "car")
REGIONS = {0: "water", 1: "road", 2: "object"}
SIZE = 64
STRIDE = 8
WEIGHTS_DIR = Path(__file__).parent / "weights" / "detection"
BAND_COLORS = {0: (40, 90, 200), 1: (120, 120, 120)}
PALETTE = [(220, 40, 40), (240, 200, 30), (250, 140, 20), (240, 240, 240), (200, 60, 200), (30, 30, 30)]


@dataclass
class Scene:
    image: torch.Tensor  # (3, H, W) float in [0, 1]
    regions: torch.Tensor  # (H, W) long: 0 water, 1 road, 2 object
    boxes: torch.Tensor  # (K, 4) xyxy float, pixels
    labels: torch.Tensor  # (K,) long, index into CLASSES
    polygons: list  # per object, the outline [x0, y0, x1, y1, ...] (COCO polygon)


def draw_object(draw: ImageDraw.ImageDraw, rdraw: ImageDraw.ImageDraw, cls: int, x0: int, y0: int, w: int, h: int,
                 color: tuple) -> list[float]:
    x1, y1 = x0 + w - 1, y0 + h - 1
    if cls == 0:  # boat: mast in the top third, hull (wide top, narrow keel) below
        deck = y0 + h // 3
        inset = max(2, w // 4)
        hull = [(x0, deck), (x1, deck), (x1 - inset, y1), (x0 + inset, y1)]
        mast = [(x0 + w // 2 - 1, y0), (x0 + w // 2, y0), (x0 + w // 2, deck), (x0 + w // 2 - 1, deck)]
        for d, fill in ((draw, color), (rdraw, 2)):
            d.polygon(hull, fill=fill)
            d.polygon(mast, fill=fill)
        outline = [(x0, deck), (x0 + w // 2 - 1, deck), (x0 + w // 2 - 1, y0), (x0 + w // 2, y0), (x0 + w // 2, deck),
                   (x1, deck), (x1 - inset, y1), (x0 + inset, y1)]
    else:  # car: cabin on a body, two wheels under it
        body_top, wheel = y0 + h // 3, max(2, h // 4)
        inset = max(2, w // 4)
        body = [(x0, body_top), (x1, body_top), (x1, y1 - wheel // 2), (x0, y1 - wheel // 2)]
        cabin = [(x0 + inset, y0), (x1 - inset, y0), (x1 - inset, body_top), (x0 + inset, body_top)]
        for d, fill in ((draw, color), (rdraw, 2)):
            d.polygon(body, fill=fill)
            d.polygon(cabin, fill=fill)
        for cx in (x0 + inset // 2 + 1, x1 - inset // 2 - 1):
            box = [cx - wheel // 2, y1 - wheel + 1, cx + wheel // 2, y1]
            draw.ellipse(box, fill=(15, 15, 15))
            rdraw.ellipse(box, fill=2)
        outline = [(x0 + inset, y0), (x1 - inset, y0), (x1 - inset, body_top), (x1, body_top), (x1, y1), (x0, y1),
                   (x0, body_top), (x0 + inset, body_top)]
    return [float(v) for pt in outline for v in pt]


def make_scene(rng: np.random.Generator, biased: bool, p_context: float = 0.95) -> Scene:
    split = int(rng.integers(24, 41))
    top = int(rng.integers(0, 2))  # band id of the top band; the bottom band is the other one
    bands = {top: (0, split), 1 - top: (split, SIZE)}
    img = Image.new("RGB", (SIZE, SIZE))
    reg = Image.new("L", (SIZE, SIZE))
    draw, rdraw = ImageDraw.Draw(img), ImageDraw.Draw(reg)
    for band, (a, b) in bands.items():
        draw.rectangle([0, a, SIZE - 1, b - 1], fill=BAND_COLORS[band])
        rdraw.rectangle([0, a, SIZE - 1, b - 1], fill=band)
    boxes, labels, polygons = [], [], []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(0, 2))
        home = cls  # boat -> water (0), car -> road (1)
        band = (home if rng.random() < p_context else 1 - home) if biased else int(rng.integers(0, 2))
        a, b = bands[band]
        for _attempt in range(20):
            w, h = int(rng.integers(12, 19)), int(rng.integers(9, 14))
            if b - a < h + 2:
                break
            x0, y0 = int(rng.integers(1, SIZE - w)), int(rng.integers(a + 1, b - h + 1))
            box = (x0, y0, x0 + w, y0 + h)
            if all(box[0] >= q[2] + 2 or box[2] + 2 <= q[0] or box[1] >= q[3] + 2 or box[3] + 2 <= q[1] for q in boxes):
                color = PALETTE[int(rng.integers(0, len(PALETTE)))]
                polygons.append(draw_object(draw, rdraw, cls, x0, y0, w, h, color))
                boxes.append(box)
                labels.append(cls)
                break
    image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    image = (image + torch.from_numpy(rng.normal(0, 0.03, image.shape).astype(np.float32))).clamp(0, 1)
    return Scene(image=image, regions=torch.from_numpy(np.asarray(reg, dtype=np.int64)),
                 boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                 labels=torch.tensor(labels, dtype=torch.long), polygons=polygons)


def make_scenes(n: int, seed: int, biased: bool, p_context: float = 0.95) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, biased, p_context) for _ in range(n)]


# ---------------------------------------------------------------- the detector

class TinyGridNet(nn.Module):
    """Images (B, 3, 64, 64) in [0, 1] -> raw grid (B, 5 + C, 8, 8): objectness, box (4), class logits.
    Receptive field ~50 px: each cell sees well beyond its object, so context is learnable."""

    def __init__(self, num_classes: int = len(CLASSES), width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(  # kept cheap: training must finish in about a minute on 2 CPU cores
            nn.AvgPool2d(2),
            nn.Conv2d(3, w // 2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=2, dilation=2), nn.ReLU(),
        )
        self.head = nn.Conv2d(w, 5 + num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class GridDetector(nn.Module):
    """`TinyGridNet` decoded to the detector format D-RISE reads: per image boxes, scores, probs, labels.

    `score_threshold` is low by default: D-RISE compares against every proposal, not only confident ones.
    """

    def __init__(self, net: TinyGridNet, score_threshold: float = 0.01, iou_threshold: float = 0.5):
        super().__init__()
        self.net, self.score_threshold, self.iou_threshold = net, score_threshold, iou_threshold

    def forward(self, images: torch.Tensor) -> list[dict]:
        boxes, scores, probs = decode_grid(self.net(images))
        result = []
        for b, s, p in zip(boxes, scores, probs):
            keep = s >= self.score_threshold
            b, s, p = b[keep], s[keep], p[keep]
            keep = nms(b, s, self.iou_threshold)
            result.append({"boxes": b[keep], "scores": s[keep], "probs": p[keep], "labels": p[keep].argmax(1)})
        return result


def decode_grid(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw grid -> boxes (B, G*G, 4) xyxy, scores (B, G*G), probs (B, G*G, C)."""
    b, _, g, _ = raw.shape
    ys, xs = torch.meshgrid(torch.arange(g, device=raw.device), torch.arange(g, device=raw.device), indexing="ij")
    cx = (xs + torch.sigmoid(raw[:, 1])) * STRIDE
    cy = (ys + torch.sigmoid(raw[:, 2])) * STRIDE
    w, h = torch.exp(raw[:, 3]) * 16, torch.exp(raw[:, 4]) * 16
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(b, -1, 4).clamp(0, g * STRIDE)
    scores = torch.sigmoid(raw[:, 0]).reshape(b, -1)
    probs = torch.softmax(raw[:, 5:], 1).permute(0, 2, 3, 1).reshape(b, g * g, -1)
    return boxes, scores, probs


def _grid_targets(scenes: list[Scene]) -> tuple[torch.Tensor, ...]:
    g = SIZE // STRIDE
    obj = torch.zeros(len(scenes), g, g)
    box = torch.zeros(len(scenes), 4, g, g)
    cls = torch.full((len(scenes), g, g), -100, dtype=torch.long)
    for i, s in enumerate(scenes):
        for (x0, y0, x1, y1), c in zip(s.boxes.tolist(), s.labels.tolist()):
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            j, k = min(int(cx), g - 1), min(int(cy), g - 1)
            obj[i, k, j] = 1
            box[i, :, k, j] = torch.tensor([cx - j, cy - k, math.log((x1 - x0) / 16), math.log((y1 - y0) / 16)])
            cls[i, k, j] = c
    return obj, box, cls


def detection_loss(raw: torch.Tensor, obj: torch.Tensor, box: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    pos = obj > 0
    loss = F.binary_cross_entropy_with_logits(raw[:, 0], obj, pos_weight=torch.tensor(4.0))
    if pos.any():
        offsets = torch.sigmoid(raw[:, 1:3]).permute(0, 2, 3, 1)[pos]
        sizes = raw[:, 3:5].permute(0, 2, 3, 1)[pos]
        target = box.permute(0, 2, 3, 1)[pos]
        loss = loss + 2 * F.l1_loss(offsets, target[:, :2]) + F.l1_loss(sizes, target[:, 2:])
        loss = loss + F.cross_entropy(raw[:, 5:].permute(0, 2, 3, 1)[pos], cls[pos])
    return loss


def build_grid_detector(num_classes: int) -> tuple[TinyGridNet, GridDetector]:
    """(the net a state dict fills, the same net decoded for D-RISE): the `tiny_grid_detector` card name."""
    net = TinyGridNet(num_classes)
    return net, GridDetector(net)


# Published to the model loader as the `saliency_audit.detectors` entry point (pyproject.toml).
DETECTORS = {"tiny_grid_detector": build_grid_detector}


def train_detector(biased: bool, n_train: int = 1500, epochs: int = 12, seed: int = 0) -> TinyGridNet:
    """Deterministic CPU training (fixed seeds, fixed data order)."""
    torch.manual_seed(seed)
    scenes = make_scenes(n_train, seed=100 + seed + (0 if biased else 1), biased=biased)
    images = torch.stack([s.image for s in scenes])
    obj, box, cls = _grid_targets(scenes)
    net = TinyGridNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=gen).split(64):
            loss = detection_loss(net(images[idx]), obj[idx], box[idx], cls[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return net.eval()


def card(version: str) -> dict:
    """The model card (docs/FORMATS.md keys only; held-out recall goes to metrics.json beside it)."""
    return {"name": f"boats_and_cars {version}", "task": "detection", "classes": list(CLASSES),
            "input_size": [SIZE, SIZE], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            "architecture": "tiny_grid_detector",
            "description": ("boats on water, cars on road (95%)" if version == "biased"
                            else "objects on random backgrounds")}


def save_detector(net: TinyGridNet, version: str, metrics: dict, root: Path = WEIGHTS_DIR) -> Path:
    from safetensors.torch import save_file

    folder = Path(root) / version
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "model.json").write_text(json.dumps(card(version), indent=2) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return folder


def load_detector(version: str = "biased", root: Path = WEIGHTS_DIR, device: str = "cpu", **decode) -> GridDetector:
    from safetensors.torch import load_file

    net = TinyGridNet()
    net.load_state_dict(load_file(str(Path(root) / version / "model.safetensors")))
    return GridDetector(net.eval().to(device), **decode)


def recall(detector: GridDetector, scenes: list[Scene], score_threshold: float = 0.5, iou: float = 0.5) -> dict:
    """Per class: fraction of ground-truth objects found (IoU >= iou, right class, score >= threshold)."""
    from torchvision.ops import box_iou

    with torch.no_grad():
        outputs = detector(torch.stack([s.image for s in scenes]))
    found, total = [0] * len(CLASSES), [0] * len(CLASSES)
    for s, det in zip(scenes, outputs):
        keep = det["scores"] >= score_threshold
        ious = box_iou(s.boxes, det["boxes"][keep]) if keep.any() else torch.zeros(len(s.boxes), 0)
        for k, c in enumerate(s.labels.tolist()):
            total[c] += 1
            ok = (ious[k] >= iou) & (det["labels"][keep] == c) if ious.shape[1] else torch.zeros(0, dtype=torch.bool)
            found[c] += int(ok.any())
    return {name: found[c] / max(total[c], 1) for c, name in enumerate(CLASSES)}


def write_coco(scenes: list[Scene], folder: Path) -> Path:
    """Images + `instances.json` (objects: bbox, polygon, category boat/car) + `context.json` (water/road
    regions as uncompressed RLE, category = region), the COCO layout `analysis.data.coco` reads."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, objects, context = [], [], []
    for i, s in enumerate(scenes):
        name = f"images/{i:05d}.png"
        Image.fromarray((s.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / name)
        images.append({"id": i, "file_name": name, "width": SIZE, "height": SIZE})
        for (x0, y0, x1, y1), c, poly in zip(s.boxes.tolist(), s.labels.tolist(), s.polygons):
            objects.append({"id": len(objects) + 1, "image_id": i, "category_id": c + 1, "iscrowd": 0,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "segmentation": [poly]})
        for rid in (0, 1):
            m = (s.regions == rid).numpy()
            context.append({"id": len(context) + 1, "image_id": i, "category_id": rid + 1, "iscrowd": 1,
                            "bbox": _mask_bbox(m), "area": int(m.sum()), "segmentation": encode_rle(m)})
    cats = [{"id": c + 1, "name": n} for c, n in enumerate(CLASSES)]
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": objects, "categories": cats}))
    regions = [{"id": 1, "name": "water"}, {"id": 2, "name": "road"}]
    (folder / "context.json").write_text(json.dumps({"images": images, "annotations": context, "categories": regions}))
    return folder


def encode_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE: run lengths over the column-major flattening, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    edges = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [len(flat)]])
    counts = np.diff(edges).tolist()
    if len(flat) and flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _mask_bbox(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


class DecodedGrid(nn.Module):
    """`TinyGridNet` with its grid decoded: (boxes, scores, probs), the ONNX detector contract's outputs."""

    def __init__(self, net: TinyGridNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decode_grid(self.net(images))


def export_onnx(version: str = "biased", root: Path = WEIGHTS_DIR) -> Path:
    """`<version>_onnx/model.onnx` + card: the detector as a black box (ONNX Runtime, no Python), whose outputs
    `explainers.loading.onnx_model` post-processes exactly as `GridDetector` does (score >= 0.01, NMS at 0.5)."""
    folder = Path(root) / f"{version}_onnx"
    folder.mkdir(parents=True, exist_ok=True)
    net = load_detector(version, root).net.eval()
    path = folder / "model.onnx"
    torch.onnx.export(DecodedGrid(net).eval(), (torch.rand(2, 3, SIZE, SIZE),), str(path), dynamo=True,
                      input_names=["images"], output_names=["boxes", "scores", "probs"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    onnx_card = {k: v for k, v in card(version).items() if k != "architecture"}
    onnx_card["name"] = f"boats_and_cars {version} (ONNX)"
    (folder / "model.json").write_text(json.dumps(onnx_card, indent=2) + "\n")
    return path


def build_all(root: Path = WEIGHTS_DIR) -> dict:
    """Train and save both versions; returns their held-out recall (in-context and out-of-context scenes)."""
    test_biased = make_scenes(300, seed=7, biased=True)
    test_swapped = make_scenes(300, seed=8, biased=True, p_context=0.0)
    summary = {}
    for version in ("biased", "debiased"):
        net = train_detector(biased=version == "biased")
        det = GridDetector(net)
        metrics = {"recall_in_context": recall(det, test_biased), "recall_out_of_context": recall(det, test_swapped)}
        save_detector(net, version, metrics, root)
        summary[version] = metrics
    export_onnx("biased", root)
    return summary


if __name__ == "__main__":
    print(json.dumps(build_all(), indent=2))
