"""read_image / read_mask on real files written with Pillow: modes, EXIF orientation, exact values."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps

from analysis.data.images import (
    ImageError, MaskError, image_header, read_image, read_image_and_orientation, read_mask,
)
from explainers.errors import InputError

RNG = np.random.default_rng(0)


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_errors_are_input_errors():
    assert issubclass(ImageError, InputError) and issubclass(MaskError, InputError)


def test_rgb_png_roundtrip_exact(tmp_path):
    a = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = read_image(_save(Image.fromarray(a), tmp_path / "a.png"))
    assert img.mode == "RGB" and img.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(img), a)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    out = np.asarray(read_image(_save(Image.fromarray(g), tmp_path / "g.png")))
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [0, 0, 0, 128], [255, 0, 0, 64]]], np.uint8)
    out = np.asarray(read_image(_save(Image.fromarray(rgba), tmp_path / "t.png"))).astype(int)
    assert out[0, 0].tolist() == [200, 100, 50]  # opaque: unchanged
    assert out[0, 1].tolist() == [255, 255, 255]  # transparent: white, not the hidden colour
    alpha = rgba[0, 2:, 3:4] / 255.0
    expected = rgba[0, 2:, :3] * alpha + 255 * (1 - alpha)  # [[127, 127, 127], [255, 191, 191]]
    assert np.abs(out[0, 2:] - expected).max() <= 1


def test_palette_image_gives_palette_colours(tmp_path):
    p = Image.new("P", (3, 1))
    p.putpalette([10, 20, 30, 200, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    p.putdata([0, 1, 2])
    out = np.asarray(read_image(_save(p, tmp_path / "p.png")))
    assert out[0].tolist() == [[10, 20, 30], [200, 0, 0], [0, 255, 0]]


def test_palette_with_transparency_is_composited(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 200, 0, 0] + [0] * (256 * 3 - 6))
    p.putdata([0, 1])
    out = np.asarray(read_image(_save(p, tmp_path / "pt.png", transparency=0)))
    assert out[0].tolist() == [[255, 255, 255], [200, 0, 0]]


def test_cmyk_jpeg_gives_rgb(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(cmyk, tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = np.asarray(read_image(path)).astype(int)
    assert out.shape == (16, 16, 3)
    assert np.abs(out - [255, 0, 0]).max() <= 3


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 256, 257, 32768], [65535, 1000, 40000, 128]], np.uint16)
    path = _save(Image.fromarray(v), tmp_path / "d.png")
    assert Image.open(path).mode.startswith("I;16")
    out = np.asarray(read_image(path))
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 1, 128], [255, 4, 156, 0]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_imageops(tmp_path, orientation):
    a = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for ext in ("png", "jpg"):
        path = _save(Image.fromarray(a), tmp_path / f"o{orientation}.{ext}", exif=_exif(orientation))
        img, got = read_image_and_orientation(path)
        assert got == orientation
        reference = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        np.testing.assert_array_equal(np.asarray(img), np.asarray(reference))
        size, header_orientation = image_header(path)
        assert size == img.size and header_orientation == orientation


def test_orientation_6_is_a_clockwise_quarter_turn(tmp_path):
    a = RNG.integers(0, 256, (4, 9, 3), dtype=np.uint8)
    img = read_image(_save(Image.fromarray(a), tmp_path / "r.png", exif=_exif(6)))
    assert img.size == (4, 9)
    np.testing.assert_array_equal(np.asarray(img), np.rot90(a, k=-1))


def test_malformed_exif_is_ignored(tmp_path):
    a = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    path = _save(Image.fromarray(a), tmp_path / "e.jpg", exif=b"Exif\x00\x00garbage-not-tiff")
    img, orientation = read_image_and_orientation(path)
    assert orientation == 1 and img.size == (5, 3)


# -- masks -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_image_orientation_applies_to_mask_pixel_exact(tmp_path, orientation):
    ids = RNG.integers(0, 5, (6, 10), dtype=np.uint8)
    grey = (ids * 50).astype(np.uint8)  # the image encodes the mask, so alignment is checkable
    image_path = _save(Image.fromarray(grey).convert("RGB"), tmp_path / "i.png", exif=_exif(orientation))
    mask_path = _save(Image.fromarray(ids), tmp_path / "m.png")  # no EXIF: stored orientation
    image, got = read_image_and_orientation(image_path)
    mask = read_mask(mask_path, image.size, got, image_path=image_path)
    assert mask.dtype == np.int32 and mask.shape == (image.size[1], image.size[0])
    np.testing.assert_array_equal(mask * 50, np.asarray(image)[..., 0])


def test_mask_with_its_own_orientation_uses_it(tmp_path):
    ids = RNG.integers(0, 5, (4, 6), dtype=np.uint8)
    mask_path = _save(Image.fromarray(ids), tmp_path / "m.png", exif=_exif(3))
    np.testing.assert_array_equal(read_mask(mask_path, (6, 4), 1), ids[::-1, ::-1])
    # the same EXIF on image and mask: the mask's own tag, equal to the image's, is applied once
    np.testing.assert_array_equal(read_mask(mask_path, (6, 4), 3), ids[::-1, ::-1])


def test_palette_mask_keeps_indices_not_colours(tmp_path):
    ids = np.array([[0, 1, 2], [2, 1, 7]], np.uint8)
    p = Image.new("P", (3, 2))
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [9, 9, 9] * 4 + [0, 0, 255] + [0] * (256 * 3 - 24))
    p.putdata(ids.ravel().tolist())
    path = _save(p, tmp_path / "p.png")
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_mask(path, (3, 2)), ids)


def test_16bit_mask_keeps_values(tmp_path):
    ids = np.array([[0, 300], [65535, 7]], np.uint16)
    np.testing.assert_array_equal(read_mask(_save(Image.fromarray(ids), tmp_path / "m.png"), (2, 2)), ids)


def test_colour_mask_is_refused_with_the_rule(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    path = _save(Image.fromarray(rgb), tmp_path / "rgb.png")
    with pytest.raises(MaskError, match=r"rgb\.png is a colour \(RGB\) image; masks must be single-channel"):
        read_mask(path, (2, 2))


def test_grey_mask_saved_as_rgb_is_accepted(tmp_path):
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    path = _save(Image.fromarray(np.stack([ids] * 3, -1)), tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_mask(path, (2, 2)), ids)


def test_mask_size_mismatch_names_both_files_and_sizes(tmp_path):
    path = _save(Image.fromarray(np.zeros((4, 5), np.uint8)), tmp_path / "m.png")
    with pytest.raises(MaskError) as info:
        read_mask(path, (6, 4), 1, image_path=tmp_path / "img.png")
    message = str(info.value)
    assert "m.png is 5x4" in message and "img.png is 6x4" in message


def test_rotated_image_mismatch_explains_the_orientation_rule(tmp_path):
    path = _save(Image.fromarray(np.zeros((4, 6), np.uint8)), tmp_path / "m.png")
    with pytest.raises(MaskError, match="EXIF orientation 6"):
        read_mask(path, (6, 4), 6, image_path="img.jpg")  # mask already in display orientation


def test_jpeg_mask_is_refused(tmp_path):
    path = _save(Image.fromarray(np.zeros((4, 4), np.uint8)), tmp_path / "m.jpg")
    with pytest.raises(MaskError, match="m.jpg"):
        read_mask(path, (4, 4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.one_of(
    hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12)),
    hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12)),
))
def test_mask_decoder_returns_the_exact_array(tmp_path, ids):
    path = tmp_path / f"m_{ids.dtype}.png"
    Image.fromarray(ids).save(path)
    out = read_mask(path, (ids.shape[1], ids.shape[0]))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, ids.astype(np.int32))
