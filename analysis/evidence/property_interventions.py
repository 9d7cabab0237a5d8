"""Property interventions: is a class predicted from an image property (blur, brightness, contrast, colour cast)?

Why: the dataset screen (`property_screen`) says a property separates a class; only moving the property
on the model's inputs says the model uses it. For a suspect (property, class, direction), where direction
is the side of the rest the class lies on ("lower" sharpness: the class is blurrier):

- *towards*: the other classes' images are moved in `direction` (blurred); the shortcut's signature is a
  prediction moving *to the suspect class* (it was not that class before), as the region swap's is a flip
  towards the donor's class;
- *away*: the suspect class's images are moved the other way (sharpened); the signature is its correct
  predictions lost. It describes, it does not decide: moving class box's images away from "darker than the
  rest" moves them towards a brighter class h, so when h is predicted from brightness, box loses answers
  too, though nothing sends images to box. The flag rests on the towards test, as the region swap's rests
  on flips towards the donor.

Each move is paired per image with its equal-size control that leaves the property put
(`property_moves`: sign-flipped blocks for brightness, contrast and colour; random-phase detail for
sharpness). The amount: matched to the data when the screen found the association (towards: the class's
median; away: the rest's median), else `property_moves.DEFAULT_STEP` (a model trained on other data can
hold a cue the audit's images do not show).

Statistics, as for regions (`analysis.stats.sequential`): the images are taken in chunks of `chunk` per
test and look, up to all those the test can use (K = ceil(its rows / chunk) planned looks, fixed by the
labels before any outcome; Bonferroni alpha-spending, alpha / K per look);
at each look the net effect (move rate - control rate) gets the simultaneous interval of the difference of
exact Clopper-Pearson bounds on the discordant pairs; a candidate stops sampling once its towards test is
decided against the threshold (shown / excluded). The p-value is the exact one-sided McNemar test on the
discordant pairs (`intervention.mcnemar_exact_greater`), times K (`sequential_p`), then Holm over the
towards tests of the call (the family that flags; the away tests get their own Holm, as description). A
candidate is flagged when its towards test is shown *and* its Holm p-value is below `alpha_holm`.

API
    property_interventions(model, images, labels, classes, *, candidates=None, screen=None, chunk=100,
                           alpha=0.05, alpha_holm=0.01, threshold=0.05, seed=0, batch_size=256,
                           base_predictions=None) -> PropertyInterventions
- `model`: takes [0, 1] images (B, 3, H, W), returns logits (`LoadedModel.module`); `images` the evidence
  sample (N, 3, H, W) in [0, 1]; `labels` (N,) class indices; `classes` their names.
- `candidates`: `Candidate(property, class_idx, direction)`s; default: every moved property x class x
  direction (`all_candidates`), or with `screen` given, its flagged associations plus the rest.
- `PropertyInterventions.results`: one `PropertyEvidence` per candidate (fields below; flagged ones first,
  by net effect, then by p-value), `.flagged`,
  `.design` (dict: design, bounds, chunk, planned_looks (the most any test has), alpha, alpha_holm, threshold,
  n_tests (the towards family), correction, forwards, n_images).
- `PropertyEvidence`: property, class_name, direction, cue ("blur"), amount, amount_source, towards and
  away (`PropertyTest`: variant, moved ("blurring the other classes' images"), n, rate, control_rate,
  effect, interval, discordant, p_value_raw, p_value, p_value_holm, test), decision, shown_by, effect,
  interval, test, p_value, p_value_holm, n (those of the towards test),
  flagged, move_shift / control_shift (median change of the property under the move and the control, on
  the towards images), looks, planned_looks, sentence.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from analysis.evidence import property_moves as moves
from analysis.evidence.intervention import mcnemar_exact_greater, predict
from analysis.stats.image_properties import pixel_properties
from analysis.stats.sequential import BOUNDS, DESIGN, decision, holm, looks, net_rate_bounds, sequential_p

TESTS = {"towards": "exact one-sided McNemar on predictions moved to the class (property move vs equal-size control)",
         "away": "exact one-sided McNemar on the class's correct predictions lost (property move vs equal-size control)"}


@dataclass(frozen=True)
class Candidate:
    property: str  # one of property_moves.MOVED_PROPERTIES
    class_idx: int
    direction: str  # "higher" | "lower": the suspect class's side of the property


@dataclass(frozen=True)
class PropertyTest:
    variant: str  # "towards" | "away"
    moved: str  # "blurring the other classes' images"
    n: int
    rate: float  # towards: share sent to the class; away: share of the class's images predicted wrong
    control_rate: float
    effect: float  # rate - control_rate
    interval: tuple[float, float]  # simultaneous over the looks, at 1 - alpha
    discordant: tuple[int, int]  # (move hits and control does not, the reverse)
    p_value_raw: float
    p_value: float  # made valid over the K looks
    p_value_holm: float
    test: str


@dataclass(frozen=True)
class PropertyEvidence:
    property: str
    class_name: str
    direction: str
    cue: str
    amount: float
    amount_source: str  # "matched to the data" | "default step"
    towards: PropertyTest
    away: PropertyTest | None
    decision: str  # shown | excluded | undecided
    shown_by: str | None  # towards | away
    effect: float
    interval: tuple[float, float]
    test: str
    p_value: float
    p_value_holm: float
    n: int
    flagged: bool
    move_shift: float
    control_shift: float
    looks: int
    planned_looks: int
    sentence: str


@dataclass(frozen=True)
class PropertyInterventions:
    results: list[PropertyEvidence]
    design: dict

    @property
    def flagged(self) -> list[PropertyEvidence]:
        return [r for r in self.results if r.flagged]

    def find(self, prop: str, class_name: str, direction: str | None = None) -> PropertyEvidence | None:
        return next((r for r in self.results if r.property == prop and r.class_name == class_name
                     and direction in (None, r.direction)), None)


def all_candidates(n_classes: int, properties=moves.MOVED_PROPERTIES) -> list[Candidate]:
    return [Candidate(p, k, d) for p in properties for k in range(n_classes) for d in ("lower", "higher")]


class _Arm:
    """One test of one candidate: its rows (in sample order), and per row used the hit under move and control."""

    def __init__(self, variant: str, rows: np.ndarray, key: tuple, chunk: int):
        self.variant, self.rows, self.key, self.cursor = variant, rows, key, 0
        self.planned_looks = looks(len(rows), chunk)  # fixed by the labels, before any outcome
        self.hit, self.hit_control = [], []
        self.state, self.interval = "undecided", (-1.0, 1.0)

    def counts(self) -> tuple[int, int, int, int, int]:
        h = np.concatenate(self.hit) if self.hit else np.zeros(0, bool)
        c = np.concatenate(self.hit_control) if self.hit_control else np.zeros(0, bool)
        return int((h & ~c).sum()), int((~h & c).sum()), int(h.sum()), int(c.sum()), int(h.size)


class _Variants:
    """Predictions of the sample's images under one move (property, direction, amount) and its control, made
    once per image and shared by every test that reads them: blurring an image of class v serves the
    towards test of h and of box alike. The control's seed is fixed per image, whatever the batch."""

    def __init__(self, key: tuple, n: int, seed: int, index: int):
        self.key = key
        self.pred = np.full(n, -1, dtype=np.int64)
        self.pred_control = np.full(n, -1, dtype=np.int64)
        self.seeds = np.random.default_rng([seed, index]).integers(0, 2**31 - 1, size=n)
        self.shift: tuple[float, float] | None = None

    def ensure(self, rows: np.ndarray, model, images: torch.Tensor, batch_size: int) -> int:
        """Predict the rows not yet predicted; returns the forwards spent."""
        todo = rows[self.pred[rows] < 0]
        if not len(todo):
            return 0
        prop, direction, amount = self.key
        x = images[todo]
        moved = moves.move(x, prop, amount, direction)
        controlled = moves.control(x, prop, amount, direction, self.seeds[todo])
        if self.shift is None:
            self.shift = (moves.property_shift(x, moved, prop), moves.property_shift(x, controlled, prop))
        preds = predict(model, torch.cat([moved, controlled]), batch_size)[0].numpy()
        self.pred[todo], self.pred_control[todo] = preds[:len(todo)], preds[len(todo):]
        return 2 * len(todo)


def property_interventions(model, images: torch.Tensor, labels, classes: list[str], *, candidates=None,
                           screen=None, chunk: int = 100, alpha: float = 0.05, alpha_holm: float = 0.01,
                           threshold: float = 0.05, seed: int = 0, batch_size: int = 256,
                           base_predictions=None) -> PropertyInterventions:
    """Run the sequential property interventions (see the module docstring)."""
    images = torch.as_tensor(images).float().cpu()
    labels = np.asarray(labels, dtype=np.int64)
    if candidates is None:
        candidates = all_candidates(len(classes))
    n_looks = looks(len(images), chunk)
    base = (np.asarray(base_predictions, dtype=np.int64) if base_predictions is not None
            else predict(model, images, batch_size)[0].numpy())
    forwards = 0 if base_predictions is not None else len(images)
    variants: dict[tuple, _Variants] = {}
    plans, matched = [], {}
    for cand in candidates:
        amount_towards, amount_away, source = _amounts(cand, images, labels, classes, screen, matched)
        keys = {"towards": (cand.property, cand.direction, amount_towards),
                "away": (cand.property, moves.opposite(cand.direction), amount_away)}
        for key in keys.values():
            variants.setdefault(key, _Variants(key, len(images), seed, len(variants)))
        arms = {"towards": _Arm("towards", np.flatnonzero(labels != cand.class_idx), keys["towards"], chunk),
                "away": _Arm("away", np.flatnonzero(labels == cand.class_idx), keys["away"], chunk)}
        plans.append({"cand": cand, "amounts": {"towards": amount_towards, "away": amount_away}, "source": source,
                      "arms": arms, "looks": 0, "decision": "undecided"})
    for _ in range(n_looks):
        active = [p for p in plans if p["decision"] == "undecided"
                  and any(a.cursor < len(a.rows) for a in p["arms"].values())]
        if not active:
            break
        for plan in active:
            k = plan["cand"].class_idx
            for arm in plan["arms"].values():
                if arm.state != "undecided" or arm.cursor >= len(arm.rows):
                    continue
                rows = arm.rows[arm.cursor:arm.cursor + chunk]
                arm.cursor += len(rows)
                variant = variants[arm.key]
                forwards += variant.ensure(rows, model, images, batch_size)
                pm, pc = variant.pred[rows], variant.pred_control[rows]
                if arm.variant == "towards":
                    arm.hit.append((pm == k) & (base[rows] != k))
                    arm.hit_control.append((pc == k) & (base[rows] != k))
                else:
                    arm.hit.append(pm != labels[rows])
                    arm.hit_control.append(pc != labels[rows])
                b, c, _, _, n = arm.counts()
                arm.interval = net_rate_bounds(b, c, n, alpha / arm.planned_looks) if n else (-1.0, 1.0)
                arm.state = decision(arm.interval, threshold)
            plan["looks"] += 1
            plan["decision"] = plan["arms"]["towards"].state
    by_plan: dict[int, dict[str, PropertyTest]] = {}
    n_tests = 0
    for variant in ("towards", "away"):  # Holm within each family: towards decides, away describes
        tests = [(i, _test(plan["arms"][variant], cand_verb(plan["cand"], variant, classes)))
                 for i, plan in enumerate(plans) if plan["arms"][variant].counts()[4]]
        n_tests = n_tests or len(tests)
        for (i, t), p_holm in zip(tests, holm([t.p_value for _, t in tests])):
            by_plan.setdefault(i, {})[variant] = replace(t, p_value_holm=float(p_holm))
    results = [_evidence(plan, by_plan.get(i, {}), variants[plan["arms"]["towards"].key].shift, classes, alpha_holm)
               for i, plan in enumerate(plans)]
    # flagged first, largest net effect first (p-values saturate for strong cues), then the rest by p-value
    results.sort(key=lambda r: (not r.flagged, -r.effect if r.flagged else r.p_value_holm, r.p_value_holm))
    design = {"design": DESIGN, "bounds": BOUNDS, "chunk": chunk, "planned_looks": n_looks,
              "planned_looks_per_test": "ceil(the test's rows / chunk)", "alpha": alpha, "alpha_holm": alpha_holm, "threshold": threshold,
              "n_tests": n_tests, "correction": "Holm", "forwards": forwards, "n_images": len(images)}
    return PropertyInterventions(results, design)


def _amounts(cand: Candidate, images, labels, classes, screen, matched: dict | None = None) -> tuple[float, float, str]:
    """(towards amount, away amount, source): matched to the medians when the screen flagged this association.
    `matched` keeps each bisection by (rows, property, direction, target): with two classes, class h's towards
    move is class v's away move (the same images to the same median), and a bisection costs 14 moves."""
    default = moves.DEFAULT_STEP[cand.property]
    assoc = None if screen is None else screen.find(cand.property, classes[cand.class_idx])
    if assoc is None or not assoc.flagged or assoc.direction != cand.direction:
        return default, default, "default step"
    matched = {} if matched is None else matched

    def match(rows: np.ndarray, direction: str, target: float) -> float:
        key = (rows.tobytes(), cand.property, direction, float(target))
        if key not in matched:
            # only the images the bisection moves: indexing all of a class's rows copied half the sample
            matched[key] = moves.match_amount(images[rows[:moves.MATCH_IMAGES]], cand.property, direction, target)
        return matched[key]

    towards = match(np.flatnonzero(labels != cand.class_idx), cand.direction, assoc.median_class)
    away = match(np.flatnonzero(labels == cand.class_idx), moves.opposite(cand.direction), assoc.median_rest)
    return (round(towards, 3) or default), (round(away, 3) or default), "matched to the data"


def cand_verb(cand: Candidate, variant: str, classes: list[str]) -> str:
    """'blurring the other classes' images' / 'sharpening class h's images'."""
    if variant == "towards":
        return f"{moves.VERBS[cand.property, cand.direction]} the other classes' images"
    return f"{moves.VERBS[cand.property, moves.opposite(cand.direction)]} class {classes[cand.class_idx]}'s images"


def _test(arm: _Arm, moved: str) -> PropertyTest:
    b, c, hits, hits_control, n = arm.counts()
    p_raw = mcnemar_exact_greater(b, c)
    return PropertyTest(variant=arm.variant, moved=moved, n=n, rate=hits / n, control_rate=hits_control / n,
                        effect=(hits - hits_control) / n, interval=tuple(float(v) for v in arm.interval),
                        discordant=(b, c), p_value_raw=p_raw, p_value=sequential_p(p_raw, arm.planned_looks),
                        p_value_holm=float("nan"), test=TESTS[arm.variant])


def _evidence(plan: dict, tests: dict[str, PropertyTest], shift, classes, alpha_holm: float) -> PropertyEvidence:
    cand = plan["cand"]
    towards, away = tests.get("towards"), tests.get("away")
    shown = [towards] if towards is not None and plan["arms"]["towards"].state == "shown" else []
    lead = towards or away
    flagged = bool(shown) and lead.p_value_holm < alpha_holm
    move_shift, control_shift = shift or (0.0, 0.0)
    evidence = PropertyEvidence(
        property=cand.property, class_name=classes[cand.class_idx], direction=cand.direction,
        cue=moves.CUES[cand.property, cand.direction], amount=float(plan["amounts"]["towards"]),
        amount_source=plan["source"], towards=towards, away=away, decision=plan["decision"],
        shown_by=lead.variant if shown else None, effect=lead.effect if lead else 0.0,
        interval=lead.interval if lead else (-1.0, 1.0), test=lead.test if lead else "",
        p_value=lead.p_value if lead else 1.0, p_value_holm=lead.p_value_holm if lead else 1.0,
        n=lead.n if lead else 0, flagged=flagged, move_shift=move_shift, control_shift=control_shift,
        looks=plan["looks"], planned_looks=plan["arms"]["towards"].planned_looks, sentence="")
    return replace(evidence, sentence=sentence(evidence))


def sentence(e: PropertyEvidence) -> str:
    """The finding in words: what moving the property did, against the control."""
    def said(t: PropertyTest) -> str:
        if t.variant == "towards":
            return (f"{t.moved} sends {t.rate:.0%} of them to class {e.class_name} (control {t.control_rate:.0%}, "
                    f"n = {t.n})")
        return (f"{t.moved} costs {100 * t.effect:.0f} points of its accuracy against the control "
                f"({t.rate:.0%} wrong, control {t.control_rate:.0%}, n = {t.n})")

    parts = [said(t) for t in (e.towards, e.away) if t is not None]
    if e.flagged:
        return f"class {e.class_name} is predicted from {e.cue}: " + "; ".join(parts) + "."
    bound = max((t.interval[1] for t in (e.towards, e.away) if t is not None), default=1.0)
    head = {"excluded": f"no evidence that class {e.class_name} is predicted from {e.cue}",
            "undecided": f"undecided whether class {e.class_name} is predicted from {e.cue}",
            "shown": f"class {e.class_name} may be predicted from {e.cue} (not significant after Holm)"}[e.decision]
    return (f"{head}: " + "; ".join(parts)
            + f"; the net effect is at most {max(0.0, 100 * bound):.0f} points (simultaneous upper bound).")
