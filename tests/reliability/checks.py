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


def assert_catalog_invariants(root) -> None:
    """What any interleaving of writers must leave: a sound catalog whose rows point at existing rows and
    files, one folder per registered entry and none for a deleted one, and no temp file anywhere."""
    from pathlib import Path

    from analysis.store.temps import TEMP_NAME
    from explainers.loading.model_files import file_sha256

    root = Path(root)
    ws = Workspace(root)
    try:
        assert ws.integrity_check() == "ok"
        db = ws._conn
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        models = {r["id"]: dict(r) for r in db.execute("SELECT * FROM models")}
        datasets = {r["id"]: dict(r) for r in db.execute("SELECT * FROM datasets")}
        runs = {r["id"]: dict(r) for r in db.execute("SELECT * FROM runs")}
        for run in runs.values():
            assert run["model_id"] in models and run["dataset_id"] in datasets, f"orphan run {run}"
        for (run_id,) in db.execute("SELECT run_id FROM shards"):
            assert run_id in runs, f"shard of deleted run {run_id}"
        for (dataset_id,) in db.execute("SELECT dataset_id FROM labels"):
            assert dataset_id in datasets, f"label on deleted dataset {dataset_id}"
        for model in models.values():
            assert file_sha256(root / model["path"]) == model["sha256"], f"model {model['id']} file damaged"
        for dataset in datasets.values():
            assert (root / dataset["path"]).exists(), f"dataset {dataset['id']} has no files"
            assert ws.open_dataset(dataset["id"]).items
        on_disk = {p.name for p in (root / "models").iterdir()} if (root / "models").is_dir() else set()
        assert on_disk == set(models), f"model folders {sorted(on_disk)} vs rows {sorted(models)}"
        on_disk = {p.name for p in (root / "datasets").iterdir()} if (root / "datasets").is_dir() else set()
        assert on_disk == set(datasets), f"dataset folders {sorted(on_disk)} vs rows {sorted(datasets)}"
        temps = [str(p.relative_to(root)) for p in root.rglob("*") if TEMP_NAME.match(p.name)]
        assert temps == [], f"temp files left: {temps}"
    finally:
        ws.close()
