"""Hostile or broken image files: a specific ImageError/MaskError naming the file, never a crash or a bomb."""
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from analysis.data.images import MAX_PIXELS, ImageError, MaskError, image_header, read_image, read_mask

RNG = np.random.default_rng(1)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int, colour_type: int = 2) -> bytes:
    """A tiny PNG whose IHDR claims width x height (the IDAT holds only a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(bytes(64)))
            + _png_chunk(b"IEND", b""))


def _noise(tmp_path, ext):
    path = tmp_path / f"noise.{ext}"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("ext, kind", [("png", "PNG"), ("jpg", "JPEG")])
def test_truncated_file_is_named_with_reason(tmp_path, ext, kind):
    data = _noise(tmp_path, ext).read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    image_header(cut)  # the header alone is intact: only a full decode finds the truncation
    with pytest.raises(ImageError) as info:
        read_image(cut)
    assert info.value.reason == f"truncated {kind}"
    assert str(cut) in str(info.value)


def test_corrupt_png_data_is_not_called_truncated(tmp_path):
    data = bytearray(_noise(tmp_path, "png").read_bytes())
    data[data.find(b"IDAT") + 100] ^= 0xFF
    bad = tmp_path / "flipped.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"flipped\.png: corrupt PNG"):
        read_image(bad)


def test_zero_bytes(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        read_image(empty)
    assert info.value.reason == "not an image (0 bytes)"
    with pytest.raises(MaskError, match=r"empty\.png: not an image \(0 bytes\)"):
        read_mask(empty, (1, 1))


def test_text_renamed_png(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("image,label\nthis is a csv, not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.png: not an image"):
        read_image(fake)


def test_eps_is_never_handed_to_ghostscript(tmp_path):
    eps = tmp_path / "evil.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not an image"):
        read_image(eps)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: cannot read the file"):
        read_image(tmp_path / "nope.png")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageError, match=r"folder\.png: not a file"):
        read_image(tmp_path / "folder.png")


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (10_000, 10_000), (8_000, 7_000)])
def test_pixel_bombs_are_refused_from_the_header(tmp_path, width, height):
    """100k x 100k trips Pillow's hard limit, 10k x 10k its warning (made an error), 56 MP our 50 MP limit."""
    assert width * height > MAX_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(width, height))
    limit_before = Image.MAX_IMAGE_PIXELS
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DecompressionBombWarning may escape either
            with pytest.raises(ImageError, match=r"bomb\.png: .*(decompression bomb|pixel limit)"):
                read_image(bomb)
            with pytest.raises(ImageError):
                image_header(bomb)
            with pytest.raises(MaskError, match=r"bomb\.png"):
                read_mask(bomb, (width, height))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20  # nothing near width * height bytes was allocated
    assert Image.MAX_IMAGE_PIXELS == limit_before  # no global side effect


def test_image_just_under_the_limit_header_is_fine(tmp_path):
    big = tmp_path / "ok.png"
    big.write_bytes(_png_claiming(5000, 5000, colour_type=0))  # 25 MP claimed, data missing
    assert image_header(big) == ((5000, 5000), 1)
    with pytest.raises(ImageError, match="truncated PNG"):
        read_image(big)


def test_bad_png_crc_in_header(tmp_path):
    data = bytearray(_png_claiming(4, 4))
    data[29] ^= 0xFF  # IHDR CRC
    bad = tmp_path / "crc.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"crc\.png: corrupt PNG header"):
        read_image(bad)


def test_float_tiff_is_refused_with_a_fix(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.ones((3, 3), np.float32)).save(path)
    with pytest.raises(ImageError, match="floating-point image; save it as an 8- or 16-bit PNG"):
        read_image(path)
