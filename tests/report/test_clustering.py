import numpy as np
import pandas as pd
import pytest

from analysis.stats.clustering import eigengap_k, knn_affinity, prepare_maps, spray_clusters


def _maps(n_a, n_b, seed=0):
    """Class "cat": n_a images attend the centre, n_b the bottom-right corner (a planted watermark)."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n_a + n_b, 32, 32)) * 0.2
    maps[:n_a, 12:20, 12:20] += 1.0
    maps[n_a:, 26:, 26:] += 1.0
    return maps


def test_spray_finds_the_planted_strategy_and_its_region():
    maps = _maps(30, 10)
    ids = np.arange(100, 140)
    images = pd.DataFrame({"image_id": ids, "label": "cat"})
    regions = pd.DataFrame([{"image_id": i, "region": r, "mass": m}
                            for k, i in enumerate(ids)
                            for r, m in (("watermark", 0.6 if k >= 30 else 0.02), ("object", 0.3))])
    found = spray_clusters(images, (ids, maps), regions)
    assert found and all(f["k"] == 2 for f in found)
    corner = [f for f in found if set(f["image_ids"]) == set(range(130, 140))]
    assert len(corner) == 1
    assert corner[0]["size"] == 10 and corner[0]["distance"] > 0.3
    assert set(corner[0]["exemplars"]) <= set(range(130, 140))
    assert corner[0]["top_region"]["region"] == "watermark"


def test_single_strategy_gives_no_cluster():
    maps = _maps(40, 0)
    ids = np.arange(40)
    images = pd.DataFrame({"image_id": ids, "label": "cat"})
    assert spray_clusters(images, (ids, maps)) == []


def test_eigengap_counts_connected_components():
    x = np.concatenate([np.random.default_rng(0).normal(0, 0.01, (10, 2)) + c for c in ((0, 0), (5, 5), (9, 0))])
    k, values = eigengap_k(knn_affinity(x, 4), max_k=5)
    assert k == 3 and values[2] < 1e-6
    assert prepare_maps(np.ones((2, 4, 4)), side=2).sum(1).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("offset", [None, 2.5])
def test_large_classes_get_the_dense_spectrum_from_the_sparse_solver(monkeypatch, offset):
    """Above DENSE_UP_TO images the spectrum comes from ARPACK per connected component; it must equal the
    dense solver's, repeated zeros (disconnected strategies) included."""
    import analysis.stats.clustering as clustering

    rng = np.random.default_rng(0)
    if offset is None:  # four disconnected groups: eigenvalue 0 four times
        x = np.concatenate([rng.normal(0, 0.05, (300, 8)) + m for m in (0, 1, 2)] + [rng.normal(0, 0.05, (60, 8)) + 5])
    else:  # one connected graph with two overlapping strategies
        x = np.concatenate([rng.normal(0, 1, (500, 8)), rng.normal(0, 1, (400, 8)) + offset])
    affinity = knn_affinity(x, 10)
    monkeypatch.setattr(clustering, "DENSE_UP_TO", 100)
    sparse_k, sparse_values = eigengap_k(affinity)
    monkeypatch.setattr(clustering, "DENSE_UP_TO", 10**9)
    dense_k, dense_values = eigengap_k(affinity)
    assert sparse_k == dense_k == (4 if offset is None else 2)
    np.testing.assert_allclose(sparse_values, dense_values, atol=1e-6)
