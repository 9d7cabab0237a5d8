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


def _store(tmp_path, n=240, shard=50, seed=0):
    """A run store of `n` images in shards of `shard`: two classes, a fifth of each attends the corner (a planted
    watermark, region "watermark"), the rest the centre ("object")."""
    from analysis.store.run_store import RunStore

    rng = np.random.default_rng(seed)
    corner = rng.random(n) < 0.2
    maps = rng.random((n, 32, 32)) * 0.2
    maps[~corner, 12:20, 12:20] += 1.0
    maps[corner, 26:, 26:] += 1.0
    ids = np.arange(1000, 1000 + n)
    label = np.where(np.arange(n) % 2 == 0, "cat", "dog")
    images = pd.DataFrame({"image_id": ids, "image": [f"{i}.png" for i in ids], "label": label,
                           "label_idx": (label == "dog").astype(int), "pred": label,
                           "pred_idx": (label == "dog").astype(int), "confidence": 0.9, "correct": True,
                           "target_idx": (label == "dog").astype(int), "score": 1.0})
    regions = pd.DataFrame([{"image_id": int(i), "region": r, "region_id": j, "role": role, "mass": m, "area": a,
                             "lift": m / a}
                            for k, i in enumerate(ids)
                            for j, (r, role, m, a) in enumerate((("watermark", "shortcut", 0.6 if corner[k] else 0.02, 0.06),
                                                                 ("object", "core", 0.3 if corner[k] else 0.9, 0.3)))])
    store = RunStore(tmp_path / "run")
    for index, start in enumerate(range(0, n, shard)):
        part = images.iloc[start:start + shard]
        store.write_shard(index, part, regions[regions["image_id"].isin(part["image_id"])], maps[start:start + shard])
    return store, set(ids[corner].tolist())


def test_large_classes_are_clustered_on_a_sample_and_the_rest_assigned_shard_by_shard(tmp_path, monkeypatch):
    """A class above `per_class` images is clustered on its seeded sample; every other image joins by its nearest
    sampled maps, read in chunks across shards. What does not depend on the sample (the members, so size, share
    and the region that rises) equals clustering the whole class; the sample's own numbers say how many it held."""
    import analysis.stats.clustering as clustering

    monkeypatch.setattr(clustering, "CHUNK", 70)  # chunks that straddle the 50-image shards
    store, planted = _store(tmp_path)
    images, regions = store.images(), store.regions()
    whole = spray_clusters(images, store, regions)  # 120 images a class: below the default sample size
    assert whole == spray_clusters(images, store.maps(), regions)  # the store read shard by shard = the arrays
    sampled = spray_clusters(images, store, regions, per_class=40)
    assert [c["n_clustered"] for c in whole] == [120, 120] and [c["n_clustered"] for c in sampled] == [40, 40]
    assert {c["class"] for c in sampled} == {"cat", "dog"}
    for full, part in zip(whole, sampled):
        assert set(part["image_ids"]) == set(full["image_ids"]) and set(full["image_ids"]) <= planted
        assert (part["size"], part["share"], part["top_region"]) == (full["size"], full["share"], full["top_region"])
        assert part["top_region"]["region"] == "watermark" and part["distance"] > 0.3
        assert set(part["exemplars"]) <= set(part["image_ids"])
    assert sum(c["size"] for c in sampled) == len(planted)


def test_the_report_is_the_same_whatever_the_sample_but_the_sampled_numbers(tmp_path, monkeypatch):
    import analysis.stats.clustering as clustering
    from analysis.report.build import build_report

    store, _ = _store(tmp_path)
    full = build_report(store, n_boot=50)
    monkeypatch.setattr(clustering.spray_clusters, "__kwdefaults__",
                        {**clustering.spray_clusters.__kwdefaults__, "per_class": 30})
    sampled = build_report(store, n_boot=50)
    assert [c["n_clustered"] for c in sampled["clusters"]] == [30, 30]
    sample_dependent = ("k", "distance", "exemplars", "eigenvalues", "n_clustered", "cluster")
    strip = [[{k: v for k, v in c.items() if k not in sample_dependent} for c in r.pop("clusters")]
             for r in (full, sampled)]
    assert strip[0] == strip[1] and full == sampled  # regions, accuracy, flags, verdict: identical
