"""Fill and swap interventions on an evidence sample that grows until each region's effect is decided.

Per chunk of images, the base predictions are the main pass's (or one forward); then, per region still undecided, its four
variants (fill, fill control, swap, swap control: `analysis.evidence.intervention`) go through the model
as one stream of batches. After each chunk (a look of the sequential design, `analysis.stats.sequential`)
every effect net of its control gets a simultaneous interval at alpha / K: fill flips, fill accuracy
drop, swap flips towards the donor's class, swap accuracy drop. A region is *shown* once one interval
of `DECISION_METRICS` lies above `threshold`, *excluded* once all of them lie below it; it then leaves the
stream (its forwards stop),
and sampling ends when no region is undecided or at the cap. Regions decided early cost only their chunks.

Each region's result keeps the fill effects at the top level (the keys the report had before), adds
`swap` (with `towards_donor_rate`), `sequential` (n used, looks, decision, the bounds that a "no flag"
statement quotes) and `tests`: every exact test (fill / swap x whole sample, class, subgroup) with its
sequentially valid p-value, the family that `analysis.report.flags` corrects with Holm. The fill's test
and decision count predictions made *wrong* (net accuracy drop), not flips in any direction: a flip is
sensitivity to the fill's distribution shift, a lost correct answer is reliance (see
`analysis.evidence.intervention`); fill flips stay in the bounds and the report as a description.
"""
from __future__ import annotations

import numpy as np
import torch

from analysis.evidence.intervention import (MAX_CONTROL_OVERLAP, control_masks, effects, fill_region,
                                            mcnemar_exact_greater, predict, swap_donors, swap_effects,
                                            swap_variants, towards_donor)
from analysis.stats.sequential import BOUNDS, DESIGN, decision, looks, net_rate_bounds, sequential_p

METRICS = ("fill_flips", "fill_accuracy_drop", "swap_towards_donor", "swap_accuracy_drop")
DECISION_METRICS = ("fill_accuracy_drop", "swap_towards_donor", "swap_accuracy_drop")


class Trial:
    """Per-image outcomes of one region, accumulated over the chunks it took part in."""

    def __init__(self, name: str):
        self.name = name
        self.rows: list[np.ndarray] = []
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in (
            "fill_keep", "fill", "fill_control", "swap_keep", "swap", "swap_control", "donor_label")}
        self.overlap: list[np.ndarray] = []
        self.control_kind = "equal-area"
        self.decision, self.bounds, self.looks = "undecided", {}, 0

    def add(self, rows: np.ndarray, values: dict[str, np.ndarray], overlap: np.ndarray) -> None:
        self.rows.append(rows)
        for key, value in values.items():
            self.parts[key].append(value)
        self.overlap.append(overlap)
        self.looks += 1

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.parts.items()}
        out["rows"] = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=int)
        return out


def run_trials(model, inputs: torch.Tensor, labels: np.ndarray, regions: list[dict], *,
               core: torch.Tensor | None = None, fill: str = "mean", chunk: int = 100, alpha: float = 0.05,
               threshold: float = 0.05, seed: int = 0, batch_size: int = 64,
               base_predictions: np.ndarray | None = None, on_look=None) -> tuple[list[Trial], np.ndarray, dict]:
    """Run the sequential sample. regions: [{name, masks (B, H, W) bool}] over the rows of `inputs`.
    `base_predictions`: the clean predictions of these rows when the main pass already made them (the
    run's `pred_idx`), so a look costs only its variants' forwards; None: one clean forward per look.
    `on_look(look, planned looks, images so far, regions undecided)` is told when each look starts.

    Returns (trials, base predictions for the rows forwarded, design dict)."""
    cap = len(inputs)
    n_looks = looks(cap, chunk)
    alpha_look = alpha / n_looks
    mean_colour = inputs.mean(dim=(0, 2, 3)) if cap else None
    trials = [Trial(r["name"]) for r in regions]
    base = np.full(cap, -1, dtype=np.int64)
    used = 0
    for look in range(n_looks):
        active = [j for j, t in enumerate(trials) if t.decision == "undecided"]
        if not active:
            break
        r0, r1 = look * chunk, min(cap, (look + 1) * chunk)
        if on_look is not None:
            on_look(look + 1, n_looks, r1, len(active))
        x = inputs[r0:r1]
        base[r0:r1] = (predict(model, x, batch_size)[0].numpy() if base_predictions is None
                       else np.asarray(base_predictions[r0:r1], dtype=np.int64))
        used = r1
        for j in active:
            masks = regions[j]["masks"][r0:r1].bool()
            values, overlap, kind = _variant_predictions(model, x, masks, labels[r0:r1],
                                                         core=None if core is None else core[r0:r1], fill=fill,
                                                         mean_colour=mean_colour, seed=seed + look,
                                                         batch_size=batch_size)
            trials[j].add(np.arange(r0, r1), values, overlap)
            trials[j].control_kind = kind if look == 0 else trials[j].control_kind
            _decide(trials[j], base, labels, alpha_look, threshold)
    design = {"design": DESIGN, "bounds": BOUNDS, "chunk": chunk, "cap": cap, "planned_looks": n_looks,
              "alpha": alpha, "alpha_per_look": alpha_look, "threshold": threshold, "n_used": used}
    return trials, base, design


def _variant_predictions(model, x, masks, labels, *, core, fill, mean_colour, seed, batch_size):
    """Predictions under the four variants, from one stream of forwards."""
    controls, overlap = control_masks(masks, seed=seed)
    keep = masks.flatten(1).any(1)
    kind = "equal-area"
    if core is not None and float(overlap[keep].mean() if keep.any() else 0) > MAX_CONTROL_OVERLAP:
        controls, kind = core.bool() & ~masks, "core"
    donors = swap_donors(labels, keep.numpy(), seed=seed)
    swapped, swapped_control, swap_keep = swap_variants(x, masks, donors, seed=seed, keep_out=core)
    stream = torch.cat([fill_region(x, masks, fill, mean_colour=mean_colour),
                        fill_region(x, controls, fill, mean_colour=mean_colour), swapped, swapped_control])
    preds = predict(model, stream, batch_size)[0].numpy().reshape(4, len(x))
    donor_label = np.where(donors >= 0, labels[np.maximum(donors, 0)], -1)
    values = {"fill_keep": keep.numpy(), "fill": preds[0], "fill_control": preds[1],
              "swap_keep": swap_keep.numpy(), "swap": preds[2], "swap_control": preds[3],
              "donor_label": donor_label}
    return values, overlap.numpy(), kind


def _counts(a: dict, base: np.ndarray, labels: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """(k region, k control, n) for each metric: the net effect is (k region - k control) / n."""
    rows = a["rows"]
    b, y = base[rows], labels[rows]
    f, s = a["fill_keep"].astype(bool), a["swap_keep"].astype(bool)
    out = {
        "fill_flips": (int((a["fill"][f] != b[f]).sum()), int((a["fill_control"][f] != b[f]).sum()), int(f.sum())),
        "fill_accuracy_drop": (int((a["fill_control"][f] == y[f]).sum()), int((a["fill"][f] == y[f]).sum()),
                               int(f.sum())),
        "swap_towards_donor": (int(towards_donor(b[s], a["swap"][s], a["donor_label"][s]).sum()),
                               int(towards_donor(b[s], a["swap_control"][s], a["donor_label"][s]).sum()), int(s.sum())),
        "swap_accuracy_drop": (int((a["swap_control"][s] == y[s]).sum()), int((a["swap"][s] == y[s]).sum()),
                               int(s.sum())),
    }
    return out


def _decide(trial: Trial, base, labels, alpha_look, threshold) -> None:
    counts = _counts(trial.arrays(), base, labels)
    trial.bounds = {m: list(net_rate_bounds(kr, kc, n, alpha_look)) if n else [-1.0, 1.0]
                    for m, (kr, kc, n) in counts.items()}
    states = [decision(trial.bounds[m], threshold) for m in DECISION_METRICS]
    trial.decision = "shown" if "shown" in states else "excluded" if all(s == "excluded" for s in states) else "undecided"


def summarise(trial: Trial, base: np.ndarray, labels: np.ndarray, slices: dict[str, np.ndarray], design: dict, *,
              fill: str = "mean", n_boot: int = 1000, seed: int = 0) -> dict:
    """The region's JSON-able result: fill effects at the top level, `swap`, `sequential`, `tests`."""
    a = trial.arrays()
    rows = a["rows"]
    b, y = base[rows], labels[rows]
    f, s = a["fill_keep"].astype(bool), a["swap_keep"].astype(bool)
    out = effects(b[f], a["fill"][f], a["fill_control"][f], y[f], n_boot=n_boot, seed=seed)
    k = design["planned_looks"]
    out.update({"fill": fill, "n_without_region": int((~f).sum()), "control_kind": trial.control_kind,
                "control_overlap": float(np.concatenate(trial.overlap)[f].mean()) if f.any() else None,
                "p_value_flips": sequential_p(out["p_value"], k), "discordant_flips": out.get("discordant"),
                "discordant": out.get("accuracy_discordant"), "p_value_raw": out.get("p_value_accuracy"),
                "p_value": sequential_p(out.get("p_value_accuracy"), k),
                "test": "exact one-sided McNemar on correct predictions lost (region fill vs control fill)"})
    swap = swap_effects(b[s], a["swap"][s], a["swap_control"][s], y[s], a["donor_label"][s], n_boot=n_boot, seed=seed)
    swap.update({"n_without_donor": int((~s).sum()), "p_value_raw": swap["p_value"],
                 "p_value": sequential_p(swap["p_value"], k)})
    out["swap"] = swap
    out["sequential"] = {"n": int(len(rows)), "looks": trial.looks, "planned_looks": k,
                         "decision": trial.decision, "threshold": design["threshold"],
                         "level": 1 - design["alpha"], "bounds": trial.bounds}
    tests = []
    for name, where in {"all": np.ones(len(labels), bool), **slices}.items():
        inside = where[rows]
        cls, group = (name[len("class="):], None) if name.startswith("class=") else (None, None if name == "all" else name)
        for variant, keep, region_pred, control_pred, measure in (
                ("fill", f, a["fill"], a["fill_control"], "wrong"),
                ("swap", s, a["swap"], a["swap_control"], "towards_donor")):
            sel = keep & inside
            if not sel.any():
                continue
            if measure == "wrong":
                hit_r, hit_c = region_pred[sel] != y[sel], control_pred[sel] != y[sel]
            else:
                hit_r = towards_donor(b[sel], region_pred[sel], a["donor_label"][sel])
                hit_c = towards_donor(b[sel], control_pred[sel], a["donor_label"][sel])
            p = mcnemar_exact_greater(int((hit_r & ~hit_c).sum()), int((~hit_r & hit_c).sum()))
            tests.append({"variant": variant, "class": cls, "group": group, "n": int(sel.sum()),
                          "effect": float(hit_r.mean() - hit_c.mean()), "p_value": sequential_p(p, k)})
    out["tests"] = tests
    return out
