"""The workspace: registered models, datasets, runs and their shards, in one SQLite catalog.

Files are copied in under their content hash (`models/<sha>/`, `datasets/<sha>/`), so a run keeps
pointing at exactly what it audited even if the user's file changes. The catalog uses WAL, a busy timeout
and short `BEGIN IMMEDIATE` transactions: the worker process writes progress while the dashboard or a
second CLI reads and submits, without "database is locked" errors.

A run is identified by (model, dataset, method, params, n, seed): asking for the same run again returns
its id, which is how re-running an interrupted command resumes it.

Content hashes are cached in the catalog (`file_hashes`, keyed by absolute path, size and mtime in ns): the
second registration of a 10,000-file folder stats the files instead of reading them (`bench.e2e --register`),
and the copy made on the first registration is recorded under the hashes of its source files.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from analysis.store.temps import publish, remove, remove_dead_temps, sweep, temp_beside, temp_name
from explainers.loading.card import ModelCard, card_warnings
from explainers.errors import InputError
from explainers.loading.model_files import (companion_files, embedded_card, file_sha256, hf_folder_in_zip, sniff_format,
                                     tree_sha256)

ENV_VAR = "SALIENCY_AUDIT_WORKSPACE"
SQLITE_DISK_FULL = ("SQLITE_FULL", "SQLITE_IOERR_SHMSIZE")  # the latter: no room for the -shm file on open
RUN_STATUSES = ("pending", "running", "done", "failed", "cancelled")  # + "interrupted", read only: see _seen_alive
SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
  id TEXT PRIMARY KEY, name TEXT, path TEXT, sha256 TEXT, card TEXT, format TEXT, created REAL);
CREATE TABLE IF NOT EXISTS datasets (
  id TEXT PRIMARY KEY, name TEXT, path TEXT, sha256 TEXT, n_items INTEGER, has_masks INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, name TEXT, model_id TEXT REFERENCES models(id), dataset_id TEXT REFERENCES datasets(id),
  method TEXT, params TEXT, n INTEGER, seed INTEGER, target_layer TEXT, device TEXT,
  status TEXT NOT NULL DEFAULT 'pending', n_total INTEGER, n_done INTEGER DEFAULT 0,
  n_skipped INTEGER DEFAULT 0, error TEXT, pid INTEGER, created REAL, updated REAL);
CREATE TABLE IF NOT EXISTS file_hashes (
  path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT);
CREATE TABLE IF NOT EXISTS dataset_sources (
  dataset_id TEXT PRIMARY KEY REFERENCES datasets(id), source TEXT);
CREATE TABLE IF NOT EXISTS model_sources (
  model_id TEXT PRIMARY KEY REFERENCES models(id), source TEXT);
CREATE TABLE IF NOT EXISTS shards (
  run_id TEXT REFERENCES runs(id), "index" INTEGER, n_rows INTEGER, path TEXT, created REAL,
  PRIMARY KEY (run_id, "index"));
CREATE TABLE IF NOT EXISTS labels (
  dataset_id TEXT, region TEXT, verdict TEXT, note TEXT, run_id TEXT, model_id TEXT, created REAL,
  PRIMARY KEY (dataset_id, region));
"""
# Columns added after the first release: (table, column, type). Older catalogs gain them on open.
UPLOADS = "uploads"  # the dashboard stages uploaded files here until they pass the checks
ADDED_COLUMNS = (("models", "version", "TEXT"), ("runs", "stage", "TEXT"))
LABEL_VERDICTS = ("shortcut", "legitimate")
ACTIVE_STATUSES = ("pending", "running")


class DiskFullError(InputError):
    """The disk filled up. The user can fix it (free space, rerun to resume), so: one line, exit 2."""
    FIX = "free space and run the same command again to resume (finished batches are kept)"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT from a write, SQLITE_FULL (or no room for -shm) from the catalog, or pyarrow's OSError
    without an errno."""
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and (error.errno in (errno.ENOSPC, errno.EDQUOT)
                                           or "No space left on device" in str(error)):
            return True
        if isinstance(error, sqlite3.OperationalError) and (
                getattr(error, "sqlite_errorname", None) in SQLITE_DISK_FULL or "disk is full" in str(error)):
            return True
    return False


def default_root() -> Path:
    """`$SALIENCY_AUDIT_WORKSPACE`, else ./workspace: the one reader of the variable (CLI, dashboard, bench)."""
    return Path(os.environ.get(ENV_VAR) or "workspace")


class HashCache:
    """`file_sha256` with a memory of (absolute path, size, mtime_ns) -> sha256, kept in the catalog.

    Rows are read once per cache object, one range query per folder it is for (`under`; the whole table
    when None), and new ones written in one transaction by `flush`. Keys are absolute path strings, so a
    hit costs one `os.stat`. A file rewritten with the same size within the same nanosecond would be
    missed: mtime_ns is what rsync and git trust too.
    """

    def __init__(self, workspace: "Workspace", under: list[str | os.PathLike] | None = None):
        self.workspace = workspace
        self.known: dict[str, tuple[int, int, str]] = {}
        if under is None:
            self.known = {row[0]: tuple(row[1:]) for row in workspace._conn.execute(
                "SELECT path, size, mtime_ns, sha256 FROM file_hashes")}
        for folder in under or ():
            self.load(folder)
        self.new: dict[str, tuple[int, int, str]] = {}

    def load(self, folder: str | os.PathLike) -> None:
        """Read the rows for `folder` (a file, or a folder and everything below it) in one range query."""
        key = str(Path(folder).absolute())
        # keys in [key + "/", key + "0"): "0" is the character after "/", so the range is exactly the subtree
        rows = self.workspace._conn.execute(
            "SELECT path, size, mtime_ns, sha256 FROM file_hashes WHERE path = ? OR (path >= ? AND path < ?)",
            (key, key + os.sep, key + chr(ord(os.sep) + 1)))
        self.known.update((row[0], tuple(row[1:])) for row in rows)

    def __call__(self, path: str | os.PathLike) -> str:
        key = path if isinstance(path, str) and os.path.isabs(path) else str(Path(path).absolute())
        stat = os.stat(key)
        hit = self.new.get(key) or self.known.get(key)
        if hit is not None and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
            return hit[2]
        sha = file_sha256(key)
        self.new[key] = (stat.st_size, stat.st_mtime_ns, sha)
        return sha

    def record_copy(self, source: Path, dest: Path) -> None:
        """Files under `dest` (a fresh copy of `source`, a folder or one file) get their sources' hashes."""
        source, dest = str(Path(source).absolute()), str(Path(dest).absolute())
        below = source + os.sep
        for key, (_size, _mtime, sha) in list(self.known.items()) + list(self.new.items()):
            if key == source:
                target = dest
            elif key.startswith(below):
                target = dest + key[len(source):]
            else:
                continue
            try:
                stat = os.stat(target)
            except OSError:
                continue
            self.new[target] = (stat.st_size, stat.st_mtime_ns, sha)

    def flush(self) -> None:
        if self.new:
            with self.workspace._write() as db:
                db.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?,?,?,?)",
                               [(k, *v) for k, v in self.new.items()])
            self.known.update(self.new)
            self.new = {}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class Workspace:
    stage_listener = None  # (run_id, stage) -> None, told of every `runs.stage` written (the CLI prints them)

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "catalog.sqlite"
        self._local = threading.local()  # one connection per thread: dashboard sessions share this object
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()  # sessions' threads open and sweep connections at once
        sweep(self.root)  # temps of writers killed (SIGKILL, power loss) since the last start
        with self._write() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column, kind in ADDED_COLUMNS:
                if column not in {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    # -- plumbing -------------------------------------------------------------------------------------
    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (WAL, 30 s busy timeout). A shared one would let two threads' `BEGIN
        IMMEDIATE` collide ("cannot start a transaction within a transaction") or commit each other's work.
        Streamlit runs every rerun in a new thread, so the connections of finished threads are closed here."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._connections_lock:
                for thread, old in [pair for pair in self._connections if not pair[0].is_alive()]:
                    old.close()
                    self._connections.remove((thread, old))
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            with self._disk_full_is_one_line():  # opening creates the -wal/-shm files
                conn.execute("PRAGMA busy_timeout=30000")
                _set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append((threading.current_thread(), conn))
        return conn

    @contextmanager
    def _entry_lock(self, table: str, entry_id: str) -> Iterator[None]:
        """Exclusive hold on one content-addressed entry (`models/ID`, `datasets/ID`) across processes and
        threads, for its registration (check, copy, insert) and its deletion (rows, then files): without it
        a registration could find the folder a concurrent delete is about to remove. flock: released by the
        kernel when a holder dies, SIGKILL included."""
        folder = self.root / "locks"
        folder.mkdir(exist_ok=True)
        with open(folder / f"{table}-{entry_id}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock)."""
        with self._disk_full_is_one_line():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # a failed COMMIT (disk full) has already rolled back
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _disk_full_is_one_line(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc):
                raise DiskFullError(f"disk full: could not write the workspace catalog {self.db_path} ({exc}); "
                                    f"{DiskFullError.FIX}") from exc
            raise

    def _one(self, sql: str, args: tuple = ()) -> dict | None:
        row = self._conn.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def close(self) -> None:
        with self._connections_lock:
            for _thread, conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def integrity_check(self) -> str:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    # -- models ---------------------------------------------------------------------------------------
    def register_model(self, path: str | os.PathLike, card_path: str | os.PathLike | None = None, *,
                       name: str | None = None, version: str | None = None, on_warning=None) -> str:
        """Copy a model file (and its card, as `model.json` beside it) in; same content -> same id.

        `name` (else the card's `name`, else the file's own name) and `version` (else the card's) are what
        every page, export and listing shows; registering the same content again renames it only when `name`
        or `version` is given (a name a person gave is never replaced by a file's). The card is checked
        against the one schema (`explainers.loading.card`) before anything is copied; `on_warning(line)` hears of the
        fields it ignores."""
        path = Path(path)
        if path.is_dir() or (path.is_file() and hf_folder_in_zip(path) is not None):
            return self._register_model_folder(path, card_path, name=name, version=version, on_warning=on_warning)
        if not path.is_file():
            raise InputError(f"model file not found: {path}; pass --model PATH to a .pt2/.pt/.safetensors/.ts file")
        fmt = sniff_format(path)  # InputError for a file that is no model, before anything is copied
        card_file, card = self.model_card(path, card_path, on_warning)
        hashes = HashCache(self, under=[path])
        sha = hashes(path)
        hashes.flush()
        companions = companion_files(path, fmt)  # an ONNX model's external weight files, checked
        identity = sha + "".join(file_sha256(c) for c in companions)
        given = (name, version)
        model_id, name, version = _model_identity(identity, card, path, name, version)
        if not companions:  # the same file and card, named elsewhere (an ONNX model's weights: by identity only)
            model_id = self._twin_model(sha, card) or model_id

        def copy_in(dest_dir: Path) -> Path:
            dest = dest_dir / path.name
            _copy_atomic(path, dest)
            for companion in companions:
                target = dest_dir / companion.relative_to(path.parent.resolve())
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_atomic(companion, target)
            _write_atomic(dest_dir / "model.json", json.dumps(card, indent=1))
            return dest

        return self._store_model(model_id, given, copy_in, name, sha, card, fmt, version)

    def model_card(self, path: Path, card_path: str | os.PathLike | None = None, on_warning=None) -> tuple:
        """(the card file, the card as a dict) of a model file: `card_path`, else the card beside the file, else
        one embedded in it; checked against the card schema, errors naming the card file the user gave."""
        card_file = Path(card_path) if card_path else _card_beside(path)
        card = embedded_card(path) if card_file is None else None  # a YOLO ONNX export names classes and size
        if card is None and (card_file is None or not card_file.is_file()):
            raise InputError(f"no model card for {path}: put model.json beside it or pass --card PATH")
        try:
            card = card if card is not None else json.loads(card_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"model card {card_file} is not valid JSON ({exc}); fix the file") from exc
        source = card_file if card_file is not None else f"{path.name} (its embedded card)"
        ModelCard.from_dict(card, source=source)
        for line in card_warnings(card, source) if on_warning is not None else []:
            on_warning(line)
        return card_file, card

    def _twin_model(self, sha: str, card: dict) -> str | None:
        """A registered model with these bytes whose card says the same about the model (task, classes, size,
        normalisation, layer, architecture) and differs at most in name, version, description or ignored fields:
        the Upload form's card and the file's own card for one model file are one model."""
        same = _card_meaning(card)
        for row in self._conn.execute("SELECT id, card FROM models WHERE sha256=? ORDER BY created", (sha,)):
            try:
                if _card_meaning(json.loads(row["card"])) == same:
                    return row["id"]
            except InputError:
                continue
        return None

    def _known_model(self, model_id: str, name: str | None, version: str | None) -> str | None:
        """The id of an already registered model, else None; renamed only to a `name` / `version` given here."""
        if (existing := self.model(model_id)) is None:
            return None
        name = (name or "").strip() or existing["name"]
        version = (str(version).strip() if version is not None else "") or existing.get("version")
        if name != existing["name"] or version != existing.get("version"):
            self.rename_model(model_id, name, version)
        return existing["id"]

    def _store_model(self, model_id: str, given: tuple, copy_in, name: str, sha: str, card: dict, fmt: str,
                     version: str) -> str:
        """Under the model's entry lock: the id of a model already registered (renamed only to what `given`
        names), else `copy_in(its folder) -> the copied model path`, then its catalog row. A file and a folder
        differ only in how they are copied."""
        with self._entry_lock("models", model_id):
            if (existing := self._known_model(model_id, *given)) is not None:
                return existing
            dest_dir = self.root / "models" / model_id
            dest_dir.mkdir(parents=True, exist_ok=True)
            remove_dead_temps(dest_dir)
            return self._insert_model(model_id, name, copy_in(dest_dir), sha, card, fmt, version)

    def _insert_model(self, model_id: str, name: str, dest: Path, sha: str, card: dict, fmt: str,
                      version: str) -> str:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO models (id, name, path, sha256, card, format, created, version) "
                       "VALUES (?,?,?,?,?,?,?,?)",
                       (model_id, name, str(dest.relative_to(self.root)), sha, canonical_json(card), fmt,
                        time.time(), version or None))
        return model_id

    def _register_model_folder(self, path: Path, card_path: str | os.PathLike | None, *, name: str | None,
                               version: str | None, on_warning=None) -> str:
        """A Hugging Face folder, or a zip of one, registers as one model: hashed over the folder's files
        (so the folder and its zip get the same id), copied in with its card written inside as model.json."""
        from analysis.data.archive import safe_extract
        from explainers.loading.hf_card import hf_card_dict

        if path.is_dir():
            sniff_format(path)  # InputError for a folder that holds no model
        unpacked = None
        try:
            folder = path
            if path.is_file():
                (self.root / "models").mkdir(parents=True, exist_ok=True)
                unpacked = safe_extract(path, self.root / "models", name=temp_name("unpack"))
                inner = hf_folder_in_zip(path)
                folder = unpacked / inner if inner else unpacked
            override = None
            if card_path:
                try:
                    override = json.loads(Path(card_path).read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise InputError(f"model card {card_path} is not valid JSON ({exc}); fix the file") from exc
            card = hf_card_dict(folder, override)
            ModelCard.from_dict(card, source=Path(card_path) if card_path else f"{path.name} (its config.json)")
            inside = folder / "model.json"
            for given, source in ((override, card_path), (_json_or_none(inside), f"{path.name}/model.json")):
                for line in card_warnings(given, source) if on_warning is not None and given else []:
                    on_warning(line)
            sha = tree_sha256(folder)
            shown = folder if folder != unpacked else path.with_suffix("")
            given = (name, version)
            model_id, name, version = _model_identity(sha, card, shown, name, version)

            def copy_in(dest_dir: Path) -> Path:
                dest = dest_dir / shown.name
                if not dest.exists():
                    tmp = temp_beside(dest)
                    try:
                        shutil.copytree(folder, tmp)
                        (tmp / "model.json").write_text(json.dumps(card, indent=1))
                    except BaseException:
                        remove(tmp)
                        raise
                    publish(tmp, dest)
                return dest

            return self._store_model(model_id, given, copy_in, name, sha, card, "hf_folder", version)
        finally:
            if unpacked is not None:
                shutil.rmtree(unpacked, ignore_errors=True)

    def set_model_source(self, model_id: str, source: dict) -> None:
        """Where a model came from beyond a file (an MLflow registry version: `analysis.store.mlflow_registry`)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO model_sources VALUES (?,?)", (model_id, canonical_json(source)))

    def model(self, model_id: str) -> dict | None:
        row = self._one("SELECT m.*, s.source FROM models m LEFT JOIN model_sources s ON s.model_id = m.id "
                        "WHERE m.id=?", (model_id,))
        if row is not None:
            row["source"] = json.loads(row["source"]) if row["source"] else None
            row["card"] = json.loads(row["card"])
            row["abspath"] = str(self.root / row["path"])
        return row

    def models(self) -> list[dict]:
        return [self.model(r["id"]) for r in self._conn.execute("SELECT id FROM models ORDER BY created")]

    def resolve_model(self, path_or_id: str, card_path: str | None = None, on_warning=None) -> str:
        if self.model(str(path_or_id)) is not None:
            return str(path_or_id)
        if not Path(path_or_id).exists():
            raise InputError(f"--model {path_or_id}: no such file and no registered model with that id "
                             f"(see `saliency-audit runs`)")
        return self.register_model(path_or_id, card_path, on_warning=on_warning)

    # -- datasets -------------------------------------------------------------------------------------
    def register_dataset(self, path: str | os.PathLike, *, source: str | None = None,
                         name: str | None = None, images: str | os.PathLike | None = None) -> str:
        """Check a dataset folder or .zip where the user has it, then copy it in under its content hash.

        Validation runs first, on the user's own files, so every message names their paths and a broken
        dataset leaves nothing behind (a zip is extracted, safely, straight into its final folder and that
        folder is removed if it fails). `source` is how later messages name it (default: `path` as given; the
        dashboard passes the upload's own file name).
        """
        path = Path(path)
        if not path.exists():
            raise InputError(f"dataset not found: {path}; pass --data PATH to a dataset folder or .zip")
        if images is not None or (path.is_file() and path.suffix.lower() == ".json"):
            return self._register_coco_file(path, images, source=source, name=name)
        source = source or str(path)
        hashes = HashCache(self, under=[path])
        sha = tree_sha256(path, hashes) if path.is_dir() else hashes(path)
        hashes.flush()
        dataset_id = "d-" + sha[:12]
        name = (name or "").strip() or path.stem
        with self._entry_lock("datasets", dataset_id):  # a concurrent registration of it waits, then reuses it
            return self._register_dataset_locked(path, dataset_id, sha, hashes, source, name)

    def _register_dataset_locked(self, path: Path, dataset_id: str, sha: str, hashes: HashCache, source: str,
                                 name: str) -> str:
        if (existing := self.dataset(dataset_id)) is not None:
            if name != existing["name"] and name != path.stem:
                self.rename_dataset(dataset_id, name)
            return dataset_id
        dest_dir = self.root / "datasets" / dataset_id
        dest = dest_dir / path.name
        hashes.load(dest_dir)
        if not dest.exists():
            try:
                dataset = self.open_dataset_at(path, dest_dir)
                dataset.shown_as = source
                dataset.validate()
            except BaseException:
                shutil.rmtree(dest_dir, ignore_errors=True)  # we hold the entry: nobody else's files
                raise
            dest_dir.mkdir(parents=True, exist_ok=True)
            remove_dead_temps(dest_dir)
            _copy_atomic(path, dest)
            hashes.record_copy(path, dest)
        dataset = self.open_dataset_at(dest, dest_dir)
        if hasattr(dataset, "hash_file"):
            dataset.hash_file = hashes
        has_masks = getattr(dataset, "has_masks", None)
        if has_masks is None:
            has_masks = bool(getattr(dataset, "regions", None)) and any(item.mask for item in dataset.items)
        content_sha = getattr(dataset, "sha256", None) or sha  # same for a folder and its .zip
        hashes.flush()
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO datasets VALUES (?,?,?,?,?,?,?)",
                       (dataset_id, name, str(dest.relative_to(self.root)), content_sha, len(dataset.items),
                        int(has_masks), time.time()))
            db.execute("INSERT OR IGNORE INTO dataset_sources VALUES (?,?)", (dataset_id, source))
        return dataset_id

    def _register_coco_file(self, path: Path, images, *, source: str | None, name: str | None) -> str:
        """A COCO JSON (or a folder holding one) whose images sit elsewhere (`images`, else where its exporter
        put them): gathered into the folder layout (`coco_layouts.gather`), then registered as a folder."""
        from analysis.data.coco_layouts import annotation_file, gather

        json_path = annotation_file(path) if path.is_dir() else path
        shown = source or (f"{json_path} with images under {images}" if images is not None else str(json_path))
        staging = self.root / "datasets" / f".gather.tmp-{os.getpid()}"
        if staging.parent.is_dir():
            remove_dead_temps(staging.parent)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            folder = gather(json_path, Path(images) if images is not None else None, staging / "coco")
            return self.register_dataset(folder, source=shown, name=name or json_path.parent.name or "coco")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def open_dataset_at(path: Path, workdir: Path):
        from analysis.data.datasets import open_dataset

        return open_dataset(path, workdir=workdir / "extracted")

    def open_dataset(self, dataset_id: str):
        row = self.dataset(dataset_id)
        if row is None:
            raise InputError(f"no registered dataset with id {dataset_id}")
        dataset = self.open_dataset_at(self.root / row["path"], self.root / "datasets" / dataset_id)
        dataset.shown_as = self._shown_source(row) or dataset.shown_as
        return dataset

    def _shown_source(self, row: dict) -> str | None:
        """How messages name a registered dataset: the path the user gave, but its name when that path was a
        staging copy of an upload (`<workspace>/uploads/tmpXXXX/...`, gone once registered)."""
        source = row.get("source")
        uploads = (self.root / UPLOADS).resolve()
        if source and (uploads == Path(source).resolve() or uploads in Path(source).resolve().parents):
            return row["name"]
        return source

    def dataset(self, dataset_id: str) -> dict | None:
        row = self._one("SELECT d.*, s.source FROM datasets d LEFT JOIN dataset_sources s ON s.dataset_id = d.id "
                        "WHERE d.id=?", (dataset_id,))
        if row is not None:
            row["has_masks"] = bool(row["has_masks"])
            row["abspath"] = str(self.root / row["path"])
        return row

    def datasets(self) -> list[dict]:
        return [self.dataset(r["id"]) for r in self._conn.execute("SELECT id FROM datasets ORDER BY created")]

    def resolve_dataset(self, path_or_id: str, images: str | None = None) -> str:
        """A registered id, or a path registered on first use (`images`: where a COCO file's images are)."""
        if self.dataset(str(path_or_id)) is not None:
            if images is not None:
                raise InputError(f"--images goes with --data PATH (a COCO .json); {path_or_id} is already registered")
            return str(path_or_id)
        if not Path(path_or_id).exists():
            raise InputError(f"--data {path_or_id}: no such file or folder and no registered dataset with "
                             f"that id")
        return self.register_dataset(path_or_id, images=images)

    # -- runs -----------------------------------------------------------------------------------------
    def create_run(self, model_id: str, dataset_id: str, method: str, params: dict | None = None,
                   n: int = 200, seed: int = 0, name: str | None = None) -> str:
        """Id of the run with this identity, creating it (pending) if new."""
        model, dataset = self.model(model_id), self.dataset(dataset_id)
        if model is None:
            raise InputError(f"no registered model with id {model_id}")
        if dataset is None:
            raise InputError(f"no registered dataset with id {dataset_id}")
        params = dict(params or {})
        identity = canonical_json([model["id"], dataset["sha256"], method, params, int(n), int(seed)])
        run_id = "r-" + hashlib.sha256(identity.encode()).hexdigest()[:12]
        now = time.time()
        with self._write() as db:  # inserted only while both still exist: a concurrent delete wins cleanly
            db.execute(
                "INSERT OR IGNORE INTO runs (id, name, model_id, dataset_id, method, params, n, seed, status, "
                "n_total, n_done, n_skipped, created, updated) SELECT ?,?,?,?,?,?,?,?,'pending',NULL,0,0,?,? "
                "WHERE EXISTS (SELECT 1 FROM models WHERE id=?) AND EXISTS (SELECT 1 FROM datasets WHERE id=?)",
                (run_id, name or f"{model['name']}/{method}", model_id, dataset_id, method,
                 canonical_json(params), int(n), int(seed), now, now, model_id, dataset_id))
            created = db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None
        if not created:
            raise InputError(f"model {model_id} or dataset {dataset_id} was deleted while the audit was being "
                             "created; register it again")
        return run_id

    def run(self, run_id: str) -> dict:
        row = self._one("SELECT r.*, m.name AS model_name, m.version AS model_version, d.name AS dataset_name "
                        "FROM runs r LEFT JOIN models m ON m.id = r.model_id "
                        "LEFT JOIN datasets d ON d.id = r.dataset_id WHERE r.id=?", (run_id,))
        if row is None:
            raise InputError(f"no run with id {run_id!r}; list runs with `saliency-audit runs`")
        row["params"] = json.loads(row["params"] or "{}")
        return _seen_alive(row)

    def runs(self) -> list[dict]:
        rows = self._conn.execute(
            "SELECT r.*, m.name AS model_name, m.version AS model_version, d.name AS dataset_name FROM runs r "
            "LEFT JOIN models m ON m.id = r.model_id LEFT JOIN datasets d ON d.id = r.dataset_id "
            "ORDER BY r.created").fetchall()
        out = []
        for row in rows:
            row = dict(row)
            row["params"] = json.loads(row["params"] or "{}")
            out.append(_seen_alive(row))
        return out

    # -- names and housekeeping ------------------------------------------------------------------------
    def rename_model(self, model_id: str, name: str, version: str | None = None) -> None:
        self._rename("models", model_id, name, version=version if version is None else (str(version).strip() or None))

    def rename_dataset(self, dataset_id: str, name: str) -> None:
        self._rename("datasets", dataset_id, name)

    def rename_run(self, run_id: str, name: str) -> None:
        self._rename("runs", run_id, name)

    def _rename(self, table: str, row_id: str, name: str, **more: Any) -> None:
        name = str(name).strip()
        if not name:
            raise InputError(f"give {row_id} a name that is not empty")
        fields = {"name": name, **{k: v for k, v in more.items() if v is not None}}
        with self._write() as db:
            cursor = db.execute(f"UPDATE {table} SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                                (*fields.values(), row_id))
        if cursor.rowcount == 0:
            raise InputError(f"no registered {table[:-1]} with id {row_id}")

    def active_runs(self, *, model_id: str | None = None, dataset_id: str | None = None,
                    run_id: str | None = None) -> list[str]:
        """Ids of pending or running runs (worker alive) among those of the model / dataset / run given."""
        return [r["id"] for r in self.runs() if r["status"] in ACTIVE_STATUSES
                and (model_id is None or r["model_id"] == model_id)
                and (dataset_id is None or r["dataset_id"] == dataset_id)
                and (run_id is None or r["id"] == run_id)]

    def delete_run(self, run_id: str) -> None:
        """Remove an audit and its results; refused while its worker runs (cancel it first)."""
        with self._write() as db:  # checked and deleted in one transaction: no claim can slip in between
            if db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise InputError(f"no run with id {run_id!r}; list runs with `saliency-audit runs`")
            self._refuse_while_active(db, "id", run_id)
            _delete_runs(db, [run_id])
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def delete_model(self, model_id: str) -> list[str]:
        """Remove a model, its file and its audits (returned); refused while one of its audits runs."""
        return self._delete_with_runs("models", model_id, "model_id")

    def delete_dataset(self, dataset_id: str) -> list[str]:
        """Remove a dataset, its copy, its labels and its audits (returned); refused while one of them runs."""
        return self._delete_with_runs("datasets", dataset_id, "dataset_id")

    def _delete_with_runs(self, table: str, row_id: str, column: str) -> list[str]:
        """Rows (entry, runs, shards, labels, source) in one transaction, then files, all under the entry's
        lock, so a registration of the same content waits and then copies it in afresh."""
        with self._entry_lock(table, row_id):
            with self._write() as db:
                if db.execute(f"SELECT 1 FROM {table} WHERE id=?", (row_id,)).fetchone() is None:
                    raise InputError(f"no registered {table[:-1]} with id {row_id}")
                self._refuse_while_active(db, column, row_id)
                run_ids = [r[0] for r in db.execute(f"SELECT id FROM runs WHERE {column}=?", (row_id,))]
                _delete_runs(db, run_ids)
                db.execute(f"DELETE FROM {table} WHERE id=?", (row_id,))
                if table == "datasets":
                    db.execute("DELETE FROM labels WHERE dataset_id=?", (row_id,))
                    db.execute("DELETE FROM dataset_sources WHERE dataset_id=?", (row_id,))
                else:
                    db.execute("DELETE FROM model_sources WHERE model_id=?", (row_id,))
            for run_id in run_ids:
                shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
            shutil.rmtree(self.root / table / row_id, ignore_errors=True)
        return run_ids

    @staticmethod
    def _refuse_while_active(db: sqlite3.Connection, column: str, value: str) -> None:
        """InputError when a run of `column = value` is pending or has a live worker (read in `db`'s
        transaction)."""
        rows = db.execute(f"SELECT id, status, pid FROM runs WHERE {column}=? AND status IN "
                          f"({','.join('?' * len(ACTIVE_STATUSES))})", (value, *ACTIVE_STATUSES)).fetchall()
        if active := [r["id"] for r in rows if _seen_alive(dict(r))["status"] in ACTIVE_STATUSES]:
            raise InputError(f"audit {', '.join(active)} is still running; cancel it (or wait for it to finish) "
                             f"before deleting")

    # -- human labels ---------------------------------------------------------------------------------
    def set_label(self, dataset_id: str, region: str, verdict: str, note: str = "", *, run_id: str | None = None,
                  model_id: str | None = None) -> None:
        """A person's verdict on a region of a dataset (shortcut or legitimate), kept for every later audit."""
        if verdict not in LABEL_VERDICTS:
            raise InputError(f"label {verdict!r}: choose one of {', '.join(LABEL_VERDICTS)}")
        with self._write() as db:  # only onto a dataset that exists at commit time (a delete may race it)
            if db.execute("SELECT 1 FROM datasets WHERE id=?", (dataset_id,)).fetchone() is None:
                raise InputError(f"no registered dataset with id {dataset_id}")
            db.execute("INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?,?,?)",
                       (dataset_id, str(region), verdict, str(note or ""), run_id, model_id, time.time()))

    def remove_label(self, dataset_id: str, region: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM labels WHERE dataset_id=? AND region=?", (dataset_id, str(region)))

    def labels(self, dataset_id: str) -> list[dict]:
        """The dataset's labels, oldest first, with the name and version of the model they were set on."""
        return [dict(r) for r in self._conn.execute(
            "SELECT l.*, m.name AS model_name, m.version AS model_version FROM labels l "
            "LEFT JOIN models m ON m.id = l.model_id WHERE l.dataset_id=? ORDER BY l.created", (dataset_id,))]

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"unknown run status {fields['status']!r}")
        fields["updated"] = time.time()
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._write() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), run_id))
        if fields.get("stage") and self.stage_listener is not None:
            self.stage_listener(run_id, fields["stage"])

    def claim_run(self, run_id: str, pid: int, device: str, is_alive=lambda pid: True) -> int | None:
        """Mark the run running in `pid`, in one write transaction; returns the pid of a live other holder
        instead (then nothing changes). Check-then-set in one transaction: two workers started at once
        cannot both take the run and write the same shards."""
        with self._write() as db:
            row = db.execute("SELECT status, pid FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise InputError(f"no run with id {run_id!r}; list runs with `saliency-audit runs`")
            holder = row["pid"]
            if row["status"] == "running" and holder and holder != pid and is_alive(holder):
                return holder
            db.execute("UPDATE runs SET status='running', pid=?, device=?, error=NULL, updated=? WHERE id=?",
                       (pid, device, time.time(), run_id))
        return None

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def store(self, run_id: str):
        from analysis.store.run_store import RunStore

        return RunStore(self.run_dir(run_id), workspace=self, run_id=run_id)

    # -- shards ---------------------------------------------------------------------------------------
    def record_shard(self, run_id: str, index: int, n_rows: int, path: str, *, n_done: int | None = None,
                     n_skipped: int | None = None) -> None:
        """Record a complete shard and (same transaction) the run's progress counters."""
        now = time.time()
        with self._write() as db:
            db.execute('INSERT OR REPLACE INTO shards (run_id, "index", n_rows, path, created) VALUES (?,?,?,?,?)',
                       (run_id, index, n_rows, path, now))
            if n_done is not None:
                db.execute("UPDATE runs SET n_done=?, n_skipped=?, updated=? WHERE id=?",
                           (n_done, n_skipped or 0, now, run_id))

    def shards(self, run_id: str) -> list[dict]:
        return [dict(r) for r in self._conn.execute(
            'SELECT * FROM shards WHERE run_id=? ORDER BY "index"', (run_id,))]


def _set_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """`PRAGMA journal_mode=WAL`, retried while another process holds the lock it needs: SQLite answers it
    "database is locked" at once, without the busy handler, when the switch (or, on a WAL database, the read
    of the mode) meets a writer mid-upgrade or a connection recovering the WAL; seen when several CLI runs and
    dashboard sessions open the catalog together."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _delete_runs(db: sqlite3.Connection, run_ids: list[str]) -> None:
    for run_id in run_ids:
        db.execute("DELETE FROM shards WHERE run_id=?", (run_id,))
        db.execute("DELETE FROM runs WHERE id=?", (run_id,))


def _card_beside(path: Path) -> Path | None:
    for candidate in (path.with_suffix(".json"), path.parent / "model.json"):
        if candidate.is_file():
            return candidate
    return None


def _model_identity(content_sha: str, card: dict, shown: Path, name: str | None,
                    version: str | None) -> tuple[str, str, str]:
    """(model id from the content and the card, the name shown, the version shown) for a model file or folder."""
    model_id = "m-" + hashlib.sha256((content_sha + canonical_json(card)).encode()).hexdigest()[:12]
    name = (name or "").strip() or _model_name(shown, card)
    version = (str(version).strip() if version is not None else "") or _card_version(card)
    return model_id, name, version


def _json_or_none(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _card_meaning(card: dict) -> dict:
    """What a card says about the model itself: the schema's reading, without the names shown."""
    meaning = ModelCard.from_dict(card).to_dict()
    return {k: v for k, v in meaning.items() if k not in ("name", "version", "description")}


def _model_name(path: Path, card: dict) -> str:
    """The card's `name` when given; else the file stem, with its folder when the stem is a generic `model`."""
    if isinstance(card.get("name"), str) and card["name"].strip():
        return card["name"].strip()
    return f"{path.parent.name}/{path.stem}" if path.stem == "model" else path.stem


def _card_version(card: dict) -> str:
    value = card.get("version")
    return "" if value is None or isinstance(value, (dict, list)) else str(value).strip()


INTERRUPTED = ("its worker (process {pid}) ended without recording an outcome: killed, out of memory, or a disk "
               "too full to write its status; run the same command again (or press Resume) to continue from the "
               "last complete batch")


def _seen_alive(row: dict) -> dict:
    """A run the catalog calls running whose worker is gone reads as `interrupted`, with why and what to do.

    The catalog cannot record a worker's SIGKILL, nor a status write that failed on a full disk; without this
    such a run says "running" forever. Only the reading changes: claiming the run (a resume) still finds
    `running` with a dead pid and takes it over.
    """
    from analysis.store.processes import job_alive

    if row.get("status") == "running" and row.get("pid") and not job_alive(row["pid"]):
        row = dict(row, status="interrupted", error=row.get("error") or INTERRUPTED.format(pid=row["pid"]))
    return row


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy `src` (a file, or a folder) to `dest` through a temp beside it; an existing `dest` (same content) is
    kept."""
    tmp = temp_beside(dest)
    try:
        if src.is_dir():
            shutil.copytree(src, tmp, copy_function=shutil.copyfile)  # no copystat per file
        else:
            shutil.copy2(src, tmp)
    except BaseException:
        remove(tmp)
        raise
    publish(tmp, dest)


def _write_atomic(dest: Path, text: str) -> None:
    """Write `dest` whole or not at all (a reader never sees half a card); an existing `dest` is kept."""
    tmp = temp_beside(dest)
    try:
        tmp.write_text(text)
    except BaseException:
        remove(tmp)
        raise
    publish(tmp, dest)
