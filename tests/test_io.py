"""load_image / detection_view: every input kind and Pillow mode → RGB uint8, and a hostile corpus that must end in
ImageDecodeError (never a Pillow internal exception), cheaply generated."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from qface.pipeline import io as qio
from qface.pipeline.io import ImageDecodeError, detection_view, load_image

# exif_transpose applies, per orientation, this operation; storing its inverse makes the decoded image upright
INVERSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_orientation(image: Image.Image, orientation: int, fmt: str = "PNG", **options) -> bytes:
    """Encoded so that a viewer honouring EXIF shows `image` upright."""
    operation = INVERSE[orientation]
    stored = image if operation is None else image.transpose(operation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **options)


def png_claiming(width: int, height: int) -> bytes:
    """A 1×1 PNG whose IHDR is patched (CRC fixed) to claim width × height: a bomb header in 67 bytes."""
    png = encode(Image.new("L", (1, 1)))
    body = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


def rgb_photo(width: int = 60, height: int = 40) -> np.ndarray:
    """An asymmetric test card: gradients plus a white block at the top-left."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    image[: height // 4, : width // 4] = 255
    return image


# ---------------------------------------------------------------------------------------------------------------
# Inputs and modes


def test_input_kinds_agree(tmp_path):
    photo = rgb_photo()
    data = encode(Image.fromarray(photo))
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    for source in (str(path), path, data, bytearray(data), memoryview(data), io.BytesIO(data), Image.fromarray(photo)):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == photo.shape and out.flags.c_contiguous
        np.testing.assert_array_equal(out, photo)
    np.testing.assert_array_equal(load_image(photo[:, :, ::-1], bgr=True), photo)
    bgra = np.dstack([photo[:, :, ::-1], np.full(photo.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(load_image(bgra, bgr=True), photo)


def test_bad_inputs():
    with pytest.raises(TypeError, match="unsupported image input"):
        load_image(12)
    with pytest.raises(FileNotFoundError):
        load_image("/nonexistent/face.jpg")
    for array, message in (
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (np.zeros((4, 4), complex), "dtype"),
        (np.zeros((2, 2, 2, 3), np.uint8), "shape"),
    ):
        with pytest.raises(ImageDecodeError, match=message):
            load_image(array)


MODE_CASES = [
    # mode, pixel value, expected RGB of that pixel
    ("1", 1, (255, 255, 255)),
    ("L", 77, (77, 77, 77)),
    ("LA", (0, 128), (127, 127, 127)),  # half-transparent black on white
    ("La", (50, 128), (177, 177, 177)),  # premultiplied: straight L ≈ 100, then half on white
    ("RGB", (10, 20, 30), (10, 20, 30)),
    ("RGBA", (0, 0, 0, 128), (127, 127, 127)),
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ("RGBX", (10, 20, 30, 0), (10, 20, 30)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
    ("YCbCr", (128, 128, 128), (128, 128, 128)),
    ("I;16", 65535, (255, 255, 255)),
    ("I;16", 300, (1, 1, 1)),  # scaled by the 16-bit range, not clipped at 255
    ("I;16B", 32896, (128, 128, 128)),
    ("I;16L", 65535, (255, 255, 255)),
    ("I", 65535, (255, 255, 255)),  # 32-bit with 16-bit values → as 16-bit
    ("F", 1.0, (255, 255, 255)),  # floats in [0, 1] → × 255
    ("HSV", (0, 0, 200), (200, 200, 200)),
]


@pytest.mark.parametrize("mode,value,expected", MODE_CASES)
def test_modes(mode, value, expected):
    image = Image.new(mode, (5, 3), value)
    if mode in ("I", "F"):
        image.putpixel((4, 2), 0)  # a range to scale by
    out = load_image(image)
    assert out.shape == (3, 5, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out[0, 0], expected, atol=1)


def test_palette_with_and_without_transparency():
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((1, 0), 1)
    np.testing.assert_array_equal(load_image(image)[0, :2], [[0, 0, 0], [200, 10, 10]])
    image.info["transparency"] = 0  # index 0 transparent → white
    np.testing.assert_array_equal(load_image(encode(image))[0, :2], [[255, 255, 255], [200, 10, 10]])
    pa = Image.new("PA", (2, 2), (1, 0))
    pa.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pa.putpixel((0, 0), (1, 255))
    np.testing.assert_array_equal(load_image(pa)[0, 0], [200, 10, 10])


def test_sixteen_and_thirty_two_bit_grey_scale_by_range():
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    out = load_image(encode(Image.fromarray(ramp)))  # a real 16-bit PNG
    np.testing.assert_allclose(out[..., 0], np.rint(ramp / 257.0), atol=1)
    assert out.max() == 255 and len(np.unique(out)) > 200  # not clipped at 255
    wide = np.arange(64, dtype=np.int32).reshape(8, 8) * 100_000  # beyond 16 bits → stretched min..max
    out = load_image(Image.fromarray(wide, mode="I"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255 and np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)
    floats = np.linspace(-3.0, 7.0, 64, dtype=np.float32).reshape(8, 8)
    out = load_image(Image.fromarray(floats, mode="F"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_array_dtype_rules():
    assert load_image(np.array([[0, 300, 65535]], np.uint16))[0, :, 0].tolist() == [0, 1, 255]
    assert load_image(np.array([[0.0, 0.5, 1.0]]))[0, :, 0].tolist() == [0, 128, 255]
    assert load_image(np.array([[0.0, 100.0, 255.0]], np.float32))[0, :, 0].tolist() == [0, 100, 255]
    assert load_image(np.array([[-1.0, 0.0, 1.0]]))[0, :, 0].tolist() == [0, 128, 255]  # stretched
    assert load_image(np.array([[np.nan, 0.0, 1.0, np.inf, -np.inf]]))[0, :, 0].tolist() == [0, 0, 255, 255, 0]
    assert load_image(np.array([[False, True]]))[0, :, 0].tolist() == [0, 255]
    assert load_image(np.array([[-5, 5]], np.int8))[0, :, 0].tolist() == [0, 255]
    assert load_image(np.array([[7, 9]], ">u2"))[0, :, 0].tolist() == [0, 0]  # big-endian 16-bit
    grey_alpha = np.array([[[0, 128], [0, 0], [0, 255]]], np.uint8)  # alpha varies: composited on white
    assert load_image(grey_alpha)[0, :, 0].tolist() == [127, 255, 0]
    unset_alpha = np.dstack([rgb_photo(), np.zeros((40, 60), np.uint8)])  # all-zero alpha: ignored
    np.testing.assert_array_equal(load_image(unset_alpha), rgb_photo())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation):
    photo = rgb_photo(48, 32)
    np.testing.assert_array_equal(load_image(with_orientation(Image.fromarray(photo), orientation)), photo)
    jpeg = load_image(with_orientation(Image.fromarray(photo), orientation, "JPEG", quality=95))
    assert jpeg.shape == photo.shape and np.abs(jpeg.astype(int) - photo).mean() < 3


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_is_ignored():
    data = encode(Image.fromarray(rgb_photo()), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    assert load_image(data).shape == (40, 60, 3)


# ---------------------------------------------------------------------------------------------------------------
# The hostile corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hostile")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    jpeg, png = encode(photo, "JPEG"), encode(photo, "PNG")
    files = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "header-only.png": png[:40],
        "empty.jpg": b"",
        "text.jpg": b"this is not an image, just text with a .jpg name\n" * 4,
        "bomb-100k.png": png_claiming(100_000, 100_000),  # beyond Pillow's own guard too
        "bomb-8k.png": png_claiming(8000, 8000),  # 64 MP: our limit only, its data is absent
        "zeros-10k.png": encode(Image.new("1", (10_000, 10_000))),  # a genuine 100 MP image, 12 kB
        "one-pixel.png": encode(Image.new("RGB", (1, 1), (9, 8, 7))),
        "wide.png": encode(Image.new("L", (10_000, 1_000), 200)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


@pytest.mark.parametrize(
    "name,message",
    [
        ("truncated.jpg", "truncated"),
        ("truncated.png", "truncated"),
        ("header-only.png", "truncated|corrupt"),
        ("empty.jpg", "empty file"),
        ("text.jpg", "not an image"),
        ("bomb-100k.png", "decompression-bomb"),
        ("bomb-8k.png", "64.0 megapixels exceeds the limit of 50 MP"),
        ("zeros-10k.png", "100.0 megapixels exceeds"),
    ],
)
def test_hostile_files_raise_decode_error(corpus, name, message):
    data = corpus[name].read_bytes()
    for source in (corpus[name], data if data else str(corpus[name])):  # path, then bytes (empty: str path)
        start = time.perf_counter()
        with pytest.raises(ImageDecodeError, match=message):
            load_image(source)
        assert time.perf_counter() - start < 0.5  # refused from the header, nothing big decoded


def test_pixel_limit_is_overridable(corpus, monkeypatch):
    # with the limit raised, the 8k bomb gets past the header check and fails as what it is: missing data
    with pytest.raises(ImageDecodeError, match="truncated"):
        load_image(corpus["bomb-8k.png"], max_pixels=70_000_000)
    monkeypatch.setattr(qio, "MAX_PIXELS", 5_000_000)
    with pytest.raises(ImageDecodeError, match="10.0 megapixels exceeds the limit of 5 MP"):
        load_image(corpus["wide.png"])
    assert load_image(corpus["wide.png"], max_pixels=10_000_000).shape == (1000, 10_000, 3)
    with pytest.raises(ImageDecodeError, match="exceeds"):
        load_image(Image.new("L", (3000, 2000)))  # PIL images are checked too


def test_tiny_and_wide_images(corpus):
    assert load_image(corpus["one-pixel.png"]).tolist() == [[[9, 8, 7]]]
    wide = load_image(corpus["wide.png"])
    small, scale = detection_view(wide, 1280)
    assert small.shape == (128, 1280, 3) and scale == pytest.approx(0.128)
    assert small.dtype == np.uint8 and np.abs(small.astype(int) - 200).max() <= 1


def test_detection_view_keeps_small_images():
    image = rgb_photo()
    small, scale = detection_view(image, 1280)
    assert small is image and scale == 1.0
    small, scale = detection_view(image, 30)
    assert small.shape == (20, 30, 3) and scale == pytest.approx(0.5)
    with pytest.raises(ValueError):
        detection_view(image, 0)


# ---------------------------------------------------------------------------------------------------------------
# Properties

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.float64, np.bool_])


@st.composite
def arrays(draw):
    dtype = draw(DTYPES)
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    shape = draw(st.sampled_from([(height, width)] + [(height, width, c) for c in (1, 2, 3, 4)]))
    elements = None
    if np.dtype(dtype).kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(), st.booleans())
def test_any_array_becomes_rgb(array, bgr):
    out = load_image(array, bgr=bgr)
    assert out.shape == (*array.shape[:2], 3) and out.dtype == np.uint8 and out.flags.c_contiguous


PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
             "I", "F", "I;16", "I;16B", "I;16L", "I;16N"]  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(PIL_MODES), st.integers(1, 12), st.integers(1, 12), st.binary(min_size=64, max_size=64))
def test_any_pil_mode_becomes_rgb(mode, width, height, noise):
    image = Image.new(mode, (width, height))
    raw = (noise * (1 + len(image.tobytes()) // len(noise)))[: len(image.tobytes())]
    image.frombytes(raw)  # random pixel bytes, NaN floats included
    out = load_image(image)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
