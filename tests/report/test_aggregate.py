import numpy as np
import pandas as pd
import pytest

from analysis.stats.aggregate import accuracy_table, region_table, slice_stats, table_records, wilson_interval
from tests.report.synthetic import planted_frames


def _row(table, region, cls=None, group=None):
    sel = table[(table.region == region)]
    sel = sel[sel["class"].isna()] if cls is None else sel[sel["class"] == cls]
    sel = sel[sel["group"].isna()] if group is None else sel[sel["group"] == group]
    assert len(sel) == 1
    return sel.iloc[0]


def test_lift_is_exact_ratio_of_means_on_planted_frames():
    images, regions = planted_frames(n=100, patch_area=0.05)
    table = region_table(images, regions, n_boot=200)
    row = _row(table, "patch")
    expected_mass = regions[regions.region == "patch"].mass.mean()
    assert row.mass_mean == pytest.approx(expected_mass, abs=1e-12)
    assert row.area_mean == pytest.approx(0.05)
    assert row.lift == pytest.approx(expected_mass / 0.05, rel=1e-12)
    assert pd.isna(row.role) and _row(table, "object").role == "core"
    assert row.n == 100


def test_slices_cover_classes_subgroups_and_correctness():
    images, regions = planted_frames(n=60)
    table = region_table(images, regions, n_boot=50)
    groups = set(table.group.dropna())
    assert groups == {"hair=long", "hair=short", "correct=True", "correct=False"}
    assert set(table["class"].dropna()) == {"cat", "dog"}
    long_ids = images[images["attr.hair"] == "long"].image_id
    expected = regions[(regions.region == "patch") & regions.image_id.isin(long_ids)].mass.mean()
    assert _row(table, "patch", group="hair=long").mass_mean == pytest.approx(expected)
    assert _row(table, "patch", group="hair=long").n == len(long_ids)


def test_bootstrap_ci_contains_true_mean_and_shrinks_with_n():
    true = 0.4
    widths, covered = [], 0
    for seed in range(40):
        mass = np.random.default_rng(seed).normal(true, 0.1, size=(50, 1))
        stats = slice_stats(mass, np.full_like(mass, 0.1), n_boot=400, seed=seed)
        covered += stats["mass_ci_low"][0] <= true <= stats["mass_ci_high"][0]
    assert covered >= 34  # nominal 95%: 38/40 expected; binomial slack
    for n in (20, 80, 320):
        mass = np.random.default_rng(1).normal(true, 0.1, size=(n, 1))
        stats = slice_stats(mass, np.full_like(mass, 0.1), n_boot=500, seed=0)
        widths.append(stats["mass_ci_high"][0] - stats["mass_ci_low"][0])
    assert widths[0] > widths[1] > widths[2]
    # the percentile CI width tracks 2 * 1.96 * sd / sqrt(n)
    assert widths[2] == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(320), rel=0.2)


def test_bootstrap_is_seeded_and_lift_ci_brackets_lift():
    images, regions = planted_frames(n=80)
    a = region_table(images, regions, n_boot=300, seed=3)
    b = region_table(images, regions, n_boot=300, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert (a.lift_ci_low <= a.lift + 1e-12).all() and (a.lift <= a.lift_ci_high + 1e-12).all()


def test_missing_region_counts_as_zero_and_records_are_json_shaped():
    images, regions = planted_frames(n=10)
    regions = regions[~((regions.region == "patch") & (regions.image_id < 5))]
    table = region_table(images, regions, n_boot=20)
    full = planted_frames(n=10)[1]
    expected = full[(full.region == "patch") & (full.image_id >= 5)].mass.sum() / 10
    assert _row(table, "patch").mass_mean == pytest.approx(expected)
    rec = table_records(table)[0]
    assert set(rec) >= {"region", "role", "class", "group", "mass_mean", "mass_ci", "area_mean", "lift", "n"}
    assert len(rec["mass_ci"]) == 2


def test_accuracy_table_wilson():
    images, _ = planted_frames(n=100, accuracy=0.8)
    acc = accuracy_table(images)
    overall = acc[acc["class"].isna() & acc.group.isna()].iloc[0]
    assert overall.accuracy == pytest.approx(images.correct.mean())
    assert overall.ci_low < overall.accuracy < overall.ci_high
    # textbook value: 8/10 at 95% -> (0.490, 0.943)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
