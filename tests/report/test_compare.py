import numpy as np
import pytest

from analysis.report.compare import compare_runs, mass_change, topk_iou
from tests.report.synthetic import planted_frames


class FakeStore:
    def __init__(self, images, regions, maps):
        self._images, self._regions, self._maps = images, regions, maps

    def images(self):
        return self._images

    def regions(self):
        return self._regions

    def maps(self):
        return self._images["image_id"].to_numpy(), self._maps


def _version(patch_mass, long_accuracy, map_noise, n=120):
    images, regions = planted_frames(n=n, patch_mass=patch_mass, seed=0)
    long = images["attr.hair"] == "long"
    images.loc[long, "correct"] = np.arange(long.sum()) < round(long_accuracy * long.sum())
    rng = np.random.default_rng(1)
    base = rng.random((n, 8, 8))
    maps = (base + map_noise * np.random.default_rng(2).random((n, 8, 8))).astype(np.float16)
    return FakeStore(images, regions, maps)


def test_compare_summary_on_synthetic_versions():
    stores = [_version(0.41, 0.6, 0.0), _version(0.2, 0.8, 0.5), _version(0.09, 0.95, 5.0)]
    out = compare_runs(stores, ["v1", "v2", "v3"], n_boot=200, n_perm=999)
    patch = out["regions"]["patch"]
    assert [r["run"] for r in patch["runs"]] == ["v1", "v2", "v3"]
    masses = [r["mass_mean"] for r in patch["runs"]]
    assert masses[0] > masses[1] > masses[2]
    assert all(c["paired"] and c["p_value"] < 0.01 and c["diff"] < 0 for c in patch["changes"])
    assert masses[0] == pytest.approx(0.41, abs=0.02) and masses[2] == pytest.approx(0.09, abs=0.02)
    assert (f"attention on patch fell from {masses[0]:.0%} to {masses[2]:.0%} of saliency mass between v1 and v3"
            in out["summary"])
    assert "accuracy on hair=long rose from 60% to 95%" in out["summary"]
    assert "object" not in out["summary"]  # core regions are not summarised
    sim = out["map_similarity"]
    assert sim[0]["spearman"] > sim[1]["spearman"] and sim[0]["topk_iou"] > sim[1]["topk_iou"]
    assert {"run", "group", "accuracy", "ci_low", "ci_high"} <= set(out["accuracy"][0])


def test_identical_runs_show_no_change():
    stores = [_version(0.3, 0.8, 0.0), _version(0.3, 0.8, 0.0)]
    out = compare_runs(stores, ["a", "b"], n_boot=100, n_perm=199)
    assert out["map_similarity"][0]["spearman"] == pytest.approx(1.0)
    assert out["map_similarity"][0]["topk_iou"] == pytest.approx(1.0)
    assert out["regions"]["patch"]["changes"][0]["diff"] == 0.0
    assert out["summary"].startswith("no significant change")


def test_mass_change_paired_and_unpaired():
    rng = np.random.default_rng(0)
    a = rng.random(50)
    same_ids = mass_change(np.arange(50), a, np.arange(50), a + 0.01, n_perm=999)
    assert same_ids["paired"] and same_ids["diff"] == pytest.approx(0.01) and same_ids["p_value"] < 0.01
    unpaired = mass_change(np.arange(50), a, np.arange(50, 100), a + 0.01, n_perm=499)
    assert not unpaired["paired"] and unpaired["p_value"] > 0.5  # a 0.01 shift hides in the spread


def test_topk_iou_exact():
    a = np.arange(10.0).reshape(1, 2, 5)
    b = a.copy()
    b[0, 1, 4] = -1  # the top pixel of a leaves b's top 2
    assert topk_iou(a, a, 0.2)[0] == 1.0
    assert topk_iou(a, b, 0.2)[0] == pytest.approx(1 / 3)


def test_runs_are_identified_by_id_as_well_as_name():
    """Two versions can share a name; a script comparing them keys on the run ids the output carries."""
    stores = [_version(0.4, 0.6, 0.0), _version(0.2, 0.8, 0.5)]
    for store, run_id in zip(stores, ["r-aaa", "r-bbb"]):
        store.run_id = run_id
    out = compare_runs(stores, ["model (r-aaa)", "model (r-bbb)"], n_boot=50, n_perm=99)
    assert out["run_ids"] == ["r-aaa", "r-bbb"]
    assert [r["run_id"] for r in out["regions"]["patch"]["runs"]] == ["r-aaa", "r-bbb"]
    assert {row["run_id"] for row in out["accuracy"]} == {"r-aaa", "r-bbb"}


def _found(name, ids, positions):
    return {"name": name, "image_ids": list(ids), "position_counts": positions}


def test_discovered_regions_are_matched_across_versions_on_their_images_and_places():
    """Each audit numbers its discoveries by size: the corner cue is discovered-1 in v1, discovered-2 in v2, gone
    in v3 (retraining removed it) and back in v4; a border strip in the same images is a different cue."""
    from analysis.report.compare import discovered_tracks

    corners = {"top-left": 30, "top-right": 25, "bottom-left": 25, "bottom-right": 20}
    border = {"top-centre": 20, "middle-left": 20}
    reports = [
        {"discovered_regions": [_found("discovered-1", range(100), corners), _found("discovered-2", range(40), border)]},
        {"discovered_regions": [_found("discovered-1", range(0, 45), border), _found("discovered-2", range(10, 70), corners)]},
        {"discovered_regions": []},
        {"discovered_regions": [_found("discovered-1", range(20, 60), corners),
                                _found("discovered-2", range(500, 540), border)]},  # other images: a new cue
    ]
    assert discovered_tracks(reports) == [
        ["discovered-1", "discovered-2", None, "discovered-1"],
        ["discovered-2", "discovered-1", None, None],
        [None, None, None, "discovered-2"],
    ]
    assert discovered_tracks([{"discovered_regions": []}]) == []


def test_without_maps_the_comparison_is_the_same_minus_map_similarity():
    """The dashboard's Compare page asks for no map similarity (it does not show it): everything else equal."""
    stores = [_version(0.41, 0.6, 0.0), _version(0.09, 0.95, 5.0)]
    full = compare_runs(stores, ["v1", "v2"], n_boot=200, n_perm=999)
    light = compare_runs(stores, ["v1", "v2"], n_boot=200, n_perm=999, maps=False)
    assert light["map_similarity"] == [] and len(full["map_similarity"]) == 1
    assert {k: v for k, v in light.items() if k != "map_similarity"} == \
        {k: v for k, v in full.items() if k != "map_similarity"}


@pytest.mark.parametrize("n", [1, 7, 5000])
def test_sign_flips_are_the_draws_of_rng_choice_and_leave_the_generator_where_it_left_it(n):
    """The blocked sign-flip null: the same draws as `rng.choice([-1.0, 1.0], (n_perm, n))`, the same means
    (to 1e-15: matrix products sum in another order), the generator in the same state after."""
    from analysis.report.compare import _sign_flip_means

    d = np.random.default_rng(5).normal(size=n)
    old, new = np.random.default_rng(0), np.random.default_rng(0)
    expected = (old.choice([-1.0, 1.0], size=(999, n)) * d).mean(axis=1)
    got = _sign_flip_means(new, d, 999)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    assert np.array_equal(old.integers(0, 1000, 8), new.integers(0, 1000, 8))
