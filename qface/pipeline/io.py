"""Image decoding that never surprises: any supported input → an RGB uint8 (H, W, 3) array, or ImageDecodeError.

Inputs (`load_image`):
    path (str / os.PathLike), encoded bytes (bytes / bytearray / memoryview), a binary file object, a PIL image, or
    a numpy array (H, W), (H, W, 1), (H, W, 2) grey + alpha, (H, W, 3) colour or (H, W, 4) colour + alpha.
    `bgr=True` says a 3/4-channel *array* is in OpenCV's BGR(A) order; it is ignored for encoded and PIL inputs,
    whose channel order is known.

Rules, one place for each surprise:
- EXIF orientation is honoured (PIL.ImageOps.exif_transpose); an unreadable EXIF block is ignored, not fatal.
  A PIL image passed in is oriented by its own EXIF too. Multi-frame files (GIF, TIFF, APNG, MPO) give frame 0.
- Pixel limit: an encoded image whose header claims more than MAX_PIXELS (width × height; 50 megapixels by default,
  about an 8660 × 5770 photo) is refused before any pixel is decoded (ImageTooLargeError). Override it per call
  (`max_pixels=`) or for the process (`qface.pipeline.io.MAX_PIXELS = ...`). Pillow's own guard
  (Image.MAX_IMAGE_PIXELS, 89 MP; an error above twice that) is left as it is and its DecompressionBombError is
  reported as ImageTooLargeError too, so a limit above 178 MP also needs Pillow's raised (its warning above 89 MP
  is silenced while opening: the decision is ours). Arrays are already decoded and are not limited. Video frames
  have the same limit, checked from the container's frame size before the first frame is decoded
  (qface.analyzer.read_video).
- Paths are `stat`ed before they are opened: a FIFO, device or socket is refused (SpecialFileError) without being
  opened, since reading one can block forever or never end.
- Formats: the common raster formats only (FORMATS); EPS and the like, which Pillow would hand to Ghostscript or
  other external code, are refused.
- Truncated, empty, corrupt or non-image data → ImageDecodeError (a ValueError) naming the source (empty or
  unrecognised data: its subclass NotAnImageError); no Pillow, zlib or struct exception escapes. Truncated images
  are never padded (Pillow's LOAD_TRUNCATED_IMAGES stays off), and a sequential JPEG shorter than its declared
  size allows is refused before decoding, since libjpeg would only warn and fill the missing part with grey
  (progressive and arithmetic-coded JPEGs cannot be bounded so). A missing path is still FileNotFoundError
  (nothing to decode).
- Alpha (LA, La, PA, P with a transparent colour, RGBA, RGBa, 2- and 4-channel arrays) is composited on WHITE,
  as a viewer on a white page shows it (dropping it would reveal whatever colour hides under transparent pixels,
  often black). An alpha that is fully opaque, or fully transparent everywhere (an unset channel, as in many
  BGRA screen grabs), is dropped instead.
- Sample values → 8 bits (never clipped):
    uint8 as is; bool False/True → 0/255;
    uint16 (16-bit PNG/TIFF, Pillow I;16, I;16B, I;16L, I;16N) by the full 16-bit range: v · 255 / 65535;
    other integers (Pillow I = int32, int8/16/32/64, uint32/64) by their values: all in 0..255 → as is,
    else all in 0..65535 → as 16-bit, else stretched from their min..max to 0..255;
    floats (Pillow F, float16/32/64): all in [0, 1] → × 255, else all in [0, 255] → as is, else stretched from
    min..max; NaN → the minimum, ±inf → the finite extremes. Each channel group (colour, alpha) is scaled alone.
- Colour modes: 1 → black/white, L grey replicated, P by its palette, CMYK, YCbCr, LAB and HSV through Pillow's
  conversions. Embedded ICC profiles are not applied (pixels are taken as sRGB).

`detection_view` makes the smaller copy a detector sees; boxes and points found on it map back by its `scale`.
`image_suffixes()` (Pillow's registered suffixes of FORMATS) and VIDEO_SUFFIXES decide which files of a folder
are inputs (qface.pipeline.files walks the folders, for the CLI and the Ray engine alike).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from functools import cache
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000
MAX_VIDEO_BATCH_PIXELS = 64_000_000  # video frames held for one batch: ~190 MB of RGB, whatever the frame size
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "AVIF", "PPM", "TGA", "ICO", "JPEG2000", "QOI",
           "PCX", "SGI", "PSD")  # fmt: skip

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
_CHUNK = 1 << 22  # pixels per block when compositing, so a 50 MP RGBA costs tens of MB, not hundreds


VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


class ImageDecodeError(ValueError):
    """The input is not an image this module can decode safely (corrupt, truncated, empty, too large, unknown)."""


class SpecialFileError(ImageDecodeError):
    """The path is a FIFO, device or socket: refused from `stat`, never opened (a reader could block forever)."""


class ImageTooLargeError(ImageDecodeError):
    """The header claims more pixels than the limit; nothing was decoded."""


class NotAnImageError(ImageDecodeError):
    """Empty data, or no supported image format recognises it (as opposed to a recognised but broken image)."""


def load_image(image: ImageInput, bgr: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Any supported input → C-contiguous RGB uint8 (H, W, 3). See the module docstring for every rule."""
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, bgr)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(image, Image.Image):
        check_pixels(image.size, limit, "PIL image")
        return _decode_pil(image, "PIL image")
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if not data:
            raise NotAnImageError("empty bytes: no image data")
        return _open_and_decode(io.BytesIO(data), f"<{len(data)} bytes>", limit)
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        if check_regular_file(path) == 0:
            raise NotAnImageError(f"{path}: empty file (0 bytes)")
        return _open_and_decode(path, str(path), limit)
    if hasattr(image, "read"):
        return _open_and_decode(image, f"<{type(image).__name__}>", limit)
    raise TypeError(f"unsupported image input {type(image).__name__}: give a path, bytes, a PIL image or an array")


def check_regular_file(path: str | os.PathLike) -> int:
    """The file's size, from `stat` alone; a folder raises IsADirectoryError, a missing path FileNotFoundError,
    and a FIFO, device or socket SpecialFileError, all without opening it."""
    mode, size = (info := os.stat(path)).st_mode, info.st_size
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{os.fspath(path)}: is a folder")
    if not stat.S_ISREG(mode):
        raise special_file_error(path, mode)
    return size


def special_file_error(path: str | os.PathLike, mode: int) -> SpecialFileError:
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return SpecialFileError(f"{os.fspath(path)}: {kind}, not a regular file; refused without opening it")


@cache
def image_suffixes() -> frozenset[str]:
    """Every file suffix Pillow registers for a format in FORMATS (.jpg, .tga, .qoi, .jp2, .ico, ...)."""
    Image.init()
    return frozenset(suffix for suffix, name in Image.registered_extensions().items() if name in FORMATS)


def detection_view(image: np.ndarray, max_side: int = 1280) -> tuple[np.ndarray, float]:
    """(smaller copy, scale) with the longer side at most `max_side`; `scale` = small / original (≤ 1).

    A box edge x on the copy is x / scale on the original; a pixel-centre point p maps as (p + 0.5) / scale − 0.5.
    Images already small enough come back unchanged with scale 1.0. Downscaling is antialiased (Pillow, bilinear
    after a box reduction)."""
    height, width = image.shape[:2]
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if max(height, width) <= max_side:
        return image, 1.0
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small), scale


# ---------------------------------------------------------------------------------------------------------------
# Encoded images


def check_pixels(size: tuple[int, int], limit: int, name: str) -> None:
    """ImageDecodeError when width × height exceeds `limit`: called with a header's size, before decoding."""
    width, height = size
    if width * height > limit:
        raise ImageTooLargeError(
            f"{name}: {width}×{height} = {width * height / 1e6:.1f} megapixels exceeds the limit of "
            f"{limit / 1e6:g} MP (a decompression-bomb guard); refused before decoding. Raise it with "
            f"load_image(..., max_pixels=N) or qface.pipeline.io.MAX_PIXELS if the image is genuine."
        )


def _open_and_decode(source: str | BinaryIO, name: str, limit: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # Pillow warns above 89 MP; our own limit decides just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(source, formats=_formats())
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{name}: refused before decoding by Pillow's decompression-bomb guard ({error}); "
            f"qface's own limit is {limit / 1e6:g} MP"
        ) from None
    except UnidentifiedImageError:
        raise NotAnImageError(
            f"{name}: not an image in a supported format ({', '.join(FORMATS)}), or its header is corrupt"
        ) from None
    except Exception as error:  # any failure of a plugin while reading the header
        raise ImageDecodeError(f"{name}: cannot read the image header ({type(error).__name__}: {error})") from None
    with opened:
        check_pixels(opened.size, limit, name)
        if opened.format == "JPEG":
            _check_jpeg_length(opened, name)
        return _decode_pil(opened, name)


def _check_jpeg_length(image: Image.Image, name: str) -> None:
    """ImageDecodeError when a sequential Huffman JPEG is shorter than its size allows. libjpeg fills missing or
    corrupt data with grey and only warns, so such a file would otherwise decode "fine" into a large blank image.
    The bound is exact, not a guess: every 8 × 8 block of the full-resolution component costs at least 2 bits (a
    DC code and an end-of-block code, each at least 1 bit). Progressive and arithmetic-coded files can legitimately
    be smaller (one code may end thousands of blocks) and are not checked."""
    file = image.fp
    start = file.tell()
    try:
        file.seek(0)
        if _jpeg_frame_marker(file) not in (0xC0, 0xC1):  # baseline or extended sequential, Huffman-coded
            return
        length = file.seek(0, io.SEEK_END)
    finally:
        file.seek(start)
    width, height = image.size
    needed = -(-width // 8) * -(-height // 8) * 2 // 8
    if length < needed:
        raise ImageDecodeError(
            f"{name}: truncated or corrupt JPEG: its header says {width}×{height}, which needs at least "
            f"{needed} bytes of image data, but the file has {length}"
        )


def _jpeg_frame_marker(file: BinaryIO) -> int | None:
    """The SOFn marker's second byte (0xC0 baseline, 0xC2 progressive, ...), read from the segment headers."""
    if file.read(2) != b"\xff\xd8":
        return None
    while (head := file.read(4)) and len(head) == 4 and head[0] == 0xFF:
        marker = head[1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        file.seek(int.from_bytes(head[2:], "big") - 2, io.SEEK_CUR)
    return None


def _formats() -> list[str]:
    Image.init()
    return [f for f in FORMATS if f in Image.ID]


def _decode_pil(image: Image.Image, name: str) -> np.ndarray:
    try:
        image.load()
    except Exception as error:  # truncated data: OSError, SyntaxError, zlib.error, ...
        raise ImageDecodeError(
            f"{name}: cannot decode the pixel data, the file is probably truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from None
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not lose a readable image
        oriented = image
    try:
        return _array_to_rgb(_pil_to_array(oriented), bgr=False)
    except ImageDecodeError:
        raise
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        raise ImageDecodeError(f"{name}: cannot convert mode {image.mode} to RGB ({reason})") from None


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """An array the array path understands: 1/2/3/4 channels, in a dtype that tells its range."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("L", "LA", "RGB", "RGBA", "I", "F") or mode.startswith("I;16"):
        return np.asarray(image)
    if mode == "La":
        return np.asarray(image.convert("LA"))
    if mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if transparent else "RGB"))
    if mode == "RGBa":
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))  # RGBX, CMYK, YCbCr, LAB, HSV and anything newer


# ---------------------------------------------------------------------------------------------------------------
# Arrays


def _array_to_rgb(array: np.ndarray, bgr: bool) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageDecodeError(
            f"array of shape {array.shape}: expected (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(f"array of shape {array.shape} has no pixels")
    channels = array.shape[2]
    colour_channels = 1 if channels <= 2 else 3
    colour = _to_uint8(array[:, :, :colour_channels])
    if bgr and colour_channels == 3:
        colour = colour[:, :, ::-1]
    alpha = _to_uint8(array[:, :, colour_channels]) if channels in (2, 4) else None
    if alpha is not None:
        low, high = alpha.min(), alpha.max()
        if low == high and high in (0, 255):  # all opaque, or an unset (all-zero) channel
            alpha = None
    if alpha is not None:
        colour = _composite_on_white(colour, alpha)
    if colour_channels == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Sample values to uint8 by the documented rules (module docstring)."""
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    kind = values.dtype.kind
    if values.dtype == np.uint8:
        return values
    if kind == "b":
        return values.astype(np.uint8) * np.uint8(255)
    if values.dtype == np.uint16:
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if kind in "iu":
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 255:
            return values.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return _to_uint8(values.astype(np.uint16))
        return _stretch(values.astype(np.float64), low, high)
    if kind == "f":
        values = values.astype(np.float32 if values.dtype.itemsize <= 4 else np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            if not finite.any():
                return np.zeros(values.shape, np.uint8)
            low, high = values[finite].min(), values[finite].max()
            values = np.where(np.isnan(values), low, np.clip(values, low, high))
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return np.rint(values * 255.0).astype(np.uint8)
        if low >= 0.0 and high <= 255.0:
            return np.rint(values).astype(np.uint8)
        return _stretch(values, low, high)
    raise ImageDecodeError(f"unsupported array dtype {values.dtype}: use an integer, float or bool image")


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    half_span = high / 2 - low / 2  # halves: no overflow even for ±1.8e308
    return np.clip(np.rint((values / 2 - low / 2) * (255.0 / half_span)), 0, 255).astype(np.uint8)


def _composite_on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """colour · a + white · (1 − a), rounded, in integer arithmetic and row blocks (bounded memory)."""
    height, width = alpha.shape
    out = np.empty(colour.shape, np.uint8)
    rows = max(1, _CHUNK // width)
    for top in range(0, height, rows):
        a = alpha[top : top + rows, :, None].astype(np.uint32)
        c = colour[top : top + rows].astype(np.uint32)
        out[top : top + rows] = ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return out
