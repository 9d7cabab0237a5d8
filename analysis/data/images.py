"""Decode users' images and region masks safely and identically everywhere.

Every file from a dataset is untrusted. We open only a few well-understood formats (never EPS, which would
run Ghostscript), refuse images over `MAX_PIXELS` before decoding a byte of pixel data, and always decode
fully so a truncated file fails here, with its name and a reason, instead of as garbage pixels later.

Decisions (why):
- Transparency is composited over white: the colour under alpha 0 is arbitrary (often black or leftover
  pixels), so dropping alpha would show the model things no viewer shows.
- 16-bit greyscale is scaled to 8 bits by `round(v / 257)` (65535 -> 255); Pillow's own `convert("L")`
  clips at 255 and would turn almost every 16-bit image white.
- EXIF orientation is read from the header (what the file declares before its pixel data) and applied by
  the same transpose table as `ImageOps.exif_transpose`, so a header-only check (validation) and a full
  decode agree on the displayed size.
- A mask is aligned with its image's *stored* pixels: when the mask has no EXIF orientation of its own it
  gets the image's orientation, so both end up in display orientation pixel for pixel. A mask that
  declares its own orientation gets its own.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from explainers.errors import InputError

MAX_PIXELS = 50_000_000  # project limit: below Pillow's own warning threshold (~89 MP)
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
MASK_FORMATS = ("PNG", "BMP", "GIF", "TIFF")  # lossless only: JPEG would blur the region ids
_ORIENTATION_TAG = 0x0112
# Same table as PIL.ImageOps.exif_transpose.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(InputError):
    """An image file that cannot be used: names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class MaskError(InputError):
    """A region mask that cannot be used with its image: names the file(s) and the fix."""


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image as RGB, EXIF orientation applied, fully decoded. Raises `ImageError`."""
    return read_image_and_orientation(path)[0]


def read_image_and_orientation(path: str | os.PathLike) -> tuple[Image.Image, int]:
    """`read_image` plus the EXIF orientation it applied (1..8), to hand to `read_mask`."""
    with _open(path, IMAGE_FORMATS, ImageError) as img:
        orientation = _orientation(img)
        _decode(img, path, ImageError)
        rgb = _to_rgb(img, path)
    return _apply_orientation(rgb, orientation), orientation


def image_header(path: str | os.PathLike) -> tuple[tuple[int, int], int]:
    """((width, height) as displayed, EXIF orientation) from the header only: no pixel decoding."""
    with _open(path, IMAGE_FORMATS, ImageError) as img:
        orientation = _orientation(img)
        return _displayed_size(img.size, orientation), orientation


def read_mask(
    path: str | os.PathLike,
    image_size: tuple[int, int],
    image_orientation: int = 1,
    *,
    image_path: str | os.PathLike | None = None,
) -> np.ndarray:
    """Region ids as int32 (h, w), oriented like the image, whose displayed size is `image_size` (w, h).

    Palette PNGs give their indices (not colours); L, I;16 and I give their values. A colour mask is
    accepted only when its three channels are equal (a grey label map saved as RGB).
    """
    with _open(path, MASK_FORMATS, MaskError) as img:
        own = _orientation(img, default=None)
        _decode(img, path, MaskError)
        ids = _label_array(img, path)
    orientation = own if own is not None else image_orientation
    ids = _orient_array(ids, orientation)
    size = (ids.shape[1], ids.shape[0])
    if size != tuple(image_size):
        raise MaskError(_size_message(path, size, image_path, tuple(image_size), orientation, own))
    return np.ascontiguousarray(ids, dtype=np.int32)


def _size_message(path, size, image_path, image_size, orientation, own) -> str:
    image = f"image {image_path}" if image_path is not None else "its image"
    msg = (
        f"mask {path} is {size[0]}x{size[1]} but {image} is {image_size[0]}x{image_size[1]}; "
        "save the mask at the image's size (pixel value = region id)"
    )
    if orientation in (5, 6, 7, 8) and own is None:
        msg += (
            f" (the image has EXIF orientation {orientation}, a 90-degree rotation, and a mask without its "
            "own EXIF orientation is rotated with it: save the mask in the image's stored orientation, or "
            "give it the same EXIF orientation tag)"
        )
    return msg


def _open(path, formats, error):
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _error(error, path, f"cannot read the file ({exc.strerror or exc})") from None
    if not path.is_file():
        raise _error(error, path, "not a file; give the path of a PNG or JPEG image")
    if size == 0:
        raise _error(error, path, "not an image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path, formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _error(error, path, _too_large_reason(path)) from None
    except Image.UnidentifiedImageError:
        raise _error(error, path, _unidentified_reason(path, formats)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = _sniff(path) or "image"
        if "truncated" in str(exc).lower():
            raise _error(error, path, f"truncated {kind} (the header is incomplete)") from None
        raise _error(error, path, f"corrupt {kind} header ({exc})") from None
    width, height = img.size
    if width * height > MAX_PIXELS or width <= 0 or height <= 0:
        img.close()
        raise _error(error, path, f"image is {width}x{height} pixels, over the {MAX_PIXELS:,}-pixel limit; "
                                  "downscale it")
    return img


def _decode(img: Image.Image, path, error) -> None:
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        fmt = img.format or "image"
        text = str(exc).lower()
        if "truncated" in text or isinstance(exc, EOFError):
            raise _error(error, path, f"truncated {fmt}") from None
        raise _error(error, path, f"corrupt {fmt} ({exc})") from None


def _error(error, path, reason):
    return ImageError(path, reason) if error is ImageError else error(f"{path}: {reason}")


def _too_large_reason(path) -> str:
    return f"image header declares more than {MAX_PIXELS:,} pixels (a decompression bomb?); downscale it"


def _unidentified_reason(path, formats) -> str:
    kind = _sniff(path)
    if kind is not None:
        return f"corrupt {kind} header"
    return f"not an image (content is not {', '.join(formats)})"


def _sniff(path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    return None


def _orientation(img: Image.Image, default: int | None = 1) -> int | None:
    """EXIF orientation declared before the pixel data; `default` when absent or invalid."""
    if img.format == "PNG" and "exif" not in img.info:
        return default  # PngImageFile.getexif() would decode the whole image to look after IDAT
    try:
        value = img.getexif().get(_ORIENTATION_TAG)
    except Exception:  # a malformed EXIF block must not make the image unreadable
        return default
    return value if isinstance(value, int) and 1 <= value <= 8 else default


def _displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else tuple(size)


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return img.transpose(method) if method is not None else img


def _orient_array(ids: np.ndarray, orientation: int | None) -> np.ndarray:
    """The `_TRANSPOSE` table on a numpy array (exact for any dtype)."""
    if orientation == 2:
        return ids[:, ::-1]
    if orientation == 3:
        return ids[::-1, ::-1]
    if orientation == 4:
        return ids[::-1, :]
    if orientation == 5:
        return ids.T
    if orientation == 6:
        return np.rot90(ids, k=-1)
    if orientation == 7:
        return np.rot90(ids, k=2).T
    if orientation == 8:
        return np.rot90(ids, k=1)
    return ids


def _to_rgb(img: Image.Image, path) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(img, dtype=np.int64)
        grey = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        raise ImageError(path, "floating-point image; save it as an 8- or 16-bit PNG")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(path, f"unsupported colour mode {mode} ({exc}); save it as RGB PNG or JPEG") from None


def _label_array(img: Image.Image, path) -> np.ndarray:
    mode = img.mode
    if mode in ("P", "L", "1") or mode.startswith("I;16") or mode == "I":
        return np.asarray(img).astype(np.int32)  # mode P: palette indices, not colours
    if mode in ("PA", "LA"):
        return np.asarray(img.getchannel(0)).astype(np.int32)
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(img)[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0].astype(np.int32)
        raise MaskError(
            f"mask {path} is a colour ({mode}) image; masks must be single-channel label maps (PNG mode L, "
            "P or I;16) where each pixel value is a region id from regions.json"
        )
    raise MaskError(f"mask {path} has unsupported mode {mode}; save it as a single-channel PNG "
                    "(mode L, P or I;16) where each pixel value is a region id")
