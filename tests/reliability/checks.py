"""What every fault test checks about a workspace afterwards: the catalog, the shards, equality of runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from analysis.store.workspace import Workspace


def assert_catalog_and_shards_sound(ws: Workspace, run_id: str) -> None:
    """`PRAGMA integrity_check` ok; every recorded shard opens whole; no image twice; no leftover files."""
    assert ws.integrity_check() == "ok"
    store = ws.store(run_id)
    for folder in store.shard_dirs():
        for table in ("images", "regions", "skipped"):
            pq.read_table(folder / f"{table}.parquet")
        with np.load(folder / "maps.npz") as data:
            assert len(data["maps"]) == len(data["image_ids"])
    ids = pd.concat([store.images()["image_id"], store.skipped()["image_id"]])
    assert not ids.duplicated().any(), f"images recorded twice: {sorted(ids[ids.duplicated()])}"
    run = ws.run(run_id)
    assert run["n_done"] == len(store.images()) and run["n_skipped"] == len(store.skipped())


def assert_same_results(a: Workspace, run_a: str, b: Workspace, run_b: str) -> None:
    """Same image rows, region rows and maps (order-free), same skipped images with the same reasons."""
    sa, sb = a.store(run_a), b.store(run_b)
    key = ["image_id"]
    images_a = sa.images().sort_values(key).reset_index(drop=True)
    images_b = sb.images().sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(images_a.drop(columns=["confidence", "score"]),
                                  images_b.drop(columns=["confidence", "score"]))
    np.testing.assert_allclose(images_a[["confidence", "score"]], images_b[["confidence", "score"]], rtol=1e-5)
    regions_a = sa.regions().sort_values(["image_id", "region"]).reset_index(drop=True)
    regions_b = sb.regions().sort_values(["image_id", "region"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(regions_a, regions_b, check_exact=False, atol=1e-6, rtol=0)
    ids_a, maps_a = sa.maps()
    ids_b, maps_b = sb.maps()
    order_a, order_b = np.argsort(ids_a), np.argsort(ids_b)
    assert np.array_equal(ids_a[order_a], ids_b[order_b])
    np.testing.assert_allclose(maps_a[order_a].astype(np.float32), maps_b[order_b].astype(np.float32),
                               rtol=2e-3, atol=1e-6)
    skipped_a = sa.skipped().sort_values("image_id").reset_index(drop=True)
    skipped_b = sb.skipped().sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(skipped_a, skipped_b)
