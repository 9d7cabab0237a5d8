"""Temporary copies that several writers can race, and that a killed writer never leaves for good.

Every temp file or folder is named `.NAME.tmp-PID-TOKEN` beside where it will land (same file system, so the
final rename is atomic): the PID says whose it is, so a later start removes those of dead processes
(`remove_dead_temps`, `sweep`); the token keeps two threads of one process (two dashboard sessions) apart.
`publish` renames a finished temp only onto a fresh path: when another writer got there first (same content,
content-addressed), the loser drops its copy and uses the winner's, instead of failing with "Directory not
empty" or replacing a file a reader has open.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from analysis.store.processes import job_alive

TEMP_NAME = re.compile(r"^\..*\.tmp-(?P<pid>\d+)(?:-[\w]+)?$")
# where temps may be left by a killed writer, relative to the workspace root (one level of glob each)
TEMP_HOMES = ("tmp", "models", "models/*", "datasets/*", "datasets/*/extracted")


def temp_name(name: str) -> str:
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def temp_beside(dest: Path) -> Path:
    """A fresh temp path in `dest`'s folder, for a copy that `publish` will move onto `dest`."""
    return dest.with_name(temp_name(dest.name))


def publish(tmp: Path, dest: Path) -> bool:
    """Move the finished `tmp` onto `dest` if `dest` does not exist yet; True when this call put it there.

    A folder is renamed (rename(2) refuses a non-empty target); a file is hard-linked then unlinked (link(2)
    refuses any existing target). Either way `tmp` is gone afterwards."""
    try:
        if tmp.is_dir() and not tmp.is_symlink():
            if dest.exists():
                return False
            os.rename(tmp, dest)
        else:
            _link_or_rename(tmp, dest)
        return True
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    finally:
        remove(tmp)


def _link_or_rename(tmp: Path, dest: Path) -> None:
    """link(2), which refuses an existing `dest`; on a file system without hard links (some network and FAT
    mounts), a rename after checking `dest` is absent (a narrower window, same content either way)."""
    try:
        os.link(tmp, dest)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        if dest.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(dest)) from None
        os.rename(tmp, dest)


def remove(path: Path) -> None:
    """Delete a file or a folder tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def temp_folder(parent: Path, name: str = "work") -> Iterator[Path]:
    """A fresh folder under `parent`, removed when the block ends however it ends (SIGKILL: `sweep`)."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / temp_name(name)
    folder.mkdir()
    try:
        yield folder
    finally:
        remove(folder)


def remove_dead_temps(folder: Path) -> list[str]:
    """Delete temps in `folder` whose process is gone: a writer killed mid-copy leaves one, and a dataset copy
    can be gigabytes. A live PID's temp is left alone (another registration may be writing it)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = TEMP_NAME.match(entry.name)
        if match and not job_alive(int(match["pid"])):
            remove(Path(entry.path))
            removed.append(entry.name)
    return removed


def sweep(root: Path) -> list[str]:
    """Remove dead writers' temps everywhere a workspace puts them (each workspace open: a cheap scan)."""
    removed = []
    for pattern in TEMP_HOMES:
        for folder in (root.glob(pattern) if "*" in pattern else [root / pattern]):
            if folder.is_dir():
                removed += remove_dead_temps(folder)
    return removed
