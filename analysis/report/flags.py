"""Shortcut flags: attention *and* causal evidence, with the robustness checks that qualify them.

A non-core region is flagged as a shortcut when
1. attention: its lift CI lower bound exceeds `lift_threshold` overall, for a class or for a subgroup
   (correct/incorrect slices are diagnostic, not grounds for a flag), and
2. cause: filling the region costs more correct predictions than filling an equal-area control, or
   swapping it for the same region of another class's image moves more predictions towards that class
   than the control swap, by a non-trivial amount (net effect >= `min_effect`), in an exact test that
   survives Holm's correction over every test of the run (regions x fill/swap x whole sample, classes,
   subgroups) at `alpha`. A fill that merely *flips* predictions is not evidence: flips in any direction
   measure sensitivity to the fill's distribution shift (filling 90% of an image with a flat colour moved
   95% of a near-chance clean model's answers, its accuracy unchanged, while the only control a region
   that large has, the core, moved 1%); reliance is a region whose removal costs right answers or whose
   swap carries the donor's class. The flag says which test showed it (`evidence.shown_by`,
   `evidence.test`, `evidence.test_slice`, `evidence.p_value_holm`).
3. robustness qualifies the flag rather than gating it: a second explainer from another family must
   also give the region lift > 1, and the run's explainer must have passed its model-randomisation
   sanity check. When either fails (or was not computed) the flag stays, one severity level lower, with
   `confidence: "low"` and the reason spelled out: the intervention already showed the model uses the
   region; what is in doubt is only the attribution's part of the story.
Attention without an intervention result (evidence not computed) is flagged `low` with the reason;
attention with a non-significant intervention is not a shortcut and goes to `attention_findings`.
A region whose lift CI is not above `lift_threshold` is still flagged (`basis: "intervention"`) when its
test passes and the *lower bound* of its net effect (the sequential sample's interval) clears
`min_effect`: the causal evidence must then stand on its own. A large, spread-out cue (cage bars over the
whole picture) cannot reach a high lift, however much the model relies on it (cage v1: lift 1.06 [1.05,
1.07], filling the cage flipped 91% of predictions against 0%), and a grid cell that holds a moving cue
in a quarter of the images has lift <= 1 while filling it costs 10% of the answers against 0% (an older
rule asked for a net effect of 0.2 and missed it). Regions discovered from the maps (`discovered_regions`) follow
the same rule: their lift is high by construction. Every tested region that is not flagged gets a
`power` statement: the upper bounds of what its swap and fill could have changed.
Register-like artifact tokens (outlier-norm ViT tokens, `analysis.stats.artifacts`) are no attention basis:
a region whose lift CI does not clear `lift_threshold` once they are taken out is treated like a region
without high lift, so only its interventions can flag it.

Severity comes from the deciding test's effect net of the control (fill: `accuracy_drop - control
accuracy_drop`; swap: the larger of its net towards-donor rate and net accuracy drop): high >= 0.2,
medium >= 0.1, else low. Core regions are never
flagged: attending to what the label is about is the point. Without masks (grid regions, no region marked
core) the grid's centre cells (`GRID_ASSUMED_CORE`) are assumed to hold the object and treated as core; an
object that moves lies elsewhere too, so a mask-free candidate whose look does not name the class
(`object_area`: `analysis.stats.cue_appearance`) is attention on the object, never a shortcut, and stays
out of the Holm family and the power statements. Flags of one severity are ranked by net effect.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.report.policy import policy_of
from analysis.report.property_report import property_findings
from analysis.report.records import SEVERITIES, CheckResult, Finding, NotJudged, Slice, TestResult, not_judged

GRID_ASSUMED_CORE = ("centre", "middle-centre")
POLICY = policy_of("classification")  # thresholds and severity scale (analysis/report/policy.py)


def effective_roles(names, roles) -> list:
    """Roles as given; when no region is core (grid regions), the grid centre is assumed core."""
    roles = [None if _missing(r) else r for r in roles]
    if "core" in roles:
        return roles
    return ["core" if name in GRID_ASSUMED_CORE else role for name, role in zip(names, roles)]


def shortcut_flags(table: pd.DataFrame, evidence: dict | None = None, *,
                   lift_threshold: float = POLICY.lift_threshold, alpha: float = POLICY.alpha,
                   min_effect: float = POLICY.min_effect,
                   artifact_free: pd.DataFrame | None = None) -> list[dict]:
    """Flags in the report-JSON shape (docs/FORMATS.md), most severe first.

    `artifact_free`: the region table recomputed with register-like artifact tokens taken out
    (`analysis.stats.artifacts`); a region whose lift does not hold there has no attention basis of its own,
    so only the interventions can flag it (`basis: "intervention"`)."""
    evidence = evidence or {}
    flags = []
    strong, weak = _attention_hits(table, lift_threshold), _attention_hits(table, 1.0)
    on_artifacts = _artifact_driven(strong, artifact_free, lift_threshold)
    for region in on_artifacts:
        weak.setdefault(region, strong.pop(region))
    interventions = evidence.get("interventions") or {}
    discovered = {d["name"]: d for d in evidence.get("discovered_regions") or []}
    non_core = set(table.loc[~_is_core(table), "region"]) if not table.empty else set()
    tested = [r for r in interventions if (r in non_core or r in discovered) and not object_area(interventions[r])]
    family = _corrected_tests(interventions, tested)
    for region in dict.fromkeys([*weak, *tested]):
        intervention = interventions.get(region)
        if object_area(intervention):  # no masks, and its look does not name the class: where the model looks
            continue
        best = _best_test(family.get(region, []), alpha, min_effect)
        reasons = []
        basis = "attention+intervention"
        if region in discovered:  # cut from the maps: its lift is high by construction, not evidence
            if best is None or _lower_bound(intervention, best["variant"], alpha) < min_effect:
                continue
            basis, found = "intervention", discovered[region]
            attention = found.get("attention") or {}
            hits = [{"class": None, "group": None, "lift": attention.get("lift"),
                     "lift_ci_low": (attention.get("lift_ci") or [None, None])[0],
                     "lift_ci_high": (attention.get("lift_ci") or [None, None])[1],
                     "mass_mean": attention.get("mass_mean")}]
            reasons.append(f"region discovered from the maps ({found['description']}); its lift is high by "
                           f"construction, so the interventions alone decide")
        elif region in strong:
            hits = strong[region]
        else:  # attention at most a little above proportional: the causal effect must clear the threshold itself
            if best is None or _lower_bound(intervention, best["variant"], alpha) < min_effect:
                continue
            basis = "intervention"
            hits = weak.get(region) or _overall_rows(table, region)
            if region in on_artifacts:
                reasons.append(on_artifacts[region])
            elif region not in weak:
                reasons.append(f"the maps put no more than its area share of saliency on it (lift "
                               f"{hits[0]['lift']:.2f}): the dependence shows only when the region is removed "
                               f"or swapped")
        top = hits[0]
        if intervention is None or intervention.get("p_value") is None:
            severity, confidence = "low", "low"
            reasons.append("no intervention evidence was computed for this region")
            ev = {}
        else:
            if best is None:
                continue
            effect = variant_effect(intervention, best["variant"])
            severity, confidence = severity_of(effect), "high"
            ev = intervention_evidence(intervention, best, effect, family_size=sum(map(len, family.values())))
        robust, why = robustness(region, evidence)
        if not robust:
            reasons.extend(why)
            if confidence == "high":
                severity = SEVERITIES[max(0, SEVERITIES.index(severity) - 1)]
            confidence = "low"
        ev.update(robustness_evidence(region, evidence))
        extra = {"slices": [{"class": h["class"], "group": h["group"], "lift": h["lift"],
                             "lift_ci_low": h["lift_ci_low"]} for h in hits]}
        if region in discovered:
            extra.update({"description": discovered[region]["description"],
                          "exemplars": discovered[region].get("exemplars", [])})
        tests = region_tests(intervention, family.get(region, []), best, alpha=alpha, min_effect=min_effect)
        checks = robustness_checks(region, evidence)
        finding = Finding(kind="shortcut", subject=region, slice=Slice(top["class"], top["group"]),
                          severity=severity, confidence=confidence,
                          headline=headline(region, tests[0] if best else None, top,
                                            (discovered.get(region) or {}).get("description")),
                          effect=ev.get("net_effect"), tests=tuple(tests), checks=tuple(checks),
                          reasons=tuple(reasons), basis=basis, lift=top["lift"],
                          lift_ci=(top["lift_ci_low"], top["lift_ci_high"]), mass_mean=top["mass_mean"],
                          evidence=ev, extra=extra)
        flags.append(finding.to_json())
    # the largest effect first: a moving cue found without masks (44 points) ranked below a grid cell's smaller
    # one when discovered regions went last
    flags.sort(key=lambda f: (-SEVERITIES.index(f["severity"]), -((f.get("evidence") or {}).get("net_effect") or 0),
                              -(f["lift"] or 0)))
    return flags


def object_area(intervention: dict | None) -> bool:
    """A mask-free candidate whose appearance does not predict the class (`analysis.stats.cue_appearance`): the
    object's area, where the model looks for the label's evidence. Reported as attention, never a shortcut."""
    return ((intervention or {}).get("appearance") or {}).get("cue") is False


def region_tests(intervention: dict | None, tests: list[dict], best: dict | None, *, alpha: float,
                 min_effect: float) -> list[TestResult]:
    """A region's tests as records, the deciding one first: each with its slice, its net effect, the
    sequential sample's interval (whole-sample tests), its Holm-corrected p-value and its decision."""
    if not intervention:
        return []
    seq = intervention.get("sequential") or {}
    bounds, states = seq.get("bounds") or {}, seq.get("states") or {}
    keys = {"fill": ("fill_accuracy_drop",), "swap": ("swap_towards_donor", "swap_accuracy_drop")}
    ordered = ([best] if best else []) + [t for t in tests if t is not best]
    out = []
    for t in ordered:
        whole = t.get("class") is None and t.get("group") is None
        interval, decision = None, "undecided"
        if whole and bounds:
            key = max((k for k in keys[t["variant"]] if k in bounds), key=lambda k: bounds[k][0], default=None)
            interval = tuple(bounds[key]) if key else None
            found = [states.get(k) for k in keys[t["variant"]] if states.get(k)]
            decision = "shown" if "shown" in found else "excluded" if found and all(
                d == "excluded" for d in found) else "undecided"
        if t is best or (t["p_holm"] < alpha and t["effect"] >= min_effect):
            decision = "shown"
        control = (intervention.get("swap") or {}).get("control_kind") if t["variant"] == "swap" \
            else intervention.get("control_kind")
        out.append(TestResult(name=t["variant"], description=_test_name(t["variant"]), effect=t["effect"],
                              interval=interval, p_value=t.get("p_value"), p_value_corrected=t["p_holm"],
                              correction="Holm over the run's tests", n=t.get("n"),
                              slice=Slice(t.get("class"), t.get("group")), decision=decision, control=control))
    return out


def headline(region: str, test: TestResult | None, top: dict, description: str | None = None) -> str:
    """The finding in one sentence: which images, which region (what it is, for a discovered one), what the
    deciding test showed."""
    who = f"Predictions of class {test.slice.target}" if test and test.slice.target else \
        f"Predictions for {test.slice.group}" if test and test.slice.group else "Predictions"
    named = f"{region} ({description})" if description else region
    if test is None:
        return (f"{who} may depend on {named}: it draws {top['lift']:.1f}x its area's share of attention, "
                f"but no intervention tested it")
    what = {"fill": f"filling it costs {test.effect:.0%} of right answers more than filling an equal area elsewhere",
            "swap": f"swapping it for another class's changes {test.effect:.0%} more predictions (towards that "
                    f"class, or away from the right one) than a control swap"}[test.name]
    return f"{who} depend on {named}: {what} (corrected p = {_p(test.p_value_corrected)}, n = {test.n})"


def _p(p: float | None) -> str:
    return "?" if p is None else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def robustness_checks(region: str, evidence: dict) -> list[CheckResult]:
    """The trust checks that qualify a region's finding: the second explainer's lift, the sanity check."""
    second = evidence.get("second_explainer") or {}
    lift = ((second.get("regions") or {}).get(region) or {}).get("lift")
    checks = [CheckResult("second explainer", "not_run", "no second explainer was run on this region")
              if lift is None else
              CheckResult("second explainer", "passed" if lift > POLICY.agree_lift else "failed",
                          f"{second.get('method')} gives {region} lift {lift:.2f}", lift)]
    sanity = (evidence.get("sanity") or {}).get("model_randomization") or {}
    passed = sanity.get("passed")
    left_out = _sanity_not_judged(evidence)
    if not sanity and left_out is not None:
        return checks + [CheckResult("model randomisation", "not_applicable", left_out.reason)]
    checks.append(CheckResult("model randomisation", "not_run" if not sanity else "not_applicable"
                              if passed is None else "passed" if passed else "failed",
                              f"{sanity.get('method')}: similarity {float(sanity.get('similarity') or 0):.2f}"
                              if sanity else "not run", sanity.get("similarity")))
    return checks


def _artifact_driven(strong: dict, artifact_free: pd.DataFrame | None, lift_threshold: float) -> dict[str, str]:
    """Regions with strong attention that loses it once artifact tokens are taken out: region -> the reason."""
    if artifact_free is None or artifact_free.empty:
        return {}
    clean = _attention_hits(artifact_free, lift_threshold)
    overall = artifact_free[artifact_free["class"].isna() & artifact_free["group"].isna()].set_index("region")
    return {region: f"its lift rests on register-like artifact tokens: without them it is "
                    f"{overall['lift'].get(region, float('nan')):.2f} (CI low "
                    f"{overall['lift_ci_low'].get(region, float('nan')):.2f}), so the interventions alone decide"
            for region in strong if region not in clean}


def intervention_evidence(intervention: dict, best: dict, effect: float, *, family_size: int) -> dict:
    """A flag's `evidence`: the fill's effects (top level, as before swaps), the swap's, and the deciding test."""
    swap = intervention.get("swap") or {}
    ev = {
        "accuracy_drop": intervention.get("accuracy_drop"),
        "accuracy_drop_ci": intervention.get("accuracy_drop_ci"),
        "flip_rate": intervention.get("flip_rate"), "flip_rate_ci": intervention.get("flip_rate_ci"),
        "p_value": intervention["p_value"],
        "control_flip_rate": (intervention.get("control") or {}).get("flip_rate"),
        "control_accuracy_drop": (intervention.get("control") or {}).get("accuracy_drop"),
        "fill": intervention.get("fill"), "control_kind": intervention.get("control_kind"),
        "n": intervention.get("n"), "net_effect": effect,
        "shown_by": best["variant"], "test": _test_name(best["variant"]),
        "test_slice": {"class": best.get("class"), "group": best.get("group")},
        "p_value_holm": best["p_holm"], "correction": f"Holm over {family_size} tests",
    }
    if swap:
        ev["swap"] = {"accuracy_drop": swap.get("accuracy_drop"), "flip_rate": swap.get("flip_rate"),
                      "towards_donor_rate": swap.get("towards_donor_rate"),
                      "control_towards_donor_rate": (swap.get("control") or {}).get("towards_donor_rate"),
                      "control_accuracy_drop": (swap.get("control") or {}).get("accuracy_drop"),
                      "p_value": swap.get("p_value"), "n": swap.get("n"), "control_kind": swap.get("control_kind"),
                      "net_effect": variant_effect(intervention, "swap"),
                      "same_class": swap.get("same_class")}  # the same-class swap: what any paste costs
    if intervention.get("sequential"):
        ev["sequential"] = intervention["sequential"]
    return ev


def _test_name(variant: str) -> str:
    return ("swap: exact one-sided McNemar on flips towards the donor's class, region swap vs control swap"
            if variant == "swap" else
            "fill: exact one-sided McNemar on correct predictions lost, region fill vs control fill")


def variant_effect(intervention: dict, variant: str) -> float:
    """Net effect of a variant over the whole sample: fill `net_effect` (accuracy); swap max(towards-donor,
    accuracy) net."""
    if variant == "fill":
        return net_effect(intervention)
    swap = intervention.get("swap") or {}
    control = swap.get("control") or {}
    towards = (swap.get("towards_donor_rate") or 0.0) - (control.get("towards_donor_rate") or 0.0)
    drop = (swap.get("accuracy_drop") or 0.0) - (control.get("accuracy_drop") or 0.0)
    return float(max(towards, drop))


def _tests_of(intervention: dict) -> list[dict]:
    """The intervention's exact tests; an older evidence file (fill only, no `tests`) gives its one test
    (on lost correct answers when it has it, else on flips: its effect is the accuracy drop either way)."""
    if intervention.get("tests"):
        return [dict(t) for t in intervention["tests"]]
    out = [{"variant": "fill", "class": None, "group": None, "n": intervention.get("n"),
            "effect": net_effect(intervention),
            "p_value": intervention.get("p_value_accuracy", intervention.get("p_value"))}]
    if (intervention.get("swap") or {}).get("p_value") is not None:
        out.append({"variant": "swap", "class": None, "group": None, "n": intervention["swap"].get("n"),
                    "effect": variant_effect(intervention, "swap"), "p_value": intervention["swap"]["p_value"]})
    return out


def _corrected_tests(interventions: dict, regions: list[str]) -> dict[str, list[dict]]:
    """Every test of every candidate region (regions x fill/swap x whole/class/subgroup), Holm-adjusted together."""
    from analysis.stats.sequential import holm

    rows = [(region, t) for region in regions for t in _tests_of(interventions.get(region) or {})
            if t.get("p_value") is not None]
    adjusted = holm([t["p_value"] for _, t in rows])
    out: dict[str, list[dict]] = {}
    for (region, t), p in zip(rows, adjusted):
        whole = t.get("class") is None and t.get("group") is None
        effect = variant_effect(interventions[region], t["variant"]) if whole else t["effect"]
        out.setdefault(region, []).append({**t, "effect": effect, "p_holm": float(p)})
    return out


def _best_test(tests: list[dict], alpha: float, min_effect: float) -> dict | None:
    """The surest test that passes (Holm p < alpha, effect >= min_effect); whole-sample tests win ties."""
    passing = [t for t in tests if t["p_holm"] < alpha and t["effect"] >= min_effect]
    if not passing:
        return None
    return min(passing, key=lambda t: (t["p_holm"], t.get("class") is not None or t.get("group") is not None,
                                       -t["effect"]))


def _lower_bound(intervention: dict | None, variant: str, alpha: float) -> float:
    """Lower bound of the variant's net effect: from the sequential sample's bounds, or (older evidence)
    the Clopper-Pearson difference at `alpha` from its rates and n."""
    from analysis.stats.sequential import net_rate_bounds

    if not intervention:
        return -1.0
    bounds = (intervention.get("sequential") or {}).get("bounds")
    if bounds:
        keys = ("fill_accuracy_drop",) if variant == "fill" else ("swap_towards_donor", "swap_accuracy_drop")
        return max(bounds[k][0] for k in keys if k in bounds)
    source = intervention if variant == "fill" else intervention.get("swap") or {}
    n = int(source.get("n") or 0)
    control = source.get("control") or {}
    rate = "accuracy_drop" if variant == "fill" else "towards_donor_rate"
    if not n or source.get(rate) is None:
        return -1.0
    # the fill's drop as a rate of lost answers (a control that gained answers counts as losing none)
    k_r, k_c = round(max(source[rate], 0.0) * n), round(max(control.get(rate) or 0.0, 0.0) * n)
    return net_rate_bounds(k_r, k_c, n, alpha)[0]


def _points(upper: float) -> str:
    """'changes accuracy by less than 3 points' (an upper bound at or below 0: no more than its control)."""
    if upper <= 0:
        return "changes accuracy no more than its control does"
    return f"changes accuracy by less than {max(1, math.ceil(100 * upper))} points"


def _against_core(intervention: dict) -> str:
    """'; against the core' when a control was the core (a background): the bound is then on reliance on the
    region *beyond* reliance on the object, not absolute."""
    kinds = {intervention.get("control_kind"), (intervention.get("swap") or {}).get("control_kind")}
    return "; measured against the core (filled or swapped) as the control, so beyond the object's own effect" \
        if "core" in kinds else ""


def _sample_size(seq: dict) -> str:
    """'n = 200', or 'n = 200 swapped, 100 filled' when one variant pair was decided (and stopped) earlier."""
    n_swap, n_fill = seq.get("n_swap"), seq.get("n_fill")
    if n_swap is None or n_fill is None or n_swap == n_fill:
        return f"n = {seq.get('n')}"
    return f"n = {n_swap} swapped, {n_fill} filled"


def power_statements(table: pd.DataFrame, evidence: dict | None, flags: list[dict]) -> list[dict]:
    """For every tested non-core region *not* flagged: what the interventions could have detected.

    The bounds are the sequential sample's final simultaneous ones (Bonferroni-spent over its looks), so
    "at most 3 points" holds at the stated level whatever the stopping rule did."""
    evidence = evidence or {}
    flagged = {f["region"] for f in flags}
    non_core = set(table.loc[~_is_core(table), "region"]) if not table.empty else set()
    discovered = {d["name"] for d in evidence.get("discovered_regions") or []}
    out = []
    for region, iv in (evidence.get("interventions") or {}).items():
        seq = iv.get("sequential") or {}
        bounds = seq.get("bounds") or {}
        if region in flagged or not bounds or (region not in non_core and region not in discovered) \
                or object_area(iv):
            continue
        swap_up = bounds["swap_accuracy_drop"][1]
        fill_up = bounds["fill_accuracy_drop"][1]
        towards_up = bounds["swap_towards_donor"][1]
        level = seq.get("level", 0.95)
        text = (f"swapping `{region}` for another class's {_points(swap_up)} and moves at most "
                f"{max(towards_up, 0):.0%} of predictions towards the donor's class; filling it, "
                f"{_points(fill_up).replace('changes accuracy by ', '')} ({level:.0%} upper bounds, "
                f"{_sample_size(seq)}, {seq.get('decision')}{_against_core(iv)})")
        out.append({"region": region, "n": seq.get("n"), "level": level, "decision": seq.get("decision"),
                    "swap_accuracy_drop_upper": swap_up, "swap_towards_donor_upper": towards_up,
                    "fill_accuracy_drop_upper": fill_up, "fill_flips_upper": bounds["fill_flips"][1],
                    "text": text})
    return out


def attention_findings(table: pd.DataFrame, evidence: dict | None = None, *,
                       lift_threshold: float = POLICY.lift_threshold, alpha: float = POLICY.alpha,
                   min_effect: float = POLICY.min_effect,
                       artifact_free: pd.DataFrame | None = None) -> list[dict]:
    """Non-core regions with high lift whose intervention did *not* move predictions: worth a look, not a flag."""
    flagged = {f["region"] for f in shortcut_flags(table, evidence, lift_threshold=lift_threshold,
                                                    alpha=alpha, min_effect=min_effect, artifact_free=artifact_free)}
    out = []
    interventions = (evidence or {}).get("interventions") or {}
    hits_of = _attention_hits(table, lift_threshold)
    for region, hits in hits_of.items():
        if region in flagged:
            continue
        intervention = interventions.get(region) or {}
        if object_area(intervention):
            out.append(looked_at(region, intervention, hits[0]))
            continue
        out.append({"region": region, "kind": "attention", "class": hits[0]["class"],
                    "group": hits[0]["group"], "lift": hits[0]["lift"],
                    "p_value": intervention.get("p_value"), "flip_rate": intervention.get("flip_rate"),
                    "text": f"high attention on {region} (lift {hits[0]['lift']:.1f}) but filling it did not "
                            f"cost more right answers than its control, nor did swapping it move more "
                            f"predictions towards the donor's class"})
    discovered = {d["name"]: d for d in (evidence or {}).get("discovered_regions") or []}
    for region, found in discovered.items():  # areas cut from the maps that hold the object, not a cue
        if region not in flagged and object_area(interventions.get(region)):
            attention = found.get("attention") or {}
            out.append(looked_at(region, interventions[region], {"class": None, "group": None,
                                                                 "lift": attention.get("lift")},
                                 description=found.get("description")))
    return out


def looked_at(region: str, intervention: dict, top: dict, *, description: str | None = None) -> dict:
    """Attention on the object's area without masks: where the model looks, with what removing it costs."""
    lift = top.get("lift")
    what = f"{region} ({description})" if description else region
    cost = intervention.get("accuracy_drop")
    control = (intervention.get("control") or {}).get("accuracy_drop") or 0.0
    costs = "" if cost is None else f"; filling it costs {cost - control:.0%} of right answers net of its control"
    return {"region": region, "kind": "attention", "class": top.get("class"), "group": top.get("group"),
            "lift": lift, "p_value": intervention.get("p_value"), "flip_rate": intervention.get("flip_rate"),
            "object_area": True, "appearance": intervention.get("appearance"),
            "text": f"the model looks at {what}" + (f" (lift {lift:.1f})" if lift is not None else "") +
                    f", where the label's evidence is: {intervention['appearance']['text']}{costs}. Without "
                    f"masks this is attention on the object, not a shortcut"}


def subgroup_findings(table: pd.DataFrame, accuracy: pd.DataFrame | None = None, *,
                      min_ratio: float = 1.5, min_mass: float = 0.02) -> list[dict]:
    """Per attribute: a non-core region that gets far more mass in one subgroup than another.

    Reported when the mass CIs do not overlap, the ratio of means is >= `min_ratio` and the higher mean is
    at least `min_mass` of the saliency (0.2% vs 0% is no finding); the subgroups' accuracies are attached, and the text says when the high-attention group is also less accurate.
    """
    rows = table[table["group"].notna() & table["class"].isna() & ~_is_core(table)]
    rows = rows[~rows["group"].astype(str).str.startswith("correct=")]
    acc = {}
    if accuracy is not None and len(accuracy):
        sel = accuracy[accuracy["group"].notna() & accuracy["class"].isna()]
        acc = dict(zip(sel["group"], sel["accuracy"]))
    out = []
    for (region, attribute), sub in rows.assign(attribute=rows["group"].str.split("=").str[0]) \
            .groupby(["region", "attribute"], sort=True):
        if len(sub) < 2:
            continue
        hi, lo = sub.loc[sub["mass_mean"].idxmax()], sub.loc[sub["mass_mean"].idxmin()]
        ratio = hi["mass_mean"] / lo["mass_mean"] if lo["mass_mean"] > 0 else math.inf
        if ratio < min_ratio or hi["mass_ci_low"] <= lo["mass_ci_high"] or hi["mass_mean"] < min_mass:
            continue
        if not lo["area_mean"] > 0:  # the region is absent from that group (no cage when in_cage=no): no finding
            continue
        acc_hi, acc_lo = acc.get(hi["group"]), acc.get(lo["group"])
        text = (f"attends to {region} {ratio:.1f}x more for {hi['group']} ({hi['mass_mean']:.0%} of saliency) "
                f"than for {lo['group']} ({lo['mass_mean']:.0%})")
        if acc_hi is not None and acc_lo is not None and acc_hi < acc_lo:
            text += f", and that group's accuracy is lower ({acc_hi:.0%} vs {acc_lo:.0%})"
        out.append({"kind": "subgroup", "region": region, "attribute": attribute,
                    "group_high": hi["group"], "group_low": lo["group"],
                    "mass_high": float(hi["mass_mean"]), "mass_low": float(lo["mass_mean"]),
                    "ratio": float(ratio) if math.isfinite(ratio) else None, "accuracy_high": acc_hi,
                    "accuracy_low": acc_lo, "text": text})
    return out


def net_effect(intervention: dict) -> float:
    """The fill's accuracy drop net of its control's (flips are sensitivity, not reliance: module docstring)."""
    control = intervention.get("control") or {}
    return float((intervention.get("accuracy_drop") or 0.0) - (control.get("accuracy_drop") or 0.0))


def severity_of(effect: float) -> str:
    return POLICY.severity(effect)


def robustness(region: str, evidence: dict) -> tuple[bool, list[str]]:
    """(robust, reasons it is not): second explainer agrees and the explainer passed its sanity check."""
    why = []
    second = evidence.get("second_explainer") or {}
    lift = ((second.get("regions") or {}).get(region) or {}).get("lift")
    if lift is None:
        why.append("no second explainer was run on this region")
    elif not lift > POLICY.agree_lift:
        why.append(f"second explainer ({second.get('method')}) gives lift {lift:.2f} <= 1: the attribution "
                   f"does not agree across methods")
    sanity = (evidence.get("sanity") or {}).get("model_randomization") or {}
    left_out = _sanity_not_judged(evidence)
    if not sanity and left_out is not None:
        why.append(f"the explainer's sanity check was not judged: {left_out.reason}")
    elif sanity.get("passed") is None:
        why.append("the explainer's sanity check was not run")
    elif not sanity["passed"]:
        why.append(f"the explainer ({sanity.get('method')}) failed the model-randomisation sanity check: "
                   f"its maps barely depend on the model's weights")
    return not why, why


def _sanity_not_judged(evidence: dict) -> NotJudged | None:
    """The checks registry's record of a sanity check it did not run (a black box), if any."""
    return next((n for n in not_judged(evidence) if n.key == "sanity"), None)


def robustness_evidence(region: str, evidence: dict) -> dict:
    second = evidence.get("second_explainer") or {}
    sanity = (evidence.get("sanity") or {}).get("model_randomization") or {}
    return {"second_explainer": second.get("method"),
            "second_explainer_lift": ((second.get("regions") or {}).get(region) or {}).get("lift"),
            "sanity_passed": sanity.get("passed")}


def _attention_hits(table: pd.DataFrame, lift_threshold: float) -> dict[str, list[dict]]:
    """Per non-core region, the slices where lift CI low > threshold, strongest first."""
    if table.empty:
        return {}
    rows = table[~_is_core(table)]
    rows = rows[~rows["group"].fillna("").astype(str).str.startswith("correct=")]
    rows = rows[rows["lift_ci_low"] > lift_threshold]
    # A slice whose interval collapsed to one value (the region occurs in a single image of it: every
    # resample that has it repeats that image) carries no evidence of its own; it must not name the flag's
    # class (a corner tag on 90% of squares and one circle read "for class circle", lift [11.02, 11.02]).
    whole = rows["class"].isna() & rows["group"].isna()
    rows = rows[whole | (rows["lift_ci_high"] > rows["lift_ci_low"])]
    out: dict[str, list[dict]] = {}
    for row in rows.sort_values("lift_ci_low", ascending=False).to_dict("records"):
        row["class"] = None if _missing(row["class"]) else row["class"]
        row["group"] = None if _missing(row["group"]) else row["group"]
        out.setdefault(row["region"], []).append(row)
    return out


def _overall_rows(table: pd.DataFrame, region: str) -> list[dict]:
    rows = table[(table["region"] == region) & table["class"].isna() & table["group"].isna()]
    return [{**row, "class": None, "group": None} for row in rows.to_dict("records")]


def _is_core(table: pd.DataFrame) -> pd.Series:
    roles = effective_roles(table["region"].tolist(), table["role"].tolist())
    return pd.Series([r == "core" for r in roles], index=table.index)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def report_findings(images: pd.DataFrame, regions: pd.DataFrame, evidence: dict | None = None, *,
                    maps=None, n_boot: int = 1000, seed: int = 0, lift_threshold: float = POLICY.lift_threshold,
                    alpha: float = POLICY.alpha, min_effect: float = POLICY.min_effect) -> dict:
    """Everything a run's report adds on top of its identity, in report-JSON shape (one call for report.py).

    Keys: regions (rows with CIs), accuracy (per slice, Wilson), flags, attention, subgroups, sanity,
    faithfulness, second_explainer, interventions, and clusters when `maps` (the run store, read shard by shard, or (ids, maps)) is given.
    """
    from analysis.stats.aggregate import accuracy_table, region_table, table_records
    from analysis.stats.artifacts import artifact_summary, has_artifacts, without_artifacts

    evidence = evidence or {}
    table = region_table(images, regions, n_boot=n_boot, seed=seed)
    accuracy = accuracy_table(images)
    artifact_free = None
    if has_artifacts(images, regions):  # register-like tokens: attention must hold without them
        artifact_free = region_table(images, without_artifacts(images, regions), n_boot=n_boot, seed=seed)
    options = {"lift_threshold": lift_threshold, "alpha": alpha, "min_effect": min_effect,
               "artifact_free": artifact_free}
    out = {
        "regions": table_records(table),
        "accuracy": [{k: (None if _missing(v) else v) for k, v in row.items()}
                     for row in accuracy.to_dict("records")],
        "flags": shortcut_flags(table, evidence, **options),
        "attention": attention_findings(table, evidence, **options),
        "subgroups": subgroup_findings(table, accuracy),
        "sanity": evidence.get("sanity") or {},
        "faithfulness": evidence.get("faithfulness") or {},
        "second_explainer": evidence.get("second_explainer") or {},
        "interventions": evidence.get("interventions") or {},
        "discovered_regions": evidence.get("discovered_regions") or [],
        "sequential": evidence.get("sequential") or {},
    }
    if artifact_free is not None:
        out["artifacts"] = artifact_summary(images, regions, table, artifact_free)
    if evidence.get("properties"):  # image properties as cues (`analysis.evidence.property_stage`)
        out["properties"] = evidence["properties"]
        out["flags"] += property_findings(evidence["properties"])
    out["power"] = power_statements(table, evidence, out["flags"])
    out["multiple_testing"] = {"method": "Holm", "alpha": alpha, "family": "regions x (fill, swap) x (whole "
                               "sample, classes, subgroups)", "n_tests": sum(
                                   len(_tests_of(iv)) for iv in out["interventions"].values())}
    if maps is not None and (hasattr(maps, "iter_maps") or len(maps[0])):  # a run store, or (ids, maps)
        from analysis.stats.clustering import spray_clusters

        clusters = spray_clusters(images, maps, regions, seed=seed)
        out["clusters"] = clusters  # member image_ids included: the gallery filters by cluster without recomputing
    return out
