"""The run's verdict: flagged, clear, or cannot judge, with the same meaning for every task.

Why a verdict apart from the flags: "no flag" read as "clean" on models that could not be judged at all. A
model whose output ignores its input got "No shortcut flagged" (every map zero, nothing to test), a
retrained version that collapsed to one class read like a fix, and a sample too small to rule anything out
passed a CI gate. Here "clear" is earned: the model's predictions carry information, the maps depend on the
input, the explainer passed its sanity check (or, a black box, needs none), and every candidate region that
was tested had an effect of the policy's size ruled out. Anything short of that is `cannot_judge`, with the
reasons; a finding with intervention evidence is `flagged` whatever the explainer's trust (the intervention
shows the model uses the region; only the attribution's part is in doubt), unless the model itself cannot be
judged (constant or chance predictions).

The checks, in order:
- predictions: constant (one class / tag set / no pixels of any object class / no detections), or not better
  than always answering the majority class (exact binomial test at `PolicyOf.alpha`);
- usable images: fewer than `MIN_IMAGES` (blocks a clear verdict, not a finding the interventions showed);
- maps: all zero, flat within every image, or the same map for every image (independent of the input);
- sanity: the run's explainer failed model randomisation (Adebayo et al. 2018);
- tested candidates: each decided (`excluded` or `shown`); an `undecided` one leaves the verdict open.
`not_tested` lists what a clear verdict could not see: cues inside the core region, global image properties
when no property test ran, regions no intervention reached, and every check the registry
(`analysis.evidence.checks`) did not judge on this audit, with its reason (the report's `not_judged`).
"""
from __future__ import annotations

import numpy as np

from analysis.report.policy import FlagPolicy, policy_of
from analysis.report.property_report import corroborated
from analysis.report.records import CheckResult, Finding, Verdict, not_judged

MIN_IMAGES = 20


NOT_TESTED_ALWAYS = ("cues inside the core region (the object itself) other than the image properties measured",)


def run_verdict(report: dict, task: str, maps: np.ndarray | None) -> Verdict:
    """The verdict of one report (`task`: the task's registry name; `maps`: a sample of the run's stored maps)."""
    policy = policy_of(task)
    findings = [Finding.from_json(f) for f in report.get("flags") or []]
    shown = [f for f in findings if f.deciding_test is not None and f.deciding_test.decision == "shown"]
    predictions = prediction_check(report, task, policy)
    usable = int((report.get("metrics") or {}).get("n_images") or 0)
    images = CheckResult("usable images", "passed" if usable >= MIN_IMAGES else "failed",
                         f"{usable} images in the audit" + ("" if usable >= MIN_IMAGES else
                                                            f"; at least {MIN_IMAGES} are needed to judge"), usable)
    map_check = maps_check(maps)
    sanity = sanity_check(report)
    candidates = candidate_decisions(report, task, policy)
    checks = (predictions, images, map_check, sanity)
    not_tested = list(NOT_TESTED_ALWAYS)
    properties = report.get("properties") or {}
    left_out = not_judged(report)
    if not properties and not any(n.key == "properties" for n in left_out):
        not_tested.append("global image properties (blur, brightness, colour cast, noise) as cues")
    elif properties.get("not_moved"):
        not_tested.append("image properties screened in the data but not moved on the model: "
                          + ", ".join(properties["not_moved"]))
    not_tested += [n.sentence() for n in left_out if n.limits_verdict]
    candidates.update(property_decisions(properties, policy))
    failed = [c.detail for c in checks if c.status == "failed"]
    if predictions.status == "failed":  # no finding means anything about a model that ignores its input
        return Verdict("cannot_judge", tuple(failed), tuple(not_tested), checks)
    if shown:
        reasons = [f.headline for f in shown]
        if sanity.status == "failed":
            reasons.append(f"the explainer failed its sanity check ({sanity.detail}): the interventions still show "
                           "the dependence, but regions the maps did not point at were not all tested")
        return Verdict("flagged", tuple(reasons), tuple(not_tested), checks)
    undecided = [f"{name}: {why}" for name, (decision, why) in candidates.items() if decision == "undecided"]
    if not candidates:
        not_tested.append("no region was tested by intervention")
    if failed or undecided:
        return Verdict("cannot_judge", tuple(failed + undecided), tuple(not_tested), checks)
    excluded = [f"{name}: {why}" for name, (decision, why) in candidates.items() if decision == "excluded"]
    reasons = excluded or ["no region drew enough attention or intervention effect to be a candidate"]
    return Verdict("clear", tuple(reasons), tuple(not_tested), checks)


def prediction_check(report: dict, task: str, policy: FlagPolicy) -> CheckResult:
    """Do the model's answers carry information about the images? (per task: what 'constant' means)"""
    metrics = report.get("metrics") or {}
    summary = report.get("predictions") or {}
    if task == "detection":
        total = metrics.get("n_detections_total")
        if total is not None and int(total) == 0:
            return CheckResult("predictions", "failed", "the detector made no detection on the sample", 0.0)
        recall = metrics.get("recall_overall")
        if recall is not None and float(recall) == 0.0:
            return CheckResult("predictions", "failed", "the detector found none of the annotated objects", 0.0)
        return CheckResult("predictions", "passed", f"recall {float(recall or 0):.0%} on the sample", recall)
    if task == "segmentation":
        ious = {name: float(row.get("iou") or 0.0) for name, row in (metrics.get("classes") or {}).items()}
        if len(ious) > 1 and sum(v > 0 for v in ious.values()) <= 1:
            return CheckResult("predictions", "failed", "the segmenter finds one class at most (IoU 0 for every "
                               "other class): its output does not depend on the image", 0.0)
        miou = metrics.get("mean_iou")
        return CheckResult("predictions", "passed", f"mean IoU {float(miou or 0):.2f}", miou)
    distinct, n, correct, majority = (summary.get(k) for k in ("distinct", "n", "correct", "majority"))
    if not n:
        return CheckResult("predictions", "not_run", "no prediction was recorded")
    what = "tag set" if task == "multilabel" else "class"
    if distinct is not None and distinct <= 1 and (summary.get("labels") or 2) > 1:
        return CheckResult("predictions", "failed", f"the model predicts the same {what} for every image "
                           f"({summary.get('top')!s}): its output does not depend on the input", 0.0)
    if correct is not None and majority is not None and n < MIN_IMAGES:
        return CheckResult("predictions", "not_run", f"{n} images are too few to test accuracy against chance")
    if correct is not None and majority is not None:
        from scipy.stats import binomtest

        p = binomtest(int(correct), int(n), float(majority), alternative="greater").pvalue
        accuracy = correct / n
        if p > policy.chance_alpha:
            return CheckResult("predictions", "failed", f"accuracy {accuracy:.0%} is not better than always "
                               f"answering the most common {what} ({majority:.0%}; exact binomial p = {p:.2g}, "
                               f"n = {n})", float(accuracy))
        return CheckResult("predictions", "passed", f"accuracy {accuracy:.0%} against {majority:.0%} for the most "
                           f"common {what} (p = {p:.2g})", float(accuracy))
    return CheckResult("predictions", "passed", f"{distinct} distinct {what}s predicted")


def prediction_summary(images, label: str, pred: str) -> dict:
    """What `prediction_check` reads, from a run's images table (one row per image): distinct predictions, how
    many are right, and the majority-answer baseline."""
    if images is None or not len(images) or pred not in images or label not in images:
        return {}
    preds, labels = images[pred].astype(str), images[label].astype(str)
    counts = labels.value_counts()
    top = preds.value_counts()
    return {"n": int(len(images)), "distinct": int(preds.nunique()), "top": str(top.index[0]),
            "labels": int(labels.nunique()), "correct": int((preds == labels).sum()),
            "majority": float(counts.iloc[0] / len(labels))}


def maps_check(maps: np.ndarray | None, rel: float = 1e-4) -> CheckResult:
    """Maps that cannot carry attention: all zero, flat within every image, or one map for every image."""
    if maps is None or not len(maps):
        return CheckResult("maps", "not_run", "no map was stored")
    m = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    scale = float(np.abs(m).max())
    if scale == 0.0:
        return CheckResult("maps", "failed", f"every map is zero ({len(m)} maps read): the explainer found no "
                           "dependence of the score on the input", 0.0)
    flat = m.reshape(len(m), -1)
    spread = float((flat.max(axis=1) - flat.min(axis=1)).max())
    if spread <= rel * scale:
        return CheckResult("maps", "failed", "every map is flat (one value over the whole image)", spread / scale)
    if len(m) > 1:
        variation = float(np.abs(flat - flat.mean(axis=0)).max())
        if variation <= rel * scale:
            return CheckResult("maps", "failed", f"all {len(m)} maps are the same: they do not depend on the "
                               "image", variation / scale)
    return CheckResult("maps", "passed", f"{len(m)} maps read; they vary within and across images", spread / scale)


def sanity_check(report: dict) -> CheckResult:
    """The run's explainer under model randomisation: failed blocks a clear verdict; a black box has no weights
    to randomise (not applicable); a run without the check says so."""
    sanity = (report.get("sanity") or {}).get("model_randomization") or {}
    method = sanity.get("method") or (report.get("run") or {}).get("method")
    left_out = next((n for n in not_judged(report) if n.key == "sanity"), None)
    if not sanity and left_out is not None:
        return CheckResult("model randomisation", "not_applicable", f"{method}: {left_out.reason}")
    if not sanity:
        return CheckResult("model randomisation", "not_run", f"the sanity check was not run for {method}")
    passed = sanity.get("passed")
    similarity = sanity.get("similarity")
    if passed is None:
        return CheckResult("model randomisation", "not_applicable",
                           sanity.get("reason") or f"{method}: a black box has no weights to randomise")
    how = _sanity_numbers(sanity)
    if not passed:
        return CheckResult("model randomisation", "failed",
                           f"{method}'s maps barely change when the model's weights are randomised ({how}): they do "
                           "not show what this model learned", similarity)
    return CheckResult("model randomisation", "passed", f"{method}'s maps change when the weights are randomised "
                       f"({how})", similarity)


def _sanity_numbers(sanity: dict) -> str:
    """'similarity 0.51 [0.47, 0.55], n = 32; ...': the numbers the sanity decision rests on, and which decided."""
    words = f"similarity {float(sanity.get('similarity') or 0):.2f}"
    ci = sanity.get("similarity_ci")
    if ci:
        words += f" [{ci[0]:.2f}, {ci[1]:.2f}], n = {sanity.get('n')}"
    if sanity.get("decided_by") == "fully randomised model":
        words += (f"; the cascade mean's interval holds {float(sanity.get('threshold') or 0.5):.2f}, so the fully "
                  f"randomised model decided: similarity {float(sanity.get('final_similarity') or 0):.2f}")
    return words


# The sequential sample's bounds a clear verdict reads: answers lost to the fill, predictions sent towards the
# donor's class or made wrong by the swap (net of their controls, at the run's simultaneous level).
RULED_OUT = ("fill_accuracy_drop", "swap_towards_donor", "swap_accuracy_drop")


def _points(rate: float) -> str:
    return f"{max(rate, 0.0):.0%}"


def _more_images(report: dict, seq: dict) -> str:
    """Advice when the evidence sample used every image the audit explained: audit more."""
    n_images = (report.get("metrics") or {}).get("n_images")
    if n_images and seq.get("n") and int(seq["n"]) >= int(n_images):
        return f" (the evidence used all {n_images} images of the audit: audit more images to decide)"
    return ""


def candidate_decisions(report: dict, task: str, policy: FlagPolicy) -> dict[str, tuple[str, str]]:
    """Per tested candidate ('region' or 'class / region'): (shown | excluded | undecided, why in words)."""
    out: dict[str, tuple[str, str]] = {}
    if task == "classification":
        for region, iv in (report.get("interventions") or {}).items():
            seq = iv.get("sequential") or {}
            bounds = seq.get("bounds") or {}
            if not bounds or (iv.get("appearance") or {}).get("cue") is False:  # no masks: the object's area
                continue
            upper = max(bounds[k][1] for k in RULED_OUT if k in bounds)
            if seq.get("decision") == "shown":
                out[region] = ("shown", f"an effect shown at n = {seq.get('n')}")
            elif upper < policy.exclude:
                out[region] = ("excluded", f"its fill and swap change at most {_points(upper)} of predictions "
                                           f"(n = {seq.get('n')}): effects of {policy.exclude:.0%} or more ruled out")
            else:
                out[region] = ("undecided", f"filling or swapping it could change up to {_points(upper)} of "
                                            f"predictions at n = {seq.get('n')}, so an effect of "
                                            f"{policy.exclude:.0%} is not ruled out{_more_images(report, seq)}")
        return out
    records = ((report.get("multilabel") or report.get("segmentation") or report.get("detection") or {})
               .get("interventions") or [])
    key = "tag" if task == "multilabel" else "class"
    flagged = {f"{f.get('class')} / {f.get('region')}" for f in report.get("flags") or []}
    rank = {"shown": 2, "undecided": 1, "excluded": 0}  # a candidate with several tests (fill, swap): the least ruled out
    for rec in records:
        ci = rec.get("excess_drop_ci") or [None, None]
        if ci[1] is None:
            continue
        name = f"{rec.get(key)} / {rec.get('region')}"
        if name in out and rank[out[name][0]] > (0 if ci[1] < policy.exclude else 1):
            continue
        if ci[1] < policy.exclude:
            out[name] = ("excluded", f"excess drop below {ci[1]:.0%} (n = {rec.get('n')}), effects of "
                                     f"{policy.exclude:.0%} or more ruled out")
        elif name in flagged:
            out[name] = ("shown", f"excess drop {rec.get('excess_drop'):.0%}")
        else:
            test = (f"; the exact test on flips gives p = {rec['p_value']:.2g}" if rec.get("p_value") is not None
                    else "")
            low = "?" if ci[0] is None else f"{ci[0]:.0%}"
            out[name] = ("undecided", f"the excess drop's interval [{low}, {ci[1]:.0%}] at n = {rec.get('n')} "
                                      f"neither shows an effect of {policy.exclude:.0%} nor rules it out{test}")
    return out


def property_decisions(properties: dict, policy: FlagPolicy) -> dict[str, tuple[str, str]]:
    """The property candidates the data carries (the screen associated the property with the class): each
    shown (flagged), excluded (the towards move's effect below `policy.exclude`) or undecided. Properties the
    screen found no association for were moved too, at a default step; they are reported, not required."""
    screened = {(a["property"], a["class_name"]) for a in (properties.get("screen") or {}).get("associations", [])
                if a.get("flagged")}
    out = {}
    for r in properties.get("interventions") or []:
        key = (r["property"], r["class_name"])
        if key not in screened and not r.get("flagged"):
            continue
        name = f"{r['property']} / class {r['class_name']}"
        upper = r["interval"][1]
        if corroborated(r):
            out[name] = ("shown", r["sentence"])
        elif r.get("flagged"):
            out[name] = ("undecided", f"{r['sentence']}; but the opposite move on the class's own images does not cost "
                                      "its answers, so reliance on the property is not established")
        elif upper < policy.exclude:
            out.setdefault(name, ("excluded", f"{r['cue']} sends at most {_points(upper)} of the other classes' "
                                              f"images to it (n = {r['n']}): effects of {policy.exclude:.0%} or more "
                                              "ruled out"))
        else:
            out[name] = ("undecided", f"{r['cue']} could send up to {_points(upper)} of the other classes' images "
                                      f"to it at n = {r['n']}: an effect of {policy.exclude:.0%} is not ruled out")
    return out


def explainer_agreement(verdicts: dict) -> str:
    """One line on the explainers that audited the same model version: do their verdicts agree?
    (`verdicts`: method -> Verdict or None). Interventions are shared by a model's audits, so a disagreement
    is about the maps: one explainer's candidates, sanity or degenerate maps."""
    known = {method: v for method, v in verdicts.items() if v is not None}
    if len(known) < 2:
        return ""
    words = {method: v.label.lower() for method, v in known.items()}
    if len(set(words.values())) == 1:
        return f"{len(known)} explainers agree: {next(iter(words.values()))} ({', '.join(sorted(known))})"
    return "explainers disagree: " + "; ".join(f"{method} {word}" for method, word in sorted(words.items()))


def with_verdicts(comparison: dict, names: list[str], reports: list[dict]) -> dict:
    """A version comparison with each version's verdict, and a summary that never reads a collapsed version as
    a fix: a version that cannot be judged (a retrain that collapsed to one class: its attention on the
    shortcut "fell to 0%") is named first, with why, before any change in attention."""
    verdicts = [Verdict.from_json(r.get("verdict")) for r in reports]
    rows = [{"run": name, "status": v.status if v else None, "reasons": list(v.reasons) if v else []}
            for name, v in zip(names, verdicts)]
    lines = []
    for row in rows:
        if row["status"] == "cannot_judge":
            why = row["reasons"][0] if row["reasons"] else "see its report"
            lines.append(f"{row['run']} cannot be judged ({why}): its changes in attention are no evidence of a fix")
    summary = comparison.get("summary") or ""
    return {**comparison, "verdicts": rows, "summary": "; ".join([*lines, summary] if summary else lines)}
