"""The model-free dataset screen: does an image property tell the classes apart?

Why: a property that separates one class from the rest (class h's images blurrier, brighter, warmer) is a
shortcut any model can learn, and a team can see it before a model is run (as Deepchecks' property-label
correlation check does). Per (property, class), one-vs-rest:

- effect: the AUC, P(property of a class image > property of another class's image), ties counted half
  (scikit-learn's `roc_auc_score`); reported as a *separation* max(AUC, 1 - AUC) with its direction, so the
  sentence reads "class h images are blurrier (AUC 0.97 [0.95, 0.99])";
- interval: DeLong's variance of the AUC from the placement values (DeLong et al. 1988), normal, clipped to
  [0.5, 1] on the separation scale; it is degenerate (zero width) at perfect separation;
- test: the two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu; its U / (n1 n2) is the AUC), Holm over
  every (property, class) tested in the call (`analysis.stats.sequential.holm`);
- flag: Holm-adjusted p < `alpha` *and* separation >= `min_separation` (0.6 by default): with thousands of
  images a trivial difference is significant, and the screen names cues a model could lean on.

Properties with fewer than two finite values in a class or in the rest, or one value overall, are listed in
`not_tested` with the reason, never silently dropped.

API: `screen(properties: dict[str, array (n,)], labels: array (n,) of class indices, classes: list[str], *,
alpha=0.01, min_separation=0.6, level=0.95) -> PropertyScreen`; `PropertyScreen.associations` (one
`PropertyAssociation` per tested (property, class), sorted by p-value), `.flagged`, `.not_tested`
{property: reason}, `.alpha`, `.correction` ("Holm"), `.n_tests`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.stats.image_properties import describe
from analysis.stats.sequential import holm
from analysis.stats.p_values import p_equals

TEST = "two-sided Mann-Whitney U (one class vs the rest), DeLong interval for the AUC"


@dataclass(frozen=True)
class PropertyAssociation:
    """One property against one class (one-vs-rest)."""

    property: str
    class_name: str
    auc: float  # P(class image's value > another class's image's value), ties half
    separation: float  # max(auc, 1 - auc)
    interval: tuple[float, float]  # DeLong interval of the separation, at `level`
    direction: str  # "higher" | "lower": the class's values against the rest's
    p_value: float  # two-sided Mann-Whitney U, raw
    p_value_holm: float  # Holm over the screen's tests
    n_class: int
    n_rest: int
    median_class: float
    median_rest: float
    flagged: bool
    test: str = TEST
    sentence: str = ""


@dataclass(frozen=True)
class PropertyScreen:
    associations: list[PropertyAssociation]
    not_tested: dict[str, str] = field(default_factory=dict)
    alpha: float = 0.01
    min_separation: float = 0.6
    correction: str = "Holm"

    @property
    def n_tests(self) -> int:
        return len(self.associations)

    @property
    def flagged(self) -> list[PropertyAssociation]:
        return [a for a in self.associations if a.flagged]

    def find(self, prop: str, class_name: str) -> PropertyAssociation | None:
        return next((a for a in self.associations if a.property == prop and a.class_name == class_name), None)


def delong_variance(positives: np.ndarray, negatives: np.ndarray) -> float:
    """DeLong's variance of the AUC of `positives` over `negatives` (placement values via midranks)."""
    from scipy.stats import rankdata

    m, n = len(positives), len(negatives)
    combined = rankdata(np.concatenate([positives, negatives]))
    v10 = (combined[:m] - rankdata(positives)) / n  # per positive: negatives below it (ties half)
    v01 = 1.0 - (combined[m:] - rankdata(negatives)) / m  # per negative: positives above it
    return float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n) if m > 1 and n > 1 else float("nan")


def associate(values: np.ndarray, is_class: np.ndarray, *, level: float = 0.95) -> tuple[float, tuple[float, float], float]:
    """(AUC, its DeLong interval, two-sided Mann-Whitney p) of `values` for `is_class` against the rest."""
    from scipy.stats import mannwhitneyu, norm
    from sklearn.metrics import roc_auc_score

    pos, neg = values[is_class], values[~is_class]
    auc = float(roc_auc_score(is_class, values))
    half = float(norm.ppf(0.5 + level / 2)) * np.sqrt(max(delong_variance(pos, neg), 0.0))
    p = float(mannwhitneyu(pos, neg, alternative="two-sided").pvalue)
    return auc, (max(0.0, auc - half), min(1.0, auc + half)), p


def screen(properties: dict[str, np.ndarray], labels, classes: list[str], *, alpha: float = 0.01,
           min_separation: float = 0.6, level: float = 0.95) -> PropertyScreen:
    """Every property against every class present (see the module docstring)."""
    labels = np.asarray(labels)
    rows, not_tested = [], {}
    for name, column in properties.items():
        column = np.asarray(column, dtype=np.float64)
        finite = np.isfinite(column)
        if np.unique(column[finite]).size < 2:
            not_tested[name] = "no finite values" if not finite.any() else "the same value on every image"
            continue
        for k, class_name in enumerate(classes):
            is_class = labels[finite] == k
            if min(is_class.sum(), (~is_class).sum()) < 2:
                not_tested.setdefault(name, f"fewer than 2 images with a value in class {class_name} or the rest")
                continue
            values = column[finite]
            auc, (low, high), p = associate(values, is_class, level=level)
            rows.append((name, class_name, auc, low, high, p, is_class, values))
    adjusted = holm([r[5] for r in rows])
    out = []
    for (name, class_name, auc, low, high, p, is_class, values), p_holm in zip(rows, adjusted):
        higher = auc >= 0.5
        separation = auc if higher else 1.0 - auc
        interval = (max(0.5, low), high) if higher else (max(0.5, 1.0 - high), 1.0 - low)
        flagged = bool(p_holm < alpha and separation >= min_separation)
        shown = f"{separation:.2f}" + ("" if f"{interval[0]:.2f}" == f"{interval[1]:.2f}"  # a one-value interval
                                        else f" [{interval[0]:.2f}, {interval[1]:.2f}]")  # reads as one number
        sentence = (f"class {class_name} images are {describe(name, higher)} than the other classes' "
                    f"(AUC {shown}, {int(is_class.sum())} vs {int((~is_class).sum())} images, Holm p {p_equals(p_holm)})")
        out.append(PropertyAssociation(
            property=name, class_name=class_name, auc=auc, separation=separation, interval=interval,
            direction="higher" if higher else "lower", p_value=p, p_value_holm=float(p_holm),
            n_class=int(is_class.sum()), n_rest=int((~is_class).sum()),
            median_class=float(np.median(values[is_class])), median_rest=float(np.median(values[~is_class])),
            flagged=flagged, sentence=sentence))
    out.sort(key=lambda a: (a.p_value, -a.separation))
    return PropertyScreen(out, not_tested, alpha, min_separation)
