"""Extract a user's .zip without letting it write outside its destination or fill the disk.

Every entry name is checked before anything is written: no absolute paths, drive letters, `..`
components, symlinks or other special files, duplicates (after normalisation) or file/folder clashes. A
backslash is treated as a path separator (old Windows tools, PowerShell 5's Compress-Archive among them,
write `images\\001.png` and folders as `images\\`), and the normalised path then gets the same checks, so
`..\\..\\x` is refused. The ratio limit applies to entries over 1 MiB: a small blank mask legitimately
compresses >200:1 and cannot fill a disk. The limits (entries, declared total size, compression ratio) are
checked from the central directory before extraction, the entry count even before `zipfile` parses that
directory, and enforced again while streaming because headers can lie. Extraction goes to a fresh hidden
folder under `dest`, which is renamed into place only when every entry succeeded; on any failure it is
removed. Nothing is written outside `dest`.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

from explainers.errors import InputError

GiB = 1 << 30
MiB = 1 << 20
RATIO_MIN_BYTES = 1 * MiB  # smaller entries may compress >200:1 (a blank mask) and cannot fill a disk
_CHUNK = 1 * MiB
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CD_RECORD = struct.Struct("<4s4B4HL2L5H2L")  # 46 bytes
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(InputError):
    """A zip that is malformed or hostile: names the zip and the offending entry."""


def safe_extract(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    name: str | None = None,
    max_total_bytes: int = 2 * GiB,
    max_entries: int = 100_000,
    max_ratio: float = 200,
) -> Path:
    """Extract `zip_path` into `dest/<name>` (default: the zip's stem) and return that folder.

    `dest` is created if missing; `dest/<name>` must not exist yet (`FileExistsError`).
    Raises `ArchiveError` for a malformed or hostile archive.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    name = name or zip_path.stem
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"extraction folder name {name!r} must be a single plain file name")
    target = dest / name
    if target.exists():
        raise FileExistsError(target)
    _check_entry_count(zip_path, max_entries)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveError(f"{zip_path}: not a readable zip file ({exc})") from None
    with archive:
        plan = _plan(zip_path, archive.infolist(), max_total_bytes, max_entries, max_ratio)
        dest.mkdir(parents=True, exist_ok=True)
        # named like every workspace temp (`.NAME.tmp-PID-TOKEN`), so a later start removes a killed one's
        staging = Path(tempfile.mkdtemp(prefix=f".extract.tmp-{os.getpid()}-", dir=dest))
        try:
            _extract(zip_path, archive, plan, staging, max_total_bytes)
            os.rename(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # a concurrent extraction finished first
                raise FileExistsError(target) from None
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def entry_parts(raw_name: str) -> tuple[str, ...] | None:
    """The safe relative path components of an entry name, () for the root, None when it escapes.

    `\\` counts as a separator; empty and `.` components are dropped.
    """
    if "\x00" in raw_name:
        return None
    name = raw_name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if any(p == ".." for p in parts):
        return None
    return parts


def _check_entry_count(zip_path: Path, max_entries: int) -> None:
    """Count the central directory's records ourselves, reading 46-byte headers and seeking past names,
    so a zip with millions of entries is refused in bounded memory before `zipfile` builds a ZipInfo
    for each. Structural damage is left for `zipfile` to report."""
    try:
        with open(zip_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            tail_start = max(0, size - (_EOCD.size + 65535))
            f.seek(tail_start)
            tail = f.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or at + _EOCD.size > len(tail):
                raise ArchiveError(f"{zip_path}: not a zip file (no end-of-central-directory record)")
            _, _, _, _, entries, cd_size, _, _ = _EOCD.unpack_from(tail, at)
            cd_end = tail_start + at
            zip64_at = cd_end - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size
            if zip64_at >= 0:  # like zipfile: the zip64 record sits right before its locator
                f.seek(zip64_at)
                record = f.read(_ZIP64_EOCD.size + 4)
                if record[:4] == b"PK\x06\x06" and record[_ZIP64_EOCD.size:] == b"PK\x06\x07":
                    fields = _ZIP64_EOCD.unpack_from(record)
                    entries, cd_size, cd_end = fields[7], fields[8], zip64_at
            if entries > max_entries:
                raise ArchiveError(f"{zip_path}: {entries:,} entries, over the limit of {max_entries:,}; "
                                   "split the dataset or remove stray files")
            counted = _count_records(f, max(0, cd_end - cd_size), cd_end, max_entries)
    except OSError as exc:
        raise ArchiveError(f"{zip_path}: cannot read the zip ({exc.strerror or exc})") from None
    if counted > max_entries:
        raise ArchiveError(f"{zip_path}: more than {max_entries:,} entries in the central directory, over "
                           "the limit; split the dataset or remove stray files")


def _count_records(f, start: int, end: int, limit: int) -> int:
    count, pos = 0, start
    while pos + _CD_RECORD.size <= end and count <= limit:
        f.seek(pos)
        header = f.read(_CD_RECORD.size)
        if len(header) < _CD_RECORD.size or header[:4] != b"PK\x01\x02":
            break
        name_len, extra_len, comment_len = struct.unpack_from("<3H", header, 28)
        pos += _CD_RECORD.size + name_len + extra_len + comment_len
        count += 1
    return count


def _plan(zip_path, infos, max_total_bytes, max_entries, max_ratio):
    """Validate every entry; return [(info, parts, is_dir)] for what will be written."""
    if len(infos) > max_entries:
        raise ArchiveError(f"{zip_path}: {len(infos):,} entries, over the limit of {max_entries:,}")
    plan, files, folders, seen = [], set(), set(), {}
    total = 0
    for info in infos:
        raw = info.filename
        where = f"{zip_path}: entry {raw!r}"
        parts = entry_parts(raw)
        if parts is None:
            raise ArchiveError(f"{where} points outside the archive folder (absolute path, drive letter or "
                               "'..'); re-create the zip from inside the dataset folder")
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise ArchiveError(f"{where} is a symbolic link; zip the files themselves (no links)")
        is_dir = info.is_dir() or raw.endswith("\\") or kind == stat.S_IFDIR
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(f"{where} is a special file (mode {oct(mode)}); only files and folders are allowed")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{where} is encrypted; zip the dataset without a password")
        if not parts:
            if is_dir:
                continue
            raise ArchiveError(f"{where} has no file name")
        key = "/".join(parts)
        if key in seen:
            raise ArchiveError(f"{where} duplicates entry {seen[key]!r}; each path may appear once")
        seen[key] = raw
        if is_dir:
            folders.add(parts)
        else:
            files.add(parts)
            for i in range(1, len(parts)):
                folders.add(parts[:i])
            total += info.file_size
            if total > max_total_bytes:
                raise ArchiveError(f"{where}: the archive declares more than {max_total_bytes:,} bytes "
                                   "uncompressed, over the limit")
            if info.file_size > RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
                ratio = info.file_size / max(info.compress_size, 1)
                raise ArchiveError(f"{where} expands {ratio:,.0f}:1 (limit {max_ratio:g}:1); a zip bomb?")
        plan.append((info, parts, is_dir))
    clash = files & folders
    if clash:
        raise ArchiveError(f"{zip_path}: entry {'/'.join(sorted(clash)[0])!r} is both a file and a folder")
    return plan


def _extract(zip_path, archive, plan, staging: Path, max_total_bytes: int) -> None:
    written = 0
    for info, parts, is_dir in plan:
        where = f"{zip_path}: entry {info.filename!r}"
        target = staging.joinpath(*parts)
        try:
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "xb") as sink:
                entry_bytes = 0
                while chunk := source.read(_CHUNK):
                    entry_bytes += len(chunk)
                    written += len(chunk)
                    if entry_bytes > info.file_size:
                        raise ArchiveError(f"{where} holds more data than its header declares "
                                           f"({info.file_size:,} bytes); the zip is corrupt or hostile")
                    if written > max_total_bytes:
                        raise ArchiveError(f"{where}: extraction exceeded {max_total_bytes:,} bytes")
                    sink.write(chunk)
        except ArchiveError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, RuntimeError,
                zlib.error) as exc:
            raise ArchiveError(f"{where} cannot be extracted ({exc})") from None
        except OSError as exc:
            raise ArchiveError(f"{where} cannot be written ({exc.strerror or exc})") from None
