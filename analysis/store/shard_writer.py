"""Write shard N in a background thread while batch N+1 is computed.

Writing a shard (parquet + npz, fsync of every file and folder) is disk-bound and releases the GIL, so it
overlaps compute. At most one shard is in flight: `submit` first finishes the previous one. The catalog is
written only on the caller's thread, and only after the shard's folder is complete and renamed (the writer
never touches the catalog), so the guarantees of a synchronous write hold: a kill loses at most the batches
in flight (their temp folders are removed on resume, a renamed but unrecorded folder is overwritten), and an
error in the writer (a full disk) is raised in the caller's thread, unchanged, at the next `submit` or
`finish`.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


class ShardWriter:
    """`write(*args) -> path` runs in the writer thread; `record(path)` runs in the caller's thread after it."""

    def __init__(self, write: Callable[..., str]):
        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: tuple[Future, Callable[[str], None]] | None = None

    def submit(self, *args, record: Callable[[str], None]) -> None:
        """Finish (and record) the shard in flight, then start writing this one."""
        self.finish()
        self._pending = (self._pool.submit(self._write, *args), record)

    def finish(self) -> None:
        """Wait for the shard in flight and record it; its write error, if any, is raised here."""
        if self._pending is None:
            return
        future, record = self._pending
        path = future.result()  # a failed write stays pending: `close` after an error must not record it
        self._pending = None
        record(path)

    def close(self, failing: bool) -> None:
        """Stop the thread. After an error elsewhere (`failing`), a shard that still completes is recorded
        (finished work is kept, as a synchronous write would have kept it) and its own error is dropped:
        the caller's error is the one to report."""
        try:
            if failing:
                try:
                    self.finish()
                except BaseException:  # noqa: BLE001 - the caller's exception wins
                    pass
            else:
                self.finish()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, _exc, _tb) -> None:
        self.close(failing=exc_type is not None)
