"""One run's results on disk: a folder of shards, one per batch, each committed atomically.

A shard is written into a temporary folder beside its final name (files fsynced), then renamed with
`os.replace`; only after that does the catalog record it. Readers only read shards the catalog lists, so
a worker killed at any moment leaves at most an unrecorded folder that the resumed run overwrites: never a
half-written table. Without a catalog (a copied run folder) the complete `shard-*` folders are read.

Per shard: `images.parquet`, `regions.parquet` (long: image x region), `skipped.parquet`, and
`maps.npz` (float16 maps adaptively pooled to at most 64x64, with their image ids). A task may add its own
tables to the same atomic shard (`extra`: a DataFrame becomes `<name>.parquet`, a dict of arrays
`<name>.npz`); detection runs add `detections`, `ground_truth` and `detection_maps`.

pandas and pyarrow are imported by the methods that read or write tables: a reader of the run's cached
report (`saliency-audit report / check`) opens the store without them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


MAP_SIDE = 64
IMAGE_COLUMNS = ["image_id", "image", "label", "label_idx", "pred", "pred_idx", "confidence", "correct",
                 "target_idx", "score"]
REGION_COLUMNS = ["image_id", "region", "region_id", "role", "mass", "area", "lift"]
SKIPPED_COLUMNS = ["image_id", "image", "reason"]
FLOAT16_MAX = float(np.finfo(np.float16).max)


def pool_maps(maps) -> np.ndarray:
    """(B, H, W) -> float16 (B, h, w) with h, w <= 64 by adaptive average pooling (sums stay meaningful)."""
    import torch  # here, not at the top: readers of a store (the dashboard) never need torch
    import torch.nn.functional as F

    maps = torch.as_tensor(maps).detach().to("cpu", torch.float32)
    h, w = min(maps.shape[-2], MAP_SIDE), min(maps.shape[-1], MAP_SIDE)
    if (h, w) != tuple(maps.shape[-2:]):
        maps = F.adaptive_avg_pool2d(maps[:, None], (h, w))[:, 0]
    return maps.clamp(-FLOAT16_MAX, FLOAT16_MAX).numpy().astype(np.float16)


class RunStore:
    def __init__(self, run_dir: str | os.PathLike, workspace: Any = None,
                 run_id: str | None = None, shards: list[str] | None = None):
        self.run_dir = Path(run_dir)
        self.workspace = workspace
        self.run_id = run_id
        self._pinned = shards

    def snapshot(self) -> "RunStore":
        """This run as of now: every table read from it comes from the same shards.

        Each read of a live store asks the catalog again, so `images()` then `regions()` of a running run can
        straddle a new shard (regions for images the images table lacks). Read a running run through this.
        """
        return RunStore(self.run_dir, self.workspace, self.run_id, shards=[d.name for d in self.shard_dirs()])

    # -- writing --------------------------------------------------------------------------------------
    def write_shard(self, index: int, images: pd.DataFrame, regions: pd.DataFrame, maps: np.ndarray,
                    skipped: pd.DataFrame | None = None, *, extra: dict[str, Any] | None = None) -> str:
        """Write one batch's shard atomically; returns its folder name (record it in the catalog after)."""
        import pandas as pd

        self.run_dir.mkdir(parents=True, exist_ok=True)
        name = f"shard-{index:05d}"
        final = self.run_dir / name
        tmp = self.run_dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            self._write_tables(tmp, images, regions, maps, skipped)
            for table, value in (extra or {}).items():
                if isinstance(value, pd.DataFrame):
                    file = tmp / f"{table}.parquet"
                    value.to_parquet(file, index=False)
                else:
                    file = tmp / f"{table}.npz"
                    with open(file, "wb") as fh:
                        np.savez(fh, **value)
                _fsync(file)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not be kept full by our leftovers
            raise
        if final.exists():  # left by a worker killed after the rename but before the catalog recorded it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(self.run_dir)
        return name

    @staticmethod
    def _write_tables(tmp: Path, images: pd.DataFrame, regions: pd.DataFrame, maps: np.ndarray,
                      skipped: pd.DataFrame | None) -> None:
        import pandas as pd

        skipped = skipped if skipped is not None else pd.DataFrame(columns=SKIPPED_COLUMNS)
        image_ids = images["image_id"].to_numpy(dtype=np.int64) if len(images) else np.zeros(0, np.int64)
        maps = np.asarray(maps, dtype=np.float16)
        if len(maps) != len(image_ids):
            raise ValueError(f"{len(maps)} maps for {len(image_ids)} images")
        images.to_parquet(tmp / "images.parquet", index=False)
        regions.to_parquet(tmp / "regions.parquet", index=False)
        skipped.astype({"image_id": "int64", "image": "str", "reason": "str"}).to_parquet(
            tmp / "skipped.parquet", index=False)
        with open(tmp / "maps.npz", "wb") as fh:
            np.savez(fh, image_ids=image_ids, maps=maps)
        for path in tmp.iterdir():
            _fsync(path)
        _fsync(tmp)

    def remove_unfinished(self) -> list[str]:
        """Delete temp folders left by killed workers (call only while holding the run); returns their names."""
        leftovers = sorted(p for p in self.run_dir.glob(".*.tmp-*")) if self.run_dir.is_dir() else []
        for path in leftovers:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return [p.name for p in leftovers]

    def write_evidence(self, evidence: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".evidence.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(evidence, indent=1, default=float))
        _fsync(tmp)
        os.replace(tmp, self.run_dir / "evidence.json")

    # -- reading --------------------------------------------------------------------------------------
    def shard_dirs(self) -> list[Path]:
        if self._pinned is not None:
            return [self.run_dir / name for name in self._pinned]
        if self.workspace is not None and self.run_id is not None:
            return [self.run_dir / s["path"] for s in self.workspace.shards(self.run_id)]
        return sorted(p for p in self.run_dir.glob("shard-*") if p.is_dir())

    def images(self) -> pd.DataFrame:
        return self.table("images", IMAGE_COLUMNS)

    def regions(self) -> pd.DataFrame:
        return self.table("regions", REGION_COLUMNS)

    def skipped(self) -> pd.DataFrame:
        return self.table("skipped", SKIPPED_COLUMNS)

    def maps(self, image_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """(image_ids, float16 maps (N, h, w)) over all recorded shards; only those of `image_ids` when given,
        so a sample's maps cost the sample's memory, not the run's (8 KiB an image at 64x64)."""
        wanted = None if image_ids is None else np.asarray(image_ids, dtype=np.int64)
        ids, maps = [], []
        for shard_ids, shard_maps in self.iter_maps():
            keep = slice(None) if wanted is None else np.isin(shard_ids, wanted)
            if len(shard_ids) and (wanted is None or keep.any()):
                ids.append(shard_ids[keep])
                maps.append(shard_maps[keep])
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 0, 0), np.float16)
        return np.concatenate(ids), np.concatenate(maps)

    def iter_maps(self):
        """(image_ids, float16 maps) shard by shard: a pass over every map that holds one shard's at a time."""
        for d in self.shard_dirs():
            with np.load(d / "maps.npz") as data:
                yield data["image_ids"], data["maps"]

    def maps_sample(self, limit: int) -> np.ndarray:
        """Up to `limit` stored maps, from the first shards on (a check of the maps need not read them all)."""
        parts, count = [], 0
        for d in self.shard_dirs():
            if count >= limit:
                break
            with np.load(d / "maps.npz") as data:
                maps = data["maps"][: limit - count]
            if len(maps):
                parts.append(maps)
                count += len(maps)
        return np.concatenate(parts) if parts else np.zeros((0, 0, 0), np.float16)

    def table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A table over the recorded shards that have it (`images`, `regions`, `skipped`, or a task's extra
        table from `write_shard(extra=...)`). Concatenated as Arrow tables and converted to pandas once: a
        frame per shard made a 5,000-image run's first read take seconds."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        paths = [d / f"{name}.parquet" for d in self.shard_dirs()]
        # ParquetFile.read, not read_table: a third of the CPU per file (no dataset / filesystem discovery)
        tables = [t for t in (pq.ParquetFile(p).read() for p in paths if p.is_file()) if t.num_rows]
        if not tables:
            return pd.DataFrame(columns=columns or [])
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """A task's extra arrays (`<name>.npz`), concatenated over the recorded shards that have them."""
        parts: dict[str, list[np.ndarray]] = {}
        for d in self.shard_dirs():
            if (d / f"{name}.npz").is_file():
                with np.load(d / f"{name}.npz") as data:
                    for key in data.files:
                        parts.setdefault(key, []).append(data[key])
        return {key: np.concatenate(values) for key, values in parts.items()}

    def evidence(self) -> dict[str, Any]:
        path = self.run_dir / "evidence.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def done_image_ids(self) -> set[int]:
        """Images already explained or skipped: what a resumed run must not redo."""
        done = set(self.images()["image_id"].astype(int).tolist())
        return done | set(self.skipped()["image_id"].astype(int).tolist())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
