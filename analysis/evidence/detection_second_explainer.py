"""A second explainer for detectors: per (detected class, context region), the lift plain gradients give, so a
detector's context finding does not rest on D-RISE alone (the other tasks' rule: a second explainer of another
family, `analysis.report.flags.robustness`).

D-RISE is a perturbation method; the other family here is the gradient (Simonyan et al. 2014's saliency): per
detection, the largest absolute input gradient over the colour channels of its D-RISE score (IoU x class
similarity x objectness against the detector's output, `explainers.detection.detection_similarity`), the same
score D-RISE explains. Its maps are split like D-RISE's (`analysis.evidence.detection_audit.detection_rows`),
and per class the mean share of the map in each context region over its mean area is the region's lift.

A detector without gradients (an ONNX file run by onnxruntime, a black box) cannot be explained by another
family: the result says so (`status: "not_applicable"` and the reason) and the findings' check reads "not run".
"""
from __future__ import annotations

import pandas as pd
import torch

SECOND_IMAGES = 16
METHOD = "saliency"


def gradient_maps(detector, images: torch.Tensor, targets: list) -> list[torch.Tensor] | None:
    """Per image, (T_i, H, W): |d score / d input| (max over channels) of each target detection; None when the
    detector's output does not depend on the input through autograd (a black box)."""
    from explainers.base import BlackBox
    from explainers.detection import detection_similarity

    if isinstance(detector, BlackBox) or next(detector.parameters(), None) is None:  # onnxruntime: no gradients
        return None
    maps = []
    for i, target in enumerate(targets):
        h, w = images.shape[-2:]
        if not len(target):
            maps.append(torch.zeros(0, h, w))
            continue
        x = images[i:i + 1].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            scores = detection_similarity(target.to(x.device), detector(x)[0])
            if not scores.requires_grad:
                return None
            rows = [torch.autograd.grad(scores[k], x, retain_graph=k + 1 < len(target), allow_unused=True)[0]
                    for k in range(len(target))]
        if any(g is None for g in rows):
            return None
        maps.append(torch.cat([g.abs().amax(1) for g in rows]).detach().cpu())
    return maps


def detection_second_explainer(detector, images: torch.Tensor, targets: list, regions: torch.Tensor,
                               region_names: dict[int, str], classes: list[str]) -> dict:
    """`{method, family, n, n_maps, targets: {class: {region: {mass_mean, area_mean, lift, n}}}}` (the regions
    include `box`), or `{status: "not_applicable", reason}` for a detector without gradients."""
    from analysis.evidence.detection_audit import detection_rows

    maps = gradient_maps(detector, images, targets)
    if maps is None:
        return {"method": METHOD, "status": "not_applicable",
                "reason": "the detector gives no gradients (a black box, e.g. ONNX): D-RISE, a perturbation method, "
                          "is the only family that can explain it"}
    scores = [torch.zeros(len(t)) for t in targets]
    rows = pd.DataFrame(detection_rows(targets, scores, maps, regions.cpu(), region_names, classes))
    out: dict[str, dict] = {}
    if len(rows):
        for cls, part in rows.groupby("class"):
            entry = {}
            for region, mass, area in [("box", "mass_box", "area_box")] + [
                    (n, f"mass.{n}", f"area.{n}") for n in region_names.values()]:
                mass_mean, area_mean = float(part[mass].mean()), float(part[area].mean())
                entry[region] = {"mass_mean": mass_mean, "area_mean": area_mean,
                                 "lift": mass_mean / area_mean if area_mean > 0 else None, "n": int(len(part))}
            out[str(cls)] = entry
    return {"method": METHOD, "family": "gradient", "status": "ran",
            "score": "D-RISE similarity to the explained detection", "n": int(sum(len(t) > 0 for t in targets)),
            "n_maps": int(len(rows)), "targets": out}
