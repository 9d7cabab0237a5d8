"""Dataset-level context audit for a detector: does a class's detection rest on its surroundings?

For every detection the detector makes itself (score >= threshold), D-RISE gives a map; its positive mass is
split into inside the box, outside the box, and each annotated context region (e.g. water, road). Per class,
an intervention fills each context region with a neutral colour and re-runs the detector: the D-RISE score
(IoU x class similarity x objectness) of the same detections before and after, and the recall before and
after (of the ground-truth objects when they are known, else of the detections themselves).

The flag decision, made without a reference model (a user rarely has a debiased one), is the other tasks'
rule (`analysis.report.policy`, entry "detection"):
- the fill colour (default `"surround"`) is, per image, the mean colour of the rest of the scene (outside the
  region and outside every detection box): "what if this object's surroundings looked like the rest of the
  picture". A fixed neutral colour (pass an RGB triple) is out of distribution for *any* detector: on the
  sample scenes a green fill of the water costs the debiased detector's boats 0.27 of score too (the
  surround fill: 0.09), so it cannot tell reliance from surprise;
- each region fill is paired with a **control fill**: the same number of pixels, outside that region and
  outside every detection box, filled with the same colour (a compact blob grown from a random seed pixel).
  Per detection: is it still found (same class, IoU >= 0.5, score >= threshold) under each, and its D-RISE
  score under each; the paired excess `drop(region fill) - drop(control fill)` of the score;
- the test is the exact one-sided McNemar on lost detections (lost under the region fill and kept under the
  control, against the reverse), as the tagger's and segmenter's on flips; its p-values are Holm-corrected
  over every (class, region) test of the run. A (class, region) is flagged when its corrected p < the
  policy's `alpha`, its mean excess score drop is at least `min_drop` (the policy's `min_effect`, 0.10 in
  D-RISE score units) and the bootstrap 95% CI of that excess lies above 0;
- every (class, region) tested and not flagged gets a power line (`power_lines`): the 95% upper bound of the
  share of its detections the fill could remove beyond the control (`analysis.stats.sequential.
  net_rate_bounds`), and of its excess score drop;
- the share of a class's D-RISE mass outside its boxes (`mass_outside`) is reported beside the flag, as the
  other tasks report lift; it does not gate it (`outside_threshold` only words the finding);
- with a `reference` audit (the same images through a model trained without the correlation), the reference's
  excess drop is subtracted from the effect; the demo and the tests use this to compare versions, a run does
  not need it.
Severity: the policy's scale on the excess score drop (high >= 0.2, medium >= 0.1).

One implementation serves both callers: `audit_detections` (in memory, tensors in) and the run pipeline
(`analysis.runs.tasks.detection`, batches from a dataset, results through the run store) share `detection_rows`,
`fill_effects`, `summarize_interventions`, `table_flags` and `power_lines`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from analysis.evidence.intervention import fill_colour, mcnemar_exact_greater
from analysis.report.policy import policy_of
from analysis.stats.aggregate import bootstrap_means
from analysis.stats.sequential import holm, net_rate_bounds
from explainers.detection import DetectionTarget, detection_similarity, detections_above

NEUTRAL_FILL = (0.35, 0.55, 0.25)  # grass green: neither water nor road nor sky
OUTSIDE_THRESHOLD = 0.5
POLICY = policy_of("detection")  # analysis/report/policy.py
MIN_DROP = POLICY.min_effect
POWER_LEVEL = 0.95  # the level of a "no flag"'s upper bounds


@dataclass
class DetectionAudit:
    detections: pd.DataFrame  # one row per detection: image, class, score, mass_box, mass_outside, mass.<region>
    interventions: pd.DataFrame  # one row per (class, region): score_drop, control_drop, excess_drop, CIs, recall
    summary: pd.DataFrame  # one row per class: mean masses, n
    flags: list  # [{"class", "region", "kind": "context", "mass_outside", "score_drop", "score_drop_ci", ...}]


def audit_detections(detector, images: torch.Tensor, regions: torch.Tensor, region_names: dict[int, str],
                     classes: list[str], explainer, *, fill="surround", score_threshold: float = 0.5,
                     outside_threshold: float = OUTSIDE_THRESHOLD, min_drop: float = MIN_DROP, seed: int = 0,
                     reference: DetectionAudit | None = None, ground_truth: list | None = None) -> DetectionAudit:
    """`images` (B,3,H,W) in [0,1]; `regions` (B,H,W) int label maps; `region_names` the context regions to
    measure and intervene on (id -> name); `classes` the names of the detector's probability columns;
    `explainer` a `DRISE` (its `explain_detections` is used); `reference` an audit of a model without the
    correlation, on the same images (see `context_flags`); `ground_truth` per image (boxes (K,4), class names)."""
    with torch.no_grad():
        clean = detector(images)
    targets, scores = own_detections(clean, score_threshold)
    maps = explainer.explain_detections(images, targets)
    det_table = pd.DataFrame(detection_rows(targets, scores, maps, regions, region_names, classes))
    effects, gt_effects = fill_effects(detector, images, regions, region_names, targets, classes, clean=clean,
                                       fill=fill, score_threshold=score_threshold, seed=seed,
                                       ground_truth=ground_truth)
    inter = summarize_interventions(effects, gt_effects, seed=seed)
    summary = class_summary(det_table, region_names.values())
    audit = DetectionAudit(det_table, inter, summary, [])
    audit.flags = context_flags(audit, reference, outside_threshold=outside_threshold, min_drop=min_drop)
    return audit


# ---------------------------------------------------------------- per-detection saliency shares

def own_detections(outputs, score_threshold: float) -> tuple[list[DetectionTarget], list[torch.Tensor]]:
    """Per image, the detector's detections with score >= threshold as targets, and their scores."""
    targets = [detections_above(d, score_threshold) for d in outputs]
    scores = [d["scores"][d["scores"] >= score_threshold] for d in outputs]
    return targets, scores


def detection_rows(targets: list[DetectionTarget], scores: list[torch.Tensor], maps: list[torch.Tensor],
                   regions: torch.Tensor, region_names: dict[int, str], classes: list[str],
                   image_keys=None) -> list[dict]:
    """One row per target detection: image, det, class, score, box, mass/area of the box, outside, each region.

    `maps[i]` (T_i, H, W) at the images' resolution; `regions` (B, H, W) label maps at the same resolution.
    Masses are shares of the map's positive part (0 when it has none), areas shares of the image.
    """
    rows = []
    image_keys = list(range(len(targets))) if image_keys is None else list(image_keys)
    for i, (t, m) in enumerate(zip(targets, maps)):
        pos = m.clamp(min=0)
        h, w = pos.shape[-2:]
        for k in range(len(t)):
            total = float(pos[k].sum())
            box = box_mask(t.boxes[k], h, w)
            x0, y0, x1, y1 = (float(v) for v in t.boxes[k])
            mass_box = _share(pos[k], box, total)
            row = {"image": image_keys[i], "det": k, "class": classes[int(t.probs[k].argmax())],
                   "score": float(scores[i][k]),
                   "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                   "mass_box": mass_box, "area_box": float(box.float().mean()),
                   "mass_outside": 1.0 - mass_box if total > 0 else 0.0}
            row["area_outside"] = 1.0 - row["area_box"]
            for rid, name in region_names.items():
                inside = regions[i].to(pos.device) == rid
                row[f"mass.{name}"] = _share(pos[k], inside, total)
                row[f"area.{name}"] = float(inside.float().mean())
            rows.append(row)
    return rows


def class_summary(det_table: pd.DataFrame, region_names) -> pd.DataFrame:
    """Per class: mean masses and areas, and the number of detections."""
    mass_cols = ["mass_box", "mass_outside", "area_box"] + [f"mass.{n}" for n in region_names]
    if not len(det_table):
        return pd.DataFrame(columns=["class", *mass_cols, "n"])
    grouped = det_table.groupby("class")
    return grouped[mass_cols].mean().assign(n=grouped.size()).reset_index()


# ---------------------------------------------------------------- the context-fill intervention

def fill_effects(detector, images: torch.Tensor, regions: torch.Tensor, region_names: dict[int, str],
                 targets: list[DetectionTarget], classes: list[str], *, clean=None, fill="surround",
                 score_threshold: float = 0.5, seed: int = 0, image_keys=None,
                 ground_truth: list | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (detection, region): D-RISE score on the clean image, with the region filled, with the control fill,
    and whether the detection is still found; per (ground-truth object, region) when `ground_truth` is given
    (per image: boxes (K, 4) at the images' resolution, class names): found on the clean / filled image.

    Rows carry `image` (from `image_keys`), so batches can be concatenated and summarised together.
    """
    image_keys = list(range(len(images))) if image_keys is None else list(image_keys)
    if clean is None:
        with torch.no_grad():
            clean = detector(images)
    rows, gt_rows = [], []
    for rid, name in region_names.items():
        colour = surround_colours(images, regions == rid, targets) if isinstance(fill, str) else fill
        region_fill = fill_colour(images, regions == rid, colour)
        control_fill = fill_colour(images, control_masks(regions == rid, targets, seed, image_keys, rid), colour)
        with torch.no_grad():
            after, control = detector(region_fill), detector(control_fill)
        for i, t in enumerate(targets):
            if len(t):
                before = detection_similarity(t, clean[i])
                filled, ctrl = detection_similarity(t, after[i]), detection_similarity(t, control[i])
                found, found_ctrl = _found(t, after[i], score_threshold), _found(t, control[i], score_threshold)
                for k in range(len(t)):
                    rows.append({"image": image_keys[i], "det": k, "class": classes[int(t.probs[k].argmax())],
                                 "region": name, "score": float(before[k]), "score_fill": float(filled[k]),
                                 "score_control": float(ctrl[k]), "found_fill": bool(found[k]),
                                 "found_control": bool(found_ctrl[k])})
            if ground_truth is not None:
                gt_boxes, gt_classes = ground_truth[i]
                found_before = gt_found(gt_boxes, gt_classes, clean[i], classes, score_threshold)
                found_after = gt_found(gt_boxes, gt_classes, after[i], classes, score_threshold)
                for k, cls in enumerate(gt_classes):
                    gt_rows.append({"image": image_keys[i], "object": k, "class": cls, "region": name,
                                    "found_before": bool(found_before[k]), "found_fill": bool(found_after[k])})
    return (pd.DataFrame(rows, columns=["image", "det", "class", "region", "score", "score_fill", "score_control",
                                        "found_fill", "found_control"]),
            pd.DataFrame(gt_rows, columns=["image", "object", "class", "region", "found_before", "found_fill"]))


def summarize_interventions(effects: pd.DataFrame, gt_effects: pd.DataFrame | None = None, *, seed: int = 0,
                            n_boot: int = 1000) -> pd.DataFrame:
    """Per (class, region): mean score drop of the region fill, of the control fill, and of their paired
    excess, each with a bootstrap 95% CI; the detections lost under each fill, the discordant pairs (lost under
    the region fill only, under the control only), the exact one-sided McNemar p-value on them and the 95%
    interval of the net lost share; recall before / after the fill; n detections."""
    rows = []
    for (cls, region), part in effects.groupby(["class", "region"], sort=True):
        drop = (part["score"] - part["score_fill"]).to_numpy()
        control = (part["score"] - part["score_control"]).to_numpy()
        excess = drop - control
        lost, lost_control = ~part["found_fill"].to_numpy(bool), ~part["found_control"].to_numpy(bool)
        b, c = int((lost & ~lost_control).sum()), int((~lost & lost_control).sum())
        n = int(len(part))
        row = {"class": cls, "region": region, "score_drop": float(drop.mean()),
               "score_drop_ci": bootstrap_ci(drop, seed, n_boot), "control_drop": float(control.mean()),
               "control_drop_ci": bootstrap_ci(control, seed, n_boot), "excess_drop": float(excess.mean()),
               "excess_drop_ci": bootstrap_ci(excess, seed, n_boot),
               "lost_rate": float(lost.mean()), "control_lost_rate": float(lost_control.mean()),
               "lost_excess": float(lost.mean() - lost_control.mean()),
               "lost_excess_bounds": list(net_rate_bounds(int(lost.sum()), int(lost_control.sum()), n,
                                                          1 - POWER_LEVEL)),
               "discordant": [b, c], "p_value": mcnemar_exact_greater(b, c),
               "test": "exact one-sided McNemar on lost detections (region fill vs equal-area control fill)",
               "recall_before": 1.0, "recall_after": float(part["found_fill"].mean()),
               "recall_basis": "detections", "n": n}
        gt = gt_effects[(gt_effects["class"] == cls) & (gt_effects["region"] == region)] \
            if gt_effects is not None and len(gt_effects) else None
        if gt is not None and len(gt):
            row.update(recall_before=float(gt["found_before"].mean()), recall_after=float(gt["found_fill"].mean()),
                       recall_basis="ground truth", n_objects=int(len(gt)))
        rows.append(row)
    columns = ["class", "region", "score_drop", "score_drop_ci", "control_drop", "control_drop_ci", "excess_drop",
               "excess_drop_ci", "lost_rate", "control_lost_rate", "lost_excess", "lost_excess_bounds", "discordant",
               "p_value", "test", "recall_before", "recall_after", "recall_basis", "n"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def context_flags(audit: DetectionAudit, reference: DetectionAudit | None = None, *,
                  outside_threshold: float = OUTSIDE_THRESHOLD, min_drop: float = MIN_DROP) -> list[dict]:
    """Flags of an in-memory audit, optionally judged against a `reference` audit (module docstring)."""
    return table_flags(audit.summary, audit.interventions, reference, outside_threshold=outside_threshold,
                       min_drop=min_drop)


def holm_corrected(interventions: pd.DataFrame) -> list[float | None]:
    """Per row of `interventions`, its McNemar p-value Holm-corrected over every row that has one (the run's
    family), None where the row has none (an older evidence table)."""
    if not len(interventions) or "p_value" not in interventions:
        return [None] * len(interventions)
    raw = [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
           for v in interventions["p_value"]]
    tested = [p for p in raw if p is not None]
    adjusted = iter(holm(tested).tolist()) if tested else iter(())
    return [None if p is None else float(next(adjusted)) for p in raw]


def table_flags(summary: pd.DataFrame, interventions: pd.DataFrame, reference: DetectionAudit | None = None, *,
                outside_threshold: float = OUTSIDE_THRESHOLD, min_drop: float = MIN_DROP,
                alpha: float = POLICY.alpha) -> list[dict]:
    """Flags per (class, region), by the rule in the module docstring. `summary` per class (`class_summary`),
    `interventions` per (class, region) (`summarize_interventions`)."""
    flags = []
    corrected = holm_corrected(interventions)
    for (_, r), p_holm in zip(interventions.iterrows(), corrected):
        match = summary[summary["class"] == r["class"]]
        if not len(match) or p_holm is None:
            continue
        cls_row = match.iloc[0]
        baseline = 0.0
        if reference is not None and len(reference.interventions):
            ref = reference.interventions
            same = ref[(ref["class"] == r["class"]) & (ref["region"] == r["region"])]
            baseline = float(same["excess_drop"].iloc[0]) if len(same) else 0.0
        effect = float(r["excess_drop"]) - baseline
        if p_holm < alpha and effect >= min_drop and float(r["excess_drop_ci"][0]) - baseline > 0:
            flags.append({"class": r["class"], "region": r["region"], "kind": "context",
                          "severity": POLICY.severity(effect),
                          "mass_outside": float(cls_row["mass_outside"]),
                          "attention_outside": bool(cls_row["mass_outside"] > outside_threshold),
                          "mass_region": float(cls_row[f"mass.{r['region']}"]),
                          "score_drop": float(r["score_drop"]), "score_drop_ci": list(r["score_drop_ci"]),
                          "control_drop": float(r["control_drop"]), "excess_drop": float(r["excess_drop"]),
                          "excess_drop_ci": list(r["excess_drop_ci"]), "reference_drop": baseline,
                          "lost_rate": float(r["lost_rate"]), "control_lost_rate": float(r["control_lost_rate"]),
                          "discordant": list(r["discordant"]), "p_value": float(r["p_value"]),
                          "p_value_holm": p_holm, "n_tests": sum(p is not None for p in corrected),
                          "recall_before": float(r["recall_before"]), "recall_after": float(r["recall_after"]),
                          "n": int(r["n"])})
    return flags


def power_lines(interventions: pd.DataFrame, flags: list[dict]) -> list[dict]:
    """Per (class, region) tested and not flagged: what its fill could still have done (95% upper bounds)."""
    flagged = {(f["class"], f["region"]) for f in flags}
    out = []
    for _, r in interventions.iterrows():
        if (r["class"], r["region"]) in flagged or "lost_excess_bounds" not in r or r["lost_excess_bounds"] is None:
            continue
        lost_up, score_up = float(r["lost_excess_bounds"][1]), float(r["excess_drop_ci"][1])
        text = (f"filling `{r['region']}` could still remove at most {max(lost_up, 0):.0%} of the {r['class']} "
                f"detections beyond an equal-area fill, and lower their score by at most {max(score_up, 0):.2f} more "
                f"({POWER_LEVEL:.0%} upper bounds, n = {int(r['n'])} detections)")
        out.append({"class": r["class"], "region": r["region"], "n": int(r["n"]), "level": POWER_LEVEL,
                    "lost_excess_upper": lost_up, "excess_drop_upper": score_up, "text": text})
    return out


def compare_audits(audits: dict[str, DetectionAudit]) -> pd.DataFrame:
    """Per class and model version: masses, flags — the table that shows a retrained model let go of context."""
    frames = []
    for version, audit in audits.items():
        s = audit.summary.copy()
        s.insert(0, "version", version)
        s["flagged_regions"] = s["class"].map(lambda c: ",".join(f["region"] for f in audit.flags if f["class"] == c))
        frames.append(s)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- helpers

def surround_colours(images: torch.Tensor, region: torch.Tensor, targets: list[DetectionTarget]) -> torch.Tensor:
    """(B, 3) per image: the mean colour of the pixels outside `region` and outside every target box (the
    rest of the scene), or the neutral fill when there are none. Filling a region with it asks "what if this
    object's surroundings looked like the rest of the picture?", which stays closer to what the detector saw
    in training than an arbitrary colour."""
    b, _, h, w = images.shape
    out = torch.tensor(NEUTRAL_FILL, dtype=images.dtype, device=images.device).repeat(b, 1)
    for i in range(b):
        rest = ~region[i].to(images.device)
        for box in targets[i].boxes:
            rest &= ~box_mask(box.to(images.device), h, w)
        if rest.any():
            out[i] = images[i][:, rest].mean(1)
    return out


def control_masks(region: torch.Tensor, targets: list[DetectionTarget], seed: int, image_keys, region_id: int
                  ) -> torch.Tensor:
    """(B, H, W) bool: per image as many pixels as `region` covers, outside it and outside every target box,
    the ones nearest a random eligible pixel (a compact blob; all eligible pixels when there are too few).
    Seeded by (seed, image key, region id), so a resumed or repeated run picks the same pixels."""
    b, h, w = region.shape
    out = torch.zeros_like(region, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for i in range(b):
        eligible = ~region[i].cpu()
        for box in targets[i].boxes.cpu():
            eligible &= ~box_mask(box, h, w)
        n = int(region[i].sum())
        candidates = eligible.flatten().nonzero().flatten()
        if n == 0 or len(candidates) == 0:
            continue
        rng = np.random.default_rng([int(seed), zlib.crc32(str(image_keys[i]).encode()), int(region_id)])
        start = int(candidates[int(rng.integers(len(candidates)))])
        sy, sx = divmod(start, w)
        dist = ((ys - sy) ** 2 + (xs - sx) ** 2).float().flatten()[candidates]
        chosen = candidates[torch.argsort(dist, stable=True)[:n]]
        out[i].view(-1)[chosen.to(out.device)] = True
    return out


def box_mask(box: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H, W) bool: pixels whose centre lies inside the xyxy box."""
    ys = torch.arange(h, device=box.device)[:, None] + 0.5
    xs = torch.arange(w, device=box.device)[None, :] + 0.5
    return (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])


def bootstrap_ci(values: np.ndarray, seed: int, n_boot: int = 1000) -> list[float]:
    """Percentile bootstrap 95% CI of the mean."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return [float("nan"), float("nan")]
    if len(values) == 1:
        return [float(values[0]), float(values[0])]
    means = bootstrap_means(values, n_boot=n_boot, rng=np.random.default_rng(seed))
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def _share(pos: torch.Tensor, mask: torch.Tensor, total: float) -> float:
    return float((pos * mask.to(pos)).sum()) / total if total > 0 else 0.0


def _found(t: DetectionTarget, det: dict, score_threshold: float, iou: float = 0.5) -> torch.Tensor:
    keep = det["scores"] >= score_threshold
    if not keep.any():
        return torch.zeros(len(t), dtype=torch.bool)
    ious = box_iou(t.boxes, det["boxes"][keep].to(t.boxes))
    same = t.probs.argmax(1)[:, None] == det["probs"][keep].argmax(1).to(t.boxes.device)[None, :]
    return ((ious >= iou) & same).any(1).cpu()


def gt_found(boxes, gt_classes: list[str], det: dict, classes: list[str], score_threshold: float,
              iou: float = 0.5) -> list[bool]:
    """Per ground-truth object: some detection >= threshold of its class overlaps it with IoU >= `iou`."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    keep = det["scores"] >= score_threshold
    if not len(boxes) or not keep.any():
        return [False] * len(boxes)
    ious = box_iou(boxes, det["boxes"][keep].float().cpu())
    labels = [classes[int(j)] for j in det["probs"][keep].argmax(1).cpu()]
    return [bool(any(ious[k, j] >= iou and labels[j] == c for j in range(len(labels))))
            for k, c in enumerate(gt_classes)]
