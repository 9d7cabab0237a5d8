"""Hostile zips: each is refused with ArchiveError, and nothing is written outside `dest` (nor left in it)."""
import os
import stat
import struct
import tracemalloc
import warnings
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.data.archive import ArchiveError, entry_parts, safe_extract
from explainers.errors import InputError


def _zip(path, entries, compression=zipfile.ZIP_DEFLATED):
    """entries: [(name, bytes) or (ZipInfo, bytes)], written verbatim (zipfile keeps '../' and '/')."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _assert_refused(tmp_path, zip_path, match, **limits):
    before = _tree(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError, match=match) as info:
        safe_extract(zip_path, dest, **limits)
    assert str(zip_path) in str(info.value)
    after = [p for p in _tree(tmp_path) if p != "dest"]
    assert after == before, "something was written outside dest"
    assert not dest.exists() or _tree(dest) == [], "staging folder left behind"
    return info.value


def test_archive_error_is_an_input_error():
    assert issubclass(ArchiveError, InputError)


def test_good_zip_extracts_exactly(tmp_path):
    z = _zip(tmp_path / "data.zip", [("manifest.csv", b"image,label\n"), ("images/a.png", b"\x89PNGxx"),
                                      ("images\\b.png", b"bee")])
    out = safe_extract(z, tmp_path / "dest")
    assert out == tmp_path / "dest" / "data"
    assert _tree(out) == ["images", "images/a.png", "images/b.png", "manifest.csv"]
    assert (out / "images" / "b.png").read_bytes() == b"bee"
    assert _tree(tmp_path / "dest") == ["data"] + [f"data/{p}" for p in _tree(out)]  # no staging left
    with pytest.raises(FileExistsError):
        safe_extract(z, tmp_path / "dest")
    for bad_name in ("..", ".", "a/b"):
        with pytest.raises(ValueError):
            safe_extract(z, tmp_path / "dest", name=bad_name)


@pytest.mark.parametrize("name", [
    "../evil.txt", "images/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt", "images\\..\\..\\evil.txt",
    "\\evil.txt", "C:/evil.txt", "C:evil.txt", "c:\\windows\\evil.txt", "//server/share/evil.txt",
])
def test_escaping_names_are_refused(tmp_path, name):
    z = _zip(tmp_path / "bad.zip", [("ok.txt", b"fine"), (name, b"evil")])
    err = _assert_refused(tmp_path, z, "outside the archive folder")
    assert repr(name) in str(err)
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("images/link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "link.zip", [("images/a.png", b"a"), (info, b"/etc/passwd")])
    _assert_refused(tmp_path, z, "'images/link.png' is a symbolic link")


def test_special_file_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("fifo")
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    _assert_refused(tmp_path, _zip(tmp_path / "fifo.zip", [(info, b"")]), "special file")


@pytest.mark.parametrize("names", [("a.png", "a.png"), ("dir/a.png", "dir\\a.png"), ("a.png", "./a.png"),
                                   ("x/", "x")])
def test_duplicate_names_are_refused(tmp_path, names):
    with pytest.warns(UserWarning) if names[0] == names[1] else _nothing():
        z = _zip(tmp_path / "dup.zip", [(names[0], b"first"), (names[1], b"second")])
    _assert_refused(tmp_path, z, "duplicates entry")


def test_file_and_folder_clash_is_refused(tmp_path):
    z = _zip(tmp_path / "clash.zip", [("a", b"file"), ("a/b.png", b"child")])
    _assert_refused(tmp_path, z, "both a file and a folder")


def test_ratio_bomb_is_refused_before_writing(tmp_path):
    z = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(20 * 2**20))])
    assert os.path.getsize(z) < 100_000  # ~1000:1
    _assert_refused(tmp_path, z, r"expands [\d,]+:1 \(limit 200:1\)")


def test_small_highly_compressible_files_are_fine(tmp_path):
    # A blank 512x512 mask compresses ~1000:1 but cannot hurt: the ratio limit applies above 1 MiB.
    z = _zip(tmp_path / "blank.zip", [("masks/blank.bin", bytes(512 * 512))])
    assert (safe_extract(z, tmp_path / "dest") / "masks" / "blank.bin").stat().st_size == 512 * 512


def test_total_size_limit_counts_every_entry(tmp_path):
    z = _zip(tmp_path / "big.zip", [(f"{i}.bin", os.urandom(1000)) for i in range(5)], zipfile.ZIP_STORED)
    _assert_refused(tmp_path, z, "declares more than 4,000 bytes", max_total_bytes=4000)
    assert len(_tree(safe_extract(z, tmp_path / "ok", max_total_bytes=5000))) == 5


def _patch_central_sizes(path, file_size):
    """Rewrite the uncompressed size in every central-directory record (headers can lie)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        struct.pack_into("<L", data, at + 24, file_size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_huge_declared_total_is_refused_without_writing(tmp_path):
    z = _zip(tmp_path / "huge.zip", [("a.bin", b"x" * 100)], zipfile.ZIP_STORED)
    _patch_central_sizes(z, 0xFFFFFFF0)  # claims ~4 GiB
    _assert_refused(tmp_path, z, "declares more than 2,147,483,648 bytes")


def test_header_understating_the_size_is_caught_while_streaming(tmp_path):
    z = _zip(tmp_path / "liar.zip", [("a.bin", os.urandom(5000))], zipfile.ZIP_STORED)
    _patch_central_sizes(z, 10)  # the stream holds 5000 bytes
    _assert_refused(tmp_path, z, "'a.bin'")


def test_corrupt_deflate_stream_is_refused(tmp_path):
    payload = os.urandom(4000)
    z = _zip(tmp_path / "corrupt.zip", [("a.bin", payload)])
    data = bytearray(z.read_bytes())
    data[60:400] = bytes(340)  # inside the compressed data of the single entry
    z.write_bytes(bytes(data))
    _assert_refused(tmp_path, z, "'a.bin'")


def test_not_a_zip(tmp_path):
    bad = tmp_path / "text.zip"
    bad.write_text("hello, not a zip")
    _assert_refused(tmp_path, bad, "not a zip")


def test_encrypted_entry_is_refused(tmp_path):
    z = _zip(tmp_path / "enc.zip", [("a.bin", b"secret")], zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    at = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, at + 8, 0x1)
    z.write_bytes(bytes(data))
    _assert_refused(tmp_path, z, "encrypted")


def _many_entries_zip(path, n, declared=None):
    """A zip whose central directory holds `n` empty entries (zip64 end records when n > 65535).

    Built with struct: zipfile needs ~8 s for 100k entries. `declared` overrides the count in the end
    records (a lying count)."""
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"0"
    records = b"".join(
        struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0,
                    len(name), 0, 0, 0, 0, (stat.S_IFREG | 0o644) << 16, 0) + name
        for name in (str(i).encode() for i in range(n)))
    count = n if declared is None else declared
    cd_offset, cd_size = len(local), len(records)
    zip64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_offset + cd_size, 1)
    small = min(count, 0xFFFF)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, small, small, cd_size, cd_offset, 0)
    path.write_bytes(local + records + (zip64 + locator if count > 0xFFFF else b"") + eocd)
    return path


def test_our_crafted_zip_is_a_valid_zip(tmp_path):
    z = _many_entries_zip(tmp_path / "three.zip", 3)
    assert zipfile.ZipFile(z).namelist() == ["0", "1", "2"]


def test_100k_entries_refused_in_bounded_memory(tmp_path):
    z = _many_entries_zip(tmp_path / "many.zip", 100_001)
    assert len(zipfile.ZipFile(z).infolist()) == 100_001  # zipfile itself would parse them all
    tracemalloc.start()
    try:
        err = _assert_refused(tmp_path, z, "100,001 entries, over the limit of 100,000")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, f"peak {peak} bytes: the directory was loaded"
    assert "many.zip" in str(err)


def test_lying_entry_count_is_recounted(tmp_path):
    z = _many_entries_zip(tmp_path / "liar.zip", 50, declared=3)
    _assert_refused(tmp_path, z, "more than 10 entries", max_entries=10)


@pytest.mark.parametrize("name, parts", [
    ("a/b.png", ("a", "b.png")), ("a\\b.png", ("a", "b.png")), ("./a//b.png", ("a", "b.png")),
    ("dir/", ("dir",)), ("./", ()), ("a/../b", None), ("/a", None), ("D:a", None), ("a\x00b", None),
    ("..foo/bar..", ("..foo", "bar..")),
])
def test_entry_parts(name, parts):
    assert entry_parts(name) == parts


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NAME = st.lists(st.sampled_from(["a", "b", ".", "..", "/", "\\", ":", "C", "\x00", "é"]), min_size=1,
                 max_size=10).map("".join).filter(lambda n: n.split("\x00")[0] != "")  # zipfile cuts at NUL


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_NAME, min_size=1, max_size=5))
def test_arbitrary_names_never_write_outside_dest(tmp_path_factory, names):
    base = tmp_path_factory.mktemp("prop")
    sandbox = base / "sandbox"
    sandbox.mkdir()
    z = base / "z.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        _zip(z, [(n, b"payload") for n in names])
    dest = sandbox / "dest"
    try:
        out = safe_extract(z, dest)
    except ArchiveError:
        out = None
    outside = [p for p in base.rglob("*") if not p.is_relative_to(dest) and p not in (z, sandbox)]
    assert outside == []
    if out is None:
        assert not dest.exists() or list(dest.iterdir()) == []
    else:
        for p in dest.rglob("*"):
            assert p.resolve().is_relative_to(out.resolve())
            assert not p.is_symlink()
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        zip_names = zipfile.ZipFile(z).namelist()
        expected = sorted("/".join(entry_parts(n)) for n in zip_names if not n.endswith(("/", "\\"))
                          and entry_parts(n))
        assert written == expected
