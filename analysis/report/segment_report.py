"""The report of a segmenter run (DESIGN.md keys, per segment class), pure over the run store.

- `metrics`: `pixel_accuracy` (mean over images), per class IoU (pooled over the images) and pixel accuracy,
  `mean_iou` over the classes with ground truth;
- `regions`: per class (`class` = the segment class) and overall (summed maps): region mass shares with
  bootstrap 95% CIs, area, lift (`analysis.report.tag_report.region_rows`);
- `flags`: per (class, non-core region) whose fill or swap (the region given the look of another class's
  surroundings, `analysis.evidence.segment_audit`) costs the class its pixels more than its control
  (`analysis.report.tag_report.shortcut_flags`: exact McNemar p, Holm-corrected, below the policy's alpha on
  "the class is found", excess pixel-accuracy drop >= its min_effect with its CI above 0), `kind: "shortcut"`
  (the class depends on context), each with its second-explainer and sanity checks (one severity level
  lower and confidence "low" when either failed or did not run, as the classifier's);
- `power`: per (class, region) tested and not flagged, the upper bounds of what its fill and swap could still
  cost the class (`analysis.report.tag_report.power_lines`); `multiple_testing`: the Holm family;
- `segmentation`: the classes, the settings and the intervention table (IoU before / after / control).
"""
from __future__ import annotations

from typing import Any

from analysis.report.tag_report import multiple_testing, power_lines, region_rows, shortcut_flags


def segment_findings(store, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    images, segments, seg_regions = store.images(), store.table("segments"), store.table("segment_regions")
    evidence = store.evidence()
    metrics: dict[str, Any] = {"pixel_accuracy": float(images["pixel_accuracy"].mean()) if len(images) else None,
                               "classes": {}}
    names = list(dict.fromkeys(segments.sort_values("class_idx")["class"])) if len(segments) else []
    for name in names:
        part = segments[segments["class"] == name]
        union, inter, true = int(part["union"].sum()), int(part["intersection"].sum()), int(part["pixels_true"].sum())
        metrics["classes"][name] = {"iou": inter / union if union else None,
                                    "pixel_accuracy": inter / true if true else None,
                                    "n_images": int((part["pixels_true"] > 0).sum())}
    ious = [m["iou"] for m in metrics["classes"].values() if m["iou"] is not None and m["n_images"]]
    metrics["mean_iou"] = sum(ious) / len(ious) if ious else None
    rows = region_rows(store.regions(), images["image_id"].to_numpy(), None, n_boot=n_boot, seed=seed)
    for name in names:
        part = seg_regions[seg_regions["class"] == name] if len(seg_regions) else seg_regions
        rows += region_rows(part, part["image_id"].unique() if len(part) else [], name, n_boot=n_boot, seed=seed)
    interventions = evidence.get("interventions") or []
    lifts = {(r["class"], r["region"]): r["lift"] for r in rows if r["class"] is not None}
    flags = shortcut_flags(interventions, lifts, "class", evidence)
    return {"metrics": metrics, "regions": rows, "flags": flags, "power": power_lines(interventions, flags, "class"),
            "multiple_testing": multiple_testing(interventions), "sanity": evidence.get("sanity") or {}, "second_explainer": evidence.get("second_explainer") or {},
            "faithfulness": evidence.get("faithfulness") or {},
            "segmentation": {"classes": names, "settings": evidence.get("settings") or {},
                             "interventions": interventions}}
