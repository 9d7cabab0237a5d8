"""Dataset-level context audit for a detector: does a class's detection rest on its surroundings?

For every detection the detector makes itself (score >= threshold), D-RISE gives a map; its positive mass is
split into inside the box, outside the box, and each annotated context region (e.g. water, road). Per class,
an intervention fills each context region with a neutral colour and re-runs the detector: the score and the
recall of the same detections before and after. A class is flagged as context-dependent on region r only with
both kinds of evidence: most of its saliency lies outside its boxes (`mass_outside > outside_threshold`) AND
filling r costs it score (bootstrap 95% CI of the mean drop above `min_drop`, counted in excess of a reference
model's drop when one is given).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from explainers.detection import DetectionTarget, detection_similarity, detections_above


@dataclass
class DetectionAudit:
    detections: pd.DataFrame  # one row per detection: image, class, score, mass_box, mass_outside, mass.<region>
    interventions: pd.DataFrame  # one row per (class, region): score_drop, ci, recall_before/after, n
    summary: pd.DataFrame  # one row per class: mean masses, n
    flags: list  # [{"class", "region", "kind": "context", "mass_outside", "score_drop", "score_drop_ci", ...}]


def audit_detections(detector, images: torch.Tensor, regions: torch.Tensor, region_names: dict[int, str],
                     classes: list[str], explainer, *, fill=(0.35, 0.55, 0.25), score_threshold: float = 0.5,
                     outside_threshold: float = 0.5, min_drop: float = 0.1, seed: int = 0,
                     reference: DetectionAudit | None = None) -> DetectionAudit:
    """`images` (B,3,H,W) in [0,1]; `regions` (B,H,W) int label maps; `region_names` the context regions to
    measure and intervene on (id -> name); `explainer` a `DRISE` (its `explain_detections` is used);
    `reference` an audit of a model without the correlation, on the same images (see `context_flags`)."""
    with torch.no_grad():
        clean = detector(images)
    targets = [detections_above(d, score_threshold) for d in clean]
    maps = explainer.explain_detections(images, targets)
    rows = []
    h, w = images.shape[-2:]
    for i, (t, m) in enumerate(zip(targets, maps)):
        pos = m.clamp(min=0)
        for k in range(len(t)):
            total = float(pos[k].sum())
            box = _box_mask(t.boxes[k], h, w)
            row = {"image": i, "det": k, "class": classes[int(t.probs[k].argmax())],
                   "score": float(clean[i]["scores"][clean[i]["scores"] >= score_threshold][k]),
                   "mass_box": _share(pos[k], box, total), "area_box": float(box.float().mean())}
            row["mass_outside"] = 1.0 - row["mass_box"] if total > 0 else 0.0
            for rid, name in region_names.items():
                row[f"mass.{name}"] = _share(pos[k], regions[i] == rid, total)
            rows.append(row)
    det_table = pd.DataFrame(rows)
    inter_rows = []
    for rid, name in region_names.items():
        filled = images.clone()
        sel = (regions == rid)[:, None].expand_as(filled)
        filled[sel] = torch.tensor(fill, dtype=images.dtype, device=images.device)[None, :, None, None].expand_as(filled)[sel]
        with torch.no_grad():
            after = detector(filled)
        per_det = []
        for i, t in enumerate(targets):
            if not len(t):
                continue
            sim = detection_similarity(t, after[i])
            found = _found(t, after[i], score_threshold)
            for k in range(len(t)):
                per_det.append((classes[int(t.probs[k].argmax())], float(sim[k]), bool(found[k])))
        for cls in classes:
            sel_rows = det_table[det_table["class"] == cls] if len(det_table) else det_table
            mine = [(s, f) for c, s, f in per_det if c == cls]
            if not mine:
                continue
            drops = sel_rows["score"].to_numpy() - np.array([s for s, _ in mine])
            lo, hi = _bootstrap_ci(drops, seed)
            inter_rows.append({"class": cls, "region": name, "score_drop": float(drops.mean()), "score_drop_ci": [lo, hi],
                               "recall_before": 1.0, "recall_after": float(np.mean([f for _, f in mine])),
                               "n": len(mine)})
    inter = pd.DataFrame(inter_rows)
    mass_cols = ["mass_box", "mass_outside", "area_box"] + [f"mass.{n}" for n in region_names.values()]
    summary = (det_table.groupby("class")[mass_cols].mean().assign(n=det_table.groupby("class").size()).reset_index()
               if len(det_table) else pd.DataFrame(columns=["class", *mass_cols, "n"]))
    audit = DetectionAudit(det_table, inter, summary, [])
    audit.flags = context_flags(audit, reference, outside_threshold=outside_threshold, min_drop=min_drop)
    return audit


def context_flags(audit: DetectionAudit, reference: DetectionAudit | None = None, *, outside_threshold: float = 0.5,
                  min_drop: float = 0.1) -> list[dict]:
    """Flags per (class, region): mass outside the boxes above `outside_threshold` AND a fill of the region
    costing more than `min_drop` score (lower bound of the bootstrap CI). With a `reference` audit (the same
    images through a model trained without the correlation), the drop counted is the excess over the
    reference's drop: a neutral fill is out of distribution for any model, and only the excess is the
    model's own reliance on the region."""
    flags = []
    for _, r in audit.interventions.iterrows():
        cls_row = audit.summary[audit.summary["class"] == r["class"]].iloc[0]
        baseline = 0.0
        if reference is not None and len(reference.interventions):
            ref = reference.interventions
            match = ref[(ref["class"] == r["class"]) & (ref["region"] == r["region"])]
            baseline = float(match["score_drop"].iloc[0]) if len(match) else 0.0
        excess_lo = r["score_drop_ci"][0] - baseline
        if cls_row["mass_outside"] > outside_threshold and excess_lo > min_drop:
            flags.append({"class": r["class"], "region": r["region"], "kind": "context",
                          "mass_outside": float(cls_row["mass_outside"]),
                          "mass_region": float(cls_row[f"mass.{r['region']}"]),
                          "score_drop": float(r["score_drop"]), "score_drop_ci": list(r["score_drop_ci"]),
                          "reference_drop": baseline, "recall_after": float(r["recall_after"]), "n": int(r["n"])})
    return flags


def compare_audits(audits: dict[str, DetectionAudit]) -> pd.DataFrame:
    """Per class and model version: masses, flags — the table that shows a retrained model let go of context."""
    frames = []
    for version, audit in audits.items():
        s = audit.summary.copy()
        s.insert(0, "version", version)
        s["flagged_regions"] = s["class"].map(lambda c: ",".join(f["region"] for f in audit.flags if f["class"] == c))
        frames.append(s)
    return pd.concat(frames, ignore_index=True)


def _share(pos: torch.Tensor, mask: torch.Tensor, total: float) -> float:
    return float((pos * mask.to(pos)).sum()) / total if total > 0 else 0.0


def _box_mask(box: torch.Tensor, h: int, w: int) -> torch.Tensor:
    ys = torch.arange(h, device=box.device)[:, None] + 0.5
    xs = torch.arange(w, device=box.device)[None, :] + 0.5
    return (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])


def _found(t: DetectionTarget, det: dict, score_threshold: float, iou: float = 0.5) -> torch.Tensor:
    keep = det["scores"] >= score_threshold
    if not keep.any():
        return torch.zeros(len(t), dtype=torch.bool)
    ious = box_iou(t.boxes, det["boxes"][keep].to(t.boxes))
    same = t.probs.argmax(1)[:, None] == det["probs"][keep].argmax(1).to(t.boxes.device)[None, :]
    return ((ious >= iou) & same).any(1).cpu()


def _bootstrap_ci(values: np.ndarray, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
