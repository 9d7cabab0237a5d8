"""Synthetic run-store frames with planted region statistics (shared by the report tests)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def planted_frames(n: int = 200, *, seed: int = 0, patch_mass: float = 0.4, patch_area: float = 0.05,
                   classes=("cat", "dog"), accuracy=0.9):
    """`images` + long `regions` frames: region "patch" (shortcut candidate) gets `patch_mass` of the
    saliency on average over `patch_area` of the image; "object" is core; "background" the rest."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    labels = rng.choice(list(classes), size=n)
    correct = rng.random(n) < accuracy
    hair = np.where(np.arange(n) % 2 == 0, "long", "short")
    images = pd.DataFrame({
        "image_id": ids, "image": [f"images/{i:05d}.png" for i in ids], "label": labels,
        "label_idx": [classes.index(c) for c in labels], "pred": labels, "pred_idx": 0,
        "confidence": 0.9, "correct": correct, "target_idx": 0, "score": 1.0, "attr.hair": hair,
    })
    patch = np.clip(rng.normal(patch_mass, 0.1, n), 0, 0.9)
    obj = (1 - patch) * 0.9
    rows = []
    for i in range(n):
        for name, rid, role, mass, area in (
            ("patch", 2, None, patch[i], patch_area),
            ("object", 1, "core", obj[i], 0.3),
            ("background", 0, None, 1 - patch[i] - obj[i], 1 - 0.3 - patch_area),
        ):
            rows.append({"image_id": i, "region": name, "region_id": rid, "role": role,
                         "mass": mass, "area": area, "lift": mass / area})
    return images, pd.DataFrame(rows)
