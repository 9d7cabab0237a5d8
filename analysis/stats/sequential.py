"""The evidence sample's stopping rule, its exact bounds, and the multiple-testing correction across tests.

Sequential design: the evidence sample grows in chunks of `chunk` images, up to `cap` (K = ceil(cap /
chunk) planned looks). Each look spends alpha / K of the error budget (Bonferroni alpha-spending: by the
union bound, the chance that *any* look errs is at most alpha, whatever the stopping rule does with the
results). At a look, an effect's interval is the difference of two exact one-sided Clopper-Pearson
bounds, each at alpha / 2K, on the *discordant* cells of the paired outcomes: b / n (the region's variant
hits, its control's does not) minus c / n (the reverse), which is the region's rate minus the control's.
By the union bound it is conservative, never anti-conservative, for small counts and for rates near 0 or 1,
which is where a clean model's rates sit. Bounding the two marginal rates instead (the first version)
is as valid but ignores the pairing: a model whose answers move under any change of the region's size
(a random-weight network: ~50% of answers right under both variants) kept an interval of +-12 points
at n = 100 and +-6 at the 400 cap, so its regions were never decided and every look cost 4 forwards per
image; on the discordant cells the pairs where both variants agree cost no width. Sampling stops
once every effect's interval lies wholly above the decision threshold (shown) or wholly below it
(excluded), or at the cap. A p-value from look k is made valid over all looks by multiplying it by K
(`sequential_p`).

Across regions x classes x subgroups x interventions, p-values are adjusted with Holm's step-down method
(family-wise error <= alpha, valid under any dependence between the tests, which share images). Written
here rather than taken from statsmodels: it is six lines and the only thing statsmodels would bring.
"""
from __future__ import annotations

import math

import numpy as np

DESIGN = "group-sequential, Bonferroni alpha-spending over K planned looks (alpha / K per look)"
BOUNDS = "difference of one-sided Clopper-Pearson bounds on the discordant pairs (alpha / 2K each)"
CORRECTION = "Holm"


def looks(cap: int, chunk: int) -> int:
    """K, the number of planned looks for a sample of at most `cap` images taken `chunk` at a time."""
    return max(1, math.ceil(max(1, cap) / max(1, chunk)))


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided exact bounds (lower, upper) for a binomial rate, each with error `alpha`."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    lower = 0.0 if k <= 0 else float(beta.ppf(alpha, k, n - k + 1))
    upper = 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return lower, upper


def net_rate_bounds(k_region: int, k_control: int, n: int, alpha: float) -> tuple[float, float]:
    """Simultaneous (1 - alpha) interval for rate(region) - rate(control), both over the same n images;
    given the discordant counts (b, c) it bounds the same difference from the paired cells."""
    lo_r, hi_r = clopper_pearson(k_region, n, alpha / 2)
    lo_c, hi_c = clopper_pearson(k_control, n, alpha / 2)
    return lo_r - hi_c, hi_r - lo_c


def decision(interval: tuple[float, float], threshold: float) -> str:
    """'shown' (interval above the threshold), 'excluded' (below it) or 'undecided'."""
    low, high = interval
    if low >= threshold:
        return "shown"
    if high < threshold:
        return "excluded"
    return "undecided"


def sequential_p(p_value: float | None, n_looks: int) -> float | None:
    """A look's p-value made valid over all K planned looks (Bonferroni)."""
    return None if p_value is None else float(min(1.0, p_value * n_looks))


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given; None/NaN stay NaN and count for nothing)."""
    p = np.array([np.nan if v is None else float(v) for v in p_values], dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    if not len(ok):
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out
