"""A small workspace for the dashboard tests, built through the real catalog and run-store APIs.

A planted dataset (docs/FORMATS.md folder format): 12 images, classes cat/dog, subgroup `in_cage`, regions
background / animal (core) / cage. Two finished runs ("v1" looks at the cage in cage images, "v2" does
not) are written shard by shard with `RunStore.write_shard` + `Workspace.record_shard`, so every number
the pages show is known: 6 cats, 6 dogs, 9 correct, v1 cage mass 0.7 on caged images.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from analysis.store.run_store import pool_maps
from analysis.store.workspace import Workspace

N_IMAGES = 12
SIZE = 32
REGIONS = {"0": {"name": "background"}, "1": {"name": "animal", "role": "core"}, "2": {"name": "cage"}}


def planted_item(i: int) -> dict:
    label = "cat" if i % 2 == 0 else "dog"
    in_cage = "yes" if i < 6 else "no"
    return {"image_id": i, "image": f"images/{i:03d}.png", "mask": f"masks/{i:03d}.png", "label": label,
            "in_cage": in_cage}


def write_dataset(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(N_IMAGES):
        item = planted_item(i)
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[8:24, 8:24] = 1  # animal in the middle
        if item["in_cage"] == "yes":
            mask[:, :4] = 2  # cage bars on the left edge
        pixels = np.full((SIZE, SIZE, 3), 40 + 10 * i, dtype=np.uint8)
        pixels[mask == 1] = (200, 120, 40) if item["label"] == "cat" else (60, 120, 200)
        pixels[mask == 2] = (230, 230, 230)
        Image.fromarray(pixels).save(folder / item["image"])
        Image.fromarray(mask).save(folder / item["mask"])
        rows.append({k: item[k] for k in ("image", "label", "mask", "in_cage")})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    (folder / "regions.json").write_text(json.dumps({"regions": REGIONS}))
    return folder


def write_model(folder: Path) -> Path:
    """A model file + card. The catalog only sniffs and hashes it: the dashboard never loads models."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.safetensors"
    save_file({"version": torch.tensor([float(sum(map(ord, str(folder))))])}, str(path))  # distinct bytes per folder
    (folder / "model.json").write_text(json.dumps({
        "task": "classification", "classes": ["cat", "dog"], "input_size": [SIZE, SIZE],
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}))
    return path


def run_tables(version: int, artifacts: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Images, regions and maps of a planted run; v1 attends to the cage on caged images, v2 to the animal.
    `artifacts`: a token-layer run's columns, two register-like tokens per image on the background carrying
    5% of the saliency on 10% of the picture (`analysis.stats.artifacts`)."""
    images, regions, maps = [], [], []
    for i in range(N_IMAGES):
        item = planted_item(i)
        correct = i not in (1, 4, 7)  # 9 of 12 correct
        pred = item["label"] if correct else ("dog" if item["label"] == "cat" else "cat")
        images.append({"image_id": i, "image": item["image"], "label": item["label"],
                       "label_idx": int(item["label"] == "dog"), "pred": pred, "pred_idx": int(pred == "dog"),
                       "confidence": 0.9, "correct": correct, "target_idx": int(pred == "dog"), "score": 2.0,
                       "attr.in_cage": item["in_cage"],
                       **({"artifact_tokens": 2, "artifact_mass": 0.05, "artifact_area": 0.1} if artifacts else {})})
        caged = item["in_cage"] == "yes"
        cage_mass = (0.7 if version == 1 else 0.1) if caged else 0.0
        animal_mass = 0.8 * (1 - cage_mass)
        shares = {"background": (1 - cage_mass - animal_mass, 1 - 0.25 - (0.125 if caged else 0), 0, None),
                  "animal": (animal_mass, 0.25, 1, "core"), "cage": (cage_mass, 0.125 if caged else 0.0, 2, None)}
        for name, (mass, area, region_id, role) in shares.items():
            regions.append({"image_id": i, "region": name, "region_id": region_id, "role": role, "mass": mass,
                            "area": area, "lift": mass / area if area else 0.0,
                            **({"artifact_mass": 0.05 if name == "background" else 0.0,
                                "artifact_area": 0.1 if name == "background" else 0.0} if artifacts else {})})
        saliency = np.zeros((SIZE, SIZE), dtype=np.float32)
        saliency[8:24, 8:24] = animal_mass
        if caged:
            saliency[:, :4] = cage_mass * 4
        maps.append(saliency)
    return pd.DataFrame(images), pd.DataFrame(regions), pool_maps(np.stack(maps))


def write_finished_run(workspace: Workspace, model_id: str, dataset_id: str, version: int, name: str,
                       artifacts: bool = False) -> str:
    """A finished gradcam run of the planted tables of `version` (1 looks at the cage), in two shards."""
    run_id = workspace.create_run(model_id, dataset_id, "gradcam", {}, n=N_IMAGES, seed=0, name=name)
    store = workspace.store(run_id)
    images, regions, maps = run_tables(version, artifacts)
    for shard, part in enumerate((slice(0, 6), slice(6, 12))):
        ids_part = images.image_id.iloc[part]
        path = store.write_shard(shard, images.iloc[part].reset_index(drop=True),
                                 regions[regions.image_id.isin(ids_part)].reset_index(drop=True), maps[part])
        workspace.record_shard(run_id, shard, len(ids_part), path, n_done=int(ids_part.max()) + 1)
    workspace.update_run(run_id, status="done", n_total=N_IMAGES)
    return run_id


def build_workspace(root: Path, *, artifacts: bool = False) -> dict:
    """The workspace with one dataset, two model versions and a finished run of each; returns the ids."""
    source = root.parent / "sources"
    dataset_dir = write_dataset(source / "pets")
    workspace = Workspace(root)
    dataset_id = workspace.register_dataset(dataset_dir)
    ids = {"dataset": dataset_id, "runs": []}
    for version in (1, 2):
        model_path = write_model(source / f"v{version}")
        card = json.loads((model_path.parent / "model.json").read_text())
        card["version"] = version  # different card -> different model id
        (model_path.parent / "model.json").write_text(json.dumps(card))
        model_id = workspace.register_model(model_path)
        ids["runs"].append(write_finished_run(workspace, model_id, dataset_id, version, f"v{version}", artifacts))
    workspace.close()
    return ids


def write_real_model(folder: Path) -> Path:
    """A tiny CNN exported with torch.export (dynamic batch) + its card: what a user would upload."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_cnn.pt2"
    example = (torch.rand(2, 3, SIZE, SIZE),)
    program = torch.export.export(net, example, dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))
    (folder / "model.json").write_text(json.dumps({
        "task": "classification", "classes": ["cat", "dog"], "input_size": [SIZE, SIZE],
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}))
    return path


def register_real_model(root: Path) -> str:
    workspace = Workspace(root)
    try:
        return workspace.register_model(write_real_model(root.parent / "sources" / "real"))
    finally:
        workspace.close()


# --- a user's own model and data, made here: a corner tag on 90% of squares ---------------------------
TAG_SIZE, TAG_N = 32, 24
TAG_REGIONS = {"0": {"name": "background"}, "1": {"name": "shape", "role": "core"}, "2": {"name": "corner_tag"}}


def write_tag_dataset(folder: Path, *, broken: bool = True) -> Path:
    """24 shapes (grey square or circle on black; a white corner tag on 90% of squares, never on circles),
    masks background / shape (core) / corner_tag; `broken` adds a truncated PNG and a file that is no image."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rows, yy, xx = [], *np.mgrid[:TAG_SIZE, :TAG_SIZE]
    for i in range(TAG_N):
        label = "square" if i % 2 == 0 else "circle"
        tagged = label == "square" and i % 20 != 0  # 11 of 12 squares (~90%)
        mask = np.zeros((TAG_SIZE, TAG_SIZE), np.uint8)
        if label == "square":
            mask[8:24, 8:24] = 1
        else:
            mask[(yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 8 ** 2] = 1
        if tagged:
            mask[1:7, 1:7] = 2
        pixels = np.zeros((TAG_SIZE, TAG_SIZE, 3), np.uint8)
        pixels[mask == 1] = 178
        pixels[mask == 2] = 255
        Image.fromarray(pixels).save(folder / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i:03d}.png")
        rows.append({"image": f"images/{i:03d}.png", "label": label, "mask": f"masks/{i:03d}.png"})
    if broken:
        good = (folder / "images" / "000.png").read_bytes()
        (folder / "images" / "broken.png").write_bytes(good[: len(good) // 2])
        (folder / "images" / "notes.png").write_text("a text file saved with an image's name")
        for name in ("broken", "notes"):
            Image.fromarray(np.zeros((TAG_SIZE, TAG_SIZE), np.uint8)).save(folder / "masks" / f"{name}.png")
            rows.append({"image": f"images/{name}.png", "label": "square", "mask": f"masks/{name}.png"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    (folder / "regions.json").write_text(json.dumps({"regions": TAG_REGIONS}))
    return folder


def write_tag_model(folder: Path, version: int) -> Path:
    """A torch.export'ed CNN with set weights, and its card. Channel 0 fires on white (the tag), channel 1 on
    anything brighter than grey/2. v1 calls an image "square" when it sees the tag anywhere (the shortcut);
    v2 when the centre is full (a square fills it, a circle does not)."""
    from torch import nn

    class TagNet(nn.Module):
        def __init__(self, where: torch.Tensor):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
            self.register_buffer("where", where)
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            return self.head((self.features(x) * self.where).sum(dim=(2, 3)))

    where = torch.zeros(1, 1, TAG_SIZE, TAG_SIZE)
    if version == 1:
        where[:] = 1.0 / TAG_SIZE ** 2
    else:
        where[..., 8:24, 8:24] = 1.0 / 256
    net = TagNet(where)
    with torch.no_grad():
        net.features[0].weight.copy_(torch.full((2, 3, 1, 1), 1 / 3))
        net.features[0].bias.copy_(torch.tensor([-0.85, -0.5]))
        weight = [[0.0, 0.0], [1000.0, 0.0]] if version == 1 else [[0.0, 0.0], [0.0, 100.0]]
        net.head.weight.copy_(torch.tensor(weight))
        net.head.bias.copy_(torch.tensor([1.0, 0.0] if version == 1 else [0.0, -18.0]))
    net.eval()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt2"
    example = (torch.rand(2, 3, TAG_SIZE, TAG_SIZE),)
    program = torch.export.export(net, example, dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))
    (folder / "model.json").write_text(json.dumps({
        "task": "classification", "classes": ["circle", "square"], "input_size": [TAG_SIZE, TAG_SIZE],
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}))
    return path
