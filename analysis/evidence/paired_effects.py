"""One target's effect under a region intervention against its equal-area control, paired per image.

Shared by the per-target evidence of taggers (`tag_audit`: a tag's probability, the tag flipping) and
segmenters (`segment_audit`: a class's pixel accuracy, the class losing its pixels). Per image: a score
before, after the region fill and after the control fill, and whether the outcome changed under each.
Reported: mean drops with bootstrap 95% CIs (the excess drop is region minus control, per image, so its CI
is paired), change rates with Wilson intervals, and the exact one-sided McNemar test on the discordant
pairs (the region changed the outcome and the control did not, or the reverse).
"""
from __future__ import annotations

import numpy as np

from analysis.evidence.detection_audit import bootstrap_ci
from analysis.evidence.intervention import mcnemar_exact_greater
from analysis.stats.aggregate import wilson_interval


def paired_effect(before, after, control, changed, changed_control, *, seed: int = 0, n_boot: int = 1000) -> dict:
    """JSON-able effects for n images (all arrays (n,)); `changed*` bool: the outcome flipped."""
    before, after, control = (np.asarray(v, np.float64) for v in (before, after, control))
    changed, changed_control = np.asarray(changed, bool), np.asarray(changed_control, bool)
    n = int(before.size)
    if n == 0:
        return {"n": 0, "drop": None, "control_drop": None, "excess_drop": None, "p_value": None}
    drop, control_drop = before - after, before - control
    b, c = int((changed & ~changed_control).sum()), int((~changed & changed_control).sum())
    return {"n": n, "before": float(before.mean()), "after": float(after.mean()),
            "drop": float(drop.mean()), "drop_ci": bootstrap_ci(drop, seed, n_boot),
            "control_drop": float(control_drop.mean()), "control_drop_ci": bootstrap_ci(control_drop, seed, n_boot),
            "excess_drop": float((drop - control_drop).mean()),
            "excess_drop_ci": bootstrap_ci(drop - control_drop, seed, n_boot),
            "flip_rate": float(changed.mean()), "flip_rate_ci": list(wilson_interval(int(changed.sum()), n)),
            "control_flip_rate": float(changed_control.mean()), "discordant": [b, c],
            "p_value": mcnemar_exact_greater(b, c),
            "test": "exact one-sided McNemar on flips (region vs equal-area control)"}
