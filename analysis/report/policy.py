"""Each task's flag policy, as data: the thresholds every judge of the run reads (zennit's composites are the
model: policy declared once by name, applied by the code that needs it).

Why one table: the classifier's flag rule, the tagger's and segmenter's and the detector's each carried their
own constants (p < 0.01 uncorrected for taggers, a 10-point minimum for detectors, three severity scales), so
"high" and "clear" meant a different test per task. Here a finding's severity is the same function of its net
effect for every task, a clear verdict rules out the same effect size, and a task that needs a different
number says so in this table, where a reader sees it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlagPolicy:
    """`alpha`: the corrected p-value below which a test shows an effect (Holm over the run's tests);
    `min_effect`: the net effect a finding needs (the lower bound of its interval where the rule reads one);
    `lift_threshold`: the lift CI's lower bound that counts as attention (classifiers);
    `exclude`: the net effect a clear verdict rules out (every candidate's upper bound below it);
    `chance_alpha`: the level of the test that the model's answers beat the majority class;
    `agree_lift`: the second explainer's lift above which it agrees that a region draws attention (1: attention
    in proportion to area);
    `sanity_threshold`: the model-randomisation similarity a passing explainer stays below
    (`analysis.evidence.sanity`);
    `faithfulness_margin`: how much better than a random pixel order (probability-AUC) a map must rank pixels."""
    alpha: float = 0.01
    min_effect: float = 0.05
    lift_threshold: float = 1.5
    exclude: float = 0.10
    chance_alpha: float = 0.01
    agree_lift: float = 1.0
    sanity_threshold: float = 0.5
    faithfulness_margin: float = 0.05
    high: float = 0.2
    medium: float = 0.1

    def severity(self, effect: float) -> str:
        """high >= 20 points net, medium >= 10, else low: the same scale for every task."""
        return "high" if effect >= self.high else "medium" if effect >= self.medium else "low"


# Detectors' context fill is judged by the exact McNemar test on lost detections, Holm over the run, as the other
# tasks'; its effect is the excess D-RISE score drop, which must reach 0.10 (a drop of a few hundredths is the
# fill's own noise: the debiased sample detector's boats lose 0.07 to a surround fill of the water, p = 0.001).
POLICIES = {"classification": FlagPolicy(), "multilabel": FlagPolicy(), "segmentation": FlagPolicy(),
            "detection": FlagPolicy(min_effect=0.10)}


def policy_of(task: str) -> FlagPolicy:
    return POLICIES.get(task, POLICIES["classification"])
