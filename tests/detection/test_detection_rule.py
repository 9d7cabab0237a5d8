"""The detector's flag rule on hand-made intervention rows: the exact McNemar test on lost detections, Holm over
the run's (class, region) tests, and the power line of a (class, region) that is not flagged."""
import pandas as pd
import pytest
from scipy.stats import binomtest

from analysis.evidence.detection_audit import holm_corrected, power_lines, summarize_interventions, table_flags
from analysis.stats.sequential import net_rate_bounds


def _effects():
    rows = []
    for k in range(40):  # boats: the water fill loses 30 of 40, the control fill loses 2 (one of them also lost to the fill)
        rows.append({"image": k, "det": 0, "class": "boat", "region": "water", "score": 0.9,
                     "score_fill": 0.1 if k < 30 else 0.88, "score_control": 0.3 if k in (0, 35) else 0.89,
                     "found_fill": k >= 30, "found_control": k not in (0, 35)})
        rows.append({"image": k, "det": 0, "class": "boat", "region": "road", "score": 0.9, "score_fill": 0.88,
                     "score_control": 0.89, "found_fill": k != 3, "found_control": k != 4})
    return pd.DataFrame(rows)


def test_lost_detections_give_the_exact_test_and_the_net_lost_share():
    table = summarize_interventions(_effects(), n_boot=200)
    water = table[table["region"] == "water"].iloc[0]
    assert water["discordant"] == [29, 1]  # lost to the fill only: 1..29; to the control only: 35
    assert water["p_value"] == pytest.approx(binomtest(29, 30, 0.5, alternative="greater").pvalue, rel=1e-12)
    assert water["lost_rate"] == 0.75 and water["control_lost_rate"] == 0.05
    assert list(water["lost_excess_bounds"]) == pytest.approx(list(net_rate_bounds(30, 2, 40, 0.05)))
    road = table[table["region"] == "road"].iloc[0]
    assert road["discordant"] == [1, 1] and road["p_value"] == 0.75


def test_the_flag_needs_the_holm_corrected_p_and_the_excess_score_drop():
    table = summarize_interventions(_effects(), n_boot=200)
    summary = pd.DataFrame([{"class": "boat", "mass_outside": 0.3, "mass.water": 0.2, "mass.road": 0.1}])
    corrected = holm_corrected(table)
    flags = table_flags(summary, table)
    assert [(f["class"], f["region"]) for f in flags] == [("boat", "water")]  # attention inside the box: no gate
    flag = flags[0]
    assert flag["p_value_holm"] == corrected[list(table["region"]).index("water")] == pytest.approx(2 * flag["p_value"])
    assert flag["n_tests"] == 2 and flag["attention_outside"] is False
    assert table_flags(summary, table, alpha=flag["p_value_holm"]) == []  # at a stricter level: no flag
    power = power_lines(table, flags)
    assert [(p["class"], p["region"]) for p in power] == [("boat", "road")]
    upper = net_rate_bounds(1, 1, 40, 0.05)[1]
    assert power[0]["lost_excess_upper"] == pytest.approx(upper)
    assert power[0]["text"].startswith(f"filling `road` could still remove at most {upper:.0%} of the boat detections")
