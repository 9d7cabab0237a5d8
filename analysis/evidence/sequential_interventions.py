"""Fill and swap interventions on an evidence sample that grows until each region's effect is decided.

At each look, every region still undecided takes the next chunk of rows its pairs can use (the fill pair:
rows holding the region; the swap pair: every row), the base predictions are the main pass's (or one
forward), and the variants it still needs go through the model as one stream of batches: fill and fill
control while the fill's accuracy drop is undecided, swap and swap control while a swap metric is
(`analysis.evidence.intervention`), and with them the same-class swap, the swap's control for "any paste
moves answers" (one more forward per swapped image; reported as `swap.same_class` and the bound
`swap_vs_same_class`, not deciding). After each look (of the sequential design,
`analysis.stats.sequential`) every effect net of its control gets a simultaneous interval at alpha / K
from its discordant pairs (`_counts`): fill flips, fill accuracy drop, swap flips towards the donor's
class, swap accuracy drop. A region is *shown* once one interval of `DECISION_METRICS` lies above
`threshold`, *excluded* once all of them lie below it; a pair whose metrics are all excluded stops early,
and sampling ends when no region is undecided or at the cap. `design["forwards"]` counts what was paid.

Each region's result keeps the fill effects at the top level (the keys the report had before), adds
`swap` (with `towards_donor_rate`), `sequential` (n used by the region and by each pair, looks, decision,
the bounds that a "no flag" statement quotes) and `tests`: every exact test (fill / swap x whole sample, class, subgroup) with its
sequentially valid p-value, the family that `analysis.report.flags` corrects with Holm. The fill's test
and decision count predictions made *wrong* (net accuracy drop), not flips in any direction: a flip is
sensitivity to the fill's distribution shift, a lost correct answer is reliance (see
`analysis.evidence.intervention`); fill flips stay in the bounds and the report as a description.
"""
from __future__ import annotations

import numpy as np
import torch

from analysis.evidence.intervention import (control_masks, effects, fill_region, mcnemar_exact_greater,
                                            overlaps_itself, predict, region_pointing, same_class_effects,
                                            swap_donors, swap_effects, swap_variants, towards_donor)
from analysis.stats.sequential import BOUNDS, DESIGN, decision, looks, net_rate_bounds, sequential_p

METRICS = ("fill_flips", "fill_accuracy_drop", "swap_towards_donor", "swap_accuracy_drop", "swap_vs_same_class")
DECISION_METRICS = ("fill_accuracy_drop", "swap_towards_donor", "swap_accuracy_drop")
GROUPS = {"fill": ("fill_flips", "fill_accuracy_drop"),
          "swap": ("swap_towards_donor", "swap_accuracy_drop", "swap_vs_same_class")}


class Trial:
    """Per-image outcomes of one region, accumulated over the chunks it took part in, per variant pair.

    The fill pair (fill, fill control) and the swap pair (swap, swap control) are sampled while their own
    decision metrics are undecided: a pair whose metrics are all excluded stops paying its 2 forwards per
    image while the other goes on. Each metric is its own sequential test with alpha / K per look, so
    stopping one when it is decided changes nothing about the others' validity."""

    def __init__(self, name: str):
        self.name = name
        self.rows: dict[str, list[np.ndarray]] = {"fill": [], "swap": []}
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in (
            "fill_keep", "fill", "fill_control", "swap_keep", "swap", "swap_control", "donor_label", "same_keep",
            "swap_same")}
        self.overlap: list[np.ndarray] = []
        self.control_kind = self.swap_control_kind = "equal-area"
        self.decision, self.bounds, self.looks = "undecided", {}, 0
        self.states: dict[str, str] = {m: "undecided" for m in DECISION_METRICS}
        self.exhausted: set[str] = set()  # pairs that have used every usable row of the sample

    def active_groups(self) -> list[str]:
        """The variant pairs this region still samples."""
        if self.decision != "undecided":
            return []
        return [g for g, metrics in GROUPS.items()
                if g not in self.exhausted and any(self.states.get(m) == "undecided" for m in metrics)]

    def add(self, rows: dict[str, np.ndarray], values: dict[str, np.ndarray], overlap: np.ndarray | None) -> None:
        for group, group_rows in rows.items():
            self.rows[group].append(group_rows)
        for key, value in values.items():
            self.parts[key].append(value)
        if overlap is not None:
            self.overlap.append(overlap)
        self.looks += 1

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.parts.items()}
        for group, rows in self.rows.items():
            out[f"{group}_rows"] = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
        return out

    def n(self, group: str | None = None) -> int:
        """Images sampled by one pair, or by the region (the larger pair)."""
        sizes = {g: sum(len(r) for r in rows) for g, rows in self.rows.items()}
        return sizes[group] if group else max(sizes.values())


def run_trials(model, inputs: torch.Tensor, labels: np.ndarray, regions: list[dict], *,
               core: torch.Tensor | None = None, fill: str = "mean", chunk: int = 100, alpha: float = 0.05,
               threshold: float = 0.05, seed: int = 0, batch_size: int = 64,
               base_predictions: np.ndarray | None = None, on_look=None) -> tuple[list[Trial], np.ndarray, dict]:
    """Run the sequential sample. regions: [{name, masks (B, H, W) bool}] over the rows of `inputs`.
    `base_predictions`: the clean predictions of these rows when the main pass already made them (the
    run's `pred_idx`), so a look costs only its variants' forwards; None: one clean forward per row used.
    `on_look(look, planned looks, images so far, regions undecided)` is told when each look starts.

    Each pair reads the sample through its own cursor, `chunk` *usable* rows per look: the fill pair only
    rows that hold the region (filling an absent region is the clean image: two forwards that test
    nothing, and a look of 100 rows with 95 usable ones left a clean model's bound at 5.2 points, one look
    short of excluding 5), the swap pair every row (a region absent from the recipient is transplanted from
    the donor). Which rows a pair uses depends on the masks only, never on outcomes, so the looks' bounds
    keep their level. Returns (trials, base predictions for the rows forwarded (-1 elsewhere), design)."""
    cap = len(inputs)
    n_looks = looks(cap, chunk)
    alpha_look = alpha / n_looks
    mean_colour = inputs.mean(dim=(0, 2, 3)) if cap else None
    trials = [Trial(r["name"]) for r in regions]
    # what each image's region points at, by its look against class centroids of the model's answers (the
    # labels when the main pass gave none): the swap's donors are those whose region points at their own class
    targets = labels if base_predictions is None else np.asarray(base_predictions)
    pointing = [region_pointing(inputs, r["masks"].bool(), targets) for r in regions]
    usable = {"fill": [r["masks"].flatten(1).any(1).numpy() for r in regions],
              "swap": [np.ones(cap, dtype=bool)] * len(regions)}
    cursors = {(j, g): 0 for j in range(len(trials)) for g in GROUPS}
    base = np.full(cap, -1, dtype=np.int64)
    used = forwards = 0
    for look in range(n_looks):
        plan = {}
        for j, trial in enumerate(trials):
            for group in trial.active_groups():
                rows, cursors[j, group] = _next_rows(usable[group][j], cursors[j, group], chunk)
                if len(rows):
                    plan.setdefault(j, {})[group] = rows
                else:
                    trial.exhausted.add(group)
        if not plan:
            break
        used = max(used, max(cursors.values()))
        if on_look is not None:
            on_look(look + 1, n_looks, used, len(plan))
        needed = np.unique(np.concatenate([rows for groups in plan.values() for rows in groups.values()]))
        missing = needed[base[needed] < 0]
        if len(missing):
            base[missing] = (predict(model, inputs[missing], batch_size)[0].numpy() if base_predictions is None
                             else np.asarray(base_predictions, dtype=np.int64)[missing])
            forwards += len(missing) if base_predictions is None else 0
        for j, groups in plan.items():
            fixed = None if look == 0 else {"fill": trials[j].control_kind, "swap": trials[j].swap_control_kind}
            values, overlap, kinds = _variant_predictions(model, inputs, regions[j]["masks"], labels, groups,
                                                         core=core, fill=fill, mean_colour=mean_colour,
                                                         pointing=pointing[j],
                                                         seed=seed + look, batch_size=batch_size, fixed_kinds=fixed)
            forwards += 2 * sum(len(rows) for rows in groups.values()) + len(groups.get("swap", ()))
            if look == 0:
                trials[j].control_kind = kinds.get("fill", trials[j].control_kind)
                trials[j].swap_control_kind = kinds.get("swap", trials[j].swap_control_kind)
            trials[j].add(groups, values, overlap)
            _decide(trials[j], base, labels, alpha_look, threshold)
    design = {"design": DESIGN, "bounds": BOUNDS, "chunk": chunk, "cap": cap, "planned_looks": n_looks,
              "alpha": alpha, "alpha_per_look": alpha_look, "threshold": threshold, "n_used": used,
              "forwards": forwards}
    return trials, base, design


def _next_rows(usable: np.ndarray, cursor: int, chunk: int) -> tuple[np.ndarray, int]:
    """The next `chunk` usable rows from `cursor` (fewer at the end of the sample), and the cursor after them."""
    rows = np.flatnonzero(usable[cursor:])[:chunk] + cursor
    return rows, (int(rows[-1]) + 1 if len(rows) == chunk else len(usable))


def _variant_predictions(model, inputs, masks, labels, groups, *, core, fill, mean_colour, seed, batch_size,
                         fixed_kinds=None, pointing=None):
    """Predictions under the variants of `groups` ({"fill": rows, "swap": rows}: fill and its control, swap and
    its control, each on its rows of `inputs`), from one stream of forwards. `fixed_kinds`: each pair's control
    kind as the first look chose it (None at the first look: chosen here from this look's overlaps), so one
    test never mixes two controls. Returns (values, fill control overlap or None, {pair: its control's kind})."""
    stream, values, overlap, kinds = [], {}, None, {}
    if "fill" in groups:
        rows = groups["fill"]
        x, region = inputs[rows], masks[rows].bool()
        controls, overlap_t = control_masks(region, seed=seed)
        keep = region.flatten(1).any(1)
        kinds["fill"] = "equal-area"
        if core is not None and (fixed_kinds["fill"] == "core" if fixed_kinds else overlaps_itself(overlap_t, keep)):
            controls, kinds["fill"] = core[rows].bool() & ~region, "core"
        stream += [fill_region(x, region, fill, mean_colour=mean_colour),
                   fill_region(x, controls, fill, mean_colour=mean_colour)]
        values["fill_keep"], overlap = keep.numpy(), overlap_t.numpy()
    if "swap" in groups:
        rows = groups["swap"]
        x, region = inputs[rows], masks[rows].bool()
        has = region.flatten(1).any(1).numpy()
        aim = {} if pointing is None else {"pointing": pointing[0][rows], "strength": pointing[1][rows]}
        donors = swap_donors(labels[rows], has, seed=seed, **aim)
        swapped, swapped_control, swap_keep, swap_kind = swap_variants(
            x, region, donors, seed=seed, keep_out=None if core is None else core[rows],
            control=fixed_kinds["swap"] if fixed_kinds else None)
        # the same-class swap: the region moved between images of one class, the control for "any paste moves
        # answers" (a cue swapped within its class keeps pointing where it did)
        same = swap_donors(labels[rows], has, seed=seed + 7919, same_class=True, **aim)
        same_swapped, _, same_keep, _ = swap_variants(x, region, same, seed=seed,
                                                      keep_out=None if core is None else core[rows])
        stream += [swapped, swapped_control, same_swapped]
        values["swap_keep"], values["same_keep"] = swap_keep.numpy(), same_keep.numpy()
        kinds["swap"] = swap_kind
        values["donor_label"] = np.where(donors >= 0, labels[rows][np.maximum(donors, 0)], -1)
    preds = predict(model, torch.cat(stream), batch_size)[0].numpy()
    offset = 0
    for group in ("fill", "swap"):
        if group in groups:
            n = len(groups[group])
            values[group], values[f"{group}_control"] = preds[offset:offset + n], preds[offset + n:offset + 2 * n]
            offset += 2 * n
    if "swap" in groups:
        n = len(groups["swap"])
        values["swap_same"] = preds[offset:offset + n]
    return values, overlap, kinds


def _counts(a: dict, base: np.ndarray, labels: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """(b, c, n) for each metric: b images where the region's variant hits (flips, loses the right answer,
    moves to the donor) and its control's does not, c the reverse. The net effect is (b - c) / n, the same
    as (region hits - control hits) / n; bounding it from the discordant cells drops the pairs where both
    variants agree, which a fragile model (one that flips under any change of this size) has in plenty."""
    out = {}
    for group, metrics in GROUPS.items():
        rows = a[f"{group}_rows"]
        b, y, keep = base[rows], labels[rows], a[f"{group}_keep"].astype(bool)
        region, control = a[group], a[f"{group}_control"]
        for metric in metrics:
            sel = keep
            if metric == "swap_vs_same_class":  # answers lost to the cross-class swap, not to the same-class one
                r, c = region != y, a["swap_same"] != y
                sel = keep & a["same_keep"].astype(bool)
            elif metric.endswith("flips"):
                r, c = region != b, control != b
            elif metric.endswith("towards_donor"):
                r, c = towards_donor(b, region, a["donor_label"]), towards_donor(b, control, a["donor_label"])
            else:
                r, c = region != y, control != y
            out[metric] = (int((r & ~c)[sel].sum()), int((~r & c)[sel].sum()), int(sel.sum()))
    return out


def _decide(trial: Trial, base, labels, alpha_look, threshold) -> None:
    """Each metric's bounds at this look; a pair's metrics keep their last decided state once it stops."""
    counts = _counts(trial.arrays(), base, labels)
    sampled = set(trial.active_groups())
    for metric, (kb, kc, n) in counts.items():
        group = next(g for g, ms in GROUPS.items() if metric in ms)
        if group in sampled or metric not in trial.bounds:
            trial.bounds[metric] = list(net_rate_bounds(kb, kc, n, alpha_look)) if n else [-1.0, 1.0]
    for metric in DECISION_METRICS:
        trial.states[metric] = decision(trial.bounds[metric], threshold)
    states = list(trial.states.values())
    trial.decision = "shown" if "shown" in states else "excluded" if all(s == "excluded" for s in states) else "undecided"


def summarise(trial: Trial, base: np.ndarray, labels: np.ndarray, slices: dict[str, np.ndarray], design: dict, *,
              fill: str = "mean", n_boot: int = 1000, seed: int = 0) -> dict:
    """The region's JSON-able result: fill effects at the top level, `swap`, `sequential`, `tests`."""
    a = trial.arrays()
    fill_rows, swap_rows = a["fill_rows"], a["swap_rows"]
    f, s = a["fill_keep"].astype(bool), a["swap_keep"].astype(bool)
    bf, yf = base[fill_rows], labels[fill_rows]
    bs, ys = base[swap_rows], labels[swap_rows]
    out = effects(bf[f], a["fill"][f], a["fill_control"][f], yf[f], n_boot=n_boot, seed=seed)
    k = design["planned_looks"]
    out.update({"fill": fill, "n_without_region": int((~f).sum()), "control_kind": trial.control_kind,
                "control_overlap": float(np.concatenate(trial.overlap)[f].mean()) if f.any() else None,
                "p_value_flips": sequential_p(out["p_value"], k), "discordant_flips": out.get("discordant"),
                "discordant": out.get("accuracy_discordant"), "p_value_raw": out.get("p_value_accuracy"),
                "p_value": sequential_p(out.get("p_value_accuracy"), k),
                "test": "exact one-sided McNemar on correct predictions lost (region fill vs control fill)"})
    swap = swap_effects(bs[s], a["swap"][s], a["swap_control"][s], ys[s], a["donor_label"][s], n_boot=n_boot,
                        seed=seed)
    swap.update({"n_without_donor": int((~s).sum()), "control_kind": trial.swap_control_kind,
                 "p_value_raw": swap["p_value"],
                 "p_value": sequential_p(swap["p_value"], k)})
    both = s & a["same_keep"].astype(bool)
    swap["same_class"] = {**same_class_effects(bs[both], a["swap"][both], a["swap_same"][both], ys[both]),
                          "donors": "same class"}
    swap["same_class"]["p_value"] = sequential_p(swap["same_class"]["p_value"], k)
    out["swap"] = swap
    out["sequential"] = {"n": trial.n(), "n_fill": trial.n("fill"), "n_swap": trial.n("swap"),
                         "looks": trial.looks, "planned_looks": k, "decision": trial.decision,
                         "states": dict(trial.states), "threshold": design["threshold"],
                         "level": 1 - design["alpha"], "bounds": trial.bounds}
    tests = []
    for name, where in {"all": np.ones(len(labels), bool), **slices}.items():
        cls, group = (name[len("class="):], None) if name.startswith("class=") else (None, None if name == "all" else name)
        for variant, rows, keep, region_pred, control_pred, measure in (
                ("fill", fill_rows, f, a["fill"], a["fill_control"], "wrong"),
                ("swap", swap_rows, s, a["swap"], a["swap_control"], "towards_donor")):
            sel = keep & where[rows]
            if not sel.any():
                continue
            b, y = base[rows][sel], labels[rows][sel]
            if measure == "wrong":
                hit_r, hit_c = region_pred[sel] != y, control_pred[sel] != y
            else:
                hit_r = towards_donor(b, region_pred[sel], a["donor_label"][sel])
                hit_c = towards_donor(b, control_pred[sel], a["donor_label"][sel])
            p = mcnemar_exact_greater(int((hit_r & ~hit_c).sum()), int((~hit_r & hit_c).sum()))
            tests.append({"variant": variant, "class": cls, "group": group, "n": int(sel.sum()),
                          "effect": float(hit_r.mean() - hit_c.mean()), "p_value": sequential_p(p, k)})
    out["tests"] = tests
    return out
